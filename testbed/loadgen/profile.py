"""Load profiles: the open-loop rate over a trial's measured window, as segments (pure data, no clock).

Named as Locust users think of load shapes (`LoadTestShape`), all open loop: sends at intended times that
follow the rate, never waiting for answers.

- `constant`: one rate for the whole window (every trial before profiles existed);
- `steps`: a list of rates, each held for its own time;
- `ramp`: a rate growing (or falling) linearly from one value to another;
- `spike`: a base rate, a burst of `multiple` times it for `burst_s` from `at_s`, then the base again.

A profile is a tuple of `Segment`s: the measured window is their sum, the warm-up runs at the first
segment's starting rate and a tail at the last one's ending rate. The validity rules (lateness, achieved
rate, errors, generator CPU) are applied to each segment as well as to the whole window
(`testbed.loadgen.result`). On the command line (`testbed load --profile`, and the `testbed load` argv a
run hands to a pod) a profile is one word (`Profile.to_arg` / `parse_arg`):

    steps:100@5,200@5,300@5               rates in rps @ seconds held
    ramp:from=50,to=300,duration=20
    spike:base=100,multiple=3,at=10,burst=2,duration=30
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from testbed.errors import UsageError

ProfileKind = Literal["constant", "steps", "ramp", "spike"]
PROFILE_KINDS: tuple[ProfileKind, ...] = ("constant", "steps", "ramp", "spike")


@dataclass(frozen=True, kw_only=True)
class Segment:
    """A part of the window whose rate goes linearly from `start_rps` to `end_rps` (equal: held)."""

    label: str
    duration_s: float
    start_rps: float
    end_rps: float

    def rate_at(self, t: float) -> float:
        """The rate `t` seconds into this segment."""
        return self.start_rps + (self.end_rps - self.start_rps) * (t / self.duration_s)

    def count(self, t: float) -> float:
        """Sends due in this segment's first `t` seconds (the integral of the rate)."""
        return t * (self.start_rps + self.rate_at(t)) / 2

    @property
    def total(self) -> float:
        return self.count(self.duration_s)

    def time_of(self, n: float) -> float:
        """Seconds into the segment at which `n` sends are due (the inverse of `count`)."""
        a = (self.end_rps - self.start_rps) / (2 * self.duration_s)
        b = self.start_rps
        if abs(a) < 1e-12:
            return n / b
        # a t^2 + b t - n = 0, the root in [0, duration]; written to avoid cancellation when a is small.
        return 2 * n / (b + math.sqrt(max(b * b + 4 * a * n, 0.0)))


@dataclass(frozen=True, kw_only=True)
class Profile:
    """The rate over the measured window."""

    kind: ProfileKind
    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not self.segments:
            raise UsageError(f"profile {self.kind}: no segment (give at least one rate and duration)")
        for s in self.segments:
            if s.duration_s <= 0:
                raise UsageError(
                    f"profile {self.kind}: {s.label} must last a positive time, got {s.duration_s:g} s"
                )
            if s.start_rps <= 0 or s.end_rps <= 0:
                raise UsageError(
                    f"profile {self.kind}: {s.label}: rates must be positive (requests per second), "
                    f"got {s.start_rps:g} to {s.end_rps:g}"
                )

    @classmethod
    def constant(cls, rate: float, duration_s: float) -> Profile:
        return cls(
            kind="constant",
            segments=(Segment(label="constant", duration_s=duration_s, start_rps=rate, end_rps=rate),),
        )

    @classmethod
    def steps(cls, steps: list[tuple[float, float]]) -> Profile:
        """`(rate, seconds)` pairs, in order."""
        return cls(
            kind="steps",
            segments=tuple(
                Segment(
                    label=f"step {i} ({rate:g} rps)",
                    duration_s=float(d),
                    start_rps=float(rate),
                    end_rps=float(rate),
                )
                for i, (rate, d) in enumerate(steps, 1)
            ),
        )

    @classmethod
    def ramp(cls, from_rps: float, to_rps: float, duration_s: float) -> Profile:
        label = f"ramp {from_rps:g} to {to_rps:g} rps"
        return cls(
            kind="ramp",
            segments=(
                Segment(
                    label=label,
                    duration_s=float(duration_s),
                    start_rps=float(from_rps),
                    end_rps=float(to_rps),
                ),
            ),
        )

    @classmethod
    def spike(
        cls, *, base_rps: float, multiple: float, at_s: float, burst_s: float, duration_s: float
    ) -> Profile:
        """Base rate, then `multiple` x base for `burst_s` seconds from `at_s`, then base to `duration_s`."""
        if multiple <= 1:
            raise UsageError(
                f"profile spike: multiple must be over 1 (a burst above the base), got {multiple:g}"
            )
        if at_s <= 0 or at_s + burst_s >= duration_s:
            raise UsageError(
                f"profile spike: the burst ({at_s:g} s + {burst_s:g} s) must start after 0 and end before "
                f"duration {duration_s:g} s, so that there is a before and an after to compare"
            )
        peak = base_rps * multiple
        return cls(
            kind="spike",
            segments=(
                Segment(
                    label="before", duration_s=float(at_s), start_rps=float(base_rps), end_rps=float(base_rps)
                ),
                Segment(
                    label=f"spike ({peak:g} rps)", duration_s=float(burst_s), start_rps=peak, end_rps=peak
                ),
                Segment(
                    label="after",
                    duration_s=float(duration_s - at_s - burst_s),
                    start_rps=float(base_rps),
                    end_rps=float(base_rps),
                ),
            ),
        )

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)

    @property
    def first_rps(self) -> float:
        """The warm-up's rate."""
        return self.segments[0].start_rps

    @property
    def last_rps(self) -> float:
        """The tail's rate."""
        return self.segments[-1].end_rps

    @property
    def peak_rps(self) -> float:
        return max(max(s.start_rps, s.end_rps) for s in self.segments)

    @property
    def total(self) -> float:
        """Sends due in the whole window."""
        return sum(s.total for s in self.segments)

    @property
    def mean_rps(self) -> float:
        return self.total / self.duration_s

    def bounds(self) -> list[tuple[float, float]]:
        """Each segment's (start, end) in seconds into the window."""
        out, t = [], 0.0
        for s in self.segments:
            out.append((t, t + s.duration_s))
            t += s.duration_s
        return out

    def segment_at(self, t: float) -> int | None:
        """The index of the segment `t` seconds into the window falls in, None outside the window."""
        if t < 0:
            return None
        for i, (start, end) in enumerate(self.bounds()):
            if start <= t < end:
                return i
        return None

    def rate_at(self, t: float) -> float:
        """The intended rate `t` seconds into the window (the first rate before it, the last after it)."""
        if t < 0:
            return self.first_rps
        for (start, end), s in zip(self.bounds(), self.segments, strict=True):
            if t < end:
                return s.rate_at(t - start)
        return self.last_rps

    def to_arg(self) -> str:
        """The one-word form of `testbed load --profile` (`parse_arg` reads it back)."""
        s, n = self.segments, _num
        if self.kind == "constant":
            return f"constant:rate={n(s[0].start_rps)},duration={n(s[0].duration_s)}"
        if self.kind == "steps":
            return "steps:" + ",".join(f"{n(x.start_rps)}@{n(x.duration_s)}" for x in s)
        if self.kind == "ramp":
            return f"ramp:from={n(s[0].start_rps)},to={n(s[0].end_rps)},duration={n(s[0].duration_s)}"
        return (
            f"spike:base={n(s[0].start_rps)},multiple={n(s[1].start_rps / s[0].start_rps)},"
            f"at={n(s[0].duration_s)},burst={n(s[1].duration_s)},duration={n(self.duration_s)}"
        )

    def to_dict(self) -> dict[str, object]:
        """As written into result.json (`profile`)."""
        return {
            "kind": self.kind,
            "arg": self.to_arg(),
            "segments": [
                {"label": x.label, "duration_s": x.duration_s, "start_rps": x.start_rps, "end_rps": x.end_rps}
                for x in self.segments
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Profile:
        return parse_arg(str(data["arg"]))


def _num(x: float) -> str:
    """A number as short as `:g` writes it, but never rounded: a worker reads back the very same rates."""
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


_EXAMPLES = (
    "steps:100@5,200@5 | ramp:from=50,to=300,duration=20 | "
    "spike:base=100,multiple=3,at=10,burst=2,duration=30"
)


def _number(text: str, what: str, arg: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--profile {arg!r}: {what} {text!r} is not a number (e.g. {_EXAMPLES})") from None
    if not math.isfinite(value):
        raise UsageError(f"--profile {arg!r}: {what} must be a finite number, got {text!r}")
    return value


def _keys(body: str, wanted: tuple[str, ...], arg: str) -> dict[str, float]:
    pairs: dict[str, float] = {}
    for item in body.split(","):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in wanted:
            raise UsageError(
                f"--profile {arg!r}: {item!r} is not one of {'=, '.join(wanted)}= (e.g. {_EXAMPLES})"
            )
        pairs[key.strip()] = _number(value.strip(), key.strip(), arg)
    missing = [k for k in wanted if k not in pairs]
    if missing:
        raise UsageError(f"--profile {arg!r}: missing {', '.join(missing)} (e.g. {_EXAMPLES})")
    return pairs


def parse_arg(arg: str) -> Profile:
    """`KIND:...` (see the module docstring) into a Profile; a `UsageError` names what is wrong."""
    kind, sep, body = arg.partition(":")
    if not sep or kind not in PROFILE_KINDS or not body:
        raise UsageError(
            f"--profile {arg!r}: expected KIND:PARAMETERS with KIND one of {', '.join(PROFILE_KINDS)} "
            f"(e.g. {_EXAMPLES})"
        )
    if kind == "steps":
        steps = []
        for item in body.split(","):
            rate, at, seconds = item.partition("@")
            if not at:
                raise UsageError(f"--profile {arg!r}: step {item!r} is not RATE@SECONDS (e.g. 100@5)")
            steps.append((_number(rate, "rate", arg), _number(seconds, "seconds", arg)))
        return Profile.steps(steps)
    if kind == "ramp":
        k = _keys(body, ("from", "to", "duration"), arg)
        return Profile.ramp(k["from"], k["to"], k["duration"])
    if kind == "spike":
        k = _keys(body, ("base", "multiple", "at", "burst", "duration"), arg)
        return Profile.spike(
            base_rps=k["base"],
            multiple=k["multiple"],
            at_s=k["at"],
            burst_s=k["burst"],
            duration_s=k["duration"],
        )
    k = _keys(body, ("rate", "duration"), arg)
    return Profile.constant(k["rate"], k["duration"])
