"""The kubelet's `/metrics/resource` as the kind platform reads it: parsing, attribution, window deltas.

The fixture is synthesized in the exact shape of a Kubernetes 1.35 kubelet's output (metric names,
labels, `[STABLE]` markers, order, Go's `%g` numbers, millisecond timestamps; see
`testbed/kube/metrics.py`) for a one-node kind cluster with Istio sidecars and ambient, and Cilium.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil
import pytest

from testbed.errors import TestbedError
from testbed.kube.metrics import (
    CGROUP_SOURCE,
    COMPONENTS,
    KERNEL,
    MEMORY_SOURCE,
    NODE_OVERHEAD,
    NODE_READ,
    Key,
    NodeRead,
    Usage,
    cgroup_window,
    component,
    container_ids,
    node_usage,
    parse,
    parse_node_read,
    snapshot,
    window,
    workload,
)
from testbed.resources import busy_seconds, proc_stat_cpu

FIXTURE = Path(__file__).parent / "fixtures" / "kubelet-metrics-resource.txt"


@pytest.fixture(scope="module")
def text() -> str:
    return FIXTURE.read_text()


def test_every_sample_line_of_the_fixture_parses(text: str) -> None:
    samples = list(parse(text))
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(samples) == len(lines) == 157
    start = next(s for s in samples if s.name == "container_start_time_seconds")
    assert start.timestamp_ms is None  # the kubelet gives start times no timestamp
    assert start.value == pytest.approx(1.764761712097449e09)


def test_snapshot_reads_exact_figures_of_chosen_containers(text: str) -> None:
    containers = snapshot(text)
    assert len(containers) == 24
    assert containers[("testbed", "frontend-7c9d8b6f4d-x2m5k", "istio-proxy")] == Usage(
        cpu_seconds=25.431873442, memory_bytes=52_559_872, timestamp_s=1764763198.123
    )
    assert containers[("istio-system", "ztunnel-n7hq4", "istio-proxy")] == Usage(
        cpu_seconds=14.90266551, memory_bytes=12_890_112, timestamp_s=1764763196.35
    )
    apiserver = containers[("kube-system", "kube-apiserver-testbed-control-plane", "kube-apiserver")]
    assert apiserver.cpu_seconds == 301.447120883
    assert apiserver.memory_bytes == 318_017_536  # written as 3.18017536e+08
    # Pod-level series are not containers.
    assert all(container for _, _, container in containers)


def test_node_usage(text: str) -> None:
    assert node_usage(text) == Usage(
        cpu_seconds=1432.916508117, memory_bytes=2_714_267_648, timestamp_s=1764763199.266
    )
    assert node_usage("resource_scrape_error 0\n") is None


def test_attribution_of_every_container_in_the_fixture(text: str) -> None:
    by_component: dict[str, set[str]] = {name: set() for name in COMPONENTS}
    for namespace, pod, container in snapshot(text):
        by_component[component(namespace, pod, container)].add(f"{pod.split('-')[0]}/{container}")
    assert by_component == {
        "app": {"frontend/app", "catalog/app", "pricing/app", "inventory/app"},
        "sidecar": {
            "frontend/istio-proxy",
            "catalog/istio-proxy",
            "pricing/istio-proxy",
            "inventory/istio-proxy",
            "loadgen/istio-proxy",  # the client-side proxy counts with the others, as on local
        },
        "loadgen": {"loadgen/loadgen"},
        "node-proxy": {
            "ztunnel/istio-proxy",
            "istio/install-cni",
            "cilium/cilium-agent",
            "cilium/cilium-envoy",
        },
        "control-plane": {"istiod/discovery", "cilium/cilium-operator"},
        "kubernetes": {
            "coredns/coredns",
            "etcd/etcd",
            "kube/kube-apiserver",
            "kube/kube-controller-manager",
            "kube/kube-proxy",
            "kube/kube-scheduler",
            "local/local-path-provisioner",
        },
    }


@pytest.mark.parametrize(
    ("namespace", "pod", "container", "expected"),
    [
        ("testbed", "frontend-7c9d8b6f4d-x2m5k", "linkerd-proxy", "sidecar"),
        ("testbed", "loadgen-worker-5d8c9b7f6-bcd2f", "worker", "loadgen"),
        ("testbed", "loadgen-worker-5d8c9b7f6-bcd2f", "linkerd-proxy", "sidecar"),
        # A topology service that happens to start with "loadgen" is not the load generator.
        ("testbed", "loadgenerator-5d8c9b7f6-bcd2f", "app", "app"),
        # Linkerd's control plane has its own proxies: they are the control plane's cost.
        ("linkerd", "linkerd-destination-6f9b8c7d5-x2m5k", "linkerd-proxy", "control-plane"),
        ("linkerd", "linkerd-identity-7c9d8b6f4d-q8wzt", "identity", "control-plane"),
        ("linkerd", "linkerd-proxy-injector-84c7b5d69f-7lk2r", "proxy-injector", "control-plane"),
        # `envoy` has vowels: not a generated suffix, so this is not a pod of the `cilium` DaemonSet.
        ("kube-system", "cilium-envoy-jm6xs", "cilium-envoy", "node-proxy"),
        ("kube-system", "cilium-operator-7d9f8b5c46-vz2lp", "cilium-operator", "control-plane"),
        ("kube-system", "kindnet-x2m5k", "kindnet-cni", "kubernetes"),
        # Outside the app namespace, an injected proxy of an unknown pod is not the workloads' sidecar.
        ("istio-system", "istio-ingressgateway-5b8c7d6f9-k2bfn", "istio-proxy", "kubernetes"),
    ],
)
def test_attribution_table(namespace: str, pod: str, container: str, expected: str) -> None:
    assert component(namespace, pod, container) == expected


def test_attribution_follows_the_app_namespace() -> None:
    assert component("demo", "frontend-7c9d8b6f4d-x2m5k", "app") == "kubernetes"
    assert component("demo", "frontend-7c9d8b6f4d-x2m5k", "app", app_namespace="demo") == "app"


def test_workload_takes_the_longest_known_name() -> None:
    known = frozenset({"cilium", "cilium-envoy"})
    assert workload("cilium-4wq8n", known) == "cilium"
    assert workload("cilium-envoy-jm6xs", known) == "cilium-envoy"
    assert workload("cilium", known) is None
    assert workload("cilium-node-init-4wq8n", known) is None


def usage(cpu: float, memory_mib: float, at: float) -> Usage:
    return Usage(cpu_seconds=cpu, memory_bytes=memory_mib * 2**20, timestamp_s=at)


APP = ("testbed", "frontend-7c9d8b6f4d-x2m5k", "app")
SIDECAR = ("testbed", "frontend-7c9d8b6f4d-x2m5k", "istio-proxy")
LOADGEN = ("testbed", "loadgen-66b8f4c9d7-rp4wd", "loadgen")
ZTUNNEL = ("istio-system", "ztunnel-n7hq4", "istio-proxy")


def test_window_deltas_per_component_over_each_containers_own_interval() -> None:
    before = {
        APP: usage(10.0, 40, 1000.0),
        SIDECAR: usage(20.0, 50, 1000.0),
        LOADGEN: usage(5.0, 80, 1002.0),
        ZTUNNEL: usage(1.0, 12, 999.0),
    }
    after = {
        APP: usage(13.0, 45, 1010.0),  # 3 CPU seconds in 10 s
        SIDECAR: usage(24.0, 52, 1010.0),
        LOADGEN: usage(9.0, 90, 1022.0),  # sampled 20 s apart: 4 s over 20 s is 0.2 vCPU, not 0.4
        ZTUNNEL: usage(1.5, 13, 1009.0),
    }
    result = window(before, after)
    assert result["window_s"] == 10.0  # the median interval
    assert result["source"] == "kubelet /metrics/resource"
    assert result["warnings"] == []
    components = result["components"]
    assert list(components) == list(COMPONENTS)
    assert components["app"] == {"cpu_seconds": 3.0, "vcpu": 0.3, "peak_rss_mb": 45.0, "processes": 1}
    assert components["sidecar"] == {"cpu_seconds": 4.0, "vcpu": 0.4, "peak_rss_mb": 52.0, "processes": 1}
    assert components["loadgen"] == {"cpu_seconds": 4.0, "vcpu": 0.2, "peak_rss_mb": 90.0, "processes": 1}
    assert components["node-proxy"] == {"cpu_seconds": 0.5, "vcpu": 0.05, "peak_rss_mb": 13.0, "processes": 1}
    assert components["control-plane"] == {
        "cpu_seconds": 0.0,
        "vcpu": 0.0,
        "peak_rss_mb": 0.0,
        "processes": 0,
    }


def test_window_over_the_fixture_sums_containers(text: str) -> None:
    before = snapshot(text)
    after = {
        key: Usage(
            cpu_seconds=u.cpu_seconds + 0.5, memory_bytes=u.memory_bytes, timestamp_s=u.timestamp_s + 5
        )
        for key, u in before.items()
    }
    components = window(before, after)["components"]
    assert components["sidecar"]["processes"] == 5
    assert components["sidecar"]["cpu_seconds"] == 2.5
    assert components["sidecar"]["vcpu"] == 0.5
    assert components["app"]["peak_rss_mb"] == round(
        (47_194_112 + 45_162_496 + 43_999_232 + 43_753_472) / 2**20, 1
    )
    assert sum(c["processes"] for c in components.values()) == 24


def test_a_counter_that_went_down_is_a_restart_counted_from_zero() -> None:
    result = window({APP: usage(50.0, 40, 1000.0)}, {APP: usage(2.0, 30, 1010.0)})
    assert result["components"]["app"]["cpu_seconds"] == 2.0
    assert result["components"]["app"]["vcpu"] == 0.2
    assert result["warnings"] == [
        "container 'app' of pod testbed/frontend-7c9d8b6f4d-x2m5k restarted between the scrapes "
        "(its CPU counter went down)"
    ]


def test_a_container_in_one_scrape_only_is_left_out_with_a_warning() -> None:
    before = {APP: usage(1.0, 40, 1000.0), SIDECAR: usage(1.0, 40, 1000.0)}
    after = {APP: usage(2.0, 40, 1010.0), LOADGEN: usage(7.0, 80, 1010.0)}
    result = window(before, after)
    assert result["components"]["sidecar"]["processes"] == 0
    assert result["components"]["loadgen"]["processes"] == 0
    assert result["components"]["app"]["cpu_seconds"] == 1.0
    gone, new = result["warnings"]
    assert "istio-proxy" in gone and "is gone from the second scrape" in gone
    assert "loadgen" in new and "appeared after the first scrape" in new


def test_a_container_not_sampled_again_is_left_out_with_a_warning() -> None:
    result = window({APP: usage(1.0, 40, 1000.0)}, {APP: usage(1.0, 40, 1000.0)})
    assert result["window_s"] == 0.0
    assert result["components"]["app"]["processes"] == 0
    assert "was not sampled again" in result["warnings"][0]


def test_window_takes_any_attribution() -> None:
    demo = functools.partial(component, app_namespace="demo")
    key = ("demo", "frontend-7c9d8b6f4d-x2m5k", "app")
    result = window({key: usage(1.0, 1, 0.0)}, {key: usage(2.0, 1, 1.0)}, demo)
    assert result["components"]["app"]["cpu_seconds"] == 1.0
    with pytest.raises(ValueError, match="'nope'"):
        window({key: usage(1.0, 1, 0.0)}, {key: usage(2.0, 1, 1.0)}, lambda *_: "nope")


def test_a_scrape_error_is_fatal_and_says_where_to_look() -> None:
    text = "# TYPE resource_scrape_error gauge\nresource_scrape_error 1\n"
    with pytest.raises(TestbedError, match=r"resource_scrape_error 1.*journalctl -u kubelet"):
        snapshot(text)


def test_parser_details() -> None:
    text = (
        "# HELP x [ALPHA] help\n"
        "\n"
        'x{a="q\\"uote",b="back\\\\slash",c="new\\nline",} 1.5e+06 1700000000123\n'
        "y NaN\n"
        "z +Inf -5\n"
    )
    x, y, z = parse(text)
    assert x.labels == {"a": 'q"uote', "b": "back\\slash", "c": "new\nline"}
    assert (x.value, x.timestamp_ms) == (1.5e6, 1700000000123)
    assert y.value != y.value and y.timestamp_ms is None  # NaN
    assert (z.value, z.timestamp_ms) == (float("inf"), -5)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("container_cpu_usage_seconds_total{container=app} 1 2", "malformed labels"),
        ("container_cpu_usage_seconds_total{} one 2", "no number"),
        ("just-words here", "not a Prometheus sample"),
    ],
)
def test_parser_errors_name_the_line(line: str, message: str) -> None:
    with pytest.raises(TestbedError, match=f"line 2 .*{message}"):
        list(parse("# TYPE x counter\n" + line + "\n"))


def test_a_container_series_without_timestamp_is_refused() -> None:
    text = 'container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1\n'
    with pytest.raises(TestbedError, match="has no timestamp"):
        snapshot(text)


# --- kind: the cgroups read inside each node at the window's edges (issue 10, items 7 and 8) -------------

NODE_READS = Path(__file__).parent / "fixtures" / "kind-node-reads"
CLUSTER_NODES = (
    "testbed-none-control-plane",
    "testbed-none-worker",
    "testbed-none-worker2",
    "testbed-none-worker3",
)
_USAGE_LINE = re.compile(r"^(?P<dir>[^:]*?)/?cpu\.stat:usage_usec (?P<value>\d+)$", re.MULTILINE)


def node_read_text(node: str) -> str:
    return (NODE_READS / f"{node}.txt").read_text()


def advance_read(
    text: str,
    seconds: float,
    rate: Callable[[str], float],
    *,
    overhead_vcpu: float = 0.05,
    host_busy_vcpu: float = 0.0,
    late_s: float = 0.0,
) -> str:
    """What the same node read prints `seconds` of work later (`late_s` more on its clock, idle).

    Each container's `usage_usec` grows by `rate(container id)` per second, the node's own by its
    containers' and `overhead_vcpu` more; the host's /proc/stat `system` field (USER_HZ ticks) by
    `host_busy_vcpu`, and its `idle` by the rest of its cores. The counters read again after the scan
    (the lines after the second time line) grew during the earlier read's scan by its own cost: the later
    read starts from them, `seconds` less the scan's length later, and its own scan costs as much again.
    """
    lines = text.splitlines()
    split = next((i for i, line in enumerate(lines) if i and ":" not in line), len(lines))
    scan, rescan = lines[:split], lines[split:]
    scan_s = float(rescan[0]) - float(scan[0]) if rescan else 0.0
    again = {_counter(line): line for line in rescan[1:]}
    at = float(lines[0]) + seconds + late_s
    in_containers = 0.0
    for match in _USAGE_LINE.finditer(text):
        scope = re.search(r"cri-containerd-([0-9a-f]+)\.scope$", match["dir"])
        if scope is not None:
            in_containers += rate(scope[1])
    out = [f"{at:.9f}"]
    later: dict[str, str] = {}
    node_vcpu = in_containers + overhead_vcpu
    for line in scan[1:]:
        counter = _counter(line)
        if counter in again:  # from the earlier read's value after its scan
            grown = again[counter]
            moved = _advance_line(
                grown, scan, seconds=seconds - scan_s, rate=rate, node_vcpu=node_vcpu, busy=host_busy_vcpu
            )
            later[counter] = _add(moved, grown, line)
        else:
            moved = _advance_line(
                line, scan, seconds=seconds, rate=rate, node_vcpu=node_vcpu, busy=host_busy_vcpu
            )
        out.append(moved)
    if rescan:
        out.append(f"{at + scan_s:.9f}")
        out += [later[_counter(line)] for line in rescan[1:]]
    return "\n".join(out) + "\n"


def _counter(line: str) -> str:
    """A counter line's path and name: `/proc/stat:cpu`, `cpu.stat:usage_usec`."""
    path, _, content = line.partition(":")
    return f"{path}:{content.split()[0] if content.split() else ''}"


def _add(line: str, plus: str, minus: str) -> str:
    """`line` with each number grown by `plus`'s less `minus`'s (the same counter read at two moments)."""
    head, _, content = line.partition(":")
    name, *values = content.split()
    more = [
        int(p) - int(m)
        for p, m in zip(plus.partition(":")[2].split()[1:], minus.partition(":")[2].split()[1:], strict=True)
    ]
    sep = "  " if name == "cpu" else " "
    return f"{head}:{name}{sep}{' '.join(str(int(v) + d) for v, d in zip(values, more, strict=True))}"


def _advance_line(
    line: str,
    lines: list[str],
    *,
    seconds: float,
    rate: Callable[[str], float],
    node_vcpu: float,
    busy: float,
) -> str:
    path, _, content = line.partition(":")
    if path == "/proc/stat" and content.startswith("cpu "):
        name, *values = content.split()
        cores = sum(1 for other in lines if other.startswith("/proc/stat:cpu") and other[14:15].isdigit())
        ticks = [int(v) for v in values]
        ticks[2] += round(busy * seconds * 100)
        ticks[3] += round((cores - busy) * seconds * 100)
        return f"{path}:{name}  {' '.join(map(str, ticks))}"
    if content.startswith("usage_usec "):
        scope = re.search(r"cri-containerd-([0-9a-f]+)\.scope/cpu\.stat$", path)
        per_s = rate(scope[1]) if scope is not None else node_vcpu
        return f"{path}:usage_usec {int(content.split()[1]) + round(per_s * seconds * 1e6)}"
    return line


def test_a_node_read_parses_into_its_cgroups_and_the_hosts_cpu() -> None:
    read = parse_node_read(node_read_text("testbed-none-worker"), node="testbed-none-worker")
    assert read.at_unix == 1764763212.259901662
    assert read.node == Usage(
        cpu_seconds=290.113408, memory_bytes=611_254_272 - 180_355_072, timestamp_s=read.at_unix
    )
    # frontend and inventory (app), kindnet, kube-proxy: four containers and their four pause sandboxes.
    assert len(read.containers) == 8
    frontend = read.containers["dcde224bd079f2d1f8b9759f7722cfac6fd4b12026c31626a521cfbc1997470e"]
    assert frontend.cpu_seconds == 18.734125
    assert frontend.memory_bytes == 47_194_112 - 1_323_008  # the working set: inactive_file left out
    assert read.host["user"] == 42138.77 and read.host["steal"] == 412.33 and read.cores == 4
    assert read.has_memory
    # Read again after the scan of the containers: 0.04 s later, its CPU (0.03 s) in the node's cgroup.
    assert read.scanned_unix == pytest.approx(read.at_unix + 0.04)
    assert read.node_scanned is not None and read.node_scanned.cpu_seconds == 290.143408
    assert read.host_scanned is not None and read.host_scanned["system"] == read.host["system"] + 0.03
    assert read.opening() == (read.scanned_unix, 290.143408, read.host_scanned)
    assert read.closing() == (read.at_unix, 290.113408, read.host)


def test_a_node_read_without_its_second_part_stands_for_both() -> None:
    """A read cut short after the scan (or an older script's) is still read: its one time stands for both."""
    text = node_read_text("testbed-none-worker")
    whole = text.splitlines()
    for cut in (len(whole) - 3, len(whole) - 1):  # no second part; its time and /proc/stat but no cpu.stat
        read = parse_node_read("\n".join(whole[:cut]) + "\n", node="w")
        assert read.scanned_unix is None and read.node_scanned is None and read.host_scanned is None
        assert read.opening() == read.closing() == (read.at_unix, 290.113408, read.host)
    with pytest.raises(TestbedError, match="unexpected line"):
        parse_node_read(text + "1764763213.5\n", node="w")  # a third time line is not a read


def test_the_node_read_script_reads_what_the_parser_knows() -> None:
    script = NODE_READ
    assert script.startswith("date +%s.%N; ")
    for needed in ("/proc/stat", "/sys/fs/cgroup", "kubelet.slice", "cri-containerd-*.scope", "grep -s -H"):
        assert needed in script
    assert "'" not in script  # shown in the dry run as one quoted word


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "printed nothing"),
        ("1764763212.%N\n", r"did not start with the time \(`date \+%s\.%N`\)"),
        ("1764763212.25\n/proc/stat:cpu  1 2 3 4 5 6 7 8 0 0\n", "its Docker host uses cgroup v1"),
        ("1764763212.25\ncpu.stat:usage_usec 12\n", "/proc/stat has no `cpu` line"),
        ("1764763212.25\ncpu.stat:usage_usec twelve\n", "not a number in cpu.stat"),
        ("1764763212.25\nno colon here\n", "unexpected line"),
    ],
)
def test_a_node_read_that_is_not_a_kind_node_on_cgroup_v2_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(TestbedError, match=message):
        parse_node_read(text, node="n")


def test_container_ids_name_every_container_and_a_restarted_ones_previous_id() -> None:
    ids = container_ids((NODE_READS / "pods.json").read_text())
    assert len(ids) == 20  # 12 pods with one container each, and a kindnet and a kube-proxy on 4 nodes
    frontend = ids["dcde224bd079f2d1f8b9759f7722cfac6fd4b12026c31626a521cfbc1997470e"]
    assert frontend[0] == "testbed" and frontend[1].startswith("frontend-") and frontend[2] == "app"
    restarted = {
        "items": [
            {
                "metadata": {"namespace": "testbed", "name": "catalog-5f6c7d9b8c-q8wzt"},
                "status": {
                    "initContainerStatuses": [{"name": "init", "containerID": "containerd://aa01"}],
                    "containerStatuses": [
                        {
                            "name": "app",
                            "containerID": "containerd://bb02",
                            "lastState": {
                                "terminated": {"containerID": "containerd://bb01", "exitCode": 137}
                            },
                        },
                        {"name": "waiting", "state": {"waiting": {"reason": "ContainerCreating"}}},
                        {"name": "other-runtime", "containerID": "docker://cc01"},
                    ],
                },
            }
        ]
    }
    assert container_ids(json.dumps(restarted)) == {
        "aa01": ("testbed", "catalog-5f6c7d9b8c-q8wzt", "init"),
        "bb01": ("testbed", "catalog-5f6c7d9b8c-q8wzt", "app"),
        "bb02": ("testbed", "catalog-5f6c7d9b8c-q8wzt", "app"),
    }
    with pytest.raises(TestbedError, match="did not print JSON"):
        container_ids("error: the server doesn't have a resource type")


def cluster_reads(
    seconds: float, rates: Mapping[str, float], host_busy_vcpu: float, delay_s: float = 0.0
) -> tuple[dict[str, NodeRead], dict[str, NodeRead], dict[str, Key]]:
    ids = container_ids((NODE_READS / "pods.json").read_text())

    def rate(cid: str) -> float:
        key = ids.get(cid)
        return rates.get(key[2], 0.01) if key is not None else 0.0  # sandboxes idle

    before, after = {}, {}
    for node in CLUSTER_NODES:
        text = node_read_text(node)
        before[node] = parse_node_read(text, node=node)
        later = advance_read(
            text, seconds, rate, overhead_vcpu=0.05, host_busy_vcpu=host_busy_vcpu, late_s=delay_s
        )
        after[node] = parse_node_read(later, node=node)
    return before, after, ids


def test_cgroup_window_adds_up_to_the_hosts_busy_cpu() -> None:
    """Components from the containers, the nodes' overhead, and the kernel's rest: host busy in all."""
    before, after, ids = cluster_reads(10.0, {"app": 0.25, "loadgen": 0.8}, host_busy_vcpu=2.5)
    start = min(r.at_unix for r in before.values()) - 0.05
    result = cgroup_window(before, after, ids, window_unix=(start, start + 10.0))
    assert result["source"] == CGROUP_SOURCE and result["memory_source"] == MEMORY_SOURCE
    assert result["window_s"] == 10.0
    components = result["components"]
    assert list(components) == [*COMPONENTS, NODE_OVERHEAD, KERNEL]
    assert components["app"]["processes"] == 4
    assert components["app"]["vcpu"] == 1.0 and components["app"]["cpu_seconds"] == 10.0
    assert components["app"]["peak_rss_mb"] == round(
        (47_194_112 + 44_642_304 + 45_162_496 + 44_859_392 - 4 * 1_323_008) / 2**20, 1
    )
    assert components["loadgen"]["vcpu"] == 0.8
    # 7 kube-system and local-path containers on the control plane, kindnet and kube-proxy on each node.
    assert components["kubernetes"] == {**components["kubernetes"], "processes": 15, "vcpu": 0.15}
    # Each node container's CPU beyond its pods' containers: 0.05 vCPU per node.
    assert components[NODE_OVERHEAD]["vcpu"] == 0.2 and components[NODE_OVERHEAD]["processes"] == 4
    in_nodes = 1.0 + 0.8 + 0.15 + 0.2
    assert components[KERNEL]["vcpu"] == pytest.approx(2.5 - in_nodes, abs=1e-4)
    assert components[KERNEL]["processes"] == 0
    total = sum(c["vcpu"] for c in components.values())
    assert (
        total == pytest.approx(result["host"]["busy_vcpu"], abs=1e-3) and result["host"]["busy_vcpu"] == 2.5
    )
    assert result["host"]["cores"] == 4 and result["host"]["steal_percent"] == 0.0
    worker = result["nodes"]["testbed-none-worker"]
    # From after the start read's scan to before the end read's: neither scan's 0.03 s of CPU counted.
    assert worker["cpu_seconds"] == pytest.approx((0.5 + 0.02 + 0.05) * 9.96, abs=1e-4)
    assert (
        worker["vcpu"] == pytest.approx(0.5 + 0.02 + 0.05)
        and worker["source"] == "kind node container (cgroup cpu.stat)"
    )
    assert worker["memory_mb"] == round((611_254_272 - 180_355_072) / 2**20, 1)
    assert result["unmatched_cgroups"] == 20  # every pod's pause sandbox: in the node overhead
    assert result["reads"]["window_unix"] == [round(start, 3), round(start + 10.0, 3)]
    # The start's figures are those read after its scan, 0.04 s after its first line.
    assert result["reads"]["start_offset_s"] == [0.09, 0.095]
    assert result["warnings"] == []


def test_a_read_far_from_its_edge_is_warned_about() -> None:
    before, after, ids = cluster_reads(10.0, {}, host_busy_vcpu=1.0, delay_s=1.5)
    start = min(r.at_unix for r in before.values())
    result = cgroup_window(before, after, ids, window_unix=(start, start + 10.0))
    assert result["reads"]["end_offset_s"][1] == pytest.approx(1.505, abs=1e-3)
    assert any("read +1.50 s from the window's end" in w for w in result["warnings"]), result["warnings"]
    # The rates are taken over the reads' own interval, 11.5 s: 0.01 vCPU per idle container still.
    assert result["components"]["app"]["vcpu"] == pytest.approx(4 * 0.01 * 10 / 11.5, abs=1e-4)


def test_the_kernel_remainder_is_what_the_nodes_do_not_hold() -> None:
    """Host busy 3 vCPU, nodes 0.65: the kernel and everything outside the nodes is 2.35 vCPU."""
    before, after, ids = cluster_reads(5.0, {}, host_busy_vcpu=3.0)
    start = min(r.at_unix for r in before.values())
    result = cgroup_window(before, after, ids, window_unix=(start, start + 5.0))
    nodes = sum(n["vcpu"] for n in result["nodes"].values())
    assert nodes == pytest.approx(20 * 0.01 + 4 * 0.05, abs=1e-3)
    assert result["components"][KERNEL]["vcpu"] == pytest.approx(3.0 - nodes, abs=1e-3)
    assert result["components"][KERNEL]["cpu_seconds"] == pytest.approx((3.0 - nodes) * 5.0, abs=1e-2)


def test_a_node_without_memory_controller_says_so() -> None:
    text = "\n".join(
        line for line in node_read_text("testbed-none-worker").splitlines() if "memory." not in line
    )
    read = parse_node_read(text, node="w")
    assert not read.has_memory and read.node.memory_bytes == 0.0
    result = cgroup_window({"w": read}, {"w": read}, {}, window_unix=(read.at_unix, read.at_unix))
    assert result["memory_source"].startswith("none:")
    assert result["nodes"]["w"]["memory_mb"] is None


def test_cgroup_window_needs_a_node_read_at_both_edges() -> None:
    read = parse_node_read(node_read_text("testbed-none-worker"), node="a")
    with pytest.raises(TestbedError, match="no kind node was read at both edges"):
        cgroup_window({"a": read}, {"b": read}, {}, window_unix=(0.0, 1.0))


def test_proc_stat_cpu_reads_the_hosts_line_as_psutil_does() -> None:
    """The busy time a kind node's /proc/stat gives, against psutil's own reading of this host's."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        pytest.skip("no /proc/stat: not Linux")
    line = next(line for line in stat.read_text().splitlines() if line.startswith("cpu "))
    ours = proc_stat_cpu(line)
    theirs = psutil.cpu_times()._asdict()
    assert set(ours) >= {"user", "system", "idle", "steal", "guest"}
    for name in ("user", "system", "idle"):
        assert ours[name] == pytest.approx(theirs[name], abs=2.0)  # read a moment apart
    assert busy_seconds(ours) == pytest.approx(busy_seconds(theirs), abs=4.0)
    assert busy_seconds({"user": 5.0, "nice": 1.0, "guest": 3.0, "idle": 100.0, "softirq": 0.5}) == 6.5
    with pytest.raises(ValueError, match="not a cpu line"):
        proc_stat_cpu("intr 12 0 0")


def test_a_container_restarted_in_the_window_is_not_counted_and_is_named() -> None:
    """Paired by id: the old container's counter is gone, the new one's is not its continuation."""
    before, after, ids = cluster_reads(10.0, {"app": 0.25}, host_busy_vcpu=2.0)
    node = "testbed-none-worker"
    old = "dcde224bd079f2d1f8b9759f7722cfac6fd4b12026c31626a521cfbc1997470e"  # frontend's app
    new = "0f" * 32
    read = after[node]
    containers = {(new if cid == old else cid): use for cid, use in read.containers.items()}
    after[node] = dataclasses.replace(read, containers=containers)
    ids = {**ids, new: ids[old]}  # `container_ids`: the new id in its status, the old in lastState
    start = min(r.at_unix for r in before.values())
    result = cgroup_window(before, after, ids, window_unix=(start, start + 10.0))
    components = result["components"]
    assert components["app"]["processes"] == 3 and components["app"]["vcpu"] == 0.75
    namespace, pod, container = ids[old]
    assert result["warnings"] == [
        f"container {container!r} of pod {namespace}/{pod} restarted during the window: "
        "its CPU is not counted in its component (it is in node-overhead)"
    ]
    # Its 0.25 vCPU is still in its node's cgroup: in that node's overhead, and the sum is the host's busy.
    assert components[NODE_OVERHEAD]["vcpu"] == pytest.approx(0.2 + 0.25, abs=1e-4)
    total = sum(c["vcpu"] for c in components.values())
    assert total == pytest.approx(result["host"]["busy_vcpu"], abs=1e-3)


def test_a_container_only_at_one_edge_is_said_to_have_started_or_stopped() -> None:
    before, after, ids = cluster_reads(10.0, {}, host_busy_vcpu=1.0)
    node = "testbed-none-worker"
    gone = "dcde224bd079f2d1f8b9759f7722cfac6fd4b12026c31626a521cfbc1997470e"
    read = after[node]
    after[node] = dataclasses.replace(
        read, containers={cid: use for cid, use in read.containers.items() if cid != gone}
    )
    start = min(r.at_unix for r in before.values())
    result = cgroup_window(before, after, ids, window_unix=(start, start + 10.0))
    assert len(result["warnings"]) == 1 and "stopped during the window" in result["warnings"][0]
    after[node], first = read, before[node]
    before[node] = dataclasses.replace(
        first, containers={cid: use for cid, use in first.containers.items() if cid != gone}
    )
    result = cgroup_window(before, after, ids, window_unix=(start, start + 10.0))
    assert len(result["warnings"]) == 1 and "started during the window" in result["warnings"][0]
