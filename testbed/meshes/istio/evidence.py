"""Proof that Istio does its job on Kubernetes (sidecar, ambient, waypoint), read from istioctl's and
ztunnel's own output: pure functions. The formats and their sources: tests/fixtures/mesh/README.md.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from testbed.meshes.evidence import Check, Sample, counts, fail, prometheus, quote, reported


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
    samples = prometheus(text, pod_header=_ISTIO_POD)
    pods = sorted({s.pod for s in samples if s.pod})
    inbound = reported(
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
        return fail(name, f"no Prometheus samples in the istioctl output {quote(text)}", data)
    if not inbound:
        return fail(
            name,
            f"no istio_requests_total with reporter=destination into namespace {namespace} in the stats of "
            f"{len(pods)} pod(s) ({', '.join(pods) or 'none'}): query the callees' sidecars, after traffic; "
            "is the namespace labelled istio-injection=enabled?",
            data,
        )
    if plain:
        return fail(
            name,
            f"{sum(plain.values())} request(s) into namespace {namespace} were not mutual TLS: "
            f"{counts(plain)}; is PeerAuthentication STRICT (kubectl get peerauthentication -A)?",
            data,
        )
    received = {s.labels.get("destination_workload") for s in inbound}
    unread = [callee for callee in callees if callee not in received]
    if unread:
        return fail(
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
        f"{counts(edges)}",
        data=data,
    )


def envoy_concurrency(text: str, *, expected: int) -> Check:
    """Every Envoy in istioctl's stats output runs `expected` worker threads (gauge `server.concurrency`).

    Observed, not assumed: the gauge is in every Istio proxy's stats (istio/istio 1.30.3
    pkg/bootstrap/config.go requiredEnvoyStatsMatcherInclusionPrefixes has `server`; Envoy's
    source/server/server.h ALL_SERVER_STATS `concurrency`, "envoy_server_concurrency" in Prometheus).
    """
    name = "envoy-concurrency"
    samples = prometheus(text, pod_header=_ISTIO_POD)
    pods = sorted({s.pod for s in samples if s.pod})
    threads = {s.pod: int(s.value) for s in samples if s.name == "envoy_server_concurrency" and s.pod}
    data = {"expected": expected, "threads": threads}
    missing = [pod for pod in pods if pod not in threads]
    wrong = {pod: n for pod, n in threads.items() if n != expected}
    if not pods:
        return fail(name, f"no Envoy stats to read the worker threads from: {quote(text)}", data)
    if missing:
        return fail(name, f"no envoy_server_concurrency in the stats of {', '.join(missing)}", data)
    if wrong:
        found = ", ".join(f"{pod} {n}" for pod, n in sorted(wrong.items()))
        return fail(name, f"Envoy worker threads not {expected}: {found} (ProxyConfig concurrency)", data)
    return Check(
        name=name,
        passed=True,
        detail=f"{len(threads)} Envoy proxies, {expected} worker threads each",
        data=data,
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
        return fail(name, f"the ztunnel workload dump is not JSON ({e.msg}): {quote(text)}", {})
    if not isinstance(items, list):
        return fail(name, f"the ztunnel workload dump is not a JSON list: {quote(text)}", {})
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
        return fail(name, "no workloads to check were given", data)
    if not_hbone:
        return fail(
            name,
            f"ztunnel does not carry {', '.join(not_hbone)} over HBONE in namespace {namespace}: is the "
            "namespace labelled istio.io/dataplane-mode=ambient (and no pod opted out)?",
            data,
        )
    if missing:
        return fail(
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
    samples = prometheus(text, pod_header=_ISTIO_POD)
    pods = sorted({s.pod for s in samples if s.pod})

    def inbound(metric: str) -> list[Sample]:
        return reported(samples, metric, "destination", "destination_workload_namespace", namespace)

    def edge(s: Sample) -> str:
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
        return fail(name, f"no Prometheus samples in the istioctl output {quote(text)}", data)
    if not opened:
        return fail(
            name,
            f"no istio_tcp_connections_opened_total with reporter=destination into namespace {namespace} in "
            f"the metrics of {len(pods)} ztunnel pod(s) ({', '.join(pods) or 'none'}): read them after "
            "traffic; is the namespace labelled istio.io/dataplane-mode=ambient?",
            data,
        )
    if accepted:
        return fail(
            name,
            f"ztunnel accepted {sum(accepted.values())} plaintext connection(s) into namespace {namespace}: "
            f"{counts(accepted)}; is PeerAuthentication STRICT (kubectl get peerauthentication -A)?",
            data,
        )
    missing = [w for w in workloads if not mtls[w]]
    if not workloads or missing:
        return fail(
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
        f"mutual_tls: {counts(edges)}",
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
    samples = prometheus(text, pod_header=_ISTIO_POD)
    pods = sorted({s.pod for s in samples if s.pod})
    served = reported(samples, "istio_requests_total", "waypoint", "destination_service_namespace", namespace)
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
        return fail(name, f"no Prometheus samples in the istioctl output {quote(text)}", data)
    if plain:
        return fail(
            name,
            f"the waypoint served {sum(plain.values())} request(s) into namespace {namespace} without "
            f"mutual TLS: {counts(plain)}",
            data,
        )
    missing = [s for s in services if not by_service[s]]
    if not services or missing:
        return fail(
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
        f"mutual_tls: {counts(edges)}",
        data=data,
    )


# istioctl prints "\nThe result of pod NAME:\n\n" before each pod's stats (proxyconfig.go printStatus).
_ISTIO_POD = re.compile(r"^The result of pod (\S+):$", re.MULTILINE)
