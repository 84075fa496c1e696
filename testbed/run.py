"""`testbed run`: the workflow of a whole run as small steps (plan, provision, load, record, report).

Every trial is written as soon as it is finished, so an interrupted or failed run keeps what it measured;
run.json says how the run ended.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform as host_platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import __version__
from testbed.errors import Interrupted, TestbedError
from testbed.loadgen.result import verdict
from testbed.plan import Trial, load_config, plan_trials
from testbed.platforms import Platform
from testbed.scenario import Scenario
from testbed.topology import Topology

RUN_SCHEMA = "testbed.run/1"


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
    trials = plan_trials(scenario, options.meshes)
    run_id = options.run_id or dt.datetime.now(dt.UTC).strftime(
        f"%Y%m%dT%H%M%SZ-{platform.name}-{scenario.name}"
    )
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
    try:
        for number, trial in enumerate(trials, 1):
            result = run_trial(options, trial, run_dir)
            meta["finished_trials"] = number
            _write_json(run_dir / "run.json", meta)
            print(_one_line(number, len(trials), trial, result), flush=True)
        meta["status"] = "complete"
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        raise Interrupted(
            f"run interrupted: {meta['finished_trials']} finished trial(s) kept in {run_dir}"
        ) from None
    except TestbedError as e:
        meta["status"] = "failed"
        meta["error"] = e.message
        raise TestbedError(
            f"{e.message} ({meta['finished_trials']} finished trial(s) kept in {run_dir})"
        ) from e
    finally:
        meta["ended_at"] = _now()
        _write_json(run_dir / "run.json", meta)
    return run_dir


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
