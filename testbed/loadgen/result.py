"""The `testbed.load/1` result: merged histograms, percentiles in microseconds, validity with reasons."""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from testbed.loadgen.config import LoadConfig

#: Closed loop and `new_connection` only added fields (`load_model`, `null_reasons`) and made some null in
#: closed loop (each named with its reason in `null_reasons`): additive, so the schema stays at /1.
SCHEMA = "testbed.load/1"
HISTOGRAMS = ("service", "intended", "lateness")
#: What closed loop does not measure, and why (written into the result beside the nulls).
NO_SCHEDULE = (
    "closed loop: no schedule, each user sends when its previous answer arrives, so there is no intended "
    "send time to measure latency or lateness from"
)
_NOTHING_SCHEDULED = "closed loop: the users send back to back, nothing is scheduled (see achieved_rate)"
#: The fields that closed loop leaves null, each with why (`null_reasons` in the result).
CLOSED_NULLS = {
    "rate": _NOTHING_SCHEDULED,
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
) -> list[str]:
    """Every reason not to trust this trial, worded so that the user knows what to change."""
    limits = config.limits
    reasons: list[str] = []
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
                f"the generator fell behind: {late} (add --processes or --connections, or lower --rate)"
            )
    if scheduled and requests < limits.min_rate_fraction * scheduled:  # closed loop schedules nothing
        reasons.append(
            f"achieved rate {requests / config.duration_s:.1f} rps is under "
            f"{limits.min_rate_fraction:.0%} of the target {config.rate:g} rps "
            f"({requests} of {scheduled} scheduled requests completed)"
        )
    if requests and errors > limits.max_error_fraction * requests:
        reasons.append(f"errors {errors / requests:.2%} of requests exceed {limits.max_error_fraction:.2%}")
    if requests == 0:
        reasons.append("no request completed in the measured window")
    if cpu_percent > limits.max_cpu_percent:
        reasons.append(
            f"the generator's CPU was {cpu_percent:.0f}% > {limits.max_cpu_percent:g}% of a core "
            f"(add --processes, or lower {'--users' if config.loop == 'closed' else '--rate'})"
        )
    return reasons


def build_result(
    config: LoadConfig, shares: Sequence[ShareResult], *, started_at: str, locust_version: str
) -> dict[str, Any]:
    """Merge the shares into one `testbed.load/1` document."""
    closed = config.loop == "closed"
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
    reasons = invalid_reasons(
        config,
        requests=requests,
        scheduled=scheduled,
        errors=errors,
        lateness_p99_us=None if lateness is None else float(lateness["p99"]),
        cpu_percent=cpu,
        connection_waits=sum(s.connection_waits for s in shares),
    )
    recorded = int(service["count"]) + errors
    if recorded != requests:  # every completed request is either a latency sample or an error
        reasons.append(f"internal: {recorded} samples and errors for {requests} completed requests")
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
