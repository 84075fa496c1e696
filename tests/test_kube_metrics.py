"""The kubelet's `/metrics/resource` as the kind platform reads it: parsing, attribution, window deltas.

The fixture is synthesized in the exact shape of a Kubernetes 1.35 kubelet's output (metric names,
labels, `[STABLE]` markers, order, Go's `%g` numbers, millisecond timestamps; see
`testbed/kube/metrics.py`) for a one-node kind cluster with Istio sidecars and ambient, and Cilium.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.kube.metrics import (
    COMPONENTS,
    Usage,
    component,
    node_usage,
    parse,
    snapshot,
    window,
    workload,
)

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
