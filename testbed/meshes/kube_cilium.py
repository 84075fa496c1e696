"""Cilium 1.20.0 on kind (`cilium`): the CNI itself, kube-proxy replaced, WireGuard between the nodes.

Cilium has no proxy in the path of plain HTTP: its eBPF datapath forwards the packets, and WireGuard
transparent encryption (`encryption.type=wireguard`) encrypts every packet between two nodes, whatever
the pods. That is what it enforces, and all: WireGuard authenticates nodes, not workloads, and leaves
traffic between two pods of one node in the clear, so the testbed puts the apps and the load generator
on different workers and verifies that they are (`cross-node`), and that every agent has a WireGuard
peer for every other node (`cilium-dbg status`). No plaintext probe: nothing refuses plaintext here.

Not used, on purpose: Cilium's mutual authentication (`authentication.mutual.spire.enabled`, SPIRE
issuing workload identities) is deprecated as of 1.20, to be removed in 1.21 (cilium/charts
cilium-1.20.0.tgz, cilium/values.yaml above `authentication.mutual`, citing cilium/cilium#47132); its
successor, `encryption.type=ztunnel` with the namespace label `io.cilium/mtls-enabled`, is beta. Nor
`encryption.strictMode.ingress` (drop unencrypted pod-to-pod ingress): not the chart default, and not
tried here.

The cluster: kind's default CNI and kube-proxy are left out (manifests/kind/cluster-cilium.yaml), and
`kind create cluster` runs without `--wait`, as the nodes are NotReady until Cilium is up. On kind,
cilium-cli picks ipam.mode=kubernetes and tunnel routing, and, finding no kube-proxy DaemonSet, fills in
k8sServiceHost and k8sServicePort from the `kubernetes` EndpointSlice (cilium/cilium-cli v0.19.7,
vendor/github.com/cilium/cilium/cilium-cli/install/{helm.go,autodetect.go}); kubeProxyReplacement=true,
which it would also set, is given explicitly.

Fairness: Hubble is switched off (the chart enables it in the agent): it records every flow, the
datapath's counterpart of access logs, which no other mesh here keeps. cilium-envoy runs on every node but
carries no traffic without an L7 policy. Every flag was read in cilium/cilium-cli at v0.19.7, whose CLI
source is vendored from cilium/cilium (paths below are under vendor/github.com/cilium/cilium/cilium-cli/),
and every value in cilium-1.20.0.tgz.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testbed.kube.plan import Action, IfFile, MeshContext, Step
from testbed.meshes import evidence, kube_verify
from testbed.meshes.evidence import Check
from testbed.versions import Versions

#: `cilium status --wait-duration` (default 5m: defaults/defaults.go StatusWaitDuration): the first
#: start pulls or unpacks three images on three nodes.
STATUS_WAIT = "10m"
STATUS_TIMEOUT_S = 660.0
INSTALL_TIMEOUT_S = 600.0

#: Helm values, each `--set` (cli/install.go addCommonHelmFlags: `--helm-set`, which normalizeFlags
#: there maps to `--set`).
VALUES = (
    "encryption.enabled=true",
    "encryption.type=wireguard",
    "kubeProxyReplacement=true",
    "hubble.enabled=false",
)
#: With the archive loaded: the chart references its images as REPOSITORY:TAG@DIGEST, which containerd does
#: not match to an image imported by tag (testbed.images); without the digest the preloaded image is used.
UNPINNED = ("image.useDigest=false", "operator.image.useDigest=false", "envoy.image.useDigest=false")

NODES = "the cluster's nodes: every cilium-agent needs a WireGuard peer for each of the others"
STATUS = "cilium-dbg status in a cilium-agent: encryption must be WireGuard, with its peers"


def cilium(ctx: MeshContext, *args: str) -> tuple[str, ...]:
    # --context: a persistent flag of the root command (cli/cmd.go).
    return ("cilium", "--context", ctx.context, *args)


class Cilium:
    """Cilium as the cluster's CNI with kube-proxy replacement and WireGuard transparent encryption."""

    name = "cilium"
    config = "cilium"
    tools: tuple[str, ...] = ("cilium",)
    replaces_cni = True
    # WireGuard is node-wide: nothing enrols a namespace (testbed.meshes.kube_resources).
    namespace_labels: Mapping[str, str] = {}
    namespace_annotations: Mapping[str, str] = {}
    pod_annotations: Mapping[str, str] = {}
    components: Mapping[str, str] = {
        "cilium": "node-proxy",  # the agent: eBPF datapath and WireGuard (kernel work shows at node level)
        "cilium-envoy": "node-proxy",
        "cilium-operator": "control-plane",
    }

    def images(self, versions: Versions) -> tuple[str, ...]:
        from testbed.images import archived  # the Docker client library only when asked

        return tuple(image.ref for image in archived(self.config, versions))

    def install_steps(self, ctx: MeshContext) -> list[Action]:
        version = ctx.versions.cilium.version
        description = f"install Cilium {version} (chart from {ctx.versions.cilium.chart_repo}) with WireGuard"

        def install(values: tuple[str, ...], only_if: IfFile | None, how: str) -> Step:
            return Step(
                description=description + how,
                # cli/install.go addCommonInstallFlags: --version (the chart's); --set, as above.
                argv=cilium(ctx, "install", "--version", version, *(a for v in values for a in ("--set", v))),
                timeout_s=INSTALL_TIMEOUT_S,
                only_if=only_if,
            )

        if ctx.archive is None:
            installs = [install(VALUES, None, "")]
        else:
            installs = [
                install(
                    VALUES, IfFile(ctx.archive, exists=False), ", the nodes pulling its images by digest"
                ),
                install(
                    (*VALUES, *UNPINNED), IfFile(ctx.archive), ", its images the ones loaded from the archive"
                ),
            ]
        return [
            *installs,
            Step(
                description="wait until Cilium reports every component ready",
                # cli/status.go: --wait, --wait-duration.
                argv=cilium(ctx, "status", "--wait", "--wait-duration", STATUS_WAIT),
                timeout_s=STATUS_TIMEOUT_S,
            ),
        ]

    def verify_steps(self, ctx: MeshContext) -> list[Action]:
        return [
            kube_verify.load(ctx),
            # `get nodes -o name`: kubectl v0.35.7 pkg/cmd/get/get_flags.go (the `name` printer).
            kube_verify.check_step(ctx, NODES, (*ctx.kubectl, "get", "nodes", "-o", "name"), "nodes.txt"),
            kube_verify.check_step(
                ctx, STATUS, evidence.cilium_status_argv(ctx.context), "cilium-status.txt"
            ),
            kube_verify.pods(ctx),
        ]

    def evidence(self, outputs: Mapping[str, str], ctx: MeshContext) -> dict[str, Any]:
        nodes = [line for line in outputs.get(NODES, "").split() if line.startswith("node/")]
        if nodes:
            wireguard = evidence.cilium_wireguard(outputs.get(STATUS, ""), nodes=len(nodes))
        else:
            wireguard = Check(
                name="cilium-wireguard",
                passed=False,
                detail="`kubectl get nodes -o name` listed no node, so the WireGuard peers cannot be "
                f"counted (see verify/nodes.txt in {ctx.workdir})",
                data={},
            )
        checks = [
            kube_verify.load_check(outputs.get(kube_verify.LOAD, "")),
            wireguard,
            kube_verify.cross_node(outputs, ctx),
        ]
        evidence.require(self.name, checks)
        extra = {"encryption": "wireguard", "kube_proxy_replacement": True, "mutual_auth": False}
        return evidence.verify(self.name, checks) | extra

    def versions(self, versions: Versions) -> dict[str, str]:
        return {"cilium": versions.cilium.version, "cilium_cli": versions.tool("cilium").version}
