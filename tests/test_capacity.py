"""`testbed capacity`: the pure search on fake targets, the verdict of a trial, and the real thing."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.capacity import (
    Objective,
    Policy,
    Probe,
    Verdict,
    classify,
    document,
    processes_for,
    search,
    summary,
)
from testbed.errors import UsageError
from testbed.loadgen.config import LoadConfig
from testbed.ports import free_port
from testbed.sut.nullserver import Behaviour, serve
from tests.conftest import NullServer, run_testbed
from tests.test_loadgen_cli import assert_one_line_error


def fake(verdict_at: Callable[[float, int], Verdict]) -> tuple[Callable[[float, str], Probe], list[Probe]]:
    """A probe function without network: `verdict_at(rate, how many times this rate was probed before)`."""
    seen: Counter[float] = Counter()
    probes: list[Probe] = []

    def probe(rate: float, phase: str) -> Probe:
        verdict = verdict_at(rate, seen[rate])
        seen[rate] += 1
        probes.append(Probe(rate=rate, phase=phase, verdict=verdict, p99_ms=1.0, achieved_rate=rate))
        return probes[-1]

    return probe, probes


def threshold(capacity: float, failure: Verdict = "slo") -> Callable[[float, int], Verdict]:
    return lambda rate, _: "pass" if rate <= capacity else failure


@pytest.mark.parametrize("capacity", [1234.0, 100.0, 37.0, 5000.0, 99_999.0])
def test_the_search_finds_the_threshold_within_the_resolution(capacity: float) -> None:
    policy = Policy(start_rate=100, max_rate=100_000, resolution=0.05, repeats=3)
    probe, probes = fake(threshold(capacity))
    outcome = search(probe, policy)
    assert outcome.max_rate_rps is not None
    assert capacity / 1.05 <= outcome.max_rate_rps <= capacity
    assert outcome.limited_by == "target"
    assert outcome.probes == tuple(probes)
    confirm = [p for p in probes if p.phase == "confirm"]
    assert [p.rate for p in confirm] == [outcome.max_rate_rps] * 3
    # No rate is probed in the step or bisection phase twice: every probe narrows the bracket.
    searched = [p.rate for p in probes if p.phase != "confirm"]
    assert len(searched) == len(set(searched))
    doc = document(
        outcome,
        Objective(slo_p99_ms=5),
        policy,
        LoadConfig(url="http://x/", rate=1, duration_s=1, warmup_s=0),
        started_at="t",
    )
    assert doc["schema"] == "testbed.capacity/1"
    assert doc["max_rate_rps"] == outcome.max_rate_rps
    assert doc["confirmation"] == {"rate": outcome.max_rate_rps, "passed": 3, "of": 3}
    assert [p["rate"] for p in doc["points"]] == sorted(p.rate for p in probes)
    assert {p["failed_by"] for p in doc["probes"] if p["verdict"] == "fail"} == {"slo"}


def test_the_answer_steps_down_when_its_repeats_fail() -> None:
    """A rate that passes once by luck (the bisection keeps the luckiest pass) is not the answer."""

    def lucky(rate: float, before: int) -> Verdict:
        if rate <= 100:
            return "pass"
        return "pass" if rate <= 110 and before == 0 else "slo"

    probe, probes = fake(lucky)
    outcome = search(probe, Policy(start_rate=50, resolution=0.02, repeats=3))
    assert outcome.max_rate_rps is not None
    assert 100 / 1.02 / 1.02 <= outcome.max_rate_rps <= 100
    refuted = Counter(p.rate for p in probes if p.phase == "confirm" and p.rate > 100)
    assert refuted and set(refuted.values()) == {3}  # each had its repeats, and stepped down
    for rate in refuted:
        assert sum(p.passed for p in probes if p.phase == "confirm" and p.rate == rate) < 2
    assert [p.passed for p in probes[-3:]] == [True] * 3
    assert outcome.limited_by == "target"


def test_a_majority_of_the_repeats_is_enough() -> None:
    flaky = iter(["pass", "slo", "pass"])

    def verdict(rate: float, before: int) -> Verdict:
        if rate > 200:
            return "slo"
        return next(flaky) if rate == 200 and before >= 1 else "pass"  # type: ignore[return-value]

    probe, _ = fake(verdict)
    outcome = search(probe, Policy(start_rate=100, repeats=3))
    assert outcome.max_rate_rps == 200


def test_a_generator_that_falls_behind_is_named_the_limit() -> None:
    def verdict(rate: float, _: int) -> Verdict:
        if rate > 2000:
            return "generator"  # one process sends no faster
        return "pass" if rate <= 10_000 else "slo"

    probe, _ = fake(verdict)
    policy = Policy(start_rate=100, resolution=0.05)
    outcome = search(probe, policy)
    assert outcome.max_rate_rps is not None and 2000 / 1.05 <= outcome.max_rate_rps <= 2000
    assert outcome.limited_by == "generator"
    template = LoadConfig(url="http://x/", rate=1, duration_s=1, warmup_s=0, processes=1)
    text = summary(outcome, Objective(slo_p99_ms=5), template)
    assert "the generator, not the target" in text and "--processes" in text
    # The same search against a target that saturates first is the target's limit.
    probe, _ = fake(threshold(1500))
    assert search(probe, policy).limited_by == "target"


def test_no_rate_meets_the_objective() -> None:
    probe, probes = fake(threshold(0.1))
    outcome = search(probe, Policy(start_rate=100, min_rate=1))
    assert outcome.max_rate_rps is None
    assert [p.rate for p in probes] == [100, 50, 25, 12.5, 6.25, 3.125, 1.5625]
    assert outcome.limited_by == "target"


def test_a_target_faster_than_max_rate_is_capped_and_said_so() -> None:
    probe, probes = fake(threshold(1e9))
    outcome = search(probe, Policy(start_rate=100, max_rate=1000))
    assert outcome.max_rate_rps == 1000
    assert [p.rate for p in probes] == [100, 200, 400, 800, 1000, 1000, 1000, 1000]
    assert outcome.limited_by == "max-rate"


def test_starting_above_the_capacity_halves_then_bisects() -> None:
    probe, probes = fake(threshold(300))
    outcome = search(probe, Policy(start_rate=1000))
    assert [p.rate for p in probes[:3]] == [1000, 500, 250]
    assert outcome.max_rate_rps is not None and 300 / 1.05 <= outcome.max_rate_rps <= 300


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ({"start_rate": 0}, "--start-rate must be positive"),
        ({"start_rate": 100, "max_rate": 50}, "--max-rate 50 is under --start-rate 100"),
        ({"resolution": 0}, "--resolution"),
        ({"repeats": 0}, "--repeats must be at least 1"),
    ],
)
def test_a_bad_policy_is_a_usage_error(policy: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        Policy(**policy)


def load_result(**changes: Any) -> dict[str, Any]:
    """A `testbed.load/1` result, shaped like `testbed.loadgen.result.build_result`'s, in microseconds."""
    result: dict[str, Any] = {
        "requests": 1000,
        "scheduled": 1000,
        "errors": 0,
        "valid": True,
        "invalid_reasons": [],
        "latency_us": {
            "service": {"p50": 1000, "p99": 4000},
            "intended": {"p50": 1100, "p99": 4500},
            "lateness": {"p50": 100, "p99": 500},
        },
        "loadgen": {"cpu_percent": 20.0, "connection_waits": 0},
    }
    for key, value in changes.items():
        if key in ("service_p99", "lateness_p99"):
            result["latency_us"][key.split("_")[0]]["p99"] = value
        elif key in ("cpu_percent", "connection_waits"):
            result["loadgen"][key] = value
        else:
            result[key] = value
    return result


CONFIG = LoadConfig(url="http://127.0.0.1:1/", rate=100, duration_s=10, warmup_s=1)
LATE = ["the generator fell behind: send lateness p99 9.00 ms > 2 ms"]


@pytest.mark.parametrize(
    ("changes", "verdict", "fragment"),
    [
        ({}, "pass", "service p99 4.00 ms <= 5 ms"),
        ({"service_p99": 6000}, "slo", "service p99 6.00 ms > 5 ms"),
        ({"errors": 20, "valid": False}, "errors", "errors 2.00% > 1.00%"),
        ({"requests": 0, "valid": False}, "errors", "no request completed"),
        # A late sender with free connections: its own fault, even when the latency is over the objective.
        (
            {"lateness_p99": 9000, "service_p99": 9000, "valid": False, "invalid_reasons": LATE},
            "generator",
            "late",
        ),
        ({"cpu_percent": 95.0, "valid": False}, "generator", "95% of a core"),
        # Every connection busy: the target holds them; a queue over the objective is the target's.
        (
            {"lateness_p99": 90_000, "connection_waits": 500, "service_p99": 160_000, "valid": False},
            "slo",
            "160.00 ms > 5 ms",
        ),
        # ... and within the objective, too few connections for the rate: the generator's setting.
        (
            {"lateness_p99": 9000, "connection_waits": 500, "valid": False, "invalid_reasons": LATE},
            "generator",
            "raise --connections",
        ),
    ],
)
def test_the_verdict_of_a_trial(changes: dict[str, Any], verdict: str, fragment: str) -> None:
    got, reason = classify(load_result(**changes), Objective(slo_p99_ms=5), CONFIG)
    assert got == verdict
    assert fragment in reason


def test_the_serial_server_serves_one_request_at_a_time() -> None:
    """--serial: each request ends one service time after the one before it, however many arrive."""
    server = serve("127.0.0.1", 0, Behaviour(delay_s=0.01, serial=True))
    try:
        ends = [server.next_turn(0.01) for _ in range(5)]  # five arrivals at once
        assert ends == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05], abs=0.002)
        time.sleep(0.06)
        assert server.next_turn(0.01) == pytest.approx(0.01, abs=0.002)  # idle again: no queue
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--slo-p99-ms", "0"], ["--slo-p99-ms must be positive"]),
        (["--slo-p99-ms", "5", "--start-rate", "200", "--max-rate", "100"], ["--max-rate 100 is under"]),
        (["--slo-p99-ms", "5", "--repeats", "0"], ["--repeats must be at least 1"]),
        (["--slo-p99-ms", "5", "--duration", "0"], ["--duration must be positive"]),
        ([], ["--slo-p99-ms"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(run_testbed("capacity", "http://127.0.0.1:1/", *args), *fragments)


def test_an_unreachable_target_is_refused_before_any_probe() -> None:
    proc = run_testbed("capacity", f"http://127.0.0.1:{free_port()}/", "--slo-p99-ms", "5")
    assert_one_line_error(proc, "cannot reach")


@pytest.mark.slow
def test_capacity_of_the_serial_calibration_server(
    null_server: Callable[..., NullServer], tmp_path: Path
) -> None:
    """One request at a time for 10 ms: capacity exactly 100 rps, found within 10%.

    Just above capacity the queue grows by (rate - 100) requests a second, 10 ms each: at 102 rps a
    2.5 s probe ends 50 ms behind, well over a 20 ms objective; below capacity there is no queue.
    """
    server = null_server("--delay-ms", "10", "--serial")
    started = time.monotonic()
    proc = run_testbed(
        "capacity", server.url, "--slo-p99-ms", "20", "--start-rate", "30", "--max-rate", "1000",
        "--duration", "2", "--warmup", "0.5", "--repeats", "3",
        # The host's own wake-up latency under the other tests' load, not the target, is at stake here.
        "--max-lateness-ms", "5",
        "--out", str(tmp_path),
        timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "capacity.json").read_text())
    assert doc["schema"] == "testbed.capacity/1"
    assert doc["max_rate_rps"] == pytest.approx(100, rel=0.10), proc.stderr
    assert doc["limited_by"] == "target"
    assert doc["confirmation"]["passed"] * 2 > doc["confirmation"]["of"] == 3
    fails = [p for p in doc["probes"] if p["verdict"] == "fail"]
    assert fails and all(p["failed_by"] == "slo" and p["rate"] > 95 for p in fails)
    for p in doc["probes"]:
        assert (tmp_path / p["result"]).is_file()
        # --processes auto (the default): as many engine processes as the probe's rate needs.
        ran = json.loads((tmp_path / p["result"]).read_text())["loadgen"]["processes"]
        assert ran == processes_for(p["rate"])
    assert doc["search"]["processes"].startswith("auto: 1 per 1000 rps")
    print(f"max_rate_rps {doc['max_rate_rps']} in {time.monotonic() - started:.0f} s")


def test_auto_processes_follow_the_rate_up_to_the_cores() -> None:
    assert [processes_for(r, cores=4) for r in (50, 1000, 1001, 2500, 9000)] == [1, 1, 2, 3, 4]
    assert processes_for(5000, cores=1) == 1


def test_processes_must_be_a_number_or_auto() -> None:
    proc = run_testbed("capacity", "http://127.0.0.1:9/", "--slo-p99-ms", "5", "--processes", "many")
    assert_one_line_error(proc, "--processes must be a number of processes or auto")
