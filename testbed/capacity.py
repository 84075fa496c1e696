"""`testbed capacity`: the highest open-loop rate whose service p99 meets an objective, found by real trials.

The search is pure (`start`, `advance`: a state and a verdict in, the next state out; `limited_by`): rates
double from `start_rate` until one fails (or halve until one passes), then bisection between the last pass
and the first fail until they are within `resolution` of each other, then `repeats` fresh trials at the
answer: it holds when most of them pass, else the answer steps down by `resolution` and is tried again.
The bisection's last pass is the luckiest of its neighbours (the winner's curse), which is why the repeats
are new trials and the pass that chose the rate is not counted among them.

Each probe is a real `testbed load` trial in a child process, as the local platform runs one: the engine
keeps per-process state (Locust's runner, the `testbed_go` message it waits for once per process) and
monkey-patches whatever imports it with gevent, so one process per trial is what keeps each probe as
honest as a trial the user runs by hand; the generator's CPU and lateness are then those of the trial
alone. A probe passes when its service p99 meets the objective, its error rate is within the limit and
the generator kept up (the engine's validity); a probe whose generator fell behind fails as `generator`,
and when those are the failures that bound the answer, the document says that the generator, not the
target, was the limit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from testbed import __version__, proc
from testbed.errors import TestbedError, UsageError
from testbed.loadgen.config import LoadConfig
from testbed.spec.trials import load_argv

SCHEMA = "testbed.capacity/1"

#: `failed`: the trial itself failed (a process died, a pod restarted: `TrialFailed`), in `testbed run` only.
Verdict = Literal["pass", "slo", "errors", "generator", "failed"]
Phase = Literal["step", "bisect", "confirm", "done"]

#: Quiet time after a failed probe: a target left with a queue by an overload drains before the next probe.
PAUSE_AFTER_FAIL_S = 1.0
#: `--processes auto`: one engine process per this many rps of a probe (methodology.md: about 2k rps per
#: process with nothing beside it; half of that keeps each one well on schedule), at most one per core.
AUTO_RPS_PER_PROCESS = 1000.0


def processes_for(rate: float, cores: int | None = None) -> int:
    """The engine processes a probe at `rate` gets with `--processes auto`."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(cores, math.ceil(rate / AUTO_RPS_PER_PROCESS)))


@dataclass(frozen=True, kw_only=True)
class Objective:
    """What a rate must meet: service latency p99 and error rate."""

    slo_p99_ms: float
    max_error_rate: float = 0.01


@dataclass(frozen=True, kw_only=True)
class Policy:
    """How the search walks the rates."""

    start_rate: float = 100.0
    max_rate: float = 100_000.0
    resolution: float = 0.05  # bisection stops when the fail is within 5% above the pass
    repeats: int = 3  # fresh trials at the answer; most must pass
    min_rate: float = 1.0  # below this the search gives up: no rate meets the objective

    def __post_init__(self) -> None:
        checks = [
            (self.start_rate > 0, f"--start-rate must be positive, got {self.start_rate:g}"),
            (
                self.max_rate >= self.start_rate,
                f"--max-rate {self.max_rate:g} is under --start-rate {self.start_rate:g}",
            ),
            (0 < self.resolution < 1, f"--resolution must be a fraction in (0, 1), got {self.resolution:g}"),
            (self.repeats >= 1, f"--repeats must be at least 1, got {self.repeats}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


@dataclass(frozen=True, kw_only=True)
class State:
    """Where the search is: the next rate to probe and why, or (phase `done`) the answer."""

    phase: Phase
    rate: float  # the next probe's rate; when done, the answer (0 when no rate met the objective)
    lo: float | None = None  # highest rate that passed and is not refuted
    hi: float | None = None  # lowest rate that failed
    confirmed: tuple[bool, ...] = ()  # the repeats at `rate` so far

    @property
    def answer(self) -> float | None:
        return (self.rate or None) if self.phase == "done" else None


def start(policy: Policy) -> State:
    return State(phase="step", rate=policy.start_rate)


def advance(state: State, passed: bool, policy: Policy) -> State:
    """The next state after a probe at `state.rate` passed or failed."""
    if state.phase == "step":
        return _after_step(state, passed, policy)
    if state.phase == "bisect":
        assert state.lo is not None and state.hi is not None
        rate = state.rate
        return _bracket(rate, state.hi, policy) if passed else _bracket(state.lo, rate, policy)
    if state.phase == "confirm":
        return _after_confirm(state, passed, policy)
    raise ValueError(f"the search is over: {state}")


def _after_step(state: State, passed: bool, policy: Policy) -> State:
    """Double while passing (up to the cap), halve while failing, bisect once a pass and a fail are known."""
    rate = state.rate
    if passed:
        if state.hi is not None:  # stepping down found a pass under the first fail
            return _bracket(rate, state.hi, policy)
        if rate >= policy.max_rate:  # never failed up to the cap: confirm the cap
            return State(phase="confirm", rate=rate, lo=rate)
        return State(phase="step", rate=min(rate * 2, policy.max_rate), lo=rate)
    if state.lo is not None:
        return _bracket(state.lo, rate, policy)
    return _lower(rate / 2, state, "step", policy)


def _after_confirm(state: State, passed: bool, policy: Policy) -> State:
    """Done when most repeats pass; else the answer steps down by the resolution and is confirmed again."""
    confirmed = (*state.confirmed, passed)
    if len(confirmed) < policy.repeats:
        return dataclasses.replace(state, confirmed=confirmed)
    if sum(confirmed) * 2 > len(confirmed):
        return State(phase="done", rate=state.rate, lo=state.rate, hi=state.hi, confirmed=confirmed)
    # Rounded as the bisection's rates are: 0.1 rps is far below any resolution.
    return _lower(round(state.rate * (1 - policy.resolution), 1), state, "confirm", policy)


def _lower(rate: float, failed: State, phase: Phase, policy: Policy) -> State:
    """Probe a lower rate after `failed.rate` failed, or give up under the policy's minimum rate."""
    if rate < policy.min_rate:
        return State(phase="done", rate=0.0, hi=failed.rate)
    return State(phase=phase, rate=rate, hi=failed.rate)


def _bracket(lo: float, hi: float, policy: Policy) -> State:
    """Bisect while the fail is more than `resolution` above the pass, then confirm the pass."""
    if hi <= lo * (1 + policy.resolution):
        return State(phase="confirm", rate=lo, lo=lo, hi=hi)
    return State(phase="bisect", rate=round((lo + hi) / 2, 1), lo=lo, hi=hi)


@dataclass(frozen=True, kw_only=True)
class Probe:
    """One trial of the search: its rate, what it measured and its verdict."""

    rate: float
    phase: str
    verdict: Verdict
    reason: str = ""
    achieved_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    intended_p99_ms: float = 0.0
    error_rate: float = 0.0
    lateness_p99_ms: float = 0.0
    generator_cpu_percent: float = 0.0
    valid: bool = True
    invalid_reasons: tuple[str, ...] = ()
    result: str | None = None  # the trial's result.json, relative to the output directory

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["verdict"] = "pass" if self.passed else "fail"
        data["failed_by"] = None if self.passed else self.verdict
        data["invalid_reasons"] = list(self.invalid_reasons)
        return {k: data[k] for k in ("rate", "phase", "verdict", "failed_by", "reason", *_MEASURED)}


_MEASURED = (
    "achieved_rate",
    "p50_ms",
    "p99_ms",
    "intended_p99_ms",
    "error_rate",
    "lateness_p99_ms",
    "generator_cpu_percent",
    "valid",
    "invalid_reasons",
    "result",
)


def classify(result: Mapping[str, Any], objective: Objective, config: LoadConfig) -> tuple[Verdict, str]:
    """The verdict of one `testbed.load/2` result, and why."""
    limits = config.limits
    lat = result["latency_us"]
    requests, errors, scheduled = result["requests"], result["errors"], result["scheduled"]
    lateness_ms = lat["lateness"]["p99"] / 1000
    cpu = result["loadgen"]["cpu_percent"]
    waits = result["loadgen"].get("connection_waits", 0)
    p99_ms = lat["service"]["p99"] / 1000
    pool_full = scheduled > 0 and waits > 0.01 * scheduled
    late = f"lateness p99 {lateness_ms:.2f} ms > {limits.max_lateness_p99_ms:g} ms"
    # In this order, the first that holds: a sender that was late with free connections, or a busy core,
    # is the generator's own fault, and its latencies are not to be trusted either, so it comes first.
    # Every connection busy is the target holding them (Little's law): a queue, judged by the objective.
    checks: list[tuple[bool, Verdict, str]] = [
        (
            cpu > limits.max_cpu_percent,
            "generator",
            f"the generator used {cpu:.0f}% of a core (add --processes)",
        ),
        (
            lateness_ms > limits.max_lateness_p99_ms and not pool_full,
            "generator",
            f"the generator sent late: {late} (add --processes)",
        ),
        (requests == 0, "errors", "no request completed"),
        (
            errors > objective.max_error_rate * requests,
            "errors",
            f"errors {errors / max(requests, 1):.2%} > {objective.max_error_rate:.2%}",
        ),
        (p99_ms > objective.slo_p99_ms, "slo", f"service p99 {p99_ms:.2f} ms > {objective.slo_p99_ms:g} ms"),
        # Within the objective, but the rate was not delivered as scheduled.
        (not result["valid"], "generator", _invalid_reason(result["invalid_reasons"], pool_full)),
    ]
    for holds, verdict, reason in checks:
        if holds:
            return verdict, reason
    return "pass", f"service p99 {p99_ms:.2f} ms <= {objective.slo_p99_ms:g} ms"


def _invalid_reason(reasons: Sequence[str], pool_full: bool) -> str:
    """Why the engine called the trial invalid, with the remedy when every connection was busy (said once:
    the engine's own reason may say it already)."""
    text = "; ".join(reasons)
    hint = "(raise --connections)"
    return f"{text} {hint}" if pool_full and hint not in text else text


def probe_from_result(
    rate: float, phase: str, result: Mapping[str, Any], objective: Objective, config: LoadConfig
) -> Probe:
    verdict, reason = classify(result, objective, config)
    lat = result["latency_us"]
    requests = result["requests"]
    return Probe(
        rate=rate,
        phase=phase,
        verdict=verdict,
        reason=reason,
        achieved_rate=result["achieved_rate"],
        p50_ms=lat["service"]["p50"] / 1000,
        p99_ms=lat["service"]["p99"] / 1000,
        intended_p99_ms=lat["intended"]["p99"] / 1000,
        error_rate=round(result["errors"] / requests, 5) if requests else 0.0,
        lateness_p99_ms=lat["lateness"]["p99"] / 1000,
        generator_cpu_percent=result["loadgen"]["cpu_percent"],
        valid=result["valid"],
        invalid_reasons=tuple(result["invalid_reasons"]),
    )


def failed_probe(rate: float, phase: str, cause: str) -> Probe:
    """A probe whose trial failed (`TrialFailed` in `testbed run`): it fails, with its cause, and measured
    nothing; a target that falls over at a rate does not sustain it."""
    return Probe(rate=rate, phase=phase, verdict="failed", reason=cause, valid=False)


def expected_probes(policy: Policy) -> int:
    """A guess of a whole search's probes, before any is run (a progress display's total, never a plan):
    a few steps, a bisection of one doubling down to the resolution, and the repeats."""
    return 4 + math.ceil(math.log2(1 / policy.resolution)) + policy.repeats


def remaining(state: State, policy: Policy) -> int:
    """How many more probes the search needs at least if nothing it has not seen yet fails (a guess too:
    a failed repeat steps the answer down and confirms again)."""
    if state.phase == "done":
        return 0
    if state.phase == "confirm":
        return policy.repeats - len(state.confirmed)
    if state.phase == "bisect" and state.lo and state.hi:
        return max(1, math.ceil(math.log2((state.hi - state.lo) / (state.lo * policy.resolution)))) + (
            policy.repeats
        )
    return 1 + math.ceil(math.log2(1 / policy.resolution)) + policy.repeats


def limited_by(probes: Sequence[Probe], answer: float | None) -> str:
    """`target` or `generator`: what failed the probes that bound the answer; `max-rate` when none did."""
    above = [p for p in probes if not p.passed and (answer is None or p.rate > answer)]
    if not above:
        return "max-rate"
    lowest = min(p.rate for p in above)
    bounding = [p for p in above if p.rate == lowest]
    generator = sum(p.verdict == "generator" for p in bounding)
    return "generator" if generator * 2 > len(bounding) else "target"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    max_rate_rps: float | None
    probes: tuple[Probe, ...]
    limited_by: str


def search(run_probe: Callable[[float, str], Probe], policy: Policy) -> Outcome:
    """Probe rate after rate until the search is done (`run_probe(rate, phase)` runs one trial)."""
    state = start(policy)
    probes: list[Probe] = []
    while state.phase != "done":
        probe = run_probe(state.rate, state.phase)
        probes.append(probe)
        state = advance(state, probe.passed, policy)
    return Outcome(
        max_rate_rps=state.answer, probes=tuple(probes), limited_by=limited_by(probes, state.answer)
    )


def run_probe(config: LoadConfig, directory: Path) -> dict[str, Any]:
    """One `testbed load` trial in a child process; its `testbed.load/2` result."""
    directory.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "testbed", "--quiet", *load_argv(config), "--out", str(directory)]
    log_path = directory / "loadgen.log"
    with log_path.open("wb") as log:
        child = proc.spawn(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        child.wait(timeout=config.warmup_s + config.duration_s + config.timeout_s + 90)
    except subprocess.TimeoutExpired:
        raise TestbedError(f"the load generator did not finish in time; see {log_path}") from None
    finally:
        proc.stop(child)
    result_path = directory / "result.json"
    if child.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise TestbedError(f"the load generator failed (exit code {child.returncode}): {' '.join(tail)}")
    data: dict[str, Any] = json.loads(result_path.read_text())
    return data


def measure(
    template: LoadConfig,
    objective: Objective,
    policy: Policy,
    out: Path | None,
    *,
    on_probe: Callable[[int, Probe], None] = lambda i, p: None,
    auto_processes: bool = False,
) -> dict[str, Any]:
    """Run the search with real trials; the `testbed.capacity/1` document (probes kept under `out`).

    `auto_processes`: each probe gets as many engine processes as its rate needs (`processes_for`)."""
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="testbed-capacity-") as scratch:
        root = out if out is not None else Path(scratch)
        count = 0

        def one(rate: float, phase: str) -> Probe:
            nonlocal count
            count += 1
            processes = processes_for(rate) if auto_processes else template.processes
            config = dataclasses.replace(template, rate=rate, processes=processes)
            relative = Path("probes") / f"{count:02d}-{phase}-{rate:g}rps"
            probe = probe_from_result(rate, phase, run_probe(config, root / relative), objective, config)
            probe = dataclasses.replace(probe, result=str(relative / "result.json") if out else None)
            on_probe(count, probe)
            if not probe.passed:
                time.sleep(PAUSE_AFTER_FAIL_S)
            return probe

        outcome = search(one, policy)
    found = document(outcome, objective, policy, template, started_at=started_at)
    if auto_processes:  # what each probe ran is in its own result (loadgen.processes)
        cores = os.cpu_count() or 1
        found["search"]["processes"] = f"auto: 1 per {AUTO_RPS_PER_PROCESS:g} rps, at most {cores} (cores)"
        if outcome.limited_by == "generator":
            found["note"] = found["note"].replace(
                f"(add --processes, now {template.processes})",
                f"(it already ran up to {cores} engine processes, one per core: run the generator on "
                "another machine, or with Locust's distributed mode on a cluster)",
            )
    return found


def document(
    outcome: Outcome,
    objective: Objective,
    policy: Policy,
    template: LoadConfig,
    *,
    started_at: str,
    probe: str = "testbed load in a child process",
) -> dict[str, Any]:
    """The `testbed.capacity/1` JSON document."""
    answer = outcome.max_rate_rps
    repeats = [p for p in outcome.probes if p.phase == "confirm" and p.rate == answer]
    return {
        "schema": SCHEMA,
        "target": template.url,
        "slo_p99_ms": objective.slo_p99_ms,
        "max_error_rate": objective.max_error_rate,
        "max_rate_rps": answer,
        "limited_by": outcome.limited_by,
        "note": summary(outcome, objective, template),
        "confirmation": {"rate": answer, "passed": sum(p.passed for p in repeats), "of": len(repeats)},
        "search": {
            "start_rate": policy.start_rate,
            "max_rate": policy.max_rate,
            "resolution": policy.resolution,
            "repeats": policy.repeats,
            "duration_s": template.duration_s,
            "warmup_s": template.warmup_s,
            "connections": template.connections,
            "processes": template.processes,
            "arrival": template.arrival,
            "max_lateness_ms": template.limits.max_lateness_p99_ms,
            "probe": probe,
        },
        "probes": [p.to_dict() for p in outcome.probes],
        # The latency/throughput curve: offered rate, achieved rate and service latency, by rate (a probe
        # whose trial failed measured nothing).
        "points": [
            {
                "rate": p.rate,
                "achieved_rate": p.achieved_rate,
                "p50_ms": p.p50_ms,
                "p99_ms": p.p99_ms,
                "verdict": p.to_dict()["verdict"],
            }
            for p in sorted(outcome.probes, key=lambda p: p.rate)
            if p.verdict != "failed"
        ],
        "testbed_version": __version__,
        "started_at": started_at,
        "ended_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def summary(outcome: Outcome, objective: Objective, template: LoadConfig) -> str:
    """One sentence: the answer and what limited it."""
    goal = f"service p99 <= {objective.slo_p99_ms:g} ms, errors <= {objective.max_error_rate:.2%}"
    if outcome.max_rate_rps is None:
        found = f"no rate met the objective ({goal})"
    else:
        found = f"max_rate_rps {outcome.max_rate_rps:g} ({goal})"
    if outcome.limited_by == "generator":
        return (
            f"{found}; the generator, not the target, was the limit: the failing probes fell behind, so "
            f"the target's capacity is at least this (add --processes, now {template.processes})"
        )
    if outcome.limited_by == "max-rate":
        return f"{found}; every probe up to --max-rate passed: raise --max-rate to find the limit"
    return f"{found}; limited by the target"
