"""CPU and memory per component on kind, from the kubelet's `/metrics/resource`: pure parsing, no I/O.

`kubectl get --raw /api/v1/nodes/NODE/proxy/metrics/resource` returns, in the Prometheus text format,
the kubelet's cumulative CPU seconds and current working set of every running container. The metric
names, labels and stability levels are those of the kubelet's resource metrics collector,
kubernetes/kubernetes `pkg/kubelet/metrics/collectors/resource_metrics.go` (Kubernetes 1.35):

    container_cpu_usage_seconds_total{container,namespace,pod}   counter, STABLE, with a timestamp (ms)
    container_memory_working_set_bytes{container,namespace,pod}  gauge, STABLE, with a timestamp (ms)
    pod_cpu_usage_seconds_total{namespace,pod}, pod_memory_working_set_bytes{namespace,pod}
    node_cpu_usage_seconds_total, node_memory_working_set_bytes   no labels
    resource_scrape_error                                         1 when the kubelet could not collect

The timestamp of each series is when the kubelet's stats provider sampled that container (cAdvisor's
housekeeping), not when it was scraped: `window()` therefore takes each container's rate over its own
interval. Two scrapes, one before and one after the measured window, give the deltas; the result has
the shape that local trials record (`testbed.resources.Sampler.window`).

`prometheus_client` (whose parser this would otherwise use) is not a dependency of the testbed, so the
small parser below reads the text format (version 0.0.4) itself; the kubelet writes it with
prometheus/common `expfmt`: `name{label="value",...} value [timestamp_ms]`, values in Go's shortest
`%g` form (`4.7194112e+07`), label values escaped with backslashes.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from testbed.errors import TestbedError
from testbed.kube.manifests import DEFAULT_NAMESPACE, LOADGEN_NAME, WORKER_NAME

#: (namespace, pod, container): how the kubelet labels a container's series.
Key = tuple[str, str, str]
#: What `window()` reports, in this order, whether or not any container fell into them.
COMPONENTS = ("app", "sidecar", "loadgen", "node-proxy", "control-plane", "kubernetes")
SOURCE = "kubelet /metrics/resource"

CONTAINER_CPU = "container_cpu_usage_seconds_total"
CONTAINER_MEMORY = "container_memory_working_set_bytes"
NODE_CPU = "node_cpu_usage_seconds_total"
NODE_MEMORY = "node_memory_working_set_bytes"
SCRAPE_ERROR = "resource_scrape_error"


@dataclass(frozen=True, kw_only=True)
class Series:
    """One sample line: a metric name, its labels, its value and its timestamp (ms) if it has one."""

    name: str
    labels: Mapping[str, str]
    value: float
    timestamp_ms: int | None


@dataclass(frozen=True, kw_only=True)
class Usage:
    """A container's (or the node's) cumulative CPU and current working set, as sampled at `timestamp_s`."""

    cpu_seconds: float
    memory_bytes: float
    timestamp_s: float


# name, optional {labels}, value, optional timestamp; values may be NaN or +Inf/-Inf.
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>.*)\})?"
    r"[ \t]+(?P<value>\S+)"
    r"(?:[ \t]+(?P<timestamp>-?[0-9]+))?[ \t]*$"
)
_LABEL = re.compile(
    r'[ \t]*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"(?P<value>(?:[^"\\]|\\.)*)"[ \t]*(?:,|$)'
)
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def parse(text: str) -> Iterator[Series]:
    """Every sample of a Prometheus text exposition; `# HELP`, `# TYPE` and other comments are skipped."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise TestbedError(
                f"line {number} of the kubelet's metrics is not a Prometheus sample: {line[:120]!r}"
            )
        try:
            value = float(match["value"])
        except ValueError:
            raise TestbedError(
                f"line {number} of the kubelet's metrics has no number: {line[:120]!r}"
            ) from None
        timestamp = match["timestamp"]
        yield Series(
            name=match["name"],
            labels=_labels(match["labels"] or "", number),
            value=value,
            timestamp_ms=int(timestamp) if timestamp is not None else None,
        )


def _labels(text: str, number: int) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text.rstrip()):
        match = _LABEL.match(text, position)
        if match is None or match.end() == position:
            raise TestbedError(
                f"line {number} of the kubelet's metrics has malformed labels: {{{text[:120]}}}"
            )
        labels[match["name"]] = re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m[1], m[0]), match["value"])
        position = match.end()
    return labels


def snapshot(text: str) -> dict[Key, Usage]:
    """Every container's `Usage` in one scrape, keyed by (namespace, pod, container).

    A container without a CPU series (the kubelet has not sampled it yet) is left out: it has nothing to
    take a delta of. One without a working set series gets 0 bytes.
    """
    cpu: dict[Key, tuple[float, float]] = {}
    memory: dict[Key, float] = {}
    for series in _checked(text):
        if series.name not in (CONTAINER_CPU, CONTAINER_MEMORY):
            continue
        key = (
            series.labels.get("namespace", ""),
            series.labels.get("pod", ""),
            series.labels.get("container", ""),
        )
        if series.name == CONTAINER_CPU:
            cpu[key] = (series.value, _seconds(series))
        else:
            memory[key] = series.value
    return {
        key: Usage(cpu_seconds=seconds, memory_bytes=memory.get(key, 0.0), timestamp_s=at)
        for key, (seconds, at) in cpu.items()
    }


def node_usage(text: str) -> Usage | None:
    """The node's own cumulative CPU and working set (every process on it, not only pods), if reported."""
    cpu: tuple[float, float] | None = None
    memory = 0.0
    for series in _checked(text):
        if series.name == NODE_CPU:
            cpu = (series.value, _seconds(series))
        elif series.name == NODE_MEMORY:
            memory = series.value
    if cpu is None:
        return None
    return Usage(cpu_seconds=cpu[0], memory_bytes=memory, timestamp_s=cpu[1])


def _checked(text: str) -> list[Series]:
    samples = list(parse(text))
    if any(s.name == SCRAPE_ERROR and s.value != 0 for s in samples):
        raise TestbedError(
            "the kubelet reported resource_scrape_error 1: it could not read its stats provider; "
            "see its log with `docker exec NODE journalctl -u kubelet`"
        )
    return samples


def _seconds(series: Series) -> float:
    if series.timestamp_ms is None:
        raise TestbedError(
            f"{series.name}{dict(series.labels)} has no timestamp: is this a kubelet's output?"
        )
    return series.timestamp_ms / 1000


# Outside the app namespace, a pod belongs to a known workload when its name is the workload's name
# followed by the suffixes Kubernetes generates: a DaemonSet's `-xxxxx`, or a Deployment's
# `-<pod-template-hash>-xxxxx`. Both are drawn from the alphabet of k8s.io/apimachinery's `rand.String`
# (no vowels), so that `cilium-envoy-jm6xs` cannot be read as a pod of the `cilium` DaemonSet.
_GENERATED = "[bcdfghjklmnpqrstvwxz2456789]"
_GENERATED_SUFFIX = re.compile(rf"^(?:{_GENERATED}{{1,10}}-)?{_GENERATED}{{5}}$")

#: The component of each known system workload (DaemonSet or Deployment name), whatever its containers.
SYSTEM_WORKLOADS: Mapping[str, str] = {
    # Per-node data planes and agents of sidecar-less meshes.
    "ztunnel": "node-proxy",  # Istio ambient; its one container is named `istio-proxy`
    "istio-cni-node": "node-proxy",  # Istio's CNI agent, required by ambient
    "cilium": "node-proxy",  # the agent DaemonSet, container `cilium-agent`
    "cilium-envoy": "node-proxy",
    # Control planes.
    "istiod": "control-plane",  # container `discovery`
    "linkerd-destination": "control-plane",  # with its own `linkerd-proxy`, not a workload's sidecar
    "linkerd-identity": "control-plane",
    "linkerd-proxy-injector": "control-plane",
    "cilium-operator": "control-plane",
}
#: Containers that a mesh injects into the pods of the app namespace.
SIDECAR_CONTAINERS = frozenset({"istio-proxy", "linkerd-proxy"})
#: The load generator's pods (`testbed.kube.manifests`): their own containers are the load generator.
LOADGEN_WORKLOADS = frozenset({LOADGEN_NAME, WORKER_NAME})


def workload(pod: str, known: frozenset[str] | Mapping[str, str]) -> str | None:
    """The known workload whose generated pod name `pod` is, the longest name first; None if none."""
    for name in sorted(known, key=len, reverse=True):
        if pod.startswith(name + "-") and _GENERATED_SUFFIX.match(pod[len(name) + 1 :]):
            return name
    return None


def component(
    namespace: str,
    pod: str,
    container: str,
    *,
    app_namespace: str = DEFAULT_NAMESPACE,
    workloads: Mapping[str, str] | None = None,
) -> str:
    """The component a container's usage counts for: one of `COMPONENTS`.

    First the mesh's own `workloads` (`KubeMesh.components`), in any namespace: Istio's waypoint runs
    in the app namespace but is a shared proxy, not a sidecar. Then, in the app namespace: a mesh's
    injected proxy is `sidecar` (the load generator's too, as on the local platform, where the
    client-side sidecar counts with the others), the load generator's own containers are `loadgen`,
    everything else is `app`. Elsewhere: the table `SYSTEM_WORKLOADS`, then `kubernetes`.
    """
    own = workload(pod, workloads) if workloads else None
    if workloads and own is not None:
        return workloads[own]
    if namespace == app_namespace:
        if container in SIDECAR_CONTAINERS:
            return "sidecar"
        if workload(pod, LOADGEN_WORKLOADS) is not None:
            return "loadgen"
        return "app"
    known = workload(pod, SYSTEM_WORKLOADS)
    return SYSTEM_WORKLOADS[known] if known is not None else "kubernetes"


def window(
    before: Mapping[Key, Usage],
    after: Mapping[Key, Usage],
    attribution: Callable[[str, str, str], str] = component,
) -> dict[str, Any]:
    """Per component, the CPU used between two snapshots and the working set at the second one.

    `{"window_s", "source", "components": {name: {cpu_seconds, vcpu, peak_rss_mb, processes}}, "warnings"}`,
    as `testbed.resources.Sampler.window` writes on the local platform, `processes` counting containers.
    `vcpu` sums each container's rate over its own sampling interval; `window_s` is the median interval.
    `peak_rss_mb` is the working set at the second scrape: the kubelet keeps no peak, this is the best
    available. A counter that went down means the container restarted in between: like Prometheus'
    `increase()`, its whole new count is taken. A container in one scrape only is left out, with a warning.
    """
    intervals = [after[k].timestamp_s - before[k].timestamp_s for k in after.keys() & before.keys()]
    intervals = [i for i in intervals if i > 0]
    length = statistics.median(intervals) if intervals else 0.0
    totals = {name: {"cpu": 0.0, "vcpu": 0.0, "memory": 0.0, "containers": 0} for name in COMPONENTS}
    warnings: list[str] = []
    for key in sorted(before.keys() - after.keys()):
        warnings.append(f"{_show(key)} is gone from the second scrape: its CPU in the window is not counted")
    for key in sorted(after.keys() - before.keys()):
        warnings.append(f"{_show(key)} appeared after the first scrape: its CPU in the window is not counted")
    for key in sorted(after.keys() & before.keys()):
        first, last = before[key], after[key]
        interval = last.timestamp_s - first.timestamp_s
        if interval <= 0:
            warnings.append(f"{_show(key)} was not sampled again between the scrapes: its CPU is not counted")
            continue
        used = last.cpu_seconds - first.cpu_seconds
        if used < 0:
            warnings.append(f"{_show(key)} restarted between the scrapes (its CPU counter went down)")
            used = last.cpu_seconds
        name = attribution(*key)
        if name not in totals:
            raise ValueError(f"attribution gave {name!r} for {_show(key)}; expected one of {COMPONENTS}")
        figures = totals[name]
        figures["cpu"] += used
        figures["vcpu"] += used / interval
        figures["memory"] += last.memory_bytes
        figures["containers"] += 1
    components = {
        name: {
            "cpu_seconds": round(t["cpu"], 4),
            "vcpu": round(t["vcpu"], 4),
            "peak_rss_mb": round(t["memory"] / 2**20, 1),
            "processes": int(t["containers"]),
        }
        for name, t in totals.items()
    }
    return {
        "window_s": round(length, 3),
        "source": SOURCE,
        "components": components,
        "warnings": warnings,
    }


def _show(key: Key) -> str:
    namespace, pod, container = key
    return f"container {container!r} of pod {namespace}/{pod}"
