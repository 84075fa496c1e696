"""Where a topology runs: `local` (processes on this machine, the default), `kind` (a kind cluster made for
the run) and `existing` (a kubeconfig context), the last two sharing `kube`. One module each behind
`Platform`, chosen by `testbed.cli` (`--platform`).

May import everything below it: the shared leaves, `testbed.loadgen`, `spec`, `sut`, `meshes` and `kube`;
never `testbed.run`, `cli` or `reporting`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from testbed.loadgen.config import LoadConfig
from testbed.spec.topology import Topology


class Deployment(Protocol):
    """A topology up and running with a mesh: where to send load, and how to prove the mesh works."""

    mesh: str
    target_url: str


class Platform(Protocol):
    name: str

    def check_meshes(self, meshes: tuple[str, ...]) -> None:
        """Raise `UsageError` for a mesh this platform cannot run, before anything starts."""

    def versions(self, meshes: tuple[str, ...]) -> dict[str, str]:
        """Versions of what this platform runs (recorded in run.json)."""

    def deploy(self, topology: Topology, mesh: str, workdir: Path) -> AbstractContextManager[Any]:
        """Bring the topology up with the mesh; tear it all down on exit, whatever happened."""

    def measure(self, deployment: Any, config: LoadConfig, trial_dir: Path) -> dict[str, Any]:
        """Run one trial; its `testbed.load/2` result plus `resources` and `mesh_evidence`."""
