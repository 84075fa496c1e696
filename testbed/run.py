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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from testbed import __version__
from testbed.errors import Interrupted, TestbedError
from testbed.loadgen.result import verdict
from testbed.platforms import Platform
from testbed.spec.scenario import Scenario
from testbed.spec.topology import Topology
from testbed.spec.trials import Trial, load_config, plan_trials

RUN_SCHEMA = "testbed.run/1"


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
    from testbed.loadgen.engine_version import locust_version

    platform, scenario, topology = options.platform, options.scenario, options.topology
    platform.check_meshes(options.meshes)
    trials = _trials(options)
    run_id = _run_id(options)
    run_dir = options.out / run_id
    if run_dir.exists():
        raise TestbedError(f"{run_dir} exists already: choose another --run-id or --out")
    meta: dict[str, Any] = {
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
        "planned_trials": len(trials),
        "finished_trials": 0,
        "status": "running",
        "started_at": _now(),
        "ended_at": None,
    }
    _write_json(run_dir / "run.json", meta)
    print(f"run {run_id}: {len(trials)} trials -> {run_dir}", flush=True)
    session = platform.session(run_dir) if isinstance(platform, KeepsClusters) else contextlib.nullcontext()
    try:
        last = {trial.mesh: number for number, trial in enumerate(trials, 1)}
        with session:
            for number, trial in enumerate(trials, 1):
                result = run_trial(options, trial, run_dir)
                meta["finished_trials"] = number
                _write_json(run_dir / "run.json", meta)
                print(_one_line(number, len(trials), trial, result), flush=True)
                if last[trial.mesh] == number and isinstance(platform, KeepsClusters):
                    platform.release(trial.mesh)
        meta["status"] = "complete"
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


def _one_line(number: int, total: int, trial: Trial, result: dict[str, Any]) -> str:
    service = result["latency_us"]["service"]
    return (
        f"[{number}/{total}] {trial.mesh:>6} {trial.rate:>6g} rps trial {trial.index}: "
        f"p50 {service['p50'] / 1000:.3f} ms, p99 {service['p99'] / 1000:.3f} ms, {verdict(result)}"
    )
