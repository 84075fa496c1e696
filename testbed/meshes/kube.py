"""The meshes the Kubernetes platforms (kind, existing) can install: one object each behind `KubeMesh`.

A mesh on Kubernetes is a few commands (install, verify) and a few settings on the app namespace and
pods; the platform does the rest (cluster, image, topology, load, resources). Issue 6 adds Istio
(sidecar and ambient), Linkerd and Cilium here, each as one more class registered in `KUBE_MESHES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from testbed.errors import UsageError
from testbed.meshes import ALL_MESHES

if TYPE_CHECKING:
    from testbed.kube.plan import MeshContext, Step
    from testbed.versions import Versions


class KubeMesh(Protocol):
    name: str
    #: CLIs that `install_steps` and `verify_steps` run besides kubectl (checked before anything starts).
    tools: tuple[str, ...]
    #: The mesh brings its own CNI (Cilium): the kind cluster is created without one, and without `--wait`.
    replaces_cni: bool
    #: What enrols the app namespace and its pods (e.g. `istio-injection: enabled`, `linkerd.io/inject`).
    namespace_labels: Mapping[str, str]
    namespace_annotations: Mapping[str, str]
    pod_annotations: Mapping[str, str]

    def install_steps(self, ctx: MeshContext) -> list[Step]:
        """Commands that install the mesh on a running cluster, before the topology is applied."""

    def verify_steps(self, ctx: MeshContext) -> list[Step]:
        """Commands, run once the topology is up, whose output shows that the mesh is in the path."""

    def evidence(self, outputs: Mapping[str, str]) -> dict[str, Any]:
        """`mesh_evidence` of every trial, from the verify steps' stdout (keyed by step description)."""

    def versions(self, versions: Versions) -> dict[str, str]:
        """The mesh's pinned versions, for run.json."""


class NoMesh:
    """The baseline: plain Kubernetes Services, no proxy anywhere."""

    name = "none"
    tools: tuple[str, ...] = ()
    replaces_cni = False
    namespace_labels: Mapping[str, str] = {}
    namespace_annotations: Mapping[str, str] = {}
    pod_annotations: Mapping[str, str] = {}

    def install_steps(self, ctx: MeshContext) -> list[Step]:
        return []

    def verify_steps(self, ctx: MeshContext) -> list[Step]:
        return []

    def evidence(self, outputs: Mapping[str, str]) -> dict[str, Any]:
        return {"mesh": "none", "encrypted": False}

    def versions(self, versions: Versions) -> dict[str, str]:
        return {}


KUBE_MESHES: dict[str, KubeMesh] = {"none": NoMesh()}


def kube_mesh(name: str, platform: str) -> KubeMesh:
    """The mesh called `name`, or a `UsageError` that says why `platform` cannot run it."""
    if name in KUBE_MESHES:
        return KUBE_MESHES[name]
    if name == "envoy":
        raise UsageError(
            "the envoy mesh is the local platform's stand-in for Istio's sidecars: "
            f"on {platform}, Istio itself will be the istio mesh (issue 6); use --platform local for envoy"
        )
    if name in ALL_MESHES:
        raise UsageError(f"the {name} mesh on {platform} is not built yet (issue 6): use --mesh none")
    raise UsageError(f"unknown mesh {name!r} (known: {', '.join(ALL_MESHES)})")
