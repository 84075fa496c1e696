"""The `testbed.load/2` result: merged histograms, percentiles in microseconds, validity with reasons.

/2 adds, for every trial, the `profile` (the rate over the window), a `series` per second and the
`segments` of the profile, each with its own histograms, counts and validity (`build_result`).
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from testbed.loadgen.config import LoadConfig
from testbed.loadgen.profile import Profile
from testbed.loadgen.schedule import due, intervals

#: /2: `profile`, `series` and `segments` (load profiles); `rate` is a profile's peak. Closed loop and
#: `new_connection` had only added fields to /1 (`load_model`, `null_reasons`).
SCHEMA = "testbed.load/2"
#: Every schema version the readers accept (a /1 file has no profile, series or segments).
READABLE_SCHEMAS = ("testbed.load/1", SCHEMA)
HISTOGRAMS = ("service", "intended", "lateness")
#: The series' histograms (lateness is judged per segment and over the window).
SERIES_HISTOGRAMS = ("service", "intended")
#: Seconds per point of the series.
SERIES_INTERVAL_S = 1.0
#: What closed loop does not measure, and why (written into the result beside the nulls).
NO_SCHEDULE = (
    "closed loop: no schedule, each user sends when its previous answer arrives, so there is no intended "
    "send time to measure latency or lateness from"
)
_NOTHING_SCHEDULED = "closed loop: the users send back to back, nothing is scheduled (see achieved_rate)"
#: The fields that closed loop leaves null, each with why (`null_reasons` in the result).
CLOSED_NULLS = {
    "rate": _NOTHING_SCHEDULED,
    "profile": _NOTHING_SCHEDULED,
    "scheduled": _NOTHING_SCHEDULED,
    "arrival": _NOTHING_SCHEDULED,
    **{f"{part}.{name}": NO_SCHEDULE for part in ("latency_us", "hdr") for name in ("intended", "lateness")},
}
CLOSED_LABEL = "closed loop (publisher's method)"

#: 1 us to 60 s at 3 significant digits: sub-millisecond mesh overheads stay visible.
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record(histogram: HdrHistogram, seconds: float) -> None:
    """Record a duration in microseconds, clamped into the histogram's range rather than dropped."""
    us = round(seconds * 1e6)
    histogram.record_value(min(max(us, LOWEST_US), HIGHEST_US))


def decode(encoded: str) -> HdrHistogram:
    return HdrHistogram.decode(encoded.encode("ascii"))


def encode(histogram: HdrHistogram) -> str:
    return histogram.encode().decode("ascii")  # type: ignore[no-any-return]


def merge(encoded: Sequence[str]) -> HdrHistogram:
    """Exact merge: the counts add up, no percentile is averaged."""
    total = new_histogram()
    for item in encoded:
        total.add(decode(item))
    return total


def summarize(histogram: HdrHistogram) -> dict[str, float | int]:
    """Percentiles in microseconds; zeros when empty (a trial with no success)."""
    count = histogram.get_total_count()
    if count == 0:
        return {"p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0, "mean": 0.0, "count": 0}
    return {
        "p50": histogram.get_value_at_percentile(50.0),
        "p90": histogram.get_value_at_percentile(90.0),
        "p99": histogram.get_value_at_percentile(99.0),
        "p999": histogram.get_value_at_percentile(99.9),
        "max": histogram.get_max_value(),
        "mean": round(histogram.get_mean_value(), 1),
        "count": count,
    }


@dataclass(frozen=True, kw_only=True)
class ShareResult:
    """What one engine process measured for its share of the rate (sent to the master as a dict)."""

    share: int
    scheduled: int  # measured-window slots this share was asked to send
    sent: int  # of those, sent before the window closed
    completed: int  # of those, finished (success or error) before the drain deadline
    errors: int
    error_kinds: Mapping[str, int]
    hdr: Mapping[str, str]
    cpu_percent: float
    window_s: float
    window_start_unix: float = 0.0  # wall-clock start of the measured window (after the warm-up)
    locust_requests: int = 0
    locust_failures: int = 0
    connection_waits: int = 0  # measured sends that found every connection busy and waited for one
    schedule_clock: str = "gevent"  # what woke the sender at the intended times: "timerfd" or "gevent"
    users: int = 0  # closed loop: this share's users
    #: One entry per interval of the window (`SERIES_INTERVAL_S`): scheduled, sent, completed, errors,
    #: hdr {service, intended}; empty from an engine without series.
    series: Sequence[Mapping[str, Any]] = ()
    #: One entry per profile segment (open loop): the same counts, connection_waits, cpu_percent and
    #: hdr {service, intended, lateness}.
    segments: Sequence[Mapping[str, Any]] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "scheduled": self.scheduled,
            "sent": self.sent,
            "completed": self.completed,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "hdr": dict(self.hdr),
            "cpu_percent": self.cpu_percent,
            "window_s": self.window_s,
            "window_start_unix": self.window_start_unix,
            "locust_requests": self.locust_requests,
            "locust_failures": self.locust_failures,
            "connection_waits": self.connection_waits,
            "schedule_clock": self.schedule_clock,
            "users": self.users,
            "series": [dict(x) for x in self.series],
            "segments": [dict(x) for x in self.segments],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShareResult:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def verdict(result: Mapping[str, Any]) -> str:
    """`valid`, or `INVALID: ` and every reason, for one-line summaries; a non-default load model says so."""
    text = "valid" if result["valid"] else "INVALID: " + "; ".join(result["invalid_reasons"])
    model = result.get("load_model") or {}  # absent from results written before it existed: open loop
    labels = []
    if model.get("loop") == "closed":
        labels.append(f"{CLOSED_LABEL}, {model.get('users')} users")
    if model.get("new_connection"):
        labels.append("a new connection per request")
    return "; ".join([text, *labels])


def load_model(config: LoadConfig) -> dict[str, Any]:
    """How the load was generated: `loop` open (the default) or closed, and the connections' use."""
    if config.loop == "closed":
        return {"loop": "closed", "users": config.users, "new_connection": config.new_connection}
    return {
        "loop": "open",
        "rate": config.rate,
        "arrival": config.arrival,
        "connections": config.connections,
        "new_connection": config.new_connection,
    }


def invalid_reasons(
    config: LoadConfig,
    *,
    requests: int,
    scheduled: int,
    errors: int,
    lateness_p99_us: float | None,
    cpu_percent: float,
    connection_waits: int = 0,
    seconds: float | None = None,
    target: str | None = None,
    where: str = "the measured window",
) -> list[str]:
    """Every reason not to trust this trial (or one segment of it), worded so that the user knows what
    to change. `seconds` and `target` (words, e.g. `100 rps`) describe the part judged: the window at
    `config.rate` unless given."""
    limits = config.limits
    reasons: list[str] = []
    profiled = config.profile is not None and config.profile.kind != "constant"
    rate_flag = "the profile's rates" if profiled else "--rate"
    # Closed loop (lateness_p99_us None) has no schedule: neither lateness nor a target rate to judge.
    if lateness_p99_us is not None and lateness_p99_us > limits.max_lateness_p99_ms * 1000:
        late = f"send lateness p99 {lateness_p99_us / 1000:.2f} ms > {limits.max_lateness_p99_ms:g} ms"
        if scheduled and connection_waits > 0.01 * scheduled:
            # Over 1% of the sends found all connections busy: the pool, not the sender, held them back.
            reasons.append(
                f"the generator fell behind: {late}; {connection_waits} of {scheduled} sends waited for "
                f"one of the {config.connections} connections, all busy (raise --connections)"
            )
        else:
            reasons.append(
                f"the generator fell behind: {late} (add --processes or --connections, or lower {rate_flag})"
            )
    if scheduled and requests < limits.min_rate_fraction * scheduled:  # closed loop schedules nothing
        seconds = config.duration_s if seconds is None else seconds
        target = f"{config.rate:g} rps" if target is None else target
        reasons.append(
            f"achieved rate {requests / seconds:.1f} rps is under "
            f"{limits.min_rate_fraction:.0%} of the target {target} "
            f"({requests} of {scheduled} scheduled requests completed)"
        )
    if requests and errors > limits.max_error_fraction * requests:
        reasons.append(f"errors {errors / requests:.2%} of requests exceed {limits.max_error_fraction:.2%}")
    if requests == 0:
        reasons.append(f"no request completed in {where}")
    if cpu_percent > limits.max_cpu_percent:
        lower = "--users" if config.loop == "closed" else rate_flag
        reasons.append(
            f"the generator's CPU was {cpu_percent:.0f}% > {limits.max_cpu_percent:g}% of a core "
            f"(add --processes, or lower {lower})"
        )
    return reasons


def _target(profile: Profile) -> str:
    """The target of the whole window, in words: the rate, or a profile's mean and shape."""
    if profile.kind == "constant":
        return f"{profile.peak_rps:g} rps"
    return f"{profile.mean_rps:.1f} rps on average ({profile.to_arg()})"


def _segment_target(start_rps: float, end_rps: float) -> str:
    return f"{start_rps:g} rps" if start_rps == end_rps else f"{start_rps:g} to {end_rps:g} rps"


_COUNTS = ("scheduled", "sent", "completed", "errors")


def _merged_parts(
    parts: Sequence[Sequence[Mapping[str, Any]]], length: int, names: Sequence[str]
) -> list[dict[str, Any]]:
    """Entry by entry, the shares' counts added and histograms merged exactly (absent entries: zero)."""
    out = []
    for i in range(length):
        items = [p[i] for p in parts if i < len(p)]
        entry: dict[str, Any] = {k: sum(int(x.get(k, 0)) for x in items) for k in _COUNTS}
        entry["connection_waits"] = sum(int(x.get("connection_waits", 0)) for x in items)
        entry["cpu_percent"] = max((float(x.get("cpu_percent", 0.0)) for x in items), default=0.0)
        entry["hdr"] = {name: encode(merge([x["hdr"][name] for x in items])) for name in names}
        out.append(entry)
    return out


def _series(config: LoadConfig, shares: Sequence[ShareResult]) -> dict[str, Any]:
    """The window second by second, each request in the interval of its intended send (open loop) or
    of its start (closed loop)."""
    profile, grid = config.shape, intervals(config.duration_s, SERIES_INTERVAL_S)
    merged = _merged_parts([s.series for s in shares], len(grid), SERIES_HISTOGRAMS)
    points = []
    for (start, end), part in zip(grid, merged, strict=True):
        hdr: dict[str, str | None] = dict(part["hdr"])
        if profile is None:
            hdr["intended"] = None
        length = end - start
        points.append(
            {
                "start_s": round(start, 6),
                "end_s": round(end, 6),
                "target_rps": None if profile is None else round(due(profile, start, end) / length, 3),
                "scheduled": None if profile is None else part["scheduled"],
                "sent": part["sent"],
                "completed": part["completed"],
                "errors": part["errors"],
                "achieved_rps": round(part["completed"] / length, 2),
                "service": summarize(decode(part["hdr"]["service"])),
                "intended": None if hdr["intended"] is None else summarize(decode(hdr["intended"])),
                "hdr": hdr,
            }
        )
    return {"interval_s": SERIES_INTERVAL_S, "points": points}


def _segments(
    config: LoadConfig, profile: Profile, shares: Sequence[ShareResult], window: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each profile segment with its own histograms, counts, generator CPU and validity."""
    if len(profile.segments) == 1:  # the window itself: no need for the shares to carry it twice
        parts = [window]
    else:
        parts = _merged_parts([s.segments for s in shares], len(profile.segments), HISTOGRAMS)
    out = []
    for (start, end), segment, part in zip(profile.bounds(), profile.segments, parts, strict=True):
        latency = {name: summarize(decode(part["hdr"][name])) for name in HISTOGRAMS}
        reasons = invalid_reasons(
            config,
            requests=part["completed"],
            scheduled=part["scheduled"],
            errors=part["errors"],
            lateness_p99_us=float(latency["lateness"]["p99"]),
            cpu_percent=part["cpu_percent"],
            connection_waits=part["connection_waits"],
            seconds=segment.duration_s,
            target=_segment_target(segment.start_rps, segment.end_rps),
            where="this segment",
        )
        out.append(
            {
                "label": segment.label,
                "start_s": round(start, 6),
                "end_s": round(end, 6),
                "start_rps": segment.start_rps,
                "end_rps": segment.end_rps,
                **{k: part[k] for k in _COUNTS},
                "achieved_rps": round(part["completed"] / segment.duration_s, 2),
                "cpu_percent": round(part["cpu_percent"], 1),
                "latency_us": latency,
                "hdr": dict(part["hdr"]),
                "valid": not reasons,
                "invalid_reasons": reasons,
            }
        )
    return out


def build_result(
    config: LoadConfig, shares: Sequence[ShareResult], *, started_at: str, locust_version: str
) -> dict[str, Any]:
    """Merge the shares into one `testbed.load/2` document."""
    closed = config.loop == "closed"
    profile = config.shape
    hdr: dict[str, str | None] = {name: encode(merge([s.hdr[name] for s in shares])) for name in HISTOGRAMS}
    latency: dict[str, dict[str, float | int] | None] = {
        name: summarize(decode(encoded)) for name, encoded in hdr.items() if encoded is not None
    }
    if closed:  # empty, and meaningless rather than zero: null, with the reason in `null_reasons`
        for name in ("intended", "lateness"):
            hdr[name] = latency[name] = None
    service, lateness = latency["service"], latency["lateness"]
    assert service is not None
    requests = sum(s.completed for s in shares)
    scheduled = sum(s.scheduled for s in shares)
    errors = sum(s.errors for s in shares)
    error_kinds: Counter[str] = Counter()
    for s in shares:
        error_kinds.update(s.error_kinds)
    cpu = max(s.cpu_percent for s in shares)
    waits = sum(s.connection_waits for s in shares)
    reasons = invalid_reasons(
        config,
        requests=requests,
        scheduled=scheduled,
        errors=errors,
        lateness_p99_us=None if lateness is None else float(lateness["p99"]),
        cpu_percent=cpu,
        connection_waits=waits,
        target=None if profile is None else _target(profile),
    )
    recorded = int(service["count"]) + errors
    if recorded != requests:  # every completed request is either a latency sample or an error
        reasons.append(f"internal: {recorded} samples and errors for {requests} completed requests")
    series = _series(config, shares)
    segments: list[dict[str, Any]] = []
    if profile is not None:
        window: dict[str, Any] = {"scheduled": scheduled, "sent": sum(s.sent for s in shares)}
        window["completed"] = requests
        window |= {"errors": errors, "connection_waits": waits, "cpu_percent": cpu}
        window["hdr"] = {name: merged for name, merged in hdr.items() if merged is not None}
        segments = _segments(config, profile, shares, window)
        if len(segments) > 1:  # one segment is the window: its reasons are the trial's already
            reasons += [f"{x['label']}: {r}" for x in segments for r in x["invalid_reasons"]]
        if sum(x["completed"] for x in segments) != requests:
            reasons.append("internal: the segments' completed requests do not add up to the window's")
    if any(s.series for s in shares) and sum(p["completed"] for p in series["points"]) != requests:
        reasons.append("internal: the series' completed requests do not add up to the window's")
    return {
        "schema": SCHEMA,
        "target": config.url,
        "rate": None if closed else config.rate,
        "duration_s": config.duration_s,
        "warmup_s": config.warmup_s,
        "tail_s": config.tail_s,  # sent after the window at the same rate, not recorded
        "arrival": None if closed else config.arrival,
        "connections": config.users if closed else config.connections,  # closed loop: one per user
        "method": config.method,
        "body_bytes": config.body_bytes,
        "load_model": load_model(config),
        "profile": None if profile is None else profile.to_dict(),
        "null_reasons": dict(CLOSED_NULLS) if closed else {},
        "requests": requests,
        "scheduled": None if closed else scheduled,
        "errors": errors,
        "error_kinds": dict(sorted(error_kinds.items())),
        "achieved_rate": round(requests / config.duration_s, 2),
        "valid": not reasons,
        "invalid_reasons": reasons,
        "latency_us": latency,
        "hdr": hdr,
        "series": series,
        "segments": segments,
        "loadgen": {
            "cpu_percent": round(cpu, 1),
            "cpu_percent_per_process": [round(s.cpu_percent, 1) for s in shares],
            "processes": len(shares),
            "users_per_process": [s.users for s in shares] if closed else None,
            "locust_version": locust_version,
            "python": platform.python_version(),
            "schedule_clock": sorted({s.schedule_clock for s in shares}),
            "connection_waits": sum(s.connection_waits for s in shares),
            # Locust's own counts, as a sanity check only: it rounds latencies to whole milliseconds.
            "locust_requests": sum(s.locust_requests for s in shares),
            "locust_failures": sum(s.locust_failures for s in shares),
        },
        "started_at": started_at,
        # Where the measured window lies in wall-clock time: resource samplers cut their series with it.
        "window_unix": [
            round(start := min(s.window_start_unix for s in shares), 3),
            round(start + config.duration_s, 3),
        ],
    }
