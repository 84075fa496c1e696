"""The `existing` platform: the kind pipeline on a cluster you already have (EKS, GKE, a lab cluster).

Nothing is deleted but the namespaces the testbed creates (`testbed`, and `testbed-plain` of the
plaintext probe); a mesh it installs stays installed (Istio, Linkerd; Cilium is refused here, as it
would replace the cluster's CNI), and its images are pulled by the nodes. The pods run `--image`, which the
nodes must be able to pull (build it with the Dockerfile and push it to your registry), and the testbed
does not label your nodes: label three different nodes `testbed.io/role=apps-a`, `testbed.io/role=apps-b`
and `testbed.io/role=loadgen`, so that every call crosses nodes as on kind, and the two app nodes also
`testbed.io/pool=apps` (the meshes' control planes and shared proxies run there, never on the load
generator's node).

CPU and memory come from two scrapes of each node's kubelet, at the measured window's edges; the kubelet
takes each container's figures from cAdvisor, which samples it every 10-15 s (`testbed.kube.metrics`), so
a window under `MIN_WINDOW_S` is warned about in the trial's `resources.warnings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed import proc
from testbed.errors import UsageError
from testbed.kube import actions as ka
from testbed.kube import cluster as kp
from testbed.kube import manifests as m
from testbed.meshes.kube import KubeMesh
from testbed.platforms.kube import Edge, KubeDeployment, KubePlatform
from testbed.spec.topology import Topology
from testbed.spec.versions import Versions

#: Shorter measured windows are warned about: cAdvisor samples each container every 10 s, stretched up to
#: 15 s (kubernetes/kubernetes pkg/kubelet/cadvisor/cadvisor_linux.go `defaultHousekeepingInterval`,
#: `maxHousekeepingInterval`), so a container needs about two of its intervals to get a fresh sample near
#: each edge of the window.
MIN_WINDOW_S = 30.0


class ExistingPlatform(KubePlatform):
    name = "existing"

    def __init__(
        self,
        *,
        context: str,
        image: str | None = None,
        keep: bool = False,
        loadgen_workers: int = 1,
        waypoint: bool = False,
        versions: Versions | None = None,
    ) -> None:
        super().__init__(keep=keep, loadgen_workers=loadgen_workers, waypoint=waypoint, versions=versions)
        self.context = context
        self.image = image or ka.image_tag(self.pins.python_image)
        self._nodes: dict[str, list[str]] = {}  # by role and "pool", found by preflight

    def cluster_plan(self, mesh: KubeMesh, topology: Topology, run_dir: Path) -> kp.ClusterPlan:
        return kp.existing_plan(
            mesh,
            topology,
            context=self.context,
            image=self.image,
            versions=self.pins,
            workdir=run_dir / "work" / mesh.name,
            logs_dir=run_dir / "logs" / mesh.name,
            loadgen_workers=self.loadgen_workers,
        )

    def window_resources(
        self,
        deployment: KubeDeployment,
        start: Edge,
        end: Edge,
        after: Mapping[str, str],
    ) -> dict[str, Any]:
        """The kubelets' figures (`KubePlatform.window_resources`), warned about when the window is short."""
        result = super().window_resources(deployment, start, end, after)
        length = end[0] - start[0]
        if length < MIN_WINDOW_S:
            result.setdefault("warnings", []).append(
                f"the measured window was {length:.1f} s, under {MIN_WINDOW_S:g} s: the kubelet takes each "
                "container's figures from cAdvisor, which samples it every 10-15 s, so many containers have "
                "no new sample between the two scrapes (left out) or one taken far from the window's edges; "
                f"use a scenario with duration_s of {MIN_WINDOW_S:g} or more on existing"
            )
        return result

    def platform_versions(self) -> dict[str, str]:
        return {"context": self.context, "image": self.image}

    def nodes(self, plan: kp.ClusterPlan) -> tuple[str, ...]:
        return tuple(dict.fromkeys(node for names in self._nodes.values() for node in names))

    def check(self, check: ka.Check, plan: kp.ClusterPlan) -> None:
        if check.name == "context":
            contexts = self._output(check).split()
            if self.context not in contexts:
                known = ", ".join(contexts) or "none"
                raise UsageError(
                    f"no context {self.context!r} in your kubeconfig (known: {known}): "
                    "give one of them with --context"
                )
        elif check.name.startswith("nodes-"):
            role = check.name.removeprefix("nodes-")
            names = [line.removeprefix("node/") for line in self._output(check).split()]
            if not names:
                raise UsageError(
                    f"no node of context {self.context} is labelled {m.ROLE_LABEL}={role}: label one with "
                    f"`kubectl --context {self.context} label node NODE {m.ROLE_LABEL}={role}` "
                    f"(three different nodes: {', '.join(m.NODE_ROLES)}, so that every call crosses nodes; "
                    f"and {m.POOL_LABEL}={m.APPS_POOL} on the {' and '.join(m.APP_ROLES)} nodes)"
                )
            self._nodes[role] = names
        elif check.name == f"pool-{m.APPS_POOL}":
            # After the role checks (plan order): the pool must exist and must not hold the load generator.
            label = f"{m.POOL_LABEL}={m.APPS_POOL}"
            names = [line.removeprefix("node/") for line in self._output(check).split()]
            if not names:
                raise UsageError(
                    f"no node of context {self.context} is labelled {label}: the meshes' control planes "
                    f"and shared proxies run there; label the {' and '.join(m.APP_ROLES)} nodes with "
                    f"`kubectl --context {self.context} label node NODE {label}`"
                )
            clash = sorted(set(names) & set(self._nodes.get(m.LOADGEN_ROLE, [])))
            if clash:
                raise UsageError(
                    f"node {', '.join(clash)} of context {self.context} is labelled both "
                    f"{m.ROLE_LABEL}={m.LOADGEN_ROLE} and {label}: the load generator's node must run "
                    f"nothing else; `kubectl --context {self.context} label node {clash[0]} {m.POOL_LABEL}-`"
                )
            self._nodes["pool"] = names
        else:
            super().check(check, plan)

    def _output(self, check: ka.Check) -> str:
        argv = [self._tools.get(check.argv[0], check.argv[0]), *check.argv[1:]]
        return proc.run(argv, timeout=check.timeout_s).stdout
