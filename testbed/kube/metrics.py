"""CPU and memory per component on Kubernetes: pure parsing and arithmetic, no I/O.

Two sources, read at the measured window's start and end (`testbed.loadgen.marks`):

- on kind, the cgroups inside each node container (`NODE_READ`, one `docker exec` per node): every
  container's cgroup v2 `cpu.stat`, the node's own, and the host's /proc/stat, all at one moment
  (`cgroup_window`). This is what kind trials record.
- on an existing cluster, where the nodes cannot be entered, the kubelet's `/metrics/resource` (below).

The kubelet's figures are not fit for short trials: with containerd, the kubelet takes each container's
CPU and memory from cAdvisor whenever cAdvisor has them (kubernetes/kubernetes
`pkg/kubelet/stats/cri_stats_provider.go` `addCadvisorContainerCPUAndMemoryStats`, which overwrites the
CRI's figures), and cAdvisor samples each container on its housekeeping interval, 10 s stretched up to
15 s (`pkg/kubelet/cadvisor/cadvisor_linux.go`: `defaultHousekeepingInterval`,
`maxHousekeepingInterval`, `allowDynamicHousekeeping`). A 10 s window is then off by up to 15 s at each
end, and a container not sampled again in between is left out.

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
interval. Two scrapes, at the measured window's start and end, give the deltas; the result has the
shape that local trials record (`testbed.resources.Sampler.window`), as `cgroup_window`'s has.

`prometheus_client` (whose parser this would otherwise use) is not a dependency of the testbed, so the
small parser below reads the text format (version 0.0.4) itself; the kubelet writes it with
prometheus/common `expfmt`: `name{label="value",...} value [timestamp_ms]`, values in Go's shortest
`%g` form (`4.7194112e+07`), label values escaped with backslashes.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testbed.errors import TestbedError
from testbed.kube.manifests import DEFAULT_NAMESPACE, LOADGEN_NAME, WORKER_NAME
from testbed.resources import COMPONENTS, KERNEL, NODE_OVERHEAD, busy_seconds, host_figures, proc_stat_cpu

#: (namespace, pod, container): how the kubelet labels a container's series.
Key = tuple[str, str, str]
SOURCE = "kubelet /metrics/resource"
CGROUP_SOURCE = "cgroup v2 cpu.stat usage_usec in each kind node, read at the measured window's edges"
MEMORY_SOURCE = (
    "working set (cgroup v2 memory.current - inactive_file, as cAdvisor and the kubelet compute it), the "
    "larger of its reads at the window's start and end: not a peak within the window (memory.peak would be "
    "the peak since the container started)"
)
KUBELET_MEMORY_SOURCE = "the kubelet's working set, the larger of its two scrapes: not a peak"
#: A read further than this from its window edge is warned about (the docker exec was slow to start).
READ_OFFSET_WARNING_S = 1.0

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
    *,
    source: str = SOURCE,
    memory_source: str = KUBELET_MEMORY_SOURCE,
) -> dict[str, Any]:
    """Per component, the CPU used between two snapshots and the larger of the two working sets.

    `{"window_s", "source", "memory_source", "components": {name: {cpu_seconds, vcpu, peak_rss_mb,
    processes}}, "warnings"}`, as `testbed.resources.Sampler.window` writes on the local platform,
    `processes` counting containers. `vcpu` sums each container's rate over its own interval between the
    snapshots; `window_s` is the median interval. `peak_rss_mb` is the larger working set of the two
    snapshots: neither source keeps a peak within the window. A counter that went down means the
    container restarted in between: like Prometheus' `increase()`, its whole new count is taken. A
    container in one snapshot only is left out, with a warning.
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
        memory = max(first.memory_bytes, last.memory_bytes)
        if used < 0:
            warnings.append(f"{_show(key)} restarted between the scrapes (its CPU counter went down)")
            used, memory = last.cpu_seconds, last.memory_bytes
        name = attribution(*key)
        if name not in totals:
            raise ValueError(f"attribution gave {name!r} for {_show(key)}; expected one of {COMPONENTS}")
        figures = totals[name]
        figures["cpu"] += used
        figures["vcpu"] += used / interval
        figures["memory"] += memory
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
        "source": source,
        "memory_source": memory_source,
        "components": components,
        "warnings": warnings,
    }


def _show(key: Key) -> str:
    namespace, pod, container = key
    return f"container {container!r} of pod {namespace}/{pod}"


# --- kind: the cgroups inside each node container ----------------------------------------------------

#: The lines `NODE_READ` keeps from cgroup files: cpu.stat's `usage_usec` (CPU since the cgroup was
#: created, children included), memory.stat's `inactive_file`, and memory.current's one number.
_KEEP = '-e ^usage_usec -e ^inactive_file -e "^[0-9]"'
#: What each kind node runs at each edge of the window (`testbed.kube.docker.run_in_nodes`), all in one
#: `docker exec`: the time, the host's CPU lines of /proc/stat (not namespaced: a node sees the host's
#: kernel), then `path:line` (grep -H) for the node's own cgroup and for every container's. In a kind node
#: on a cgroup v2 host, /sys/fs/cgroup is the node container's own cgroup (Docker's private cgroup
#: namespace; kind v0.32.0 images/base/files/usr/local/bin/entrypoint `fix_cgroup`). kind configures the
#: kubelet with `cgroupDriver: systemd` and `cgroupRoot: /kubelet` (pkg/cluster/internal/kubeadm/config.go
#: `Derive` and the KubeletConfiguration templates) and containerd's runc with `SystemdCgroup = true`
#: (images/base/files/etc/containerd/config.toml), so each container is a systemd scope,
#: `kubelet.slice/kubelet-kubepods[-QOS].slice/kubelet-kubepods[-QOS]-pod<UID>.slice/
#: cri-containerd-<ID>.scope`, ID being the container's id in the pod's status (the shape the kubelet
#: parses in `pkg/kubelet/stats/cri_stats_provider.go` `extractIDFromCgroupPath`). `find` looks for the
#: scopes wherever they are under kubelet.slice; `grep -s` passes over a cgroup that went meanwhile.
#: After the scan, the time, the host's `cpu` line and the node's own usage_usec once more: the scan's
#: own CPU (find and grep over every container, in the node's cgroup and the host's busy time) lies
#: between the two, and `cgroup_window` takes the later ones at the window's start and the earlier ones at
#: its end, so that neither edge's scan is counted inside the window.
NODE_READ = (
    "date +%s.%N; "
    'grep -H "^cpu" /proc/stat; '
    "cd /sys/fs/cgroup || exit 1; "
    f"grep -s -H {_KEEP} cpu.stat memory.current memory.stat; "
    'find kubelet.slice -path "*/cri-containerd-*.scope/*" '
    '"(" -name cpu.stat -o -name memory.current -o -name memory.stat ")" '
    f'-exec grep -s -H {_KEEP} "{{}}" +; '
    "date +%s.%N; "
    'grep -H "^cpu " /proc/stat; '
    "grep -s -H ^usage_usec cpu.stat; "
    "exit 0"
)
_SCOPE = re.compile(r"(?:^|/)cri-containerd-(?P<id>[0-9a-f]+)\.scope$")
_PROC_STAT = "/proc/stat"


@dataclass(frozen=True, kw_only=True)
class NodeRead:
    """One kind node's `NODE_READ` output: its cgroup, its containers' cgroups and the host's CPU.

    `at_unix`, `node` and `host` are read before the scan of the containers; `scanned_unix`,
    `node_scanned` and `host_scanned` after it (None in a read without that part: then the earlier ones
    stand for both). The containers' own figures are timed at `at_unix`.
    """

    at_unix: float
    node: Usage
    #: Every `cri-containerd-<id>.scope` under the node's kubelet.slice, by container id.
    containers: Mapping[str, Usage]
    #: /proc/stat's all-CPU line in seconds, by field name (`testbed.resources.PROC_STAT_FIELDS`).
    host: Mapping[str, float]
    cores: int
    #: Whether the node's cgroup has memory.current (the memory controller is enabled there).
    has_memory: bool = True
    scanned_unix: float | None = None
    node_scanned: Usage | None = None
    host_scanned: Mapping[str, float] | None = None

    def opening(self) -> tuple[float, float, Mapping[str, float]]:
        """(time, node CPU seconds, host CPU) as the window's start: after the scan, so as to leave it out."""
        if self.scanned_unix is None or self.node_scanned is None or self.host_scanned is None:
            return self.at_unix, self.node.cpu_seconds, self.host
        return self.scanned_unix, self.node_scanned.cpu_seconds, self.host_scanned

    def closing(self) -> tuple[float, float, Mapping[str, float]]:
        """(time, node CPU seconds, host CPU) as the window's end: before the scan."""
        return self.at_unix, self.node.cpu_seconds, self.host


@dataclass
class _Cgroup:
    usage_usec: int | None = None
    current: int | None = None
    inactive_file: int = 0


def parse_node_read(text: str, *, node: str) -> NodeRead:
    """A `NodeRead` from what `NODE_READ` printed in `node`; a clear error if the node is not as expected."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise TestbedError(f"reading the cgroups of kind node {node} printed nothing")
    at = _wall_clock(lines[0], node)
    cpu_lines: list[str] = []
    cgroups: dict[str, _Cgroup] = {}
    # After the scan (a second time line): the time, the host's cpu line and the node's usage_usec again.
    scanned_at: float | None = None
    scanned_cpu: list[str] = []
    scanned = _Cgroup()
    for line in lines[1:]:
        path, sep, content = line.partition(":")
        if not sep:
            if scanned_at is None and _is_number(line):
                scanned_at = float(line)
                continue
            raise TestbedError(f"kind node {node}: unexpected line in its cgroup read: {line[:120]!r}")
        if path == _PROC_STAT:
            (cpu_lines if scanned_at is None else scanned_cpu).append(content)
            continue
        directory, _, name = path.rpartition("/")
        try:
            if scanned_at is None:
                _take(cgroups.setdefault(directory, _Cgroup()), name, content)
            elif directory == "":
                _take(scanned, name, content)
        except ValueError:
            raise TestbedError(f"kind node {node}: not a number in {path}: {content[:80]!r}") from None
    host = next((proc_stat_cpu(line) for line in cpu_lines if line.startswith("cpu ")), None)
    host_scanned = next((proc_stat_cpu(line) for line in scanned_cpu if line.startswith("cpu ")), None)
    cores = sum(1 for line in cpu_lines if line[3:4].isdigit())
    own = cgroups.pop("", None)
    if own is None or own.usage_usec is None:
        raise TestbedError(
            f"kind node {node} has no /sys/fs/cgroup/cpu.stat with usage_usec: its Docker host uses cgroup "
            "v1, on which a Kubernetes 1.35 kubelet does not start; use a cgroup v2 host"
        )
    if host is None:
        raise TestbedError(f"kind node {node}: /proc/stat has no `cpu` line")
    containers: dict[str, Usage] = {}
    for directory, cgroup in cgroups.items():
        match = _SCOPE.search(directory)
        if match is None or cgroup.usage_usec is None:
            continue  # a cgroup that went between `find` and `grep`, or a file of no container
        containers[match["id"]] = _usage(cgroup, at)
    # A read cut short after its scan (the node busy, the exec killed) still has its earlier figures.
    complete = scanned_at is not None and scanned.usage_usec is not None and host_scanned is not None
    return NodeRead(
        at_unix=at,
        node=_usage(own, at),
        containers=containers,
        host=host,
        cores=max(cores, 1),
        has_memory=own.current is not None,
        scanned_unix=scanned_at if complete else None,
        node_scanned=_usage(scanned, scanned_at) if complete and scanned_at is not None else None,
        host_scanned=host_scanned if complete else None,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _take(cgroup: _Cgroup, name: str, content: str) -> None:
    """One kept line of a cgroup file (`path:` removed) into what is known of that cgroup."""
    key, _, value = content.partition(" ")
    if name == "cpu.stat" and key == "usage_usec":
        cgroup.usage_usec = int(value)
    elif name == "memory.stat" and key == "inactive_file":
        cgroup.inactive_file = int(value)
    elif name == "memory.current":
        cgroup.current = int(content)


def _wall_clock(line: str, node: str) -> float:
    try:
        return float(line.strip())
    except ValueError:
        raise TestbedError(
            f"kind node {node}: its cgroup read did not start with the time (`date +%s.%N`): {line[:80]!r}"
        ) from None


def _usage(cgroup: _Cgroup, at: float) -> Usage:
    # cAdvisor's working set (google/cadvisor container/libcontainer/handler.go `setMemoryStats`):
    # usage minus inactive_file on cgroup v2, never below zero.
    memory = max(0, cgroup.current - cgroup.inactive_file) if cgroup.current is not None else 0
    return Usage(cpu_seconds=(cgroup.usage_usec or 0) / 1e6, memory_bytes=float(memory), timestamp_s=at)


def container_ids(pods_json: str) -> dict[str, Key]:
    """(namespace, pod, container) by containerd id, from `kubectl get pods -A -o json`.

    Each container's current id (`status.containerStatuses[].containerID`, `containerd://<id>`) and,
    after a restart, its previous one (`lastState.terminated.containerID`): k8s.io/api core/v1 types.go
    `ContainerStatus`, `ContainerStateTerminated`. Init and ephemeral containers are included.
    """
    try:
        document = json.loads(pods_json)
    except ValueError:
        raise TestbedError("`kubectl get pods -A -o json` did not print JSON") from None
    ids: dict[str, Key] = {}
    for pod in document.get("items", []):
        meta, status = pod.get("metadata", {}), pod.get("status", {})
        for kind in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
            for container in status.get(kind) or []:
                key = (meta.get("namespace", ""), meta.get("name", ""), container.get("name", ""))
                previous = (container.get("lastState") or {}).get("terminated") or {}
                for raw in (previous.get("containerID"), container.get("containerID")):
                    runtime, sep, cid = (raw or "").partition("://")
                    if sep and runtime == "containerd" and cid:
                        ids[cid] = key
    return ids


def cgroup_window(
    before: Mapping[str, NodeRead],
    after: Mapping[str, NodeRead],
    ids: Mapping[str, Key],
    attribution: Callable[[str, str, str], str] = component,
    *,
    window_unix: tuple[float, float],
) -> dict[str, Any]:
    """The trial's `resources` from every node's cgroups read at the window's start and end.

    Each pod container's CPU between its node's two reads goes to its component (`window`); then
    `node-overhead` (each node container's CPU less its pods' containers) and `kernel-unattributed` (the
    host's busy CPU from /proc/stat less every node container), so that the components add up to the
    host's busy CPU. The node's and the host's counters are taken after the start read's scan of the
    containers and before the end read's (`NodeRead.opening`, `closing`): the scans' own CPU is outside the
    node cgroups' window. What `docker exec` costs on the host itself (dockerd, containerd, runc, before the
    script's first line) is in no node cgroup, so it is in `kernel-unattributed`: tens of ms per read.
    Rates (`vcpu`) are taken over each node's own interval between its reads; `reads` says how far those
    were from the window's edges. A container whose id is not in the pod list (the pods' pause sandboxes)
    is left in its node's overhead.

    Containers are paired by id, not by name: a container that restarted in the window has a new id
    (and its old cgroup, with its counter, is gone), so it is in one read only. It is left out of the
    components with a warning; its CPU in the window (the old container's until it stopped, the new
    one's since it started) stays in its node's overhead, which is the node's whole cgroup less its
    paired containers: the node's cgroup keeps a removed child's CPU, so the components still add up to
    the host's busy CPU, and the warning says which overhead holds more than the node's own work.
    """
    nodes = [node for node in before if node in after]
    if not nodes:
        raise TestbedError("no kind node was read at both edges of the measured window")
    first: dict[Key, Usage] = {}
    last: dict[Key, Usage] = {}
    unmatched = 0
    node_figures: dict[str, dict[str, Any]] = {}
    overhead = {"cpu": 0.0, "vcpu": 0.0, "memory": 0.0}
    in_nodes = 0.0  # the node containers' vCPU, summed
    unpaired: dict[Key, set[str]] = {}  # the edges ("start", "end") at which a container was alone
    for node in nodes:
        start, end = before[node], after[node]
        unmatched += sum(1 for cid in end.containers if cid not in ids)
        in_pods = {"cpu": 0.0, "memory": 0.0}
        for cid in start.containers.keys() - end.containers.keys():
            if cid in ids:
                unpaired.setdefault(ids[cid], set()).add("start")
        for cid, use in end.containers.items():
            if cid not in ids:
                continue
            in_pods["memory"] += use.memory_bytes
            if cid not in start.containers:
                unpaired.setdefault(ids[cid], set()).add("end")
                continue
            first[ids[cid]], last[ids[cid]] = start.containers[cid], use
            in_pods["cpu"] += use.cpu_seconds - start.containers[cid].cpu_seconds
        opened, node_start, _ = start.opening()
        closed, node_end, _ = end.closing()
        interval = closed - opened
        used = node_end - node_start
        node_figures[node] = {
            "cpu_seconds": round(used, 4),
            "vcpu": round(used / interval, 4) if interval > 0 else 0.0,
            "source": "kind node container (cgroup cpu.stat)",
            "memory_mb": round(end.node.memory_bytes / 2**20, 1) if end.has_memory else None,
            "read_unix": [round(opened, 3), round(closed, 3)],
        }
        # The containers are read during the scans: their interval is from scan to scan, the node's own
        # from after the start's scan to before the end's. The overhead is the difference of the rates.
        scans = end.at_unix - start.at_unix
        if interval > 0 and scans > 0:
            in_nodes += used / interval
            rest = used / interval - in_pods["cpu"] / scans
            overhead["vcpu"] += rest
            overhead["cpu"] += rest * scans
        if end.has_memory:
            overhead["memory"] += max(0.0, end.node.memory_bytes - in_pods["memory"])
    result = window(first, last, attribution, source=CGROUP_SOURCE, memory_source=MEMORY_SOURCE)
    result["warnings"] += _unpaired(unpaired, paired=first.keys())
    host, busy_vcpu = _host(before[nodes[0]], after[nodes[0]], nodes[0])
    kernel_vcpu = busy_vcpu - in_nodes
    components = result["components"]
    components[NODE_OVERHEAD] = {
        "cpu_seconds": round(overhead["cpu"], 4),
        "vcpu": round(overhead["vcpu"], 4),
        "peak_rss_mb": round(overhead["memory"] / 2**20, 1),
        "processes": len(nodes),
    }
    components[KERNEL] = {
        "cpu_seconds": round(kernel_vcpu * result["window_s"], 4),
        "vcpu": round(kernel_vcpu, 4),
        "peak_rss_mb": 0.0,
        "processes": 0,
    }
    if not any(read.has_memory for read in after.values()):
        result["memory_source"] = "none: the nodes' cgroups have no memory.current (memory controller off)"
    result["host"] = host
    result["nodes"] = node_figures
    result["reads"] = _offsets(before, after, nodes, window_unix, result["warnings"])
    result["unmatched_cgroups"] = unmatched
    return result


def _host(start: NodeRead, end: NodeRead, node: str) -> tuple[dict[str, Any], float]:
    """The host's figures and busy vCPU between a node's reads: the kernel is the same in every node."""
    opened, _, host_start = start.opening()
    closed, _, host_end = end.closing()
    length = closed - opened
    busy = busy_seconds(host_end) - busy_seconds(host_start)
    steal = host_end.get("steal", 0.0) - host_start.get("steal", 0.0)
    host = host_figures(busy, steal, length, end.cores)
    host["source"] = f"/proc/stat, read in kind node {node} (the host's kernel)"
    return host, busy / length if length > 0 else 0.0


def _unpaired(unpaired: Mapping[Key, set[str]], *, paired: Collection[Key]) -> list[str]:
    """A warning for each container read at one edge only: restarted (its id changed), started or stopped."""
    warnings = []
    for key, edges in sorted(unpaired.items()):
        if key in paired or edges == {"start", "end"}:
            what = "restarted during the window"
        elif edges == {"start"}:
            what = "stopped during the window"
        else:
            what = "started during the window"
        warnings.append(
            f"{_show(key)} {what}: its CPU is not counted in its component (it is in node-overhead)"
        )
    return warnings


def _offsets(
    before: Mapping[str, NodeRead],
    after: Mapping[str, NodeRead],
    nodes: Sequence[str],
    window_unix: tuple[float, float],
    warnings: list[str],
) -> dict[str, Any]:
    """How far each edge's reads were from the edge (seconds, positive: after it), as [earliest, latest]."""
    out: dict[str, Any] = {"window_unix": [round(window_unix[0], 3), round(window_unix[1], 3)]}
    edges = (
        ("start", [before[node].opening()[0] for node in nodes], window_unix[0]),
        ("end", [after[node].closing()[0] for node in nodes], window_unix[1]),
    )
    for edge, times, at in edges:
        offsets = [read_at - at for read_at in times]
        out[f"{edge}_offset_s"] = [round(min(offsets), 3), round(max(offsets), 3)]
        worst = max(offsets, key=abs)
        if abs(worst) > READ_OFFSET_WARNING_S:
            warnings.append(
                f"a node's cgroups were read {worst:+.2f} s from the window's {edge}: "
                "its figures cover a shifted interval"
            )
    return out
