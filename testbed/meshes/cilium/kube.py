"""Cilium 1.20.0 on kind: `cilium` (WireGuard between the nodes) and `cilium-plain` (the same, unencrypted).

Cilium has no proxy in the path of plain HTTP: its eBPF datapath forwards the packets, and WireGuard
transparent encryption (`encryption.type=wireguard`) encrypts every packet between two nodes, whatever
the pods. That is what it enforces, and all: WireGuard authenticates nodes, not workloads, and leaves
traffic between two pods of one node in the clear, so the testbed places the services so that every hop
crosses nodes and verifies that it does (`cross-node`), that every agent has a WireGuard peer for every
other node (`cilium-dbg status`), and that WireGuard carried the verification load both ways on every
node pair a hop crosses, read from each node's agent before and after the load (its per-peer transfer
counters, `cilium-wireguard-transfer`). No plaintext probe: nothing refuses plaintext here.

`cilium-plain` is Cilium exactly as installed for `cilium` (same chart, same values, same cluster
without kindnet and kube-proxy, VXLAN tunnel, eBPF kube-proxy replacement) with encryption off, so that
the report splits what Cilium costs as the CNI (`cilium-plain` against `none`, which is kindnet and
iptables kube-proxy) from what WireGuard costs (`cilium` against `cilium-plain`). Its evidence is that
Cilium is up and reports `Encryption: Disabled`.

Not used, on purpose: Cilium's mutual authentication (`authentication.mutual.spire.enabled`, SPIRE
issuing workload identities) is deprecated as of 1.20, to be removed in 1.21 (cilium/charts
cilium-1.20.0.tgz, cilium/values.yaml above `authentication.mutual`, citing cilium/cilium#47132); its
successor, `encryption.type=ztunnel` with the namespace label `io.cilium/mtls-enabled`, is beta. Nor
`encryption.strictMode.ingress` (drop unencrypted pod-to-pod ingress): not the chart default, and not
tried here.

The cluster: kind's default CNI and kube-proxy are left out (manifests/kind/cluster-cilium.yaml), and
`kind create cluster` runs without `--wait`, as the nodes are NotReady until Cilium is up. On kind,
cilium-cli picks ipam.mode=kubernetes and tunnel routing, sets operator.replicas=1 for charts from 1.16
(install/helm.go getHelmValues), and, finding no kube-proxy DaemonSet, fills in k8sServiceHost and
k8sServicePort from the `kubernetes` EndpointSlice (cilium/cilium-cli v0.19.7,
vendor/github.com/cilium/cilium/cilium-cli/install/{helm.go,autodetect.go}); kubeProxyReplacement=true,
which it would also set, is given explicitly.

Placement: the operator (chart default: 2 replicas, `nodeSelector` kubernetes.io/os=linux, a required
podAntiAffinity per hostname; cilium/charts cilium-1.20.0.tgz cilium/values.yaml `operator.*`) gets the
testbed's shared nodeSelector (testbed.kube.manifests.SHARED_NODE_SELECTOR), so that it never runs on
the load generator's node; its one replica (the CLI's, above) fits there either way. The agent and
cilium-envoy are DaemonSets: one per node, the load generator's included, as in production.

Fairness: Hubble is switched off (the chart enables it in the agent): it records every flow, the
datapath's counterpart of access logs, which no other mesh here keeps. cilium-envoy runs on every node but
carries no traffic without an L7 policy. Every flag was read in cilium/cilium-cli at v0.19.7, whose CLI
source is vendored from cilium/cilium (paths below are under vendor/github.com/cilium/cilium/cilium-cli/),
and every value in cilium-1.20.0.tgz.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testbed.errors import UsageError
from testbed.kube import manifests as m
from testbed.kube.actions import Action, IfFile, MeshContext, Step, kind_nodes
from testbed.meshes import evidence, kube_verify
from testbed.meshes.cilium import evidence as cilium_evidence
from testbed.meshes.evidence import Check
from testbed.spec.versions import Versions

#: `cilium status --wait-duration` (default 5m: defaults/defaults.go StatusWaitDuration): the first
#: start pulls or unpacks three images on every node.
STATUS_WAIT = "10m"
STATUS_TIMEOUT_S = 660.0
INSTALL_TIMEOUT_S = 600.0


def helm_key(key: str) -> str:
    """A map key for `--set`, its dots escaped: helm's strvals parser splits keys at `.` unless escaped
    with `\\` (helm.sh/helm/v4 pkg/strvals/parser.go `key` and `runesUntil`, as vendored by cilium/cilium-cli
    v0.19.7, whose `--set` goes through values.Options.MergeValues: install/install.go preinstall)."""
    if any(c in key for c in "=[],\\"):
        raise ValueError(f"{key!r}: a --set key with = [ ] , or \\ is not supported here")
    return key.replace(".", "\\.")


#: Helm values, each `--set` (cli/install.go addCommonHelmFlags: `--helm-set`, which normalizeFlags
#: there maps to `--set`); the same for both configurations but encryption.
COMMON_VALUES = (
    "kubeProxyReplacement=true",
    "hubble.enabled=false",
    # operator.nodeSelector: a map (cilium-1.20.0.tgz cilium/values.yaml; rendered by
    # templates/cilium-operator/deployment.yaml `with .Values.operator.nodeSelector`); --set merges the
    # key into the default kubernetes.io/os=linux.
    *(f"operator.nodeSelector.{helm_key(k)}={v}" for k, v in m.SHARED_NODE_SELECTOR.items()),
)
#: encryption.enabled (default false) and encryption.type (cilium-1.20.0.tgz cilium/values.yaml).
WIREGUARD = ("encryption.enabled=true", "encryption.type=wireguard")
UNENCRYPTED = ("encryption.enabled=false",)
#: With the archive loaded: the chart references its images as REPOSITORY:TAG@DIGEST, which containerd does
#: not match to an image imported by tag (`testbed.kube.images`); without the digest the preload is used.
UNPINNED = ("image.useDigest=false", "operator.image.useDigest=false", "envoy.image.useDigest=false")

NODES = "the cluster's nodes: every cilium-agent needs a WireGuard peer for each of the others"
STATUS = "cilium-dbg status in a cilium-agent: encryption must be WireGuard, with its peers"
STATUS_PLAIN = "cilium-dbg status in a cilium-agent: Cilium Ok, encryption Disabled"
#: One step per node and phase; `{node}` is filled in.
WG_BEFORE = "the WireGuard peers' transfer counters on node {node}, before the verification load"
WG_AFTER = "the WireGuard peers' transfer counters on node {node}, after the verification load"
#: Every request and every answer crosses a hop in at least one WireGuard data packet, whose encrypted
#: payload holds at least the inner IPv4 and TCP headers (20 + 20 bytes): a floor for the bytes each way
#: per request of the verification load, far above what Cilium's health probes add in a few seconds.
MIN_BYTES_PER_REQUEST = 40


def cilium(ctx: MeshContext, *args: str) -> tuple[str, ...]:
    # --context: a persistent flag of the root command (cli/cmd.go).
    return ("cilium", "--context", ctx.context, *args)


def _nodes(ctx: MeshContext) -> tuple[str, ...]:
    if ctx.cluster is None:
        raise UsageError("Cilium replaces the cluster's CNI: it runs on kind only (--platform kind)")
    return kind_nodes(ctx.cluster)


class Cilium:
    """Cilium as the cluster's CNI with kube-proxy replacement, with or without WireGuard encryption."""

    tools: tuple[str, ...] = ("cilium",)
    replaces_cni = True
    # `cilium install` always runs a Helm install, never an upgrade (cilium/cilium-cli v0.19.7
    # vendor/github.com/cilium/cilium/cilium-cli/install/install.go InstallWithHelm: action.NewInstall),
    # and Helm refuses a release name that is still in use (helm/helm v4.2.3 pkg/action/install.go
    # availableName: "cannot reuse a name that is still in use"): a second install fails.
    supports_reuse = False
    # WireGuard is node-wide: nothing enrols a namespace (testbed.meshes.kube_resources).
    namespace_labels: Mapping[str, str] = {}
    namespace_annotations: Mapping[str, str] = {}
    pod_annotations: Mapping[str, str] = {}
    components: Mapping[str, str] = {
        "cilium": "node-proxy",  # the agent: eBPF datapath and WireGuard (kernel work shows at node level)
        "cilium-envoy": "node-proxy",
        "cilium-operator": "control-plane",
    }
    # In kube-system, cilium-cli's default namespace (cilium/cilium-cli v0.19.7 vendor/github.com/cilium/
    # cilium/cilium-cli/cli/cmd.go:106), the chart's pod template labels (cilium-1.20.0.tgz in cilium/charts,
    # cilium/templates/): the agent, the datapath (cilium-agent/daemonset.yaml:82 k8s-app: cilium); its
    # Envoy, the L7 proxy (cilium-envoy/daemonset.yaml:49 k8s-app: cilium-envoy). Not the operator
    # (cilium-operator/deployment.yaml:60 io.cilium/app: operator): it carries no packet (IPAM, CRD
    # garbage collection), and it restarts whenever it loses its leader lease, which a busy kind host's API
    # server can make it do (cilium/cilium operator/cmd/root.go runOperator: OnStoppedLeading shuts the
    # operator down, "Leader election lost"; renew deadline 10 s, operator/cmd/leader_election.go), so its
    # restart would fail a trial whose traffic it never touched.
    traffic_pods: tuple[tuple[str, str], ...] = (
        ("kube-system", "k8s-app=cilium"),
        ("kube-system", "k8s-app=cilium-envoy"),
    )

    def __init__(self, *, encrypted: bool = True) -> None:
        self.encrypted = encrypted
        self.name = "cilium" if encrypted else "cilium-plain"
        # Its own configuration: the same images, listed and archived under its name (testbed.kube.images).
        self.config = self.name

    def images(self, versions: Versions) -> tuple[str, ...]:
        from testbed.kube.images import archived  # the Docker client library only when asked

        return tuple(image.ref for image in archived(self.config, versions))

    def values(self) -> tuple[str, ...]:
        """The `--set` values of the install (without the archive's UNPINNED)."""
        return (*(WIREGUARD if self.encrypted else UNENCRYPTED), *COMMON_VALUES)

    def install_steps(self, ctx: MeshContext) -> list[Action]:
        version = ctx.versions.cilium.version
        description = f"install Cilium {version} (chart from {ctx.versions.cilium.chart_repo}) " + (
            "with WireGuard" if self.encrypted else "without encryption"
        )

        def install(values: tuple[str, ...], only_if: IfFile | None, how: str) -> Step:
            return Step(
                description=description + how,
                # cli/install.go addCommonInstallFlags: --version (the chart's); --set, as above.
                argv=cilium(ctx, "install", "--version", version, *(a for v in values for a in ("--set", v))),
                timeout_s=INSTALL_TIMEOUT_S,
                only_if=only_if,
            )

        values = self.values()
        if ctx.archive is None:
            installs = [install(values, None, "")]
        else:
            installs = [
                install(
                    values, IfFile(ctx.archive, exists=False), ", the nodes pulling its images by digest"
                ),
                install(
                    (*values, *UNPINNED), IfFile(ctx.archive), ", its images the ones loaded from the archive"
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

    def _counters(self, ctx: MeshContext, description: str, phase: str) -> list[Action]:
        return [
            kube_verify.check_step(
                ctx,
                description.format(node=node),
                cilium_evidence.cilium_debuginfo_argv(node),
                f"wireguard-{phase}-{node}.json",
            )
            for node in _nodes(ctx)
        ]

    def verify_steps(self, ctx: MeshContext) -> list[Action]:
        if not self.encrypted:
            return [
                kube_verify.load(ctx),
                kube_verify.check_step(
                    ctx, STATUS_PLAIN, cilium_evidence.cilium_status_argv(ctx.context), "cilium-status.txt"
                ),
                kube_verify.pods(ctx),
            ]
        return [
            *self._counters(ctx, WG_BEFORE, "before"),
            kube_verify.load(ctx),
            *self._counters(ctx, WG_AFTER, "after"),
            # `get nodes -o name`: kubectl v0.35.7 pkg/cmd/get/get_flags.go (the `name` printer).
            kube_verify.check_step(ctx, NODES, (*ctx.kubectl, "get", "nodes", "-o", "name"), "nodes.txt"),
            kube_verify.check_step(
                ctx, STATUS, cilium_evidence.cilium_status_argv(ctx.context), "cilium-status.txt"
            ),
            kube_verify.pods(ctx),
        ]

    def evidence(self, outputs: Mapping[str, str], ctx: MeshContext) -> dict[str, Any]:
        load = kube_verify.load_check(outputs.get(kube_verify.LOAD, ""))
        cross = kube_verify.cross_node(outputs, ctx)
        if not self.encrypted:
            checks = [load, cilium_evidence.cilium_unencrypted(outputs.get(STATUS_PLAIN, "")), cross]
            evidence.require(self.name, checks)
            extra = {"encryption": "none", "kube_proxy_replacement": True, "mutual_auth": False}
            # The checks show Cilium up and unencrypted: nothing here is encrypted, whatever `verify` says.
            plain = {"encrypted": False, "encrypted_where": "nowhere"}
            return evidence.verify(self.name, checks) | plain | extra
        nodes = [line for line in outputs.get(NODES, "").split() if line.startswith("node/")]
        if nodes:
            wireguard = cilium_evidence.cilium_wireguard(outputs.get(STATUS, ""), nodes=len(nodes))
        else:
            wireguard = Check(
                name="cilium-wireguard",
                passed=False,
                detail="`kubectl get nodes -o name` listed no node, so the WireGuard peers cannot be "
                f"counted (see verify/nodes.txt in {ctx.workdir})",
                data={},
            )
        transfer = cilium_evidence.cilium_wireguard_transfer(
            {n: outputs.get(WG_BEFORE.format(node=n), "") for n in _nodes(ctx)},
            {n: outputs.get(WG_AFTER.format(node=n), "") for n in _nodes(ctx)},
            pairs=_crossing_pairs(cross),
            min_bytes=max(1, MIN_BYTES_PER_REQUEST * int(load.data.get("requests", 0))),
        )
        checks = [load, wireguard, cross, transfer]
        evidence.require(self.name, checks)
        extra = {
            "encryption": "wireguard",
            "kube_proxy_replacement": True,
            "mutual_auth": False,
            # What `encrypted` means here: node to node, not pod to pod (same-node traffic would be clear).
            "encrypted_where": "between nodes (WireGuard); every hop crosses nodes (cross-node) and its node "
            "pair carried the load through WireGuard both ways (cilium-wireguard-transfer)",
        }
        return evidence.verify(self.name, checks) | extra

    def versions(self, versions: Versions) -> dict[str, str]:
        return {"cilium": versions.cilium.version, "cilium_cli": versions.tool("cilium").version}


def _crossing_pairs(cross: Check) -> list[tuple[str, str]]:
    """(caller's node, callee's node) of every call, from the cross-node check's `data["edges"]`."""
    edges = cross.data.get("edges") or []
    return [
        (str(e["caller_node"]), str(e["callee_node"]))
        for e in edges
        if isinstance(e, dict) and e.get("caller_node") and e.get("callee_node")
    ]
