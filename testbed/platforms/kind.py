"""The `kind` platform: one kind cluster per mesh (`testbed-<mesh>`), a control plane and three workers.

The testbed image is built from this checkout and loaded into the nodes (no registry), and so are the
mesh's images when `nox -s pull-images` has saved their archive (nothing is pulled in the cluster then,
and a rerun does not depend on the registries); the mesh is installed and verified; the topology and
an idle load generator pod are applied, and each trial runs `testbed load` in that pod; when its
measured window starts and ends (its marks on stderr), the cgroups of every node container are read at
once, through Docker (`testbed.kube.metrics.NODE_READ`), for each container's CPU. The cluster is
deleted at the end unless `--keep`, after Ctrl-C too, and after a failure once `kind export logs` has
put its logs in the run directory. A cluster of the same name is only run on with `--reuse`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from testbed import proc
from testbed.errors import TestbedError, UsageError
from testbed.kube import actions as ka
from testbed.kube import cluster as kp
from testbed.kube import docker, metrics
from testbed.kube import trial as kt
from testbed.meshes.kube import KubeMesh
from testbed.platforms.kube import Edge, KubeDeployment, KubePlatform, warn
from testbed.spec.topology import Topology
from testbed.spec.versions import Versions

INOTIFY = Path("/proc/sys/fs/inotify")
#: kind's known-issues page: several clusters (or many pods) exhaust the distribution defaults.
INOTIFY_MINIMUM = {"max_user_watches": 524288, "max_user_instances": 512}
#: Four kind nodes (0.5-1 GB each at rest, kind's figures) with Kubernetes 1.35, the demo topology and a mesh.
MEMORY_NEEDED = 8 * 2**30


class KindPlatform(KubePlatform):
    name = "kind"

    def __init__(
        self,
        *,
        keep: bool = False,
        reuse: bool = False,
        loadgen_workers: int = 1,
        waypoint: bool = False,
        versions: Versions | None = None,
    ) -> None:
        super().__init__(keep=keep, loadgen_workers=loadgen_workers, waypoint=waypoint, versions=versions)
        self.reuse = reuse
        self._existing: set[str] = set()  # clusters that preflight found already there

    def mesh(self, name: str) -> KubeMesh:
        mesh = super().mesh(name)
        if self.reuse and not mesh.supports_reuse:
            # check_meshes resolves every mesh before anything runs (a dry run too): refused there.
            raise UsageError(
                f"--reuse does not work with the {name} mesh: its install cannot run again on a cluster "
                f"where it ran; delete the cluster (`kind delete cluster --name {ka.cluster_name(name)}`) "
                "or drop --reuse"
            )
        return mesh

    def cluster_plan(self, mesh: KubeMesh, topology: Topology, run_dir: Path) -> kp.ClusterPlan:
        return kp.kind_plan(
            mesh,
            topology,
            versions=self.pins,
            workdir=run_dir / "work" / mesh.name,
            logs_dir=run_dir / "logs" / mesh.name,
            loadgen_workers=self.loadgen_workers,
            archive=self.archive(mesh),
        )

    def archive(self, mesh: KubeMesh) -> Path | None:
        """Where `nox -s pull-images` saves the mesh's images (`testbed.kube.images.archive_path`), if any."""
        if not mesh.images(self.pins):
            return None
        from testbed.kube.images import archive_path  # the Docker client library only when needed

        try:
            return archive_path(mesh.config, versions=self.pins)
        except UsageError:
            return None  # not Linux: no pinned images for this host, and so no archive

    def platform_versions(self) -> dict[str, str]:
        return {
            "kind": self.pins.tool("kind").version,
            "kubernetes": self.pins.kubernetes.version,
            "node_image": self.pins.node_image,
        }

    def is_reused(self, plan: kp.ClusterPlan) -> bool:
        return plan.cluster in self._existing

    def read_resources(self, deployment: KubeDeployment, steps: kt.TrialPlan) -> dict[str, metrics.NodeRead]:
        """Every node container's cgroups and the host's /proc/stat, all nodes at once (`NODE_READ`)."""
        outputs = docker.run_in_nodes(steps.node_containers, steps.node_read, timeout=kt.SCRAPE_TIMEOUT_S)
        return {node: metrics.parse_node_read(text, node=node) for node, text in outputs.items()}

    def window_resources(
        self,
        deployment: KubeDeployment,
        start: Edge,
        end: Edge,
        after: Mapping[str, str],
    ) -> dict[str, Any]:
        """Per component from the cgroups read at the window's edges; node overhead; the kernel's rest."""
        (start_unix, before), (end_unix, later) = start, end
        pods = next(iter(after.values()), "")  # the one step after the load: `kubectl get pods -A -o json`
        attribution = functools.partial(
            metrics.component,
            app_namespace=deployment.plan.namespace,
            workloads=self.mesh(deployment.mesh).components,
        )
        return metrics.cgroup_window(
            before, later, metrics.container_ids(pods), attribution, window_unix=(start_unix, end_unix)
        )

    def check(self, check: ka.Check, plan: kp.ClusterPlan) -> None:
        match check.name:
            case "docker":
                problem = docker.daemon_reachable()
                if problem is not None:
                    raise TestbedError(
                        f"{problem}: kind runs its nodes as Docker containers; start Docker "
                        "(e.g. `sudo systemctl start docker`) and check that `docker info` works"
                    )
            case "cgroup":
                if docker.daemon_cgroup_version() != 2:
                    raise TestbedError(
                        "Docker's host runs cgroup v1, where the kubelet of Kubernetes 1.35 does not start: "
                        "use a host with cgroup v2 (every current distribution; GitHub's ubuntu-latest)"
                    )
            case "source":
                if not (ka.SOURCE / "Dockerfile").is_file():
                    raise UsageError(
                        f"no Dockerfile in {ka.SOURCE}: the kind platform builds its image from a source "
                        "checkout of the testbed; run it from a clone (pip install -e .)"
                    )
            case "inotify":
                for problem in inotify_problems():
                    warn(problem)
            case "memory":
                available = psutil.virtual_memory().available
                if available < MEMORY_NEEDED:
                    warn(
                        f"{available / 2**30:.1f} GB of memory available; four kind nodes need about "
                        f"{MEMORY_NEEDED / 2**30:.0f} GB: pods may be evicted or the run may fail"
                    )
            case "cluster":
                self._check_cluster(check, plan)
            case _:
                super().check(check, plan)

    def _check_cluster(self, check: ka.Check, plan: kp.ClusterPlan) -> None:
        argv = [self._tools.get(check.argv[0], check.argv[0]), *check.argv[1:]]
        clusters = proc.run(argv, timeout=check.timeout_s).stdout.split()
        assert plan.cluster is not None
        if plan.cluster not in clusters:
            # Found by an earlier session of this platform and deleted at its end (e.g. `testbed reproduce`,
            # whose open-loop twin is a second run on the same platform): created anew this time.
            self._existing.discard(plan.cluster)
            return
        if not self.reuse:
            raise UsageError(
                f"a kind cluster {plan.cluster} exists already: pass --reuse to run on it (it is deleted "
                f"at the end unless --keep), or delete it with `kind delete cluster --name {plan.cluster}`"
            )
        self._existing.add(plan.cluster)


def inotify_problems(directory: Path = INOTIFY) -> list[str]:
    """A warning per inotify limit below what several kind nodes need, with the sysctl that fixes it."""
    problems = []
    for name, minimum in INOTIFY_MINIMUM.items():
        try:
            value = int((directory / name).read_text())
        except (OSError, ValueError):
            continue  # not Linux, or hidden: kind itself will say if it matters
        if value < minimum:
            problems.append(
                f"fs.inotify.{name} is {value}, below the {minimum} that kind's nodes need (pods fail with "
                f"'too many open files'): sudo sysctl fs.inotify.{name}={minimum}"
            )
    return problems
