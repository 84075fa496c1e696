"""The meshes the Kubernetes platforms (kind, existing) can install: one object each behind `KubeMesh`.

A mesh on Kubernetes is a few commands (install, verify), a few settings on the app namespace and pods,
the images it runs and the workloads it adds; the platform does the rest (cluster, image, topology,
load, resources). One folder per mesh: `istio/` (sidecar and ambient), `linkerd/`,
`cilium/`, each with its `kube` module registered in `KUBE_MESHES` below and its `evidence` parsers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from testbed.errors import UsageError
from testbed.meshes import ALL_MESHES
from testbed.meshes.cilium.kube import Cilium
from testbed.meshes.istio.kube import IstioAmbient, IstioSidecar
from testbed.meshes.linkerd.kube import Linkerd

if TYPE_CHECKING:
    from testbed.kube.actions import Action, MeshContext
    from testbed.spec.versions import Versions


class KubeMesh(Protocol):
    name: str
    #: The configuration its images are listed and archived under (`testbed.kube.images.CONFIGURATIONS`).
    config: str
    #: CLIs that `install_steps` and `verify_steps` run besides kubectl (checked before anything starts).
    tools: tuple[str, ...]
    #: The mesh brings its own CNI (Cilium): the kind cluster is created without one, and without `--wait`.
    replaces_cni: bool
    #: Its install can run again on a cluster where it ran (`--reuse`); False: the kind platform refuses
    #: `--reuse` with this mesh before anything runs.
    supports_reuse: bool
    #: What enrols the app namespace and its pods (e.g. `istio-injection: enabled`, `linkerd.io/inject`).
    namespace_labels: Mapping[str, str]
    namespace_annotations: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    #: The mesh's own workloads (the DaemonSet or Deployment a pod belongs to) and the resource component
    #: each counts for (`testbed.resources.COMPONENTS`); injected sidecars are known by container name.
    components: Mapping[str, str]
    #: The mesh's own pods outside the app namespace that carry or steer its traffic (data plane, control
    #: plane), as (namespace, label selector) pairs: each is read right before and right after every
    #: trial's load beside the app namespace (`testbed.kube.trial.PodsRead`), and a restart, a replaced pod
    #: or one not ready there fails the trial too (`testbed.kube.health`). Its pods in the app namespace
    #: (sidecars, a waypoint) are read with that namespace already.
    traffic_pods: tuple[tuple[str, str], ...]

    def images(self, versions: Versions) -> tuple[str, ...]:
        """The images the mesh runs in the nodes (`testbed.kube.images`), loaded from its archive if saved."""

    def install_steps(self, ctx: MeshContext) -> list[Action]:
        """What installs the mesh on a running cluster, before the topology is applied."""

    def verify_steps(self, ctx: MeshContext) -> list[Action]:
        """What runs once the topology is up and shows that the mesh is in the path (`Step.may_fail`
        steps are read by `evidence`)."""

    def evidence(self, outputs: Mapping[str, str], ctx: MeshContext) -> dict[str, Any]:
        """`mesh_evidence` of every trial, from the verify steps' stdout (keyed by step description);
        raises `TestbedError` (`evidence.require`) when a check failed."""

    def versions(self, versions: Versions) -> dict[str, str]:
        """The mesh's pinned versions, for run.json."""


class NoMesh:
    """The baseline: plain Kubernetes Services, no proxy anywhere."""

    name = "none"
    config = "none"
    tools: tuple[str, ...] = ()
    replaces_cni = False
    supports_reuse = True  # nothing to install
    namespace_labels: Mapping[str, str] = {}
    namespace_annotations: Mapping[str, str] = {}
    pod_annotations: Mapping[str, str] = {}
    components: Mapping[str, str] = {}
    traffic_pods: tuple[tuple[str, str], ...] = ()

    def images(self, versions: Versions) -> tuple[str, ...]:
        return ()

    def install_steps(self, ctx: MeshContext) -> list[Action]:
        return []

    def verify_steps(self, ctx: MeshContext) -> list[Action]:
        return []

    def evidence(self, outputs: Mapping[str, str], ctx: MeshContext) -> dict[str, Any]:
        return {"mesh": "none", "encrypted": False}

    def versions(self, versions: Versions) -> dict[str, str]:
        return {}


KUBE_MESHES: dict[str, KubeMesh] = {
    "none": NoMesh(),
    "istio": IstioSidecar(),
    "istio-ambient": IstioAmbient(),
    "linkerd": Linkerd(),
    "cilium-plain": Cilium(encrypted=False),
    "cilium": Cilium(),
}


def kube_mesh(name: str, platform: str, *, waypoint: bool = False) -> KubeMesh:
    """The mesh called `name`, or a `UsageError` that says why `platform` cannot run it.

    `waypoint` (`testbed run --waypoint`) gives istio-ambient with Istio's L7 waypoint.
    """
    if name == "envoy":
        raise UsageError(
            "the envoy mesh is the local platform's stand-in for Istio's sidecars: "
            f"on {platform}, Istio itself is the istio mesh; use --platform local for envoy"
        )
    if name not in KUBE_MESHES:
        raise UsageError(f"unknown mesh {name!r} (known: {', '.join(ALL_MESHES)})")
    mesh = KUBE_MESHES[name]
    if mesh.replaces_cni and platform == "existing":
        raise UsageError(
            f"the {name} mesh replaces the cluster's CNI and kube-proxy, which the testbed does not do to a "
            "cluster of yours: run it with --platform kind"
        )
    if waypoint and name == "istio-ambient":
        return IstioAmbient(waypoint=True)
    return mesh
