"""The load engine's configuration: validated early, frozen, and shipped as JSON to worker processes."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from testbed.errors import UsageError
from testbed.loadgen.profile import Profile, parse_arg

Arrival = Literal["uniform", "poisson"]
ARRIVALS: tuple[Arrival, ...] = ("uniform", "poisson")
#: `open`: sends at intended times whatever the responses do (the default, methodology.md). `closed`: the
#: publishers' method (LiveWyer ran `oha`), each user sends its next request when the previous one is
#: answered, so the rate is whatever the system allows and stalls hide (coordinated omission).
Loop = Literal["open", "closed"]
LOOPS: tuple[Loop, ...] = ("open", "closed")


@dataclass(frozen=True, kw_only=True)
class ValidityLimits:
    """When a trial is not to be trusted (see methodology.md: a generator that falls behind lies)."""

    max_lateness_p99_ms: float = 2.0
    min_rate_fraction: float = 0.97
    max_error_fraction: float = 0.01
    max_cpu_percent: float = 90.0


@dataclass(frozen=True, kw_only=True)
class LoadConfig:
    """One trial: what to send, how fast, and for how long."""

    url: str
    rate: float = 0.0  # open loop: requests per second; closed loop: 0 (the users set the load)
    duration_s: float
    warmup_s: float
    #: Seconds the load goes on at the same rate after the measured window, not recorded: a platform that
    #: reads its counters only when it sees the window's end mark (kind, over `docker exec`) then reads them
    #: under the same load as inside the window, not as it drains (`testbed.kube.trial.LOAD_TAIL_S`).
    tail_s: float = 0.0
    connections: int = 16
    processes: int = 1
    arrival: Arrival = "uniform"
    method: str = "GET"
    body_bytes: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 10.0
    seed: int = 1
    loop: Loop = "open"
    users: int = 0  # closed loop: concurrent users, each sending back to back (no think time)
    #: Every request on a fresh TCP connection, closed after its response (a generator without keep-alive,
    #: as `oha --disable-keepalive`): the handshake is then part of every request's latency.
    new_connection: bool = False
    #: The open-loop rate over the window (`testbed.loadgen.profile`); None: `rate` for the whole window.
    #: With one, `rate` is its peak and `duration_s` its length (checked), the warm-up runs at its first
    #: rate and the tail at its last.
    profile: Profile | None = None
    limits: ValidityLimits = field(default_factory=ValidityLimits)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def base_url(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def path(self) -> str:
        parts = urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    @property
    def shape(self) -> Profile | None:
        """The rate over the window, a constant one when no profile is given; None in closed loop."""
        if self.loop == "closed":
            return None
        return self.profile or Profile.constant(self.rate, self.duration_s)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["profile"] = None if self.profile is None else self.profile.to_arg()  # `parse_arg` reads it
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> LoadConfig:
        data: dict[str, Any] = json.loads(text)
        data["headers"] = tuple(tuple(h) for h in data["headers"])
        data["limits"] = ValidityLimits(**data["limits"])
        data["profile"] = None if data.get("profile") is None else parse_arg(data["profile"])
        return cls(**data)


def validate(config: LoadConfig) -> None:
    """Raise `UsageError` naming the first bad value and how to fix it."""
    parts = urlsplit(config.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"URL {config.url!r} is not an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/"
        )
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise UsageError(f"URL {config.url!r} has an invalid port") from None
    if config.loop not in LOOPS:
        raise UsageError(f"--loop must be one of {', '.join(LOOPS)}, got {config.loop!r}")
    closed = config.loop == "closed"
    if config.profile is not None:
        _validate_profile(config, config.profile)
    if closed:
        _validate_closed(config)
    elif config.users:
        raise UsageError(
            f"--users {config.users} applies to --loop closed only (open loop: --rate and --connections)"
        )
    checks: list[tuple[bool, str]] = [
        (closed or config.rate > 0, f"--rate must be positive (requests per second), got {config.rate:g}"),
        (config.duration_s > 0, f"--duration must be positive (seconds), got {config.duration_s:g}"),
        (config.warmup_s >= 0, f"--warmup must be zero or positive (seconds), got {config.warmup_s:g}"),
        (config.tail_s >= 0, f"--tail must be zero or positive (seconds), got {config.tail_s:g}"),
        (config.connections >= 1, f"--connections must be at least 1, got {config.connections}"),
        (config.processes >= 1, f"--processes must be at least 1, got {config.processes}"),
        (
            config.arrival in ARRIVALS,
            f"--arrival must be one of {', '.join(ARRIVALS)}, got {config.arrival!r}",
        ),
        (config.body_bytes >= 0, f"--body-bytes must be zero or positive, got {config.body_bytes}"),
        (config.timeout_s > 0, f"--timeout must be positive (seconds), got {config.timeout_s:g}"),
        (
            config.method.isalpha(),
            f"--method must be an HTTP method such as GET or POST, got {config.method!r}",
        ),
        (
            config.limits.max_lateness_p99_ms > 0,
            f"--max-lateness-ms must be positive, got {config.limits.max_lateness_p99_ms:g}",
        ),
        (
            0 <= config.limits.max_error_fraction <= 1,
            f"--max-error-rate must be a fraction between 0 and 1, got {config.limits.max_error_fraction:g}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if not closed and config.rate * config.duration_s < 1:
        raise UsageError(
            f"--rate {config.rate:g} for --duration {config.duration_s:g} s sends no request: raise either"
        )


def _validate_profile(config: LoadConfig, profile: Profile) -> None:
    arg = profile.to_arg()
    if config.loop == "closed":
        raise UsageError(
            f"--profile {arg} is an open-loop rate over time: not with --loop closed (drop one of them)"
        )
    # Close, not equal: the window's length is a sum of the segments' (floating point).
    if not math.isclose(config.rate, profile.peak_rps, rel_tol=1e-9):
        raise UsageError(
            f"--rate {config.rate:g} does not match --profile {arg}, whose peak is {profile.peak_rps:g} rps "
            "(drop --rate: the profile sets the rates)"
        )
    if not math.isclose(config.duration_s, profile.duration_s, rel_tol=1e-9):
        raise UsageError(
            f"--duration {config.duration_s:g} does not match --profile {arg}, which lasts "
            f"{profile.duration_s:g} s (drop --duration: the profile sets the window)"
        )


def _validate_closed(config: LoadConfig) -> None:
    if config.users < 1:
        raise UsageError(f"--loop closed needs --users N, at least 1 (concurrent users), got {config.users}")
    if config.rate:
        raise UsageError(
            "--rate does not apply to --loop closed: each user sends as soon as its previous answer "
            "arrives, and the rate is what they achieve (drop --rate)"
        )
    if config.users < config.processes:
        raise UsageError(
            f"--users {config.users} is fewer than --processes {config.processes}: each process runs "
            "at least one user"
        )


def parse_header(text: str) -> tuple[str, str]:
    """`K:V` from the command line into a header pair."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"--header {text!r} has no 'Name: value' form: write it as --header 'X-Name: value'")
    return name.strip(), value.strip()
