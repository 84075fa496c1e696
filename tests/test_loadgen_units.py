"""The load engine's pure parts: schedule, validation, merging, validity rules."""

from __future__ import annotations

import errno
import itertools
import os

import pytest

from testbed.errors import UsageError
from testbed.loadgen.config import LoadConfig, ValidityLimits, parse_header
from testbed.loadgen.result import (
    ShareResult,
    build_result,
    decode,
    encode,
    invalid_reasons,
    new_histogram,
    record,
)
from testbed.loadgen.schedule import intended_offsets, phase


def config(**overrides: object) -> LoadConfig:
    values: dict[str, object] = {
        "url": "http://127.0.0.1:9/",
        "rate": 100.0,
        "duration_s": 2.0,
        "warmup_s": 1.0,
    }
    values.update(overrides)
    return LoadConfig(**values)  # type: ignore[arg-type]


def test_uniform_schedule_is_exact_and_shares_interleave() -> None:
    whole = list(intended_offsets(rate=500, total_s=3.0, arrival="uniform"))
    assert len(whole) == 1500
    assert whole[:3] == [0.0, 0.002, 0.004]
    parts = [
        list(intended_offsets(rate=500, total_s=3.0, arrival="uniform", share=k, shares=3)) for k in range(3)
    ]
    assert sorted(itertools.chain(*parts)) == whole
    assert sum(1 for t in whole if t >= 1.0) == 1000


def test_poisson_schedule_has_the_rate_and_is_reproducible() -> None:
    a = list(intended_offsets(rate=1000, total_s=20.0, arrival="poisson", seed=7))
    b = list(intended_offsets(rate=1000, total_s=20.0, arrival="poisson", seed=7))
    assert a == b
    assert 19_000 < len(a) < 21_000  # 20,000 expected, sd about 141
    gaps = [y - x for x, y in itertools.pairwise(a)]
    assert abs(sum(gaps) / len(gaps) - 0.001) < 0.0001
    # Exponential gaps: the coefficient of variation is 1, far from a uniform schedule's 0.
    mean = sum(gaps) / len(gaps)
    sd = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
    assert 0.9 < sd / mean < 1.1
    other = list(intended_offsets(rate=1000, total_s=20.0, arrival="poisson", seed=7, share=1, shares=2))
    assert other != a[: len(other)]


def _parts(
    tail_s: float, *, rate: float, warmup_s: float, duration_s: float, arrival: str, share: int, shares: int
) -> dict[str, list[float]]:
    """The send offsets of one share with a tail, by `phase`, as the engine walks them."""
    offsets = intended_offsets(
        rate=rate,
        total_s=warmup_s + duration_s + tail_s,
        arrival=arrival,  # type: ignore[arg-type]
        share=share,
        shares=shares,
    )
    out: dict[str, list[float]] = {"warmup": [], "window": [], "tail": []}
    for offset in offsets:
        out[phase(offset, warmup_s=warmup_s, duration_s=duration_s)].append(offset)
    return out


@pytest.mark.parametrize("arrival", ["uniform", "poisson"])
@pytest.mark.parametrize(
    ("warmup_s", "duration_s", "rate"), [(1.0, 2.0, 500.0), (0.3, 1.0, 100.0), (0.0, 0.7, 30.0)]
)
def test_a_tail_sends_after_the_window_and_leaves_the_window_as_it_was(
    arrival: str, warmup_s: float, duration_s: float, rate: float
) -> None:
    """The engine's schedule with a tail: the same warm-up and window sends, then the tail's, not recorded."""
    for shares in (1, 3):
        for share in range(shares):
            trial = {"rate": rate, "warmup_s": warmup_s, "duration_s": duration_s, "arrival": arrival}
            without = _parts(0.0, **trial, share=share, shares=shares)  # type: ignore[arg-type]
            with_tail = _parts(2.0, **trial, share=share, shares=shares)  # type: ignore[arg-type]
            assert without["tail"] == []
            assert with_tail["warmup"] == without["warmup"] and with_tail["window"] == without["window"]
            assert with_tail["tail"] and min(with_tail["tail"]) >= warmup_s + duration_s
            assert max(with_tail["tail"]) < warmup_s + duration_s + 2.0
            if arrival == "uniform":
                assert len(with_tail["tail"]) == pytest.approx(2.0 * rate / shares, abs=1)
    whole = [phase(k / 100, warmup_s=1.0, duration_s=2.0) for k in range(500)]
    assert whole.count("warmup") == 100 and whole.count("window") == 200 and whole.count("tail") == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "ftp://x/"}, "not an http:// or https:// URL"),
        ({"url": "127.0.0.1:80"}, "not an http:// or https:// URL"),
        ({"url": "http://127.0.0.1:99999/"}, "invalid port"),
        ({"rate": 0.0}, "--rate must be positive"),
        ({"rate": -5.0}, "--rate must be positive"),
        ({"duration_s": 0.0}, "--duration must be positive"),
        ({"warmup_s": -1.0}, "--warmup"),
        ({"tail_s": -0.5}, "--tail must be zero or positive"),
        ({"connections": 0}, "--connections"),
        ({"processes": 0}, "--processes"),
        ({"arrival": "burst"}, "--arrival must be one of uniform, poisson"),
        ({"method": "GE T"}, "--method"),
    ],
)
def test_bad_configuration_names_the_option(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        config(**overrides)


def test_header_parsing() -> None:
    assert parse_header("X-Test: a:b ") == ("X-Test", "a:b")
    with pytest.raises(UsageError, match="--header 'nocolon'"):
        parse_header("nocolon")


def test_config_round_trips_through_json() -> None:
    original = config(
        headers=(("a", "b"),), limits=ValidityLimits(max_error_fraction=0.05), arrival="poisson"
    )
    assert LoadConfig.from_json(original.to_json()) == original


def test_validity_rules_give_reasons() -> None:
    c = config(rate=1000.0, duration_s=10.0)
    good = invalid_reasons(
        c, requests=10_000, scheduled=10_000, errors=0, lateness_p99_us=900, cpu_percent=50
    )
    assert good == []
    late = invalid_reasons(
        c, requests=10_000, scheduled=10_000, errors=0, lateness_p99_us=2500, cpu_percent=50
    )
    assert len(late) == 1 and "fell behind" in late[0] and "add --processes" in late[0]
    pool_bound = invalid_reasons(
        c,
        requests=10_000,
        scheduled=10_000,
        errors=0,
        lateness_p99_us=2500,
        cpu_percent=50,
        connection_waits=300,
    )
    assert len(pool_bound) == 1 and "300 of 10000 sends waited" in pool_bound[0]
    assert "raise --connections" in pool_bound[0]
    slow = invalid_reasons(c, requests=9_600, scheduled=10_000, errors=0, lateness_p99_us=900, cpu_percent=50)
    assert len(slow) == 1 and "under 97%" in slow[0]
    errors = invalid_reasons(
        c, requests=10_000, scheduled=10_000, errors=101, lateness_p99_us=0, cpu_percent=0
    )
    assert len(errors) == 1 and "errors 1.01%" in errors[0]
    cpu = invalid_reasons(c, requests=10_000, scheduled=10_000, errors=0, lateness_p99_us=0, cpu_percent=95)
    assert len(cpu) == 1 and "CPU" in cpu[0]


def share(index: int, values_us: list[int], *, errors: int = 0) -> ShareResult:
    hists = {name: new_histogram() for name in ("service", "intended", "lateness")}
    for v in values_us:
        record(hists["service"], v / 1e6)
        record(hists["intended"], (v + 100) / 1e6)
        record(hists["lateness"], 100 / 1e6)
    return ShareResult(
        share=index,
        scheduled=len(values_us) + errors,
        sent=len(values_us) + errors,
        completed=len(values_us) + errors,
        errors=errors,
        error_kinds={"HTTP 503": errors} if errors else {},
        hdr={name: encode(h) for name, h in hists.items()},
        cpu_percent=10.0 + index,
        window_s=1.0,
    )


def test_merge_is_exact() -> None:
    c = config(rate=2.0, duration_s=1.0)
    result = build_result(c, [share(0, [1000] * 99), share(1, [5000])], started_at="t", locust_version="x")
    assert result["requests"] == 100
    assert result["latency_us"]["service"]["count"] == 100
    assert decode(result["hdr"]["service"]).get_total_count() == 100
    assert result["latency_us"]["service"]["p50"] == 1000
    assert 4990 <= result["latency_us"]["service"]["max"] <= 5010
    assert result["loadgen"]["cpu_percent"] == 11.0
    assert result["schema"] == "testbed.load/2"


def test_values_out_of_range_are_clamped_not_dropped() -> None:
    h = new_histogram()
    record(h, 0.0)
    record(h, 3600.0)
    assert h.get_total_count() == 2


def test_error_kind_names_local_port_exhaustion() -> None:
    """A connect() that found no free local port is counted under a kind that says so, not as `OSError`."""
    from testbed.loadgen.engine import error_kind

    exhausted = OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
    assert error_kind(exhausted) == "EADDRNOTAVAIL (local ports exhausted)"
    # Any other error keeps its type's name, an OSError of another errno included.
    assert error_kind(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) == "ConnectionRefusedError"
    assert error_kind(OSError(errno.EMFILE, "too many open files")) == "OSError"
    assert error_kind(TimeoutError()) == "TimeoutError"
