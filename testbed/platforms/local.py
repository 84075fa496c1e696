"""The `local` platform: the demo services as local processes on 127.0.0.1, with no mesh or with real
Envoy sidecars, loaded by `testbed load` in a child process. No Docker needed: the embedded default."""

from __future__ import annotations

import json
import platform as host_platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import proc
from testbed.errors import TestbedError, UsageError
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
        try:
            with Sampler(components) as sampler:
                code = loadgen.wait(timeout=config.warmup_s + config.duration_s + config.timeout_s + 90)
        except subprocess.TimeoutExpired:
            raise TestbedError(f"the load generator did not finish in time; see {log_path}") from None
        finally:
            proc.stop(loadgen)
        result_path = trial_dir / "result.json"
        if code != 0 or not result_path.is_file():
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise TestbedError(f"the load generator failed (exit code {code}): {' '.join(tail)}")
        result: dict[str, Any] = json.loads(result_path.read_text())
        start, end = result["window_unix"]
        result["resources"] = sampler.window(start, end)
        result["mesh_evidence"] = deployment.data_plane.evidence()
        return result
