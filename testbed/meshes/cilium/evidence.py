"""Proof that Cilium's WireGuard encryption does its job, read from `cilium status` and the agents'
`cilium-dbg debuginfo`: pure functions. The formats and their sources: tests/fixtures/mesh/README.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from testbed.meshes.evidence import Check, fail, quote


def cilium_status_argv(context: str) -> tuple[str, ...]:
    """`cilium-dbg status` in a cilium-agent container (one node's view; every agent sees all peers).

    cilium/cilium cilium-dbg/cmd/status.go (`status`; FormatStatusResponse in pkg/client/client.go).
    """
    return (
        "kubectl", "--context", context, "--namespace", "kube-system",
        "exec", "ds/cilium", "--container", "cilium-agent", "--", "cilium-dbg", "status",
    )  # fmt: skip


#: The cilium-agent's API socket: defaults.SockPath = RuntimePath + "/cilium.sock", RuntimePath
#: "/var/run/cilium" (cilium/cilium pkg/defaults/defaults.go, as vendored by cilium/cilium-cli v0.19.7); the
#: chart mounts it from the node, hostPath `daemon.runPath` = "/var/run/cilium" (cilium/charts
#: cilium-1.20.0.tgz, cilium/values.yaml and templates/cilium-agent/daemonset.yaml, volume cilium-run).
CILIUM_SOCKET = "/var/run/cilium/cilium.sock"


def cilium_debuginfo_argv(node: str) -> tuple[str, ...]:
    """The cilium-agent's debug information (JSON) on one kind node, read from its API socket in the node.

    The one agent API that lists each WireGuard peer with its transfer counters: the debuginfo handler
    calls `wireguardAgent.Status(true)` (with peers; `transfer-rx`, `transfer-tx`: api/v1/models/
    wireguard_peer.go), while `cilium-dbg status` calls `Status(false)` (cilium/cilium
    pkg/status/status_collector.go, probe "encryption") and prints only the peer count. `GET /v1/debuginfo`:
    api/v1/client/cilium_api_client.go DefaultBasePath "/v1" and client/daemon/daemon_client.go
    GetDebuginfo PathPattern "/debuginfo" (vendored by cilium/cilium-cli v0.19.7); `cilium-dbg debuginfo
    --output json` prints the same model (cilium-dbg/cmd/debuginfo.go).

    Through the node container, not `kubectl exec ds/cilium` (which picks one agent, whatever its node):
    kind's nodes are Docker containers named after the nodes (testbed.kube.actions.kind_nodes), whose image
    has curl (kubernetes-sigs/kind v0.32.0 images/base/Dockerfile: `clean-install ... curl jq procps`).
    `docker exec CONTAINER COMMAND [ARG...]` takes no flag after the container (docker/cli v28.0.0
    cli/command/container/exec.go: SetInterspersed(false)); curl's --silent, --show-error, --max-time and
    --unix-socket (curl/curl docs/cmdline-opts/{silent,show-error,max-time,unix-socket}.md; since 7.40.0).
    """
    return (
        "docker", "exec", node, "curl", "--silent", "--show-error", "--max-time", "30",
        "--unix-socket", CILIUM_SOCKET, "http://localhost/v1/debuginfo",
    )  # fmt: skip


def cilium_wireguard(text: str, *, nodes: int) -> Check:
    """The agent encrypts with WireGuard and has a peer for every other node of the cluster.

    Reads the `Encryption:` line of `cilium-dbg status`, e.g. `Encryption: Wireguard [NodeEncryption:
    Disabled, cilium_wg0 (Pubkey: ..., Port: 51871, Peers: 2)]` (cilium/cilium pkg/client/client.go
    FormatStatusResponse; modes Disabled, IPsec, Wireguard, Ztunnel: api/v1/models/encryption_status.go).
    """
    name = "cilium-wireguard"
    line = next((x for x in text.splitlines() if x.startswith("Encryption:")), None)
    if line is None:
        return fail(
            name,
            f"no 'Encryption:' line in the cilium-dbg status output {quote(text)}: is it the cilium-agent's?",
            {},
        )
    match = re.match(r"Encryption:\s+(?P<mode>\S+)\s*(?P<rest>.*)$", line)
    mode, rest = (match["mode"], match["rest"].strip()) if match else ("?", line)
    interfaces: list[dict[str, Any]] = [
        {"name": m["name"], "public_key": m["key"], "port": int(m["port"]), "peers": int(m["peers"])}
        for m in re.finditer(
            r"(?P<name>[\w.-]+) \(Pubkey: (?P<key>[^,]*), Port: (?P<port>\d+), Peers: (?P<peers>\d+)\)", rest
        )
    ]
    node_encryption = re.search(r"NodeEncryption: (\w+)", rest)
    expected = max(nodes - 1, 0)
    data = {
        "mode": mode,
        "interfaces": interfaces,
        "node_encryption": node_encryption[1] if node_encryption else None,
        "expected_peers": expected,
    }
    if mode != "Wireguard":
        return fail(
            name,
            f"Cilium encryption is {mode}, not Wireguard ({line.strip()}): install with "
            "--set encryption.enabled=true --set encryption.type=wireguard",
            data,
        )
    if not interfaces:
        return fail(name, f"Cilium reports WireGuard but no interface: {rest or line.strip()}", data)
    short = [f"{i['name']} has {i['peers']}" for i in interfaces if i["peers"] < expected]
    if short:
        return fail(
            name,
            f"WireGuard peers missing: {', '.join(short)} of the {expected} other node(s); traffic to a node "
            "without a peer is not encrypted (see the CiliumNode annotation network.cilium.io/wg-pub-key)",
            data,
        )
    described = ", ".join(f"{i['name']} with {i['peers']} peers" for i in interfaces)
    return Check(
        name=name, passed=True, detail=f"WireGuard on {described} ({nodes} nodes in the cluster)", data=data
    )


def cilium_unencrypted(text: str) -> Check:
    """`cilium-plain`: the agent is up (`Cilium: Ok`) and encrypts nothing (`Encryption: Disabled`).

    cilium/cilium pkg/client/client.go FormatStatusResponse (`Cilium:\\t%s   %s`, `Encryption:\\t%s\\t%s`);
    the mode is Disabled when neither IPsec nor WireGuard is enabled (pkg/status/status_collector.go,
    probe "encryption").
    """
    name = "cilium-unencrypted"
    lines = {m[1]: m[2].strip() for m in re.finditer(r"(?m)^(Cilium|Encryption):\s+(.*)$", text)}
    cilium, encryption = lines.get("Cilium"), lines.get("Encryption")
    state = cilium.split()[0] if cilium else None
    mode = encryption.split()[0] if encryption else None
    data = {"cilium": cilium, "encryption": mode}
    if cilium is None or encryption is None:
        return fail(
            name,
            f"no 'Cilium:' or 'Encryption:' line in the cilium-dbg status output {quote(text)}: "
            "is it the cilium-agent's?",
            data,
        )
    if state != "Ok":
        return fail(name, f"the cilium-agent is not Ok: Cilium: {cilium}", data)
    if mode != "Disabled":
        return fail(
            name,
            f"Cilium encryption is {mode}, not Disabled: the unencrypted baseline would measure encryption "
            "(install without --set encryption.enabled=true)",
            data,
        )
    return Check(name=name, passed=True, detail=f"Cilium Ok ({cilium}), encryption Disabled", data=data)


@dataclass(frozen=True)
class _WireGuardAgent:
    """One node's WireGuard device as its cilium-agent reports it: own key, and per peer (rx, tx) bytes."""

    public_key: str
    peers: dict[str, tuple[int, int]]


def _wireguard_agent(text: str) -> _WireGuardAgent | str:
    """The agent's WireGuard state from `GET /v1/debuginfo`, or what is wrong with the answer.

    DebugInfo.encryption.wireguard (api/v1/models/debug_info.go DebugInfoEncryption) is a WireguardStatus:
    `interfaces` of WireguardInterface (`public-key`, `peers`), each peer a WireguardPeer (`public-key`,
    `transfer-rx`, `transfer-tx`, omitted when zero): cilium/cilium api/v1/models/wireguard_*.go.
    """
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not JSON ({e.msg}): {quote(text)}"
    wireguard = (info.get("encryption") or {}).get("wireguard") if isinstance(info, dict) else None
    interfaces = (wireguard or {}).get("interfaces") or []
    if not interfaces:
        return "no WireGuard interface in the agent's debuginfo (encryption.wireguard is empty)"
    iface = interfaces[0]
    peers = {
        str(p.get("public-key", "")): (int(p.get("transfer-rx") or 0), int(p.get("transfer-tx") or 0))
        for p in iface.get("peers") or []
    }
    return _WireGuardAgent(public_key=str(iface.get("public-key", "")), peers=peers)


def cilium_wireguard_transfer(
    before: Mapping[str, str],
    after: Mapping[str, str],
    *,
    pairs: Iterable[tuple[str, str]],
    min_bytes: int = 1,
) -> Check:
    """Every node pair that a hop crosses carried new WireGuard bytes, both ways, seen from both ends.

    `before` and `after` are each node's `GET /v1/debuginfo` (`cilium_debuginfo_argv`) around the
    verification load; `pairs` are (caller's node, callee's node) of the hops. A peer is told apart by its
    public key, which each node's own answer gives. For a pair (a, b) the agent on a must have sent to and
    received from b's key at least `min_bytes` during the load, and the agent on b the same with a's key:
    the requests went a -> b through WireGuard and the answers came back through it. WireGuard's counters
    also carry Cilium's own health probes, so `min_bytes` (scaled to the load by the caller) is what
    tells the load's traffic from the probes'.
    """
    name = "cilium-wireguard-transfer"
    pairs = sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})  # both ways are checked
    agents: dict[str, dict[str, _WireGuardAgent]] = {"before": {}, "after": {}}
    problems: list[str] = []
    for when, outputs in (("before", before), ("after", after)):
        for node, text in sorted(outputs.items()):
            agent = _wireguard_agent(text)
            if isinstance(agent, str):
                problems.append(f"{node} ({when} the load): {agent}")
            else:
                agents[when][node] = agent
    key_of = {node: agent.public_key for node, agent in agents["after"].items()}
    data: dict[str, Any] = {"pairs": [], "min_bytes": min_bytes, "public_keys": key_of}
    if problems:
        return fail(name, f"cannot read WireGuard's counters: {'; '.join(problems)}", data)
    if not pairs:
        return fail(name, "no hop between two nodes to check: every call stayed on one node", data)
    # Every agent has a peer for every other node (the one that `cilium-dbg status` counts, by key).
    unpeered = [
        f"{node} has no peer for {other}"
        for node, agent in agents["after"].items()
        for other, key in key_of.items()
        if other != node and key not in agent.peers
    ]
    if unpeered:
        return fail(
            name, f"WireGuard peers missing: {'; '.join(unpeered)}: traffic to them is not encrypted", data
        )

    def delta(node: str, peer: str) -> tuple[int, int] | str:
        if node not in agents["after"] or node not in agents["before"]:
            return f"no debuginfo from node {node}"
        if peer not in key_of:
            return f"no debuginfo from node {peer}, so its key is unknown"
        key = key_of[peer]
        now, then = agents["after"][node].peers.get(key), agents["before"][node].peers.get(key)
        if now is None or then is None:
            when = "after" if now is None else "before"
            return f"{node} has no WireGuard peer for {peer} ({when} the load)"
        rx, tx = now[0] - then[0], now[1] - then[1]
        if rx < 0 or tx < 0:
            return f"{node}'s counters for {peer} went back (the agent or the peer was restarted)"
        return rx, tx

    short: list[str] = []
    for a, b in pairs:
        ab, ba = delta(a, b), delta(b, a)
        entry: dict[str, Any] = {"nodes": [a, b]}
        for node, peer, got in ((a, b, ab), (b, a, ba)):
            if isinstance(got, str):
                short.append(got)
                continue
            rx, tx = got
            entry[f"{node}->{peer}"] = {"tx_bytes": tx, "rx_bytes": rx}
            if tx < min_bytes or rx < min_bytes:
                short.append(f"{node} sent {tx} B to and received {rx} B from {peer} (need {min_bytes} each)")
        data["pairs"].append(entry)
    if short:
        return fail(
            name,
            f"WireGuard did not carry the load on every crossing hop: {'; '.join(short)}; traffic that "
            "bypasses WireGuard between nodes is not encrypted (encryption.type=wireguard on every agent?)",
            data,
        )
    described = ", ".join(f"{a}<->{b}" for a, b in pairs)
    return Check(
        name=name,
        passed=True,
        detail=f"WireGuard carried the load both ways on every node pair a hop crosses ({described}), "
        f"at least {min_bytes} B each way, seen from both ends",
        data=data,
    )
