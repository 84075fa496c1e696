"""The `local` platform: the demo services as local processes on 127.0.0.1, with no mesh or with real
Envoy sidecars, loaded by `testbed load` in a child process. No Docker needed: the embedded default."""

from __future__ import annotations

import contextlib
import json
import platform as host_platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import proc
from testbed.errors import TestbedError, TrialFailed, UsageError
from testbed.loadgen import marks
from testbed.loadgen.config import LoadConfig
from testbed.meshes import NOT_LOCAL
from testbed.meshes.local import LOCAL_MESHES, LocalMesh
from testbed.resources import Sampler
from testbed.spec.topology import Topology
from testbed.spec.trials import load_argv
from testbed.sut.local import RunningTopology, start_topology

#: The services and sidecars run at a lower CPU priority than the load generator: on one shared machine
#: the generator must send on time (as it would from a node of its own), or every trial is invalid. The
#: system under test still gets every cycle that the generator does not use.
SUT_NICE = 5


@dataclass
class LocalDeployment:
    mesh: str
    target_url: str
    running: RunningTopology
    data_plane: LocalMesh


class LocalPlatform:
    name = "local"

    def __init__(self, *, envoy_concurrency: int = 2, sut_nice: int = SUT_NICE) -> None:
        self.envoy_concurrency = envoy_concurrency
        self.sut_nice = sut_nice

    def check_meshes(self, meshes: tuple[str, ...]) -> None:
        for mesh in meshes:
            if mesh in NOT_LOCAL:
                raise UsageError(
                    f"mesh {mesh!r} is not available on the local platform ({NOT_LOCAL[mesh]}): "
                    "use --platform kind"
                )
            if mesh not in LOCAL_MESHES:
                known = ", ".join(LOCAL_MESHES)
                raise UsageError(f"unknown mesh {mesh!r} for the local platform (known: {known})")

    def versions(self, meshes: tuple[str, ...]) -> dict[str, str]:
        from testbed.meshes.local import envoy_version

        versions = {"python": host_platform.python_version()}
        if "envoy" in meshes:
            versions["envoy"] = envoy_version()
        return versions

    @contextmanager
    def deploy(self, topology: Topology, mesh: str, workdir: Path) -> Iterator[LocalDeployment]:
        data_plane = LOCAL_MESHES[mesh](topology, concurrency=self.envoy_concurrency, nice=self.sut_nice)
        running = start_topology(topology, workdir, downstream_url=data_plane.routes(), nice=self.sut_nice)
        try:
            target = data_plane.start(running, workdir)
            yield LocalDeployment(mesh=mesh, target_url=target, running=running, data_plane=data_plane)
        finally:
            data_plane.stop()
            running.stop()

    def measure(self, deployment: LocalDeployment, config: LoadConfig, trial_dir: Path) -> dict[str, Any]:
        trial_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "testbed", "--quiet", *load_argv(config), "--out", str(trial_dir)]
        log_path = trial_dir / "loadgen.log"
        with log_path.open("wb") as log:
            loadgen = proc.spawn(argv, stdout=log, stderr=subprocess.STDOUT)
        components = {
            "app": deployment.running.pids,
            "sidecar": deployment.data_plane.pids,
            "loadgen": lambda: [loadgen.pid],
        }
        watched = deployment.running.processes() | deployment.data_plane.processes()
        deadline = time.monotonic() + config.warmup_s + config.duration_s + config.timeout_s + 90
        try:
            with Sampler(components) as sampler:
                died = _watch(loadgen, watched, deadline)
                timed_out = died is None and loadgen.poll() is None
        finally:
            proc.stop(loadgen)  # at once when a process died: the trial is over
        if died is not None:
            raise _failed(died, watched, sampler, log_path)
        if timed_out:
            raise TestbedError(f"the load generator did not finish in time; see {log_path}")
        code = loadgen.returncode
        result_path = trial_dir / "result.json"
        if code != 0 or not result_path.is_file():
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise TestbedError(f"the load generator failed (exit code {code}): {' '.join(tail)}")
        result: dict[str, Any] = json.loads(result_path.read_text())
        start, end = result["window_unix"]
        result["resources"] = sampler.window(start, end)
        # A process that died as the load ended spoils the trial too (and its evidence cannot be read).
        died = _dead(watched)
        if died is not None:
            result_path.rename(trial_dir / "spoiled-result.json")
            raise _failed(died, watched, sampler, log_path)
        result["mesh_evidence"] = deployment.data_plane.evidence()
        return result


#: How often the services and sidecars are checked during a trial.
WATCH_INTERVAL_S = 0.1


@dataclass(frozen=True)
class _Death:
    name: str
    returncode: int
    at_unix: float


def _dead(watched: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> _Death | None:
    for name, (process, _log) in watched.items():
        code = process.poll()
        if code is not None:
            return _Death(name, code, time.time())
    return None


def _watch(
    loadgen: subprocess.Popen[bytes],
    watched: dict[str, tuple[subprocess.Popen[bytes], Path]],
    deadline: float,
) -> _Death | None:
    """Wait for the load generator; return the first service or sidecar that dies before it ends."""
    while loadgen.poll() is None and time.monotonic() < deadline:
        died = _dead(watched)
        if died is not None:
            return died
        with contextlib.suppress(subprocess.TimeoutExpired):
            loadgen.wait(timeout=WATCH_INTERVAL_S)
    return None


def how_it_ended(returncode: int) -> str:
    """`killed by SIGKILL` or `exited with code 1`, from a Popen return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _window_start(log_path: Path) -> float | None:
    """When the load generator's measured window started (its mark on stderr), if it did."""
    for line in log_path.read_text(errors="replace").splitlines():
        mark = marks.parse(line)
        if mark is not None and mark.edge == marks.START:
            return mark.at_unix
    return None


def _failed(
    died: _Death,
    watched: dict[str, tuple[subprocess.Popen[bytes], Path]],
    sampler: Sampler,
    loadgen_log: Path,
) -> TrialFailed:
    """The trial's failure: which process, how it ended, when in the window, and what was measured."""
    start = _window_start(loadgen_log)
    if start is None:
        when = "before the measured window (start-up or warm-up)"
        into = None
    else:
        into = round(died.at_unix - start, 3)
        when = f"{into:.1f} s into the measured window" if into >= 0 else "during the warm-up"
    process_log = watched[died.name][1]
    failure: dict[str, Any] = {
        "process": died.name,
        "exit_code": died.returncode if died.returncode >= 0 else None,
        "signal": signal.Signals(-died.returncode).name if died.returncode < 0 else None,
        "seconds_into_window": into,
        "process_log": str(process_log),
        "process_log_tail": _tail(process_log, 5),
        "loadgen_log": str(loadgen_log),
    }
    if start is not None and into is not None and into > 0:
        # The CPU and memory of the part of the window before the failure: kept, not reported as a trial.
        failure["resources_until_failure"] = sampler.window(start, died.at_unix)
    return TrialFailed(f"{died.name} {how_it_ended(died.returncode)} {when}", failure=failure)


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []
