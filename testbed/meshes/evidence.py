"""Proof that a mesh on Kubernetes does its job, read from what the mesh's own tools print: pure functions.

Each check takes the text one command printed (the `*_argv` functions below give the exact commands,
every flag checked against the tool's source at its pinned version) and returns a `Check`. `verify`
turns the checks into a trial's `mesh_evidence`; `require` stops the run when one failed, so that no
result is ever reported for a mesh that was not shown to encrypt and authenticate its traffic.

The formats, and the source file each was read from, are listed in tests/fixtures/mesh/README.md.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.errors import TestbedError

#: Where the testbed image's Python runs the plaintext probe: a namespace that no mesh enrols.
PROBE_NAMESPACE = "testbed-plain"
#: The Deployment in `PROBE_NAMESPACE` whose pod runs `PROBE_SCRIPT` (kept idle, like the load generator).
PROBE_DEPLOYMENT = "probe"
#: Seconds the probe waits for a plaintext answer; silence until then counts as refused.
PROBE_TIMEOUT_S = 5.0
#: Linkerd answers an unauthenticated request that its `all-authenticated` policy denies with a 403
#: (linkerd2-proxy release/v2.366.0 linkerd/app/inbound/src/http/server.rs: HttpRouteUnauthorized ->
#: permission_denied); Envoy and ztunnel refuse plaintext at the connection instead.
LINKERD_REFUSAL_STATUSES = frozenset({403})

#: Run inside the testbed image as `python -c PROBE_SCRIPT URL TIMEOUT`: one plaintext GET, one JSON line.
#: Proxies from the environment are ignored; every outcome, even a crash of the request, prints a line and
#: exits 0, so that `kubectl exec` fails only when the probe could not run at all.
PROBE_SCRIPT = """\
import http.client, json, sys, urllib.error, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
result = {"probe": "plaintext", "url": url}
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(url, timeout=timeout) as response:
        result.update(outcome="http", status=response.status)
except urllib.error.HTTPError as e:
    result.update(outcome="http", status=e.code)
except Exception as e:
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, ConnectionRefusedError):
        outcome = "refused"
    elif isinstance(reason, http.client.RemoteDisconnected):
        outcome = "closed"
    elif isinstance(reason, (ConnectionResetError, BrokenPipeError)):
        outcome = "reset"
    elif isinstance(reason, TimeoutError):
        outcome = "timeout"
    elif isinstance(reason, http.client.HTTPException):
        outcome = "not_http"
    else:
        outcome = "error"
    result.update(outcome=outcome, error=f"{type(reason).__name__}: {reason}")
print(json.dumps(result))
"""

# Outcomes of the probe that show the plaintext request was turned away by the mesh.
_REFUSED = {
    "reset": "the connection was reset",
    "closed": "the connection was closed without an answer",
    "timeout": "no answer came",
    "not_http": "the answer was not HTTP (a TLS-only listener)",
}
# How much of a tool's output a failed check quotes: enough to recognise it, short enough for one line.
_QUOTE = 160
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# linkerd check's glyphs (escaped: they look like other letters).
_PASSED, _WARNED, _FAILED = "\u221a", "\u203c", "\u00d7"
_GLYPHS = (_PASSED, _WARNED, _FAILED)


@dataclass(frozen=True, kw_only=True)
class Check:
    """One verification: what was checked, whether it passed, what it found and where to look if not."""

    name: str
    passed: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-ready data, for `mesh_evidence`."""
        return asdict(self)


# --- The commands ----------------------------------------------------------------------------------


def istio_stats_argv(context: str, namespace: str, selector: str) -> tuple[str, ...]:
    """Envoy's Prometheus stats of every sidecar in the namespace that `selector` matches.

    istio/istio 1.30.3 istioctl/cmd/root.go (`experimental`, alias `x`) and
    istioctl/pkg/proxyconfig/proxyconfig.go StatsConfigCmd (`envoy-stats`, `--output prom` reads the
    admin's /stats/prometheus, `--selector`); `--context` and `--namespace`: istioctl/pkg/cli/option.go.
    """
    return (
        "istioctl", "--context", context, "--namespace", namespace,
        "experimental", "envoy-stats", "--selector", selector, "--output", "prom",
    )  # fmt: skip


def ztunnel_workloads_argv(context: str, namespace: str) -> tuple[str, ...]:
    """ztunnel's view of the namespace's workloads, as JSON.

    istio/istio 1.30.3 istioctl/pkg/ztunnelconfig/ztunnelconfig.go workloadConfigCmd (`workloads`,
    `--workload-namespace`, `--output json`: PrintWorkloadDump).
    """
    return (
        "istioctl", "--context", context, "ztunnel-config", "workloads",
        "--workload-namespace", namespace, "--output", "json",
    )  # fmt: skip


def linkerd_metrics_argv(context: str, namespace: str, deployment: str) -> tuple[str, ...]:
    """The linkerd-proxy metrics of a deployment's pods.

    linkerd/linkerd2 edge-26.8.3 cli/cmd/metrics.go (`diagnostics proxy-metrics`, `--namespace`);
    `--context`: cli/cmd/root.go.
    """
    return (
        "linkerd", "--context", context, "diagnostics", "proxy-metrics",
        "--namespace", namespace, f"deploy/{deployment}",
    )  # fmt: skip


def linkerd_check_argv(context: str, namespace: str) -> tuple[str, ...]:
    """Linkerd's own data-plane checks (it exits 1 when one fails: parse its stdout all the same).

    linkerd/linkerd2 edge-26.8.3 cli/cmd/check.go (`--proxy`, `--namespace`, table output by default).
    """
    return ("linkerd", "--context", context, "check", "--proxy", "--namespace", namespace)


def cilium_status_argv(context: str) -> tuple[str, ...]:
    """`cilium-dbg status` in a cilium-agent container (one node's view; every agent sees all peers).

    cilium/cilium cilium-dbg/cmd/status.go (`status`; FormatStatusResponse in pkg/client/client.go).
    """
    return (
        "kubectl", "--context", context, "--namespace", "kube-system",
        "exec", "ds/cilium", "--container", "cilium-agent", "--", "cilium-dbg", "status",
    )  # fmt: skip


def pods_argv(context: str, namespace: str) -> tuple[str, ...]:
    """The namespace's pods as JSON, for their nodes."""
    return ("kubectl", "--context", context, "get", "pods", "--namespace", namespace, "--output", "json")


def plaintext_probe_argv(
    context: str, url: str, *, namespace: str = PROBE_NAMESPACE, timeout_s: float = PROBE_TIMEOUT_S
) -> tuple[str, ...]:
    """One plaintext request to `url` from the probe pod of the un-meshed namespace.

    Aim it at a path that is no probe path: Linkerd authorizes the pods' probe paths for everyone
    (linkerd/linkerd2 edge-26.8.3 policy-controller/k8s/index/src/inbound/index.rs, probe routes;
    charts/linkerd-control-plane/values.yaml probeNetworks 0.0.0.0/0), so `/healthz` proves nothing there.
    """
    return (
        "kubectl", "--context", context, "--namespace", namespace, "exec", f"deploy/{PROBE_DEPLOYMENT}",
        "--", "python", "-c", PROBE_SCRIPT, url, f"{timeout_s:g}",
    )  # fmt: skip


# --- The checks --------------------------------------------------------------------------------------


def istio_sidecar_mtls(text: str, *, namespace: str) -> Check:
    """Every request the sidecars received in `namespace` came over mutual TLS, and there were some.

    Reads `istio_requests_total` as the server side reports it (reporter="destination"): only that side
    knows the connection's policy; the client side always says "unknown" (istio/proxy
    source/extensions/filters/http/istio_stats/istio_stats.cc, populateFlagsAndConnectionSecurity).
    """
    name = "istio-sidecar-mtls"
    samples = _prometheus(text, pod_header=_ISTIO_POD)
    pods = sorted({s.pod for s in samples if s.pod})
    inbound = [
        s
        for s in samples
        if s.name == "istio_requests_total"
        and s.labels.get("reporter") == "destination"
        and s.labels.get("destination_workload_namespace") == namespace
        and s.value > 0
    ]
    by_policy: Counter[str] = Counter()
    edges: Counter[str] = Counter()
    plain: Counter[str] = Counter()
    for s in inbound:
        policy = s.labels.get("connection_security_policy", "missing")
        edge = f"{s.labels.get('source_workload', '?')}->{s.labels.get('destination_workload', '?')}"
        by_policy[policy] += int(s.value)
        edges[edge] += int(s.value)
        if policy != "mutual_tls":
            plain[f"{edge} ({policy})"] += int(s.value)
    data = {
        "namespace": namespace,
        "pods": pods,
        "requests_by_policy": dict(by_policy),
        "requests_by_edge": dict(edges),
    }
    if not samples:
        return _fail(name, f"no Prometheus samples in the istioctl output {_quote(text)}", data)
    if not inbound:
        return _fail(
            name,
            f"no istio_requests_total with reporter=destination into namespace {namespace} in the stats of "
            f"{len(pods)} pod(s) ({', '.join(pods) or 'none'}): query the callees' sidecars, after traffic; "
            "is the namespace labelled istio-injection=enabled?",
            data,
        )
    if plain:
        return _fail(
            name,
            f"{sum(plain.values())} request(s) into namespace {namespace} were not mutual TLS: "
            f"{_counts(plain)}; is PeerAuthentication STRICT (kubectl get peerauthentication -A)?",
            data,
        )
    return Check(
        name=name,
        passed=True,
        detail=f"{by_policy['mutual_tls']} requests into namespace {namespace}, all mutual_tls: "
        f"{_counts(edges)}",
        data=data,
    )


def plaintext_refused(text: str, *, refusal_statuses: Iterable[int] = ()) -> Check:
    """A plaintext request from the un-meshed namespace (the line `PROBE_SCRIPT` printed) was refused.

    A reset, a close, silence or a non-HTTP answer is a refusal; so is an HTTP status in
    `refusal_statuses` (`LINKERD_REFUSAL_STATUSES` for Linkerd). Any other answer means the app was
    reached in plaintext. "Connection refused" fails too: nothing listening says nothing about the mesh.
    Not a Cilium check: WireGuard encrypts between nodes but authenticates no workload.
    """
    name = "plaintext-refused"
    result = _probe_line(text)
    if result is None:
        return _fail(
            name,
            f"no probe result line in the output {_quote(text)}: did kubectl exec reach "
            f"deploy/{PROBE_DEPLOYMENT} in namespace {PROBE_NAMESPACE}?",
            {},
        )
    url = result.get("url", "?")
    outcome = result.get("outcome")
    data = {"probe": result}
    if outcome == "http":
        status = result.get("status")
        if status in set(refusal_statuses):
            return Check(
                name=name,
                passed=True,
                detail=f"plaintext GET {url} from an un-meshed pod was answered {status}: the mesh's "
                "policy refused a client without a mesh identity",
                data=data,
            )
        return _fail(
            name,
            f"plaintext GET {url} from an un-meshed pod was answered HTTP {status}: the mesh accepts "
            "plaintext; enforce mTLS (Istio: PeerAuthentication STRICT; Linkerd: "
            "config.linkerd.io/default-inbound-policy: all-authenticated)",
            data,
        )
    if isinstance(outcome, str) and outcome in _REFUSED:
        return Check(
            name=name,
            passed=True,
            detail=f"plaintext GET {url} from an un-meshed pod was refused: {_REFUSED[outcome]} "
            f"({result.get('error', '')})",
            data=data,
        )
    if outcome == "refused":
        return _fail(
            name,
            f"plaintext GET {url} from an un-meshed pod: connection refused, so nothing listens there and "
            "the mesh was never asked; check the URL and that the app is running",
            data,
        )
    return _fail(
        name,
        f"plaintext GET {url} from an un-meshed pod failed before reaching the mesh: "
        f"{result.get('error', outcome)}; check the URL (DNS name, port)",
        data,
    )


def istio_ambient_hbone(text: str, *, namespace: str, workloads: Sequence[str]) -> Check:
    """ztunnel carries every one of `workloads` (Deployment names) in `namespace` over HBONE.

    Reads `istioctl ztunnel-config workloads -o json`: a list of workloads with `workloadName` and
    `protocol` ("HBONE" when ztunnel captures the pod, "TCP" when it does not).
    """
    name = "ztunnel-hbone"
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        return _fail(name, f"the ztunnel workload dump is not JSON ({e.msg}): {_quote(text)}", {})
    if not isinstance(items, list):
        return _fail(name, f"the ztunnel workload dump is not a JSON list: {_quote(text)}", {})
    found: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if isinstance(item, dict) and item.get("namespace") == namespace:
            entry = {
                "pod": item.get("name"),
                "protocol": item.get("protocol"),
                "node": item.get("node"),
                "waypoint": (item.get("waypoint") or {}).get("destination"),
            }
            found.setdefault(str(item.get("workloadName")), []).append(entry)
    data = {"namespace": namespace, "workloads": found}
    missing = [w for w in workloads if w not in found]
    not_hbone = [
        f"{w} ({e['pod']}: {e['protocol']})"
        for w in workloads
        for e in found.get(w, [])
        if e["protocol"] != "HBONE"
    ]
    if not workloads:
        return _fail(name, "no workloads to check were given", data)
    if not_hbone:
        return _fail(
            name,
            f"ztunnel does not carry {', '.join(not_hbone)} over HBONE in namespace {namespace}: is the "
            "namespace labelled istio.io/dataplane-mode=ambient (and no pod opted out)?",
            data,
        )
    if missing:
        return _fail(
            name,
            f"ztunnel knows no workload {', '.join(missing)} in namespace {namespace} "
            f"(it knows: {', '.join(sorted(found)) or 'none'}): are the pods running?",
            data,
        )
    pods = sum(len(found[w]) for w in workloads)
    return Check(
        name=name,
        passed=True,
        detail=f"ztunnel carries all {pods} pods of {', '.join(workloads)} in namespace {namespace} "
        "over HBONE",
        data=data,
    )


def linkerd_proxy_tls(text: str, *, namespace: str) -> Check:
    """The linkerd-proxies sent every request and connection to `namespace` over mTLS, and sent some.

    Reads the outbound `request_total` and `tcp_open_total` series whose endpoint is in `namespace`
    (dst_namespace): tls="true" with a server_id naming the destination's service account, never
    tls="no_identity" (linkerd2-proxy release/v2.366.0 linkerd/app/core/src/transport/labels.rs).
    """
    name = "linkerd-proxy-tls"
    errors = [
        line[len("# ERROR") :].lstrip(": ").strip()
        for line in text.splitlines()
        if line.startswith("# ERROR")
    ]
    samples = _prometheus(text, pod_header=_LINKERD_POD)
    pods = sorted({s.pod for s in samples if s.pod} | set(_LINKERD_POD.findall(text)))
    app = [
        s
        for s in samples
        if s.name in ("request_total", "tcp_open_total")
        and s.labels.get("direction") == "outbound"
        and s.labels.get("dst_namespace") == namespace
        and s.value > 0
    ]
    requests: Counter[str] = Counter()
    untrusted: Counter[str] = Counter()
    wrong_identity: set[str] = set()
    for s in app:
        dst = s.labels.get("dst_deployment") or s.labels.get("authority", "?")
        tls = s.labels.get("tls", "missing")
        what = "requests" if s.name == "request_total" else "connections"
        if tls != "true":
            reason = s.labels.get("no_tls_reason")
            untrusted[f"{what} to {dst} (tls={tls}{', ' + reason if reason else ''})"] += int(s.value)
            continue
        account = s.labels.get("dst_serviceaccount")
        server_id = s.labels.get("server_id", "")
        if account and not server_id.startswith(f"{account}.{namespace}.serviceaccount.identity."):
            wrong_identity.add(f"{dst} proved {server_id or 'no identity'}")
        if s.name == "request_total":
            requests[dst] += int(s.value)
    data = {
        "namespace": namespace,
        "pods": pods,
        "tls_requests_by_destination": dict(requests),
        "not_tls": dict(untrusted),
    }
    if errors:
        return _fail(name, f"linkerd could not read the proxy metrics: {'; '.join(errors)}", data)
    if not pods:
        return _fail(
            name,
            f"no linkerd-proxy answered (output {_quote(text)}): is namespace {namespace} annotated "
            "linkerd.io/inject: enabled, and were its pods restarted after?",
            data,
        )
    if untrusted:
        return _fail(
            name,
            f"linkerd-proxies sent traffic to namespace {namespace} without mTLS: {_counts(untrusted)}; "
            "is the destination meshed (linkerd -n NS check --proxy)?",
            data,
        )
    if wrong_identity:
        return _fail(
            name, f"a destination proved the wrong identity: {', '.join(sorted(wrong_identity))}", data
        )
    if not requests:
        return _fail(
            name,
            f"no outbound requests to namespace {namespace} in the metrics of {', '.join(pods)}: query the "
            "callers' proxies (load generator, services with downstreams), after traffic",
            data,
        )
    return Check(
        name=name,
        passed=True,
        detail=f"{sum(requests.values())} outbound requests to namespace {namespace}, all tls=true with the "
        f"destination's identity: {_counts(requests)}",
        data=data,
    )


def linkerd_check_proxy(text: str) -> Check:
    """`linkerd check --proxy` ran to its end without a failed check; warnings are kept as data.

    Glyphs and layout: linkerd/linkerd2 edge-26.8.3 pkg/healthcheck/healthcheck_output.go (okStatus
    U+221A, warnStatus U+203C, failStatus U+00D7, each followed by a space and the check; four-space
    indented error and hint lines; "Status check results are " and a glyph at the end).
    """
    name = "linkerd-check-proxy"
    results: list[dict[str, Any]] = []
    category = ""
    final = None
    lines = _ANSI.sub("", text).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Status check results are "):
            final = line.removeprefix("Status check results are ").strip()
        elif line[:1] in _GLYPHS and line[1:2] == " ":
            results.append({"category": category, "status": line[0], "check": line[2:], "message": []})
        elif line.startswith("    ") and results:
            results[-1]["message"].append(line.strip())
        elif i + 1 < len(lines) and line and set(lines[i + 1]) == {"-"}:
            category = line
    for result in results:
        result["message"] = " ".join(m for m in result["message"] if not m.startswith("see https://"))
    failed = [r for r in results if r["status"] == _FAILED]
    warned = [r for r in results if r["status"] == _WARNED]
    data = {"checks": len(results), "failed": failed, "warnings": warned}
    if failed:
        first = failed[0]
        return _fail(
            name,
            f"linkerd check --proxy failed {len(failed)} check(s), first: {first['category']}: "
            f"{first['check']}: {first['message']}",
            data,
        )
    if final != _PASSED or not results:
        return _fail(
            name,
            f"linkerd check --proxy did not finish (no final 'Status check results are {_PASSED}' line): "
            f"{_quote(text)}",
            data,
        )
    warnings = f", {len(warned)} warning(s): {'; '.join(w['check'] for w in warned)}" if warned else ""
    return Check(
        name=name,
        passed=True,
        detail=f"linkerd check --proxy: {len(results)} checks passed{warnings}",
        data=data,
    )


def cilium_wireguard(text: str, *, nodes: int) -> Check:
    """The agent encrypts with WireGuard and has a peer for every other node of the cluster.

    Reads the `Encryption:` line of `cilium-dbg status`, e.g. `Encryption: Wireguard [NodeEncryption:
    Disabled, cilium_wg0 (Pubkey: ..., Port: 51871, Peers: 2)]` (cilium/cilium pkg/client/client.go
    FormatStatusResponse; modes Disabled, IPsec, Wireguard, Ztunnel: api/v1/models/encryption_status.go).
    """
    name = "cilium-wireguard"
    line = next((x for x in text.splitlines() if x.startswith("Encryption:")), None)
    if line is None:
        return _fail(
            name,
            f"no 'Encryption:' line in the cilium-dbg status output {_quote(text)}: "
            "is it the cilium-agent's?",
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
        return _fail(
            name,
            f"Cilium encryption is {mode}, not Wireguard ({line.strip()}): install with "
            "--set encryption.enabled=true --set encryption.type=wireguard",
            data,
        )
    if not interfaces:
        return _fail(name, f"Cilium reports WireGuard but no interface: {rest or line.strip()}", data)
    short = [f"{i['name']} has {i['peers']}" for i in interfaces if i["peers"] < expected]
    if short:
        return _fail(
            name,
            f"WireGuard peers missing: {', '.join(short)} of the {expected} other node(s); traffic to a node "
            "without a peer is not encrypted (see the CiliumNode annotation network.cilium.io/wg-pub-key)",
            data,
        )
    described = ", ".join(f"{i['name']} with {i['peers']} peers" for i in interfaces)
    return Check(
        name=name, passed=True, detail=f"WireGuard on {described} ({nodes} nodes in the cluster)", data=data
    )


def cross_node(text: str, *, loadgen: Sequence[str], apps: Sequence[str]) -> Check:
    """The load generator's pods and the apps' pods run on different nodes (`kubectl get pods -o json`).

    Only traffic between nodes goes through WireGuard, and a hop between nodes is what a mesh adds
    latency to in production; pods are matched by their `app` label (testbed/kube/manifests.py).
    """
    name = "cross-node"
    try:
        listing = json.loads(text)
    except json.JSONDecodeError as e:
        return _fail(name, f"the pod list is not JSON ({e.msg}): {_quote(text)}", {})
    items = listing.get("items", []) if isinstance(listing, dict) else []
    nodes: dict[str, list[str]] = {}
    for pod in items:
        meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        if status.get("phase") != "Running" or meta.get("deletionTimestamp") or not spec.get("nodeName"):
            continue
        nodes.setdefault(meta.get("labels", {}).get("app", ""), []).append(spec["nodeName"])
    data = {"nodes": {app: sorted(n) for app, n in nodes.items() if app}}
    absent = [a for a in (*loadgen, *apps) if a not in nodes]
    if absent:
        return _fail(
            name, f"no running pod of {', '.join(absent)} (kubectl get pods -o wide shows why)", data
        )
    client_nodes = {n for a in loadgen for n in nodes[a]}
    app_nodes = {n for a in apps for n in nodes[a]}
    shared = sorted(client_nodes & app_nodes)
    if shared:
        return _fail(
            name,
            f"the load generator and the apps share node {', '.join(shared)}: calls between them never "
            "leave the node (check the workers' testbed.io/role labels and the pods' nodeSelector)",
            data,
        )
    return Check(
        name=name,
        passed=True,
        detail=f"load generator on {', '.join(sorted(client_nodes))}, apps on "
        f"{', '.join(sorted(app_nodes))}: every request from the load generator crosses nodes",
        data=data,
    )


# --- The evidence ----------------------------------------------------------------------------------


def verify(mesh: str, checks: Sequence[Check]) -> dict[str, Any]:
    """A trial's `mesh_evidence`: the mesh, whether its encryption was shown to work, and every check."""
    return {
        "mesh": mesh,
        "encrypted": bool(checks) and all(c.passed for c in checks),
        "checks": [c.to_dict() for c in checks],
    }


def require(mesh: str, checks: Sequence[Check]) -> None:
    """Raise a one-line `TestbedError` naming every failed check; silence when all passed."""
    if not checks:
        problems = "no verification was run"
    else:
        problems = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.passed)
    if problems:
        raise TestbedError(
            f"the {mesh} mesh could not be verified: {problems}; "
            "the run stops rather than report an unverified mesh"
        )


# --- Parsing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sample:
    pod: str
    name: str
    labels: Mapping[str, str]
    value: float


# istioctl prints "\nThe result of pod NAME:\n\n" before each pod's stats (proxyconfig.go printStatus).
_ISTIO_POD = re.compile(r"^The result of pod (\S+):$", re.MULTILINE)
# linkerd prints "#\n# POD NAME (i of n)\n#\n" before each pod's metrics (cli/cmd/metrics.go).
_LINKERD_POD = re.compile(r"^# POD (\S+) \(\d+ of \d+\)$", re.MULTILINE)
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?$"
)
_LABEL = re.compile(r'\s*(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _prometheus(text: str, *, pod_header: re.Pattern[str]) -> list[_Sample]:
    """The samples of Prometheus text (several pods' worth), each with the pod whose header precedes it."""
    samples = []
    pod = ""
    for raw in text.splitlines():
        line = raw.strip()
        header = pod_header.match(line)
        if header:
            pod = header[1]
            continue
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = _labels(match["labels"] or "")
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if labels is not None:
            samples.append(_Sample(pod, match["name"], labels, value))
    return samples


def _labels(text: str) -> dict[str, str] | None:
    labels = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if not match:
            return None  # not a label set we understand: skip the sample rather than misread it
        labels[match["key"]] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m[0]], match["value"])
        pos = match.end()
    return labels


def _probe_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith('{"probe": "plaintext"'):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                return None
            return result if isinstance(result, dict) else None
    return None


def _fail(name: str, detail: str, data: dict[str, Any]) -> Check:
    return Check(name=name, passed=False, detail=detail, data=data)


def _counts(counts: Mapping[str, int], limit: int = 6) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {v}" for k, v in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    if not flat:
        return "(empty)"
    return repr(flat if len(flat) <= _QUOTE else flat[:_QUOTE] + "...")
