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
#: Linkerd answers an unauthenticated request that the app port's authenticated-only policy denies with a
#: 403 (linkerd2-proxy release/v2.366.0 linkerd/app/inbound/src/http/server.rs: HttpRouteUnauthorized ->
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


#: Where the ztunnel DaemonSet runs and how its pods are labelled (istio/istio 1.30.3
#: manifests/charts/ztunnel/templates/daemonset.yaml: `app: ztunnel`; the ambient profile's namespace).
ZTUNNEL_NAMESPACE = "istio-system"
ZTUNNEL_SELECTOR = "app=ztunnel"
#: ztunnel's Prometheus endpoint, on every address of the pod (istio/ztunnel a45c62f8 src/config.rs
#: DEFAULT_STATS_PORT; src/metrics/server.rs serves `/metrics` and `/stats/prometheus` there).
ZTUNNEL_STATS_PORT = 15020


def ztunnel_metrics_argv(context: str) -> tuple[str, ...]:
    """The Prometheus metrics of every ztunnel pod, each after istioctl's `The result of pod NAME:` header.

    ztunnel has no Envoy, but `envoy-stats` is only a port-forward and a GET: istio/istio 1.30.3
    istioctl/pkg/proxyconfig/proxyconfig.go setupEnvoyServerStatsConfig (`--output prom`: the path
    `stats/prometheus`, on `--proxy-admin-port`) and pkg/kube/client.go EnvoyDoWithPort
    (portForwardRequest), so pointing `--proxy-admin-port` at ztunnel's stats port reads its metrics
    without `kubectl exec` (its image is distroless). `--selector` picks every ztunnel pod.
    """
    return (
        "istioctl", "--context", context, "--namespace", ZTUNNEL_NAMESPACE,
        "experimental", "envoy-stats", "--selector", ZTUNNEL_SELECTOR, "--output", "prom",
        "--proxy-admin-port", str(ZTUNNEL_STATS_PORT),
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


def linkerd_check_argv(context: str, namespace: str, *, wait_s: int) -> tuple[str, ...]:
    """Linkerd's own data-plane checks (it exits 1 when one fails: parse its stdout all the same).

    linkerd/linkerd2 edge-26.8.3 cli/cmd/check.go (`--proxy`, `--namespace`, table output by default;
    `--wait`, a Go duration, default 300s, how long failing checks are retried): `wait_s` must end before
    the step's own timeout, or the step is killed before linkerd prints which check failed.
    """
    return (
        "linkerd", "--context", context, "check", "--proxy", "--namespace", namespace, "--wait", f"{wait_s}s",
    )  # fmt: skip


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
    kind's nodes are Docker containers named after the nodes (testbed.kube.plan.kind_nodes), whose image
    has curl (kubernetes-sigs/kind v0.32.0 images/base/Dockerfile: `clean-install ... curl jq procps`).
    `docker exec CONTAINER COMMAND [ARG...]` takes no flag after the container (docker/cli v28.0.0
    cli/command/container/exec.go: SetInterspersed(false)); curl's --silent, --show-error, --max-time and
    --unix-socket (curl/curl docs/cmdline-opts/{silent,show-error,max-time,unix-socket}.md; since 7.40.0).
    """
    return (
        "docker", "exec", node, "curl", "--silent", "--show-error", "--max-time", "30",
        "--unix-socket", CILIUM_SOCKET, "http://localhost/v1/debuginfo",
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


def istio_sidecar_mtls(text: str, *, namespace: str, callees: Sequence[str] = ()) -> Check:
    """Every request the sidecars received in `namespace` came over mutual TLS; each of `callees` got some.

    Each callee must be there: `istioctl x envoy-stats --selector` stops at the first pod it cannot read,
    after printing the pods before it (istioctl/pkg/proxyconfig/proxyconfig.go), so a cut-short output
    would otherwise pass on the first callees' stats alone.

    Reads `istio_requests_total` as the server side reports it (reporter="destination"): only that side
    knows the connection's policy; the client side always says "unknown" (istio/proxy
    source/extensions/filters/http/istio_stats/istio_stats.cc, populateFlagsAndConnectionSecurity).
    """
    name = "istio-sidecar-mtls"
    samples = _prometheus(text, pod_header=_ISTIO_POD)
    pods = sorted({s.pod for s in samples if s.pod})
    inbound = _reported(
        samples, "istio_requests_total", "destination", "destination_workload_namespace", namespace
    )
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
    received = {s.labels.get("destination_workload") for s in inbound}
    unread = [callee for callee in callees if callee not in received]
    if unread:
        return _fail(
            name,
            f"no request received over mutual TLS by {', '.join(unread)} in the stats of {len(pods)} pod(s) "
            f"({', '.join(pods) or 'none'}): every callee's sidecar must be read (did istioctl stop at a pod "
            "it could not read? see its stderr in the verify log)",
            data,
        )
    return Check(
        name=name,
        passed=True,
        detail=f"{by_policy['mutual_tls']} requests into namespace {namespace}, all mutual_tls: "
        f"{_counts(edges)}",
        data=data,
    )


def envoy_concurrency(text: str, *, expected: int) -> Check:
    """Every Envoy in istioctl's stats output runs `expected` worker threads (gauge `server.concurrency`).

    Observed, not assumed: the gauge is in every Istio proxy's stats (istio/istio 1.30.3
    pkg/bootstrap/config.go requiredEnvoyStatsMatcherInclusionPrefixes has `server`; Envoy's
    source/server/server.h ALL_SERVER_STATS `concurrency`, "envoy_server_concurrency" in Prometheus).
    """
    name = "envoy-concurrency"
    samples = _prometheus(text, pod_header=_ISTIO_POD)
    pods = sorted({s.pod for s in samples if s.pod})
    threads = {s.pod: int(s.value) for s in samples if s.name == "envoy_server_concurrency" and s.pod}
    data = {"expected": expected, "threads": threads}
    missing = [pod for pod in pods if pod not in threads]
    wrong = {pod: n for pod, n in threads.items() if n != expected}
    if not pods:
        return _fail(name, f"no Envoy stats to read the worker threads from: {_quote(text)}", data)
    if missing:
        return _fail(name, f"no envoy_server_concurrency in the stats of {', '.join(missing)}", data)
    if wrong:
        found = ", ".join(f"{pod} {n}" for pod, n in sorted(wrong.items()))
        return _fail(name, f"Envoy worker threads not {expected}: {found} (ProxyConfig concurrency)", data)
    return Check(
        name=name,
        passed=True,
        detail=f"{len(threads)} Envoy proxies, {expected} worker threads each",
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
            "config.linkerd.io/proxy-require-identity-inbound-ports: the app port)",
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


def ztunnel_mtls(text: str, *, namespace: str, workloads: Sequence[str]) -> Check:
    """ztunnel accepted connections into every one of `workloads` over mutual TLS, and no plaintext one.

    Reads ztunnel's own metrics (`ztunnel_metrics_argv`) as the receiving side reports them
    (reporter="destination"): istio/ztunnel a45c62f8 src/proxy/inbound.rs records an HBONE connection as
    `connection_security_policy="mutual_tls"`, src/proxy/inbound_passthrough.rs a plaintext one as
    "unknown". Every connection counts in `istio_tcp_connections_opened_total` when it opens, even one
    that policy then denies; a denied one (the plaintext probe under STRICT) also counts in
    `istio_tcp_connections_failed_total` (src/proxy/metrics.rs ConnectionResultBuilder::build and
    record_internal), so plaintext that got through is what was opened and did not fail.
    """
    name = "ztunnel-mtls"
    samples = _prometheus(text, pod_header=_ISTIO_POD)
    pods = sorted({s.pod for s in samples if s.pod})

    def inbound(metric: str) -> list[_Sample]:
        return _reported(samples, metric, "destination", "destination_workload_namespace", namespace)

    def edge(s: _Sample) -> str:
        return f"{s.labels.get('source_workload', '?')}->{s.labels.get('destination_workload', '?')}"

    mtls: Counter[str] = Counter()
    edges: Counter[str] = Counter()
    plain: Counter[str] = Counter()
    opened = inbound("istio_tcp_connections_opened_total")
    for s in opened:
        policy = s.labels.get("connection_security_policy", "missing")
        if policy == "mutual_tls":
            mtls[s.labels.get("destination_workload", "?")] += int(s.value)
            edges[edge(s)] += int(s.value)
        else:
            plain[f"{edge(s)} ({policy})"] += int(s.value)
    for s in inbound("istio_tcp_connections_failed_total"):
        policy = s.labels.get("connection_security_policy", "missing")
        if policy != "mutual_tls":
            plain[f"{edge(s)} ({policy})"] -= int(s.value)
    accepted = {edge: n for edge, n in plain.items() if n > 0}
    data = {
        "namespace": namespace,
        "pods": pods,
        "mtls_connections_by_workload": {w: mtls[w] for w in workloads},
        "mtls_connections_by_edge": dict(edges),
        "plaintext_accepted": accepted,
    }
    if not samples:
        return _fail(name, f"no Prometheus samples in the istioctl output {_quote(text)}", data)
    if not opened:
        return _fail(
            name,
            f"no istio_tcp_connections_opened_total with reporter=destination into namespace {namespace} in "
            f"the metrics of {len(pods)} ztunnel pod(s) ({', '.join(pods) or 'none'}): read them after "
            "traffic; is the namespace labelled istio.io/dataplane-mode=ambient?",
            data,
        )
    if accepted:
        return _fail(
            name,
            f"ztunnel accepted {sum(accepted.values())} plaintext connection(s) into namespace {namespace}: "
            f"{_counts(accepted)}; is PeerAuthentication STRICT (kubectl get peerauthentication -A)?",
            data,
        )
    missing = [w for w in workloads if not mtls[w]]
    if not workloads or missing:
        return _fail(
            name,
            f"ztunnel accepted no mutual TLS connection into {', '.join(missing) or 'any workload'} in "
            f"namespace {namespace} (it did into: {', '.join(sorted(mtls)) or 'none'}): did the load reach "
            "them?",
            data,
        )
    return Check(
        name=name,
        passed=True,
        detail=f"ztunnel accepted {sum(mtls.values())} connections into namespace {namespace}, all "
        f"mutual_tls: {_counts(edges)}",
        data=data,
    )


def istio_waypoint_mtls(text: str, *, namespace: str, services: Sequence[str]) -> Check:
    """The waypoint served requests to every one of `services`, each from a client over mutual TLS.

    Reads the waypoint Envoy's `istio_requests_total{reporter="waypoint"}`: istio/proxy 81864a1c (the
    proxy SHA in istio 1.30.3 istio.deps) source/extensions/filters/http/istio_stats/istio_stats.cc
    (Reporter::ServerGateway, tagged `waypoint`; `mutual_tls` when both the peer's and the waypoint's
    certificates are known, else `none`) and testdata/metric/server_waypoint_proxy_connect_request_total
    .yaml.tmpl. The Service is `destination_service_name` (the host the client called).
    """
    name = "waypoint-mtls"
    samples = _prometheus(text, pod_header=_ISTIO_POD)
    pods = sorted({s.pod for s in samples if s.pod})
    served = _reported(
        samples, "istio_requests_total", "waypoint", "destination_service_namespace", namespace
    )
    by_service: Counter[str] = Counter()
    edges: Counter[str] = Counter()
    plain: Counter[str] = Counter()
    for s in served:
        service = s.labels.get("destination_service_name", "?")
        edge = f"{s.labels.get('source_workload', '?')}->{service}"
        policy = s.labels.get("connection_security_policy", "missing")
        if policy == "mutual_tls":
            by_service[service] += int(s.value)
            edges[edge] += int(s.value)
        else:
            plain[f"{edge} ({policy})"] += int(s.value)
    data = {
        "namespace": namespace,
        "pods": pods,
        "requests_by_service": {s: by_service[s] for s in services},
        "requests_by_edge": dict(edges),
    }
    if not samples:
        return _fail(name, f"no Prometheus samples in the istioctl output {_quote(text)}", data)
    if plain:
        return _fail(
            name,
            f"the waypoint served {sum(plain.values())} request(s) into namespace {namespace} without "
            f"mutual TLS: {_counts(plain)}",
            data,
        )
    missing = [s for s in services if not by_service[s]]
    if not services or missing:
        return _fail(
            name,
            f"no request to {', '.join(missing) or 'any service'} in namespace {namespace} went through the "
            f"waypoint (istio_requests_total with reporter=waypoint in the stats of "
            f"{', '.join(pods) or 'no pod'}): is the namespace labelled istio.io/use-waypoint?",
            data,
        )
    return Check(
        name=name,
        passed=True,
        detail=f"the waypoint served {sum(by_service.values())} requests into namespace {namespace}, all "
        f"mutual_tls: {_counts(edges)}",
        data=data,
    )


def linkerd_proxy_tls(text: str, *, namespace: str) -> Check:
    """The linkerd-proxies sent every request and connection to `namespace` over mTLS, and sent some.

    Reads the outbound `request_total` and `tcp_open_total` series whose endpoint is in `namespace`
    (dst_namespace): tls="true" with a server_id naming the destination's service account, never
    tls="no_identity" (linkerd2-proxy release/v2.366.0 linkerd/app/core/src/transport/labels.rs).
    A pod header followed by no sample means that the admin port answered without metrics: the CLI
    prints the body of the port-forwarded GET /metrics whatever its status (linkerd/linkerd2 edge-26.8.3
    pkg/k8s/metrics.go getResponse), and a 403 of the proxy's policy has an empty body (linkerd2-proxy
    linkerd/app/core/src/errors/respond.rs), while a proxy's own metrics are never empty.
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
    sampled = {s.pod for s in samples}
    silent = [pod for pod in pods if pod not in sampled]
    unread = _linkerd_unread(errors, silent, namespace)
    if unread is not None:
        return _fail(name, unread, data | {"refused_metrics": silent})
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


def _linkerd_unread(errors: Sequence[str], silent: Sequence[str], namespace: str) -> str | None:
    """Why some proxies' metrics could not be read: the CLI's `# ERROR` lines, or pods that answered none."""
    if errors:
        return f"linkerd could not read the proxy metrics: {'; '.join(errors)}"
    if silent:
        # `linkerd diagnostics policy -n NS po/POD PORT`: linkerd/linkerd2 edge-26.8.3 cli/cmd/policy.go.
        return (
            f"the admin port (4191) of {', '.join(silent)} refused the metrics request (the answer held no "
            "metrics: a 403 with an empty body when the inbound policy of the pod covers the admin port, "
            "e.g. config.linkerd.io/default-inbound-policy: all-authenticated); check with "
            f"`linkerd diagnostics policy -n {namespace} po/POD 4191`"
        )
    return None


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
        return _fail(
            name,
            f"no 'Cilium:' or 'Encryption:' line in the cilium-dbg status output {_quote(text)}: "
            "is it the cilium-agent's?",
            data,
        )
    if state != "Ok":
        return _fail(name, f"the cilium-agent is not Ok: Cilium: {cilium}", data)
    if mode != "Disabled":
        return _fail(
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
        return f"not JSON ({e.msg}): {_quote(text)}"
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
        return _fail(name, f"cannot read WireGuard's counters: {'; '.join(problems)}", data)
    if not pairs:
        return _fail(name, "no hop between two nodes to check: every call stayed on one node", data)
    # Every agent has a peer for every other node (the one that `cilium-dbg status` counts, by key).
    unpeered = [
        f"{node} has no peer for {other}"
        for node, agent in agents["after"].items()
        for other, key in key_of.items()
        if other != node and key not in agent.peers
    ]
    if unpeered:
        return _fail(
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
        return _fail(
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


def cross_node(text: str, *, edges: Sequence[tuple[str, str]]) -> Check:
    """Every call's caller and callee run on different nodes (`kubectl get pods -o json`).

    `edges` are (caller, callee) Deployments, the load generator's call to the entry included. Only
    traffic between nodes goes through WireGuard, and a hop between nodes is what a mesh adds latency to
    in production; pods are matched by their `app` label (testbed/kube/manifests.py). `data["edges"]`
    gives each call's node pair, for the checks that look for encrypted traffic between those nodes.
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
    data: dict[str, Any] = {"nodes": {app: sorted(n) for app, n in nodes.items() if app}, "edges": []}
    if not edges:
        return _fail(name, "no calls to check (the topology's call graph is empty)", data)
    absent = [a for a in dict.fromkeys(a for edge in edges for a in edge) if a not in nodes]
    if absent:
        return _fail(
            name, f"no running pod of {', '.join(absent)} (kubectl get pods -o wide shows why)", data
        )
    same: list[str] = []
    for caller, callee in edges:
        # One pair per pod pair: normally one pod each; during a rollout every pair must cross too.
        for caller_node in sorted(set(nodes[caller])):
            for callee_node in sorted(set(nodes[callee])):
                pair = {"caller_node": caller_node, "callee_node": callee_node}
                data["edges"].append({"caller": caller, "callee": callee, **pair})
                if caller_node == callee_node:
                    same.append(f"{caller} -> {callee} on {caller_node}")
    if same:
        return _fail(
            name,
            f"{len(same)} call(s) never leave their node: {', '.join(same)} (check the workers' "
            "testbed.io/role labels and the pods' nodeSelector)",
            data,
        )
    hops = ", ".join(
        f"{e['caller']} -> {e['callee']} ({e['caller_node']} -> {e['callee_node']})" for e in data["edges"]
    )
    return Check(name=name, passed=True, detail=f"every call crosses nodes: {hops}", data=data)


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


def _reported(
    samples: Sequence[_Sample], metric: str, reporter: str, namespace_label: str, namespace: str
) -> list[_Sample]:
    """The non-zero samples of an Istio `metric` from `reporter` whose `namespace_label` is `namespace`."""
    return [
        s
        for s in samples
        if s.name == metric
        and s.labels.get("reporter") == reporter
        and s.labels.get(namespace_label) == namespace
        and s.value > 0
    ]


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
