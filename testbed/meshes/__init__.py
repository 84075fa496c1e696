"""Every mesh the testbed knows, and where each one can run."""

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
