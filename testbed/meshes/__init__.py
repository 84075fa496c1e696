"""What sits between the services: every mesh the testbed knows, and where each one can run.

On the local platform: `local` (no mesh, or real Envoy sidecars from `envoy/`: PKI, bootstrap, processes).
On Kubernetes: `kube` (the `KubeMesh` Protocol and the registry) and one folder per mesh (`istio/`,
`linkerd/`, `cilium/`), each with its plan (`kube`) and the parsers of its evidence (`evidence`) beside it;
`evidence`, `kube_verify` and `kube_resources` are what the Kubernetes meshes share.

May import the shared leaves, `testbed.spec`, `testbed.sut` (the local services it wraps) and the Kubernetes
vocabulary (`testbed.kube.actions`, `manifests`, `images`, `metrics`); never the planner or a platform.
"""

from __future__ import annotations

#: In the order reports list them; `none` is the baseline.
ALL_MESHES = ("none", "envoy", "istio", "istio-ambient", "linkerd", "cilium-plain", "cilium")

#: Why a mesh cannot run on the local platform (no container, no kernel datapath here).
NOT_LOCAL = {
    "istio": "Istio needs Kubernetes for its control plane; its sidecar data plane runs locally as `envoy`",
    "istio-ambient": "ztunnel has no local build here",
    "linkerd": "linkerd2-proxy has no local build here",
    "cilium-plain": "Cilium's datapath is eBPF in a Kubernetes node's kernel",
    "cilium": "Cilium's datapath is eBPF in a Kubernetes node's kernel",
}
