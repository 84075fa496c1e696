"""`testbed run`: the workflow of a whole run as small steps (plan, provision, load, record, report).

Every trial is written as soon as it is finished, so an interrupted or failed run keeps what it measured;
run.json says how the run ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform as host_platform
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable

from testbed import __version__, proc
from testbed.capacity import (
    PAUSE_AFTER_FAIL_S,
    Objective,
    Outcome,
    Policy,
    Probe,
    State,
    advance,
    document,
    expected_probes,
    failed_probe,
    limited_by,
    probe_from_result,
    remaining,
    start,
)
from testbed.errors import Interrupted, TestbedError, TrialFailed
from testbed.loadgen.config import LoadConfig
from testbed.loadgen.result import verdict
from testbed.platforms import Platform
from testbed.progress import Progress
from testbed.spec.scenario import CLOSED_LOOP_RATE, CapacitySpec, Scenario
from testbed.spec.topology import Topology
from testbed.spec.trials import Trial, load_config, plan_trials

RUN_SCHEMA = "testbed.run/1"
FAILED_SCHEMA = "testbed.failed-trial/1"
#: run.json `status` of a run that went to its end but with failed or skipped trials.
COMPLETE_WITH_FAILURES = "complete-with-failures"
#: The exit code of a run that ended `complete-with-failures` (0: complete; 1: error; 2: usage; 130: Ctrl-C).
EXIT_WITH_FAILURES = 3
#: A mesh's remaining trials are skipped after this many consecutive failed trials (`--max-failures`).
DEFAULT_MAX_FAILURES = 2


@runtime_checkable
class KeepsClusters(Protocol):
    """A platform that keeps something up across trials (a kind cluster per mesh) until the run ends."""

    #: Run each mesh's trials in one block (one cluster at a time) rather than alternated.
    one_mesh_at_a_time: bool

    def session(self, run_dir: Path) -> AbstractContextManager[None]: ...

    def release(self, mesh: str) -> None:
        """The mesh's last trial is done: tear its cluster down now (unless --keep)."""


@runtime_checkable
class DescribesPlan(Protocol):
    """A platform that can print every command and file of a run without running it (`--dry-run`)."""

    def describe(
        self, topology: Topology, scenario: Scenario, trials: Sequence[Trial], run_dir: Path
    ) -> str: ...


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    platform: Platform
    meshes: tuple[str, ...]
    scenario: Scenario
    topology: Topology
    out: Path
    run_id: str | None = None
    max_failures: int = DEFAULT_MAX_FAILURES


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def host_facts() -> dict[str, Any]:
    cpu_model = host_platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "kernel": host_platform.release(),
        "system": host_platform.system(),
        "hostname": host_platform.node(),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def execute(options: RunOptions) -> Path:
    """Run every planned trial; return the run directory."""
    platform = options.platform
    platform.check_meshes(options.meshes)
    trials = _trials(options)
    run_id = _run_id(options)
    run_dir = options.out / run_id
    if run_dir.exists():
        raise TestbedError(f"{run_dir} exists already: choose another --run-id or --out")
    meta = _meta(options, run_id, len(trials))
    spec = options.scenario.capacity
    capacity = spec is not None
    if spec is not None:  # the search chooses the rates: its probes are counted as they are run
        meta["planned_trials"] = None
    _write_json(run_dir / "run.json", meta)
    planned = (
        f"a capacity search per mesh ({', '.join(options.meshes)})" if capacity else f"{len(trials)} trials"
    )
    print(f"run {run_id}: {planned} -> {run_dir}", flush=True)
    session = platform.session(run_dir) if isinstance(platform, KeepsClusters) else contextlib.nullcontext()
    commands = proc.log_commands_to(run_dir / "work" / "commands.log")
    total = _capacity_total(options) if capacity else len(trials)
    progress = Progress(total, live=False if proc.QUIET else None)
    try:
        last = {trial.mesh: number for number, trial in enumerate(trials, 1)}
        tally = _Tally()
        with commands, session, progress:
            if capacity:
                _capacity_run(options, run_dir=run_dir, meta=meta, progress=progress)
            for number, trial in enumerate(() if capacity else trials, 1):
                _one_trial(
                    options,
                    trial,
                    (number, len(trials)),
                    run_dir=run_dir,
                    meta=meta,
                    progress=progress,
                    tally=tally,
                )
                meta["finished_trials"] = number
                _write_json(run_dir / "run.json", meta)
                if last[trial.mesh] == number and isinstance(platform, KeepsClusters):
                    platform.release(trial.mesh)
        meta["status"] = COMPLETE_WITH_FAILURES if meta["failures"] else "complete"
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        raise Interrupted(
            f"run interrupted: {meta['finished_trials']} finished trial(s) kept in {run_dir}"
            + _report_hint(meta, run_dir)
        ) from None
    except TestbedError as e:
        meta["status"] = "failed"
        meta["error"] = e.message
        raise TestbedError(
            f"{e.message} ({meta['finished_trials']} finished trial(s) kept in {run_dir}"
            f"{_report_hint(meta, run_dir)})"
        ) from e
    finally:
        meta["ended_at"] = _now()
        _write_json(run_dir / "run.json", meta)
    return run_dir


def _meta(options: RunOptions, run_id: str, planned: int) -> dict[str, Any]:
    """run.json as it starts: what runs, where, with which versions."""
    from testbed.loadgen.engine_version import locust_version

    platform, scenario, topology = options.platform, options.scenario, options.topology
    return {
        "schema": RUN_SCHEMA,
        "run_id": run_id,
        "platform": platform.name,
        "meshes": list(options.meshes),
        "baseline": "none" if "none" in options.meshes else None,
        "scenario": {k: v for k, v in vars(scenario).items() if k != "source"}
        | {
            "rates": list(scenario.rates),
            # JSON, not the objects: the profile as in result.json (`Profile.to_dict`), the search's settings.
            "profile": None if scenario.profile is None else scenario.profile.to_dict(),
            "capacity": None if scenario.capacity is None else dataclasses.asdict(scenario.capacity),
            "profile_kind": scenario.profile_kind,
        },
        "topology": {
            "name": topology.name,
            "entry": topology.entry,
            "services": list(topology.names),
            "calls": {s.name: list(s.calls) for s in topology.services},
            "calls_per_request": topology.calls_per_request,
            "critical_hops": topology.critical_hops,
        },
        "host": host_facts(),
        "versions": {"testbed": __version__, "locust": locust_version()} | platform.versions(options.meshes),
        "planned_trials": planned,
        "finished_trials": 0,
        #: Every failed or skipped trial with its cause (`failed.json` beside a failed trial's files).
        "failures": [],
        "status": "running",
        "started_at": _now(),
        "ended_at": None,
    }


def _report_hint(meta: dict[str, Any], run_dir: Path) -> str:
    return f"; report them with: testbed report {run_dir}" if meta["finished_trials"] else ""


def dry_run(options: RunOptions) -> str:
    """What `execute` would do, as text: nothing is run and nothing is written (`--dry-run`)."""
    platform, scenario = options.platform, options.scenario
    platform.check_meshes(options.meshes)
    trials = _trials(options)
    run_dir = options.out / _run_id(options)
    if scenario.profile is not None:  # one rate slot, the peak: the profile says what the window sends
        load = f"profile {scenario.profile.to_arg()} (peak {scenario.profile.peak_rps:g} rps)"
    elif scenario.capacity is not None:
        load = f"capacity search, service p99 objective {scenario.capacity.slo_p99_ms:g} ms"
    else:
        load = f"rates {', '.join(f'{r:g}' for r in scenario.rates)} rps"
    count = f"{len(trials)} trials"
    each = f"{scenario.trials} trial(s) each"
    if scenario.capacity is not None:  # the search picks every later rate from what it measures
        count = f"a capacity search per mesh; below, only each mesh's first probe of {len(trials)}"
        each = f"{scenario.capacity.repeats} repeats at the answer, every other rate chosen as it goes"
    header = (
        f"run {run_dir.name}: {count} -> {run_dir}\n"
        f"scenario {scenario.name}: {load}, "
        f"{each}, {scenario.warmup_s:g} s warm-up + {scenario.duration_s:g} s; "
        f"topology {options.topology.name} (entry {options.topology.entry})\n"
        "dry run: nothing below is run\n"
    )
    if isinstance(platform, DescribesPlan):
        return header + "\n" + platform.describe(options.topology, scenario, trials, run_dir)
    lines = [f"the {platform.name} platform starts its processes at run time; the trials:"]
    lines += [f"[{n}/{len(trials)}] {t.mesh} {t.rate:g} rps trial {t.index}" for n, t in enumerate(trials, 1)]
    return header + "\n".join(lines) + "\n"


def _trials(options: RunOptions) -> tuple[Trial, ...]:
    if options.scenario.capacity is not None:  # what --dry-run can show of a search: its first probes
        return capacity_first_probes(options)
    by_mesh = isinstance(options.platform, KeepsClusters) and options.platform.one_mesh_at_a_time
    return plan_trials(options.scenario, options.meshes, by_mesh=by_mesh)


def _run_id(options: RunOptions) -> str:
    return options.run_id or dt.datetime.now(dt.UTC).strftime(
        f"%Y%m%dT%H%M%SZ-{options.platform.name}-{options.scenario.name}"
    )


def run_trial(options: RunOptions, trial: Trial, run_dir: Path) -> dict[str, Any]:
    """Bring the topology up with the trial's mesh, measure, tear down, and write result.json."""
    trial_dir = run_dir / trial.path
    workdir = run_dir / "work" / trial.path
    with options.platform.deploy(options.topology, trial.mesh, workdir) as deployment:
        time.sleep(options.scenario.cooldown_s)  # let start-up work settle before the warm-up begins
        config = load_config(options.scenario, trial, deployment.target_url)
        result = options.platform.measure(deployment, config, trial_dir)
    result |= {"mesh": trial.mesh, "trial": trial.index, "platform": options.platform.name}
    _write_json(trial_dir / "result.json", result)
    return result


@dataclass
class _Tally:
    """Failed trials in a row per mesh, and the meshes whose remaining trials are skipped (and why)."""

    in_a_row: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _one_trial(
    options: RunOptions,
    trial: Trial,
    position: tuple[int, int],
    *,
    run_dir: Path,
    meta: dict[str, Any],
    progress: Progress,
    tally: _Tally,
) -> None:
    """Run one trial, or skip it; a failed one is recorded (failed.json, run.json) and the run goes on."""
    number, total = position
    if trial.mesh in tally.skipped:
        meta["failures"].append(_failure(trial, "skipped", tally.skipped[trial.mesh]))
        progress.finish_trial(_skipped_line(number, total, trial, tally.skipped[trial.mesh]))
    else:
        progress.start_trial(number, trial.mesh, trial.rate, trial.index)
        try:
            result = run_trial(options, trial, run_dir)
            tally.in_a_row[trial.mesh] = 0
            progress.finish_trial(_one_line(number, total, trial, result))
        except TrialFailed as e:
            _write_failed(options, trial, run_dir, e)
            meta["failures"].append(_failure(trial, "failed", e.message))
            progress.finish_trial(_failed_line(number, total, trial, e.message))
            tally.in_a_row[trial.mesh] = tally.in_a_row.get(trial.mesh, 0) + 1
            if tally.in_a_row[trial.mesh] >= options.max_failures:
                tally.skipped[trial.mesh] = (
                    f"{tally.in_a_row[trial.mesh]} consecutive failed trials of {trial.mesh} "
                    f"(--max-failures {options.max_failures}); the last: {e.message}"
                )


class _Where(Protocol):
    """A trial or a capacity probe: who it was, and where its files go."""

    @property
    def mesh(self) -> str: ...
    @property
    def rate(self) -> float: ...
    @property
    def index(self) -> int: ...
    @property
    def path(self) -> PurePosixPath: ...


def _failure(trial: _Where, status: str, cause: str) -> dict[str, Any]:
    where = {"path": str(trial.path), "mesh": trial.mesh, "rate": trial.rate, "trial": trial.index}
    return where | {"status": status, "cause": cause}


def _write_failed(
    options: RunOptions, trial: _Where, run_dir: Path, error: TrialFailed, **extra: Any
) -> None:
    """failed.json beside the trial's files: the cause and what was measured before it (never result.json,
    so that no report ever counts a spoiled trial); `extra` (a probe's phase) follows the trial's number."""
    record = {"schema": FAILED_SCHEMA, "mesh": trial.mesh, "rate": trial.rate, "trial": trial.index} | extra
    record |= {"platform": options.platform.name, "status": "failed", "cause": error.message}
    _write_json(run_dir / trial.path / "failed.json", record | error.failure)


def _at(trial: Trial) -> str:
    """The trial's rate, or `closed loop` (its trials are filed under rate 0: `CLOSED_LOOP_RATE`)."""
    return "closed loop" if trial.rate == CLOSED_LOOP_RATE else f"{trial.rate:>6g} rps"


def _failed_line(number: int, total: int, trial: Trial, cause: str) -> str:
    return f"[{number}/{total}] {trial.mesh:>6} {_at(trial)} trial {trial.index}: FAILED: {cause}"


def _skipped_line(number: int, total: int, trial: Trial, why: str) -> str:
    return f"[{number}/{total}] {trial.mesh:>6} {_at(trial)} trial {trial.index}: skipped: {why}"


def _one_line(number: int, total: int, trial: Trial, result: dict[str, Any]) -> str:
    service = result["latency_us"]["service"]
    return (
        f"[{number}/{total}] {trial.mesh:>6} {_at(trial)} trial {trial.index}: "
        f"p50 {service['p50'] / 1000:.3f} ms, p99 {service['p99'] / 1000:.3f} ms, {verdict(result)}"
    )


# --- capacity: `profile = "capacity"`, the search of testbed/capacity.py per mesh --------------------------

#: Each mesh's search, beside its probes: RUN_DIR/<mesh>/capacity.json (`testbed.capacity/1`).
CAPACITY_FILE = "capacity.json"


@dataclass(frozen=True, kw_only=True)
class ProbeTrial:
    """One probe of a mesh's capacity search, as a trial: its rate, its phase and where its files go."""

    mesh: str
    rate: float
    phase: str
    number: int  # 1-based, within the mesh's search

    @property
    def index(self) -> int:
        """As a trial's: the probe's number, in failed.json and run.json `failures`."""
        return self.number

    @property
    def path(self) -> PurePosixPath:
        """`<mesh>/capacity/<NN>-<phase>-<rate>rps`: apart from the `<mesh>/<rate>/trial-<k>` reports pool."""
        return PurePosixPath(self.mesh, "capacity", f"{self.number:02d}-{self.phase}-{self.rate:g}rps")


@dataclass
class _Search:
    """One mesh's search as it goes: where it is, its probes, and how it ended."""

    mesh: str
    state: State
    started_at: str
    probes: list[Probe] = field(default_factory=list)
    target_url: str = ""
    #: running, complete, stopped (`--max-failures` failed probes in a row), interrupted or failed (an error)
    status: str = "running"
    cause: str | None = None

    @property
    def done(self) -> bool:
        return self.state.phase == "done"


def capacity_first_probes(options: RunOptions) -> tuple[Trial, ...]:
    """The first probe of each mesh's search (at `start_rps`): all that is known of a capacity run before it
    runs, since the search chooses every later rate from what the probes measured (`--dry-run` shows it)."""
    spec = options.scenario.capacity
    assert spec is not None
    return tuple(Trial(mesh=mesh, rate=spec.start_rps, index=1) for mesh in options.meshes)


def capacity_search(spec: CapacitySpec) -> tuple[Objective, Policy]:
    """The scenario's `profile = "capacity"` keys as the search's objective and policy."""
    objective = Objective(slo_p99_ms=spec.slo_p99_ms, max_error_rate=spec.max_error_rate)
    policy = Policy(
        start_rate=spec.start_rps, max_rate=spec.max_rps, resolution=spec.resolution, repeats=spec.repeats
    )
    return objective, policy


def capacity_config(scenario: Scenario, probe: ProbeTrial, target_url: str) -> LoadConfig:
    """A probe's `testbed load` configuration: the scenario's trial at the probe's rate, with the search's
    error limit as the trial's (else a trial within `max_error_rate` but over 1% would be invalid)."""
    assert scenario.capacity is not None
    config = load_config(scenario, Trial(mesh=probe.mesh, rate=probe.rate, index=probe.number), target_url)
    limits = dataclasses.replace(config.limits, max_error_fraction=scenario.capacity.max_error_rate)
    return dataclasses.replace(config, limits=limits)


def _capacity_total(options: RunOptions) -> int:
    assert options.scenario.capacity is not None
    return len(options.meshes) * expected_probes(capacity_search(options.scenario.capacity)[1])


def _capacity_run(options: RunOptions, *, run_dir: Path, meta: dict[str, Any], progress: Progress) -> None:
    """Each mesh in turn (the baseline first, as given): its search to the end, then its capacity.json."""
    assert options.scenario.capacity is not None
    policy = capacity_search(options.scenario.capacity)[1]
    for position, mesh in enumerate(options.meshes):
        search = _Search(mesh=mesh, state=start(policy), started_at=_now())
        later = (len(options.meshes) - position - 1) * expected_probes(policy)
        try:
            _capacity_mesh(options, search, run_dir=run_dir, meta=meta, progress=progress, later=later)
        except KeyboardInterrupt:
            search.status = "interrupted"
            raise
        except TestbedError as e:
            search.status, search.cause = "failed", e.message
            raise
        finally:  # what was measured is kept, whatever ended the search
            _write_json(run_dir / mesh / CAPACITY_FILE, capacity_document(options, search))
        if isinstance(options.platform, KeepsClusters):
            options.platform.release(mesh)


def _capacity_mesh(
    options: RunOptions,
    search: _Search,
    *,
    run_dir: Path,
    meta: dict[str, Any],
    progress: Progress,
    later: int,
) -> None:
    """One mesh's search: deploy, probe until the search is done; after a failed probe the deployment is
    replaced (local: fresh processes; kind and existing: the same pods, judged again before the next load)."""
    assert options.scenario.capacity is not None
    policy = capacity_search(options.scenario.capacity)[1]
    failed_in_a_row = 0
    deployments = 0
    while not search.done:
        deployments += 1
        workdir = run_dir / "work" / search.mesh / "capacity" / f"deployment-{deployments}"
        with options.platform.deploy(options.topology, search.mesh, workdir) as deployment:
            search.target_url = deployment.target_url
            while not search.done:
                probe, loaded = _capacity_probe(
                    options, search, deployment, run_dir=run_dir, meta=meta, progress=progress
                )
                search.probes.append(probe)
                if loaded:  # a probe that failed before its load says nothing of the rate: tried again
                    search.state = advance(search.state, probe.passed, policy)
                meta["finished_trials"] += 1
                _write_json(run_dir / "run.json", meta)
                # After every probe: an interrupted run keeps each probe in its mesh's document too.
                _write_json(run_dir / search.mesh / CAPACITY_FILE, capacity_document(options, search))
                progress.total = progress.done + remaining(search.state, policy) + later
                if probe.verdict != "failed":
                    failed_in_a_row = 0
                    if not probe.passed:  # a target left with a queue by an overload drains first
                        time.sleep(PAUSE_AFTER_FAIL_S)
                    continue
                failed_in_a_row += 1
                if failed_in_a_row >= options.max_failures:
                    search.status = "stopped"
                    search.cause = (
                        f"{failed_in_a_row} consecutive failed probes of {search.mesh} "
                        f"(--max-failures {options.max_failures}); the last: {probe.reason}"
                    )
                    meta["failures"].append(
                        {"path": f"{search.mesh}/capacity", "mesh": search.mesh, "rate": None, "trial": None}
                        | {"status": "skipped", "cause": f"the capacity search stopped: {search.cause}"}
                    )
                    return
                break  # a process died or a pod restarted: deploy again (local: fresh processes)
    search.status = "complete"


def _capacity_probe(
    options: RunOptions,
    search: _Search,
    deployment: Any,
    *,
    run_dir: Path,
    meta: dict[str, Any],
    progress: Progress,
) -> tuple[Probe, bool]:
    """One probe as a trial through the platform: result.json, or failed.json and a failed probe; and
    whether the load ran (False: it failed before its load, and measured nothing of the rate)."""
    assert options.scenario.capacity is not None
    objective = capacity_search(options.scenario.capacity)[0]
    state, mesh = search.state, search.mesh
    where = ProbeTrial(mesh=mesh, rate=state.rate, phase=state.phase, number=len(search.probes) + 1)
    config = capacity_config(options.scenario, where, deployment.target_url)
    progress.start_trial(progress.done + 1, mesh, where.rate, where.number)
    time.sleep(options.scenario.cooldown_s)
    trial_dir = run_dir / where.path
    try:
        result = options.platform.measure(deployment, config, trial_dir)
    except TrialFailed as e:
        _write_failed(options, where, run_dir, e, phase=where.phase)
        meta["failures"].append(_failure(where, "failed", e.message))
        probe = dataclasses.replace(
            failed_probe(where.rate, where.phase, e.message),
            result=f"{where.path.relative_to(mesh)}/failed.json",
        )
        progress.finish_trial(_probe_line(progress.done + 1, where, probe))
        return probe, not e.before_load
    else:
        result |= {"mesh": mesh, "trial": where.number, "platform": options.platform.name}
        result["capacity_probe"] = {"phase": where.phase, "number": where.number}
        _write_json(trial_dir / "result.json", result)
        probe = probe_from_result(where.rate, where.phase, result, objective, config)
        probe = dataclasses.replace(probe, result=f"{where.path.relative_to(mesh)}/result.json")
    progress.finish_trial(_probe_line(progress.done + 1, where, probe))
    return probe, True


def capacity_document(options: RunOptions, search: _Search) -> dict[str, Any]:
    """A mesh's capacity.json: the `testbed.capacity/1` document of `testbed capacity`, plus the mesh, the
    platform and how the search ended; an unfinished search has no answer."""
    assert options.scenario.capacity is not None
    objective, policy = capacity_search(options.scenario.capacity)
    answer = search.state.answer
    outcome = Outcome(
        max_rate_rps=answer, probes=tuple(search.probes), limited_by=limited_by(search.probes, answer)
    )
    first = ProbeTrial(mesh=search.mesh, rate=policy.start_rate, phase="step", number=1)
    template = capacity_config(options.scenario, first, search.target_url)
    how = f"a trial through the {options.platform.name} platform (testbed run)"
    doc = document(outcome, objective, policy, template, started_at=search.started_at, probe=how)
    doc |= {"mesh": search.mesh, "platform": options.platform.name, "status": search.status}
    if search.status != "complete":
        doc |= {
            "max_rate_rps": None,
            "limited_by": None,
            "note": f"no answer: the search is {search.status} after {len(search.probes)} probe(s)"
            + (f": {search.cause}" if search.cause else ""),
        }
    if search.cause:
        doc["cause"] = search.cause
    return doc


def _probe_line(number: int, where: ProbeTrial, probe: Probe) -> str:
    outcome = "pass" if probe.passed else f"fail ({probe.verdict})"
    measured = "" if probe.verdict == "failed" else f"p50 {probe.p50_ms:.3f} ms, p99 {probe.p99_ms:.3f} ms, "
    return (
        f"[{number}] {where.mesh:>6} {where.rate:>6g} rps probe {where.number} ({where.phase}): "
        f"{measured}{outcome}: {probe.reason}"
    )
