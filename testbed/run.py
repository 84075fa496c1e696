"""`testbed run`: the workflow of a whole run as small steps (plan, provision, load, record, report).

Every trial is written as soon as it is finished, so an interrupted or failed run keeps what it measured;
run.json says how the run ended.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform as host_platform
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from testbed import __version__, proc
from testbed.errors import Interrupted, TestbedError, TrialFailed
from testbed.loadgen.result import verdict
from testbed.platforms import Platform
from testbed.progress import Progress
from testbed.spec.scenario import Scenario
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
    _write_json(run_dir / "run.json", meta)
    print(f"run {run_id}: {len(trials)} trials -> {run_dir}", flush=True)
    session = platform.session(run_dir) if isinstance(platform, KeepsClusters) else contextlib.nullcontext()
    commands = proc.log_commands_to(run_dir / "work" / "commands.log")
    progress = Progress(len(trials), live=False if proc.QUIET else None)
    try:
        last = {trial.mesh: number for number, trial in enumerate(trials, 1)}
        tally = _Tally()
        with commands, session, progress:
            for number, trial in enumerate(trials, 1):
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
        | {"rates": list(scenario.rates)},
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
    header = (
        f"run {run_dir.name}: {len(trials)} trials -> {run_dir}\n"
        f"scenario {scenario.name}: rates {', '.join(f'{r:g}' for r in scenario.rates)} rps, "
        f"{scenario.trials} trial(s) each, {scenario.warmup_s:g} s warm-up + {scenario.duration_s:g} s; "
        f"topology {options.topology.name} (entry {options.topology.entry})\n"
        "dry run: nothing below is run\n"
    )
    if isinstance(platform, DescribesPlan):
        return header + "\n" + platform.describe(options.topology, scenario, trials, run_dir)
    lines = [f"the {platform.name} platform starts its processes at run time; the trials:"]
    lines += [f"[{n}/{len(trials)}] {t.mesh} {t.rate:g} rps trial {t.index}" for n, t in enumerate(trials, 1)]
    return header + "\n".join(lines) + "\n"


def _trials(options: RunOptions) -> tuple[Trial, ...]:
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


def _failure(trial: Trial, status: str, cause: str) -> dict[str, Any]:
    where = {"path": str(trial.path), "mesh": trial.mesh, "rate": trial.rate, "trial": trial.index}
    return where | {"status": status, "cause": cause}


def _write_failed(options: RunOptions, trial: Trial, run_dir: Path, error: TrialFailed) -> None:
    """failed.json beside the trial's files: the cause and what was measured before it (never result.json,
    so that no report ever counts a spoiled trial)."""
    record = {"schema": FAILED_SCHEMA, "mesh": trial.mesh, "rate": trial.rate, "trial": trial.index}
    record |= {"platform": options.platform.name, "status": "failed", "cause": error.message}
    _write_json(run_dir / trial.path / "failed.json", record | error.failure)


def _failed_line(number: int, total: int, trial: Trial, cause: str) -> str:
    return f"[{number}/{total}] {trial.mesh:>6} {trial.rate:>6g} rps trial {trial.index}: FAILED: {cause}"


def _skipped_line(number: int, total: int, trial: Trial, why: str) -> str:
    return f"[{number}/{total}] {trial.mesh:>6} {trial.rate:>6g} rps trial {trial.index}: skipped: {why}"


def _one_line(number: int, total: int, trial: Trial, result: dict[str, Any]) -> str:
    service = result["latency_us"]["service"]
    return (
        f"[{number}/{total}] {trial.mesh:>6} {trial.rate:>6g} rps trial {trial.index}: "
        f"p50 {service['p50'] / 1000:.3f} ms, p99 {service['p99'] / 1000:.3f} ms, {verdict(result)}"
    )
