"""Mesh verification on the tools' real output formats (tests/fixtures/mesh/README.md says from where)."""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.kube.manifests import call_edges
from testbed.meshes import evidence
from testbed.meshes.cilium import evidence as cilium_evidence
from testbed.meshes.evidence import Check
from testbed.meshes.istio import evidence as istio_evidence
from testbed.meshes.linkerd import evidence as linkerd_evidence
from testbed.spec.topology import load_topology

FIXTURES = Path(__file__).parent / "fixtures" / "mesh"
NS = "testbed"
APPS = ("frontend", "catalog", "pricing", "inventory")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def assert_one_line(check: Check) -> None:
    assert "\n" not in check.detail
    assert len(check.detail) < 400, check.detail


# --- Istio sidecars ----------------------------------------------------------------------------------


def test_istio_sidecars_all_mutual_tls() -> None:
    check = istio_evidence.istio_sidecar_mtls(fixture("istio-envoy-stats-mtls.txt"), namespace=NS)
    assert check.passed, check.detail
    assert check.data["requests_by_policy"] == {"mutual_tls": 4 * 18342}
    assert check.data["requests_by_edge"]["loadgen->frontend"] == 18342
    assert len(check.data["pods"]) == 5
    assert "all mutual_tls" in check.detail
    assert_one_line(check)


SHOP_CALLEES = ("frontend", "catalog", "pricing", "inventory")


def test_istio_sidecars_every_callee_must_be_read() -> None:
    """istioctl stops at the first pod it cannot read: the stats of loadgen and frontend alone fail."""
    text = fixture("istio-envoy-stats-mtls.txt")
    assert istio_evidence.istio_sidecar_mtls(text, namespace=NS, callees=SHOP_CALLEES).passed
    headers = [m.start() for m in re.finditer(r"^The result of pod ", text, re.MULTILINE)]
    cut = text[: headers[2]]  # the first two pods' stats only
    assert istio_evidence.istio_sidecar_mtls(cut, namespace=NS).passed  # what the check used to accept
    check = istio_evidence.istio_sidecar_mtls(cut, namespace=NS, callees=SHOP_CALLEES)
    assert not check.passed
    assert "catalog" in check.detail and "inventory" in check.detail and "pricing" in check.detail
    assert_one_line(check)


def test_envoy_worker_threads_are_read_from_every_proxy() -> None:
    text = fixture("istio-envoy-stats-mtls.txt")
    check = istio_evidence.envoy_concurrency(text, expected=2)
    assert check.passed, check.detail
    assert len(check.data["threads"]) == 5 and set(check.data["threads"].values()) == {2}
    assert not istio_evidence.envoy_concurrency(text, expected=4).passed
    one_off = text.replace("envoy_server_concurrency{} 2", "envoy_server_concurrency{} 8", 1)
    check = istio_evidence.envoy_concurrency(one_off, expected=2)
    assert not check.passed and "loadgen-6f9c7d8b4d-q7w2n 8" in check.detail
    unread = text.replace("envoy_server_concurrency{} 2\n", "", 1)
    assert (
        "no envoy_server_concurrency in the stats of loadgen"
        in istio_evidence.envoy_concurrency(unread, expected=2).detail
    )
    assert not istio_evidence.envoy_concurrency("", expected=2).passed
    assert istio_evidence.envoy_concurrency(fixture("istio-envoy-stats-waypoint.txt"), expected=2).passed


def test_istio_permissive_plaintext_request_fails() -> None:
    check = istio_evidence.istio_sidecar_mtls(fixture("istio-envoy-stats-permissive.txt"), namespace=NS)
    assert not check.passed
    assert "3 request(s)" in check.detail
    assert "unknown->frontend (none) 3" in check.detail
    assert "PeerAuthentication STRICT" in check.detail
    assert_one_line(check)


def test_istio_client_side_only_is_not_evidence() -> None:
    # The client side always reports connection_security_policy="unknown": it proves nothing either way.
    check = istio_evidence.istio_sidecar_mtls(fixture("istio-envoy-stats-client-only.txt"), namespace=NS)
    assert not check.passed
    assert "reporter=destination" in check.detail
    assert "loadgen-6f9c7d8b4d-q7w2n" in check.detail
    assert_one_line(check)


def test_istio_other_namespace_or_garbage() -> None:
    other = istio_evidence.istio_sidecar_mtls(fixture("istio-envoy-stats-mtls.txt"), namespace="elsewhere")
    assert not other.passed
    assert "namespace elsewhere" in other.detail
    garbage = istio_evidence.istio_sidecar_mtls("Error: pods not found\n", namespace=NS)
    assert not garbage.passed
    assert "no Prometheus samples" in garbage.detail
    assert_one_line(garbage)


# --- Plaintext refusal -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reset", "closed", "timeout"])
def test_plaintext_refused_at_the_connection(name: str) -> None:
    check = evidence.plaintext_refused(fixture(f"plaintext-probe-{name}.txt"))
    assert check.passed, check.detail
    assert check.data["probe"]["outcome"] == name
    assert "frontend.testbed.svc.cluster.local" in check.detail
    assert_one_line(check)


def test_plaintext_403_is_a_refusal_only_for_linkerd() -> None:
    text = fixture("plaintext-probe-403.txt")
    linkerd = evidence.plaintext_refused(text, refusal_statuses=linkerd_evidence.LINKERD_REFUSAL_STATUSES)
    assert linkerd.passed, linkerd.detail
    assert "403" in linkerd.detail
    istio = evidence.plaintext_refused(text)
    assert not istio.passed
    assert "answered HTTP 403" in istio.detail


def test_plaintext_answered_200_fails() -> None:
    check = evidence.plaintext_refused(fixture("plaintext-probe-200.txt"))
    assert not check.passed
    assert "answered HTTP 200" in check.detail
    assert "accepts plaintext" in check.detail
    assert_one_line(check)


def test_plaintext_connection_refused_proves_nothing() -> None:
    check = evidence.plaintext_refused(fixture("plaintext-probe-refused.txt"))
    assert not check.passed
    assert "nothing listens" in check.detail
    assert_one_line(check)


def test_plaintext_probe_did_not_run() -> None:
    check = evidence.plaintext_refused('error: deployments.apps "probe" not found\n')
    assert not check.passed
    assert "no probe result line" in check.detail
    assert "deployments.apps" in check.detail
    assert_one_line(check)
    dns = {"probe": "plaintext", "url": "http://nope:8080/", "outcome": "error", "error": "gaierror: -2"}
    check = evidence.plaintext_refused(json.dumps(dns) + "\n")
    assert not check.passed
    assert "gaierror" in check.detail


# The probe script itself, run as `kubectl exec` would run it, against sockets that behave like a mesh.


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    listeners: list[socket.socket] = []

    def start(handler: Callable[[socket.socket], None]) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def accept() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                handler(conn)

        threading.Thread(target=accept, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}/"

    yield start
    for listener in listeners:
        listener.close()


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _tls_alert(conn: socket.socket) -> None:
    conn.sendall(b"\x15\x03\x03\x00\x02\x02\x46")  # a fatal TLS alert where HTTP was expected


def _answer(status: int) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())

    return answer


def _silent(conn: socket.socket) -> None:
    conn.recv(1)  # blocks until the client gives up


def probe(url: str) -> str:
    argv = [sys.executable, "-c", evidence.PROBE_SCRIPT, url, "0.5"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


@pytest.mark.parametrize(
    ("handler", "outcome", "passed"),
    [
        (_reset, "reset", True),
        (lambda conn: None, "closed", True),
        (_tls_alert, "not_http", True),
        (_silent, "timeout", True),
        (_answer(200), "http", False),
        (_answer(503), "http", False),
    ],
)
def test_probe_script_outcomes(
    serve: Callable[[Callable[[socket.socket], None]], str],
    handler: Callable[[socket.socket], None],
    outcome: str,
    passed: bool,
) -> None:
    output = probe(serve(handler))
    assert json.loads(output)["outcome"] == outcome
    assert evidence.plaintext_refused(output).passed is passed


def test_probe_script_connection_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    output = probe(f"http://127.0.0.1:{port}/")
    assert json.loads(output)["outcome"] == "refused"


def test_probe_argv_runs_the_script_in_the_unmeshed_namespace() -> None:
    argv = evidence.plaintext_probe_argv(
        "kind-testbed-istio", "http://frontend.testbed.svc.cluster.local:8080/"
    )
    assert argv[:7] == (
        "kubectl",
        "--context",
        "kind-testbed-istio",
        "--namespace",
        "testbed-plain",
        "exec",
        "deploy/probe",
    )
    assert argv[7:10] == ("--", "python", "-c")
    assert argv[10] == evidence.PROBE_SCRIPT
    assert argv[11:] == ("http://frontend.testbed.svc.cluster.local:8080/", "5")


# --- Istio ambient -----------------------------------------------------------------------------------


def test_ztunnel_carries_every_workload_over_hbone() -> None:
    check = istio_evidence.istio_ambient_hbone(
        fixture("ztunnel-workloads-hbone.json"), namespace=NS, workloads=(*APPS, "loadgen")
    )
    assert check.passed, check.detail
    assert check.data["workloads"]["loadgen"][0]["node"] == "testbed-istio-ambient-worker2"
    assert "all 5 pods" in check.detail
    assert_one_line(check)


def test_ztunnel_tcp_workloads_fail() -> None:
    check = istio_evidence.istio_ambient_hbone(
        fixture("ztunnel-workloads-tcp.json"), namespace=NS, workloads=APPS
    )
    assert not check.passed
    assert "frontend (frontend-5d8f9b7c6-hx4tz: TCP)" in check.detail
    assert "istio.io/dataplane-mode=ambient" in check.detail
    assert_one_line(check)


def test_ztunnel_missing_workload_and_bad_json() -> None:
    missing = istio_evidence.istio_ambient_hbone(
        fixture("ztunnel-workloads-hbone.json"), namespace=NS, workloads=("frontend", "checkout")
    )
    assert not missing.passed
    assert "no workload checkout" in missing.detail
    bad = istio_evidence.istio_ambient_hbone("Error: no ztunnel pod found\n", namespace=NS, workloads=APPS)
    assert not bad.passed
    assert "not JSON" in bad.detail
    assert_one_line(bad)


def test_ztunnel_metrics_show_every_callee_reached_over_mutual_tls() -> None:
    check = istio_evidence.ztunnel_mtls(fixture("ztunnel-metrics-mtls.txt"), namespace=NS, workloads=APPS)
    assert check.passed, check.detail
    assert check.data["pods"] == ["ztunnel-4kx9p", "ztunnel-b7m2q", "ztunnel-r8d5w", "ztunnel-vz6tn"]
    # Only the receiving side counts (reporter="destination"): the senders' own reports are not summed.
    assert check.data["mtls_connections_by_workload"] == {
        "frontend": 4,
        "catalog": 2,
        "pricing": 2,
        "inventory": 2,
    }
    assert check.data["mtls_connections_by_edge"]["loadgen->frontend"] == 4
    # The fixture's plaintext connection from the probe namespace was denied (counted as failed): no finding.
    assert check.data["plaintext_accepted"] == {}
    assert "10 connections into namespace testbed, all mutual_tls" in check.detail
    assert_one_line(check)


def test_ztunnel_accepting_plaintext_fails() -> None:
    check = istio_evidence.ztunnel_mtls(
        fixture("ztunnel-metrics-plaintext.txt"), namespace=NS, workloads=APPS
    )
    assert not check.passed
    assert "accepted 1 plaintext connection(s)" in check.detail
    assert "probe->frontend (unknown) 1" in check.detail
    assert "PeerAuthentication STRICT" in check.detail
    assert_one_line(check)


def test_ztunnel_metrics_without_a_callee_or_without_traffic_fail() -> None:
    missing = istio_evidence.ztunnel_mtls(
        fixture("ztunnel-metrics-mtls.txt"), namespace=NS, workloads=("frontend", "checkout")
    )
    assert not missing.passed
    assert "no mutual TLS connection into checkout" in missing.detail
    # Sidecar stats are no ztunnel metrics; nor is another namespace's traffic, nor an error.
    sidecars = istio_evidence.ztunnel_mtls(
        fixture("istio-envoy-stats-mtls.txt"), namespace=NS, workloads=APPS
    )
    assert not sidecars.passed
    assert "no istio_tcp_connections_opened_total with reporter=destination" in sidecars.detail
    other = istio_evidence.ztunnel_mtls(
        fixture("ztunnel-metrics-mtls.txt"), namespace="elsewhere", workloads=APPS
    )
    assert not other.passed
    garbage = istio_evidence.ztunnel_mtls("Error: no pods found\n", namespace=NS, workloads=APPS)
    assert not garbage.passed
    assert "no Prometheus samples" in garbage.detail
    assert_one_line(garbage)


def test_ztunnel_metrics_argv_reads_the_stats_port_of_every_ztunnel() -> None:
    argv = istio_evidence.ztunnel_metrics_argv("kind-testbed-istio-ambient")
    assert argv == (
        "istioctl", "--context", "kind-testbed-istio-ambient", "--namespace", "istio-system",
        "experimental", "envoy-stats", "--selector", "app=ztunnel", "--output", "prom",
        "--proxy-admin-port", "15020",
    )  # fmt: skip


def test_the_waypoint_served_every_service_over_mutual_tls() -> None:
    check = istio_evidence.istio_waypoint_mtls(
        fixture("istio-envoy-stats-waypoint.txt"), namespace=NS, services=APPS
    )
    assert check.passed, check.detail
    assert check.data["pods"] == ["waypoint-7c9d6b5f4-k2l8x"]
    assert check.data["requests_by_service"] == dict.fromkeys(APPS, 60)
    assert check.data["requests_by_edge"]["catalog->inventory"] == 60
    assert "240 requests" in check.detail
    assert_one_line(check)


def test_the_waypoint_without_mutual_tls_or_without_traffic_fails() -> None:
    plain = istio_evidence.istio_waypoint_mtls(
        fixture("istio-envoy-stats-waypoint-plaintext.txt"), namespace=NS, services=APPS
    )
    assert not plain.passed
    assert "60 request(s)" in plain.detail and "loadgen->frontend (none) 60" in plain.detail
    # A sidecar reports as source/destination, never as waypoint: nothing went through a waypoint.
    sidecars = istio_evidence.istio_waypoint_mtls(
        fixture("istio-envoy-stats-mtls.txt"), namespace=NS, services=APPS
    )
    assert not sidecars.passed
    assert "no request to frontend, catalog, pricing, inventory" in sidecars.detail
    assert "istio.io/use-waypoint" in sidecars.detail
    missing = istio_evidence.istio_waypoint_mtls(
        fixture("istio-envoy-stats-waypoint.txt"), namespace=NS, services=("frontend", "checkout")
    )
    assert not missing.passed and "no request to checkout" in missing.detail
    garbage = istio_evidence.istio_waypoint_mtls("Error: no pods found\n", namespace=NS, services=APPS)
    assert not garbage.passed and "no Prometheus samples" in garbage.detail
    assert_one_line(sidecars)


# --- Linkerd -----------------------------------------------------------------------------------------


def test_linkerd_proxies_send_everything_over_mtls() -> None:
    check = linkerd_evidence.linkerd_proxy_tls(fixture("linkerd-proxy-metrics-tls.txt"), namespace=NS)
    assert check.passed, check.detail
    assert check.data["tls_requests_by_destination"] == {d: 18342 for d in APPS}
    assert check.data["pods"] == sorted(check.data["pods"]) and len(check.data["pods"]) == 3
    assert_one_line(check)


def test_linkerd_unmeshed_destination_fails() -> None:
    check = linkerd_evidence.linkerd_proxy_tls(fixture("linkerd-proxy-metrics-no-identity.txt"), namespace=NS)
    assert not check.passed
    assert "requests to catalog (tls=no_identity, not_provided_by_service_discovery) 18342" in check.detail
    assert_one_line(check)


def test_linkerd_metrics_error_and_nothing_meshed() -> None:
    error = linkerd_evidence.linkerd_proxy_tls(fixture("linkerd-proxy-metrics-error.txt"), namespace=NS)
    assert not error.passed
    assert "pod not running: frontend-5d8f9b7c6-hx4tz" in error.detail
    empty = linkerd_evidence.linkerd_proxy_tls("", namespace=NS)
    assert not empty.passed
    assert "linkerd.io/inject" in empty.detail
    assert_one_line(empty)


def test_linkerd_refused_metrics_blame_the_admin_port() -> None:
    # Every caller's admin port answered 403 with an empty body: the CLI printed the headers alone.
    refused = linkerd_evidence.linkerd_proxy_tls(fixture("linkerd-proxy-metrics-403.txt"), namespace=NS)
    assert not refused.passed
    assert refused.detail.startswith(
        "the admin port (4191) of catalog-7b6d5c9f8-m2kps, frontend-5d8f9b7c6-hx4tz, "
        "loadgen-6f9c7d8b4d-q7w2n refused the metrics request"
    )
    assert "no outbound requests" not in refused.detail
    assert refused.data["refused_metrics"] == refused.data["pods"]
    assert_one_line(refused)
    # One refused pod among answering ones fails too, and is the one named.
    text = fixture("linkerd-proxy-metrics-tls.txt")
    catalog = text.index("#\n# POD catalog-")
    empty_catalog = "#\n# POD catalog-7b6d5c9f8-m2kps (1 of 1)\n#\n"
    one = linkerd_evidence.linkerd_proxy_tls(text[:catalog] + empty_catalog, namespace=NS)
    assert not one.passed
    assert one.data["refused_metrics"] == ["catalog-7b6d5c9f8-m2kps"]
    # Answers without traffic still say so.
    idle = "\n".join(line for line in text.splitlines() if 'direction="outbound"' not in line)
    quiet = linkerd_evidence.linkerd_proxy_tls(idle, namespace=NS)
    assert not quiet.passed
    assert "no outbound requests" in quiet.detail


def test_linkerd_wrong_server_identity_fails() -> None:
    text = fixture("linkerd-proxy-metrics-tls.txt").replace(
        'server_id="pricing.testbed.serviceaccount', 'server_id="catalog.testbed.serviceaccount'
    )
    check = linkerd_evidence.linkerd_proxy_tls(text, namespace=NS)
    assert not check.passed
    assert "pricing proved catalog.testbed.serviceaccount.identity.linkerd.cluster.local" in check.detail


def test_linkerd_check_passes_with_warnings() -> None:
    check = linkerd_evidence.linkerd_check_proxy(fixture("linkerd-check-proxy-ok.txt"))
    assert check.passed, check.detail
    assert [w["check"] for w in check.data["warnings"]] == ["cli is up-to-date", "data plane is up-to-date"]
    assert (
        check.data["warnings"][0]["message"]
        == "is running version 26.8.3 but the latest edge version is 26.8.4"
    )
    assert check.data["checks"] == 48
    assert_one_line(check)


def test_linkerd_check_failure_names_the_check() -> None:
    check = linkerd_evidence.linkerd_check_proxy(fixture("linkerd-check-proxy-not-ready.txt"))
    assert not check.passed
    assert check.detail == (
        "linkerd check --proxy failed 1 check(s), first: linkerd-data-plane: data plane proxies are ready: "
        'container "linkerd-proxy" in pod "catalog-7b6d5c9f8-m2kps" is not ready'
    )


def test_linkerd_check_cut_short_or_coloured() -> None:
    text = fixture("linkerd-check-proxy-ok.txt")
    cut = linkerd_evidence.linkerd_check_proxy(text[: text.index("linkerd-data-plane")])
    assert not cut.passed
    assert "did not finish" in cut.detail
    assert_one_line(cut)
    coloured = text.replace("√", "\x1b[32;1m√\x1b[0m")
    assert linkerd_evidence.linkerd_check_proxy(coloured).passed


# --- Cilium ------------------------------------------------------------------------------------------


def test_cilium_wireguard_with_a_peer_per_other_node() -> None:
    check = cilium_evidence.cilium_wireguard(fixture("cilium-status-wireguard.txt"), nodes=4)
    assert check.passed, check.detail
    assert check.data["interfaces"] == [
        {
            "name": "cilium_wg0",
            "public_key": "3Wn8tE1Vq1Ch0dXbq6b5ZyZlWm+7QdUWsQ4b9T1mSWY=",
            "port": 51871,
            "peers": 3,
        }
    ]
    assert not cilium_evidence.cilium_wireguard(fixture("cilium-status-wireguard.txt"), nodes=5).passed
    assert check.data["node_encryption"] == "Disabled"
    assert_one_line(check)


def test_cilium_missing_peer_fails() -> None:
    check = cilium_evidence.cilium_wireguard(fixture("cilium-status-missing-peer.txt"), nodes=4)
    assert not check.passed
    assert "cilium_wg0 has 1 of the 3 other node(s)" in check.detail
    assert_one_line(check)


def test_cilium_encryption_disabled_or_absent() -> None:
    disabled = cilium_evidence.cilium_wireguard(fixture("cilium-status-disabled.txt"), nodes=3)
    assert not disabled.passed
    assert "encryption is Disabled" in disabled.detail
    assert "encryption.type=wireguard" in disabled.detail
    absent = cilium_evidence.cilium_wireguard("KVStore: Disabled\n", nodes=3)
    assert not absent.passed
    assert "no 'Encryption:' line" in absent.detail


# The shop topology's calls, as the kind plan gives them to the check (testbed.kube.manifests.call_edges).
EDGES = (("loadgen", "frontend"), ("frontend", "catalog"), ("frontend", "pricing"), ("catalog", "inventory"))


def test_the_status_fixtures_are_of_this_configuration() -> None:
    # Hubble is off (kube_cilium: hubble.enabled=false): the agent reports HubbleStatus{State: Disabled}
    # (cilium/cilium pkg/hubble/cell Status) and FormatStatusResponse prints `Hubble:\tDisabled`.
    for name in (
        "cilium-status-wireguard.txt",
        "cilium-status-missing-peer.txt",
        "cilium-status-disabled.txt",
    ):
        lines = fixture(name).splitlines()
        assert [line.split() for line in lines if line.startswith("Hubble:")] == [["Hubble:", "Disabled"]]
        assert "Cluster health:" in fixture(name) and "4/4 reachable" in fixture(name)


def test_cilium_unencrypted_is_cilium_up_without_encryption() -> None:
    check = cilium_evidence.cilium_unencrypted(fixture("cilium-status-disabled.txt"))
    assert check.passed, check.detail
    assert check.data["encryption"] == "Disabled" and check.data["cilium"].startswith("Ok")
    assert_one_line(check)
    wireguard = cilium_evidence.cilium_unencrypted(fixture("cilium-status-wireguard.txt"))
    assert not wireguard.passed and "encryption is Wireguard, not Disabled" in wireguard.detail
    down = fixture("cilium-status-disabled.txt").replace(
        "Cilium:                                                   Ok",
        "Cilium:                                                   Failure",
    )
    assert "Failure" in down
    assert not cilium_evidence.cilium_unencrypted(down).passed
    assert not cilium_evidence.cilium_unencrypted("KVStore: Disabled\n").passed


#: The cilium-agents' debuginfo of the four kind nodes (after the verification load).
CILIUM_NODES = ("control-plane", "worker", "worker2", "worker3")


def debuginfo(node: str) -> str:
    return fixture(f"cilium-debuginfo-{node}.json")


def earlier(text: str, less: int = 10_000, keep: tuple[str, ...] = ()) -> str:
    """The same debuginfo `less` bytes earlier on every peer's counters (but the peers whose key is in
    `keep`, which did not move)."""
    info = json.loads(text)
    for iface in info["encryption"]["wireguard"]["interfaces"]:
        for peer in iface["peers"]:
            if peer["public-key"] not in keep:
                peer["transfer-rx"] -= less
                peer["transfer-tx"] -= less
    return json.dumps(info, separators=(",", ":"))


def key_of(node: str) -> str:
    key: str = json.loads(debuginfo(node))["encryption"]["wireguard"]["interfaces"][0]["public-key"]
    return key


#: The shop topology as placed (pods-cross-node.json): loadgen on worker3, frontend and inventory on
#: worker, catalog and pricing on worker2.
SHOP_PAIRS = [("worker3", "worker"), ("worker", "worker2"), ("worker", "worker2"), ("worker2", "worker")]


def test_wireguard_carried_the_load_on_every_crossing_pair() -> None:
    after = {n: debuginfo(n) for n in CILIUM_NODES}
    before = {n: earlier(t) for n, t in after.items()}
    check = cilium_evidence.cilium_wireguard_transfer(before, after, pairs=SHOP_PAIRS, min_bytes=2_400)
    assert check.passed, check.detail
    assert [e["nodes"] for e in check.data["pairs"]] == [["worker", "worker2"], ["worker", "worker3"]]
    assert check.data["pairs"][0]["worker->worker2"] == {"tx_bytes": 10_000, "rx_bytes": 10_000}
    assert_one_line(check)
    # Not enough for the load: the floor is what tells the load's bytes from Cilium's health probes.
    short = cilium_evidence.cilium_wireguard_transfer(before, after, pairs=SHOP_PAIRS, min_bytes=10_001)
    assert not short.passed and "need 10001 each" in short.detail


def test_wireguard_that_did_not_move_on_one_pair_fails() -> None:
    after = {n: debuginfo(n) for n in CILIUM_NODES}
    before = {n: earlier(t) for n, t in after.items()}
    # worker2's counters for worker did not move: the hop went around WireGuard (or nowhere).
    before["worker2"] = earlier(after["worker2"], keep=(key_of("worker"),))
    check = cilium_evidence.cilium_wireguard_transfer(before, after, pairs=SHOP_PAIRS, min_bytes=1)
    assert not check.passed
    assert "worker2 sent 0 B to and received 0 B from worker" in check.detail
    assert_one_line(check)


def test_wireguard_transfer_needs_every_agent_peer_and_pair() -> None:
    after = {n: debuginfo(n) for n in CILIUM_NODES}
    before = {n: earlier(t) for n, t in after.items()}
    unencrypted = json.dumps({"cilium-version": "1.20.0", "encryption": {}})
    broken = cilium_evidence.cilium_wireguard_transfer(
        before, after | {"worker": unencrypted}, pairs=SHOP_PAIRS
    )
    assert not broken.passed and "worker (after the load): no WireGuard interface" in broken.detail
    missing = cilium_evidence.cilium_wireguard_transfer(
        {n: t for n, t in before.items() if n != "worker3"}, after, pairs=SHOP_PAIRS
    )
    assert not missing.passed and "no debuginfo from node worker3" in missing.detail
    restarted = cilium_evidence.cilium_wireguard_transfer(after, before, pairs=SHOP_PAIRS)
    assert not restarted.passed and "went back" in restarted.detail
    lonely = json.loads(after["control-plane"])
    lonely["encryption"]["wireguard"]["interfaces"][0]["peers"].pop()
    unpeered = cilium_evidence.cilium_wireguard_transfer(
        before, after | {"control-plane": json.dumps(lonely)}, pairs=SHOP_PAIRS
    )
    assert not unpeered.passed and "control-plane has no peer for worker3" in unpeered.detail
    same_node = cilium_evidence.cilium_wireguard_transfer(before, after, pairs=[("worker", "worker")])
    assert not same_node.passed and "no hop between two nodes" in same_node.detail
    assert not cilium_evidence.cilium_wireguard_transfer(
        before, after | {"worker": "curl: (7)"}, pairs=SHOP_PAIRS
    ).passed


W = "testbed-cilium-worker"


def test_edges_are_the_topologys_calls() -> None:
    assert call_edges(load_topology("shop")) == EDGES


def test_every_call_crosses_nodes_and_each_node_pair_is_recorded() -> None:
    check = evidence.cross_node(fixture("pods-cross-node.json"), edges=EDGES)
    assert check.passed, check.detail
    assert check.data["nodes"]["loadgen"] == [f"{W}3"]
    assert check.data["edges"] == [
        {"caller": "loadgen", "callee": "frontend", "caller_node": f"{W}3", "callee_node": W},
        {"caller": "frontend", "callee": "catalog", "caller_node": W, "callee_node": f"{W}2"},
        {"caller": "frontend", "callee": "pricing", "caller_node": W, "callee_node": f"{W}2"},
        {"caller": "catalog", "callee": "inventory", "caller_node": f"{W}2", "callee_node": W},
    ]
    assert check.detail.startswith("every call crosses nodes: loadgen -> frontend")
    assert_one_line(check)


def test_apps_sharing_one_node_fail_though_the_load_generator_crosses() -> None:
    # The earlier layout: only loadgen -> frontend left its node, and the check said so was enough.
    check = evidence.cross_node(fixture("pods-same-node.json"), edges=EDGES)
    assert not check.passed
    assert check.detail.startswith("3 call(s) never leave their node: frontend -> catalog on " + W)
    assert "loadgen -> frontend" not in check.detail
    assert len(check.data["edges"]) == 4
    assert_one_line(check)


def test_one_same_node_call_fails() -> None:
    listing = json.loads(fixture("pods-cross-node.json"))
    for pod in listing["items"]:
        if pod["metadata"]["labels"]["app"] == "inventory":
            pod["spec"]["nodeName"] = f"{W}2"  # beside its caller, catalog
    check = evidence.cross_node(json.dumps(listing), edges=EDGES)
    assert not check.passed
    assert f"1 call(s) never leave their node: catalog -> inventory on {W}2 " in check.detail


def test_every_pod_of_a_caller_must_cross() -> None:
    # Two frontend pods (say, mid-rollout), one of them beside pricing: that pair fails.
    listing = json.loads(fixture("pods-cross-node.json"))
    extra = next(p for p in listing["items"] if p["metadata"]["labels"]["app"] == "frontend")
    extra = json.loads(json.dumps(extra))
    extra["metadata"]["name"] = "frontend-5d8f9b7c6-zz9qq"
    extra["spec"]["nodeName"] = f"{W}2"
    listing["items"].append(extra)
    check = evidence.cross_node(json.dumps(listing), edges=EDGES)
    assert not check.passed
    assert "frontend -> catalog on " + f"{W}2" in check.detail
    assert "frontend -> pricing on " + f"{W}2" in check.detail


def test_pending_load_generator_or_no_calls_fail() -> None:
    listing = json.loads(fixture("pods-cross-node.json"))
    for pod in listing["items"]:
        if pod["metadata"]["labels"]["app"] == "loadgen":
            pod["status"]["phase"] = "Pending"
            del pod["spec"]["nodeName"]
    check = evidence.cross_node(json.dumps(listing), edges=EDGES)
    assert not check.passed
    assert "no running pod of loadgen" in check.detail
    empty = evidence.cross_node(fixture("pods-cross-node.json"), edges=())
    assert not empty.passed


# --- Evidence and the stop -----------------------------------------------------------------------------


def _checks() -> list[Check]:
    return [
        istio_evidence.istio_sidecar_mtls(fixture("istio-envoy-stats-mtls.txt"), namespace=NS),
        evidence.plaintext_refused(fixture("plaintext-probe-reset.txt")),
    ]


def test_verify_builds_mesh_evidence() -> None:
    result = evidence.verify("istio", _checks())
    assert result["mesh"] == "istio"
    assert result["encrypted"] is True
    assert [c["name"] for c in result["checks"]] == ["istio-sidecar-mtls", "plaintext-refused"]
    assert json.loads(json.dumps(result)) == result
    evidence.require("istio", _checks())  # no error


def test_require_names_every_failed_check_on_one_line() -> None:
    checks = [*_checks(), evidence.plaintext_refused(fixture("plaintext-probe-200.txt"))]
    assert evidence.verify("istio", checks)["encrypted"] is False
    with pytest.raises(TestbedError) as info:
        evidence.require("istio", checks)
    message = info.value.message
    assert message.startswith("the istio mesh could not be verified: plaintext-refused: plaintext GET ")
    assert message.endswith("; the run stops rather than report an unverified mesh")
    assert "\n" not in message
    assert "istio-sidecar-mtls" not in message


def test_no_checks_is_no_verification() -> None:
    assert evidence.verify("cilium", [])["encrypted"] is False
    with pytest.raises(TestbedError, match="the cilium mesh could not be verified: no verification was run"):
        evidence.require("cilium", [])


# --- The commands ------------------------------------------------------------------------------------


def test_commands() -> None:
    ctx = "kind-testbed-x"
    assert istio_evidence.istio_stats_argv(ctx, NS, "app.kubernetes.io/part-of=testbed") == (
        "istioctl", "--context", ctx, "--namespace", NS, "experimental", "envoy-stats",
        "--selector", "app.kubernetes.io/part-of=testbed", "--output", "prom",
    )  # fmt: skip
    assert istio_evidence.ztunnel_workloads_argv(ctx, NS)[3:] == (
        "ztunnel-config", "workloads", "--workload-namespace", NS, "--output", "json",
    )  # fmt: skip
    assert linkerd_evidence.linkerd_metrics_argv(ctx, NS, "frontend")[-1] == "deploy/frontend"
    assert linkerd_evidence.linkerd_check_argv(ctx, NS, wait_s=45)[3:] == (
        "check", "--proxy", "--namespace", NS, "--wait", "45s",
    )  # fmt: skip
    assert cilium_evidence.cilium_status_argv(ctx)[-2:] == ("cilium-dbg", "status")
    assert cilium_evidence.cilium_debuginfo_argv("testbed-cilium-worker") == (
        "docker", "exec", "testbed-cilium-worker", "curl", "--silent", "--show-error", "--max-time", "30",
        "--unix-socket", "/var/run/cilium/cilium.sock", "http://localhost/v1/debuginfo",
    )  # fmt: skip
    assert evidence.pods_argv(ctx, NS)[-2:] == ("--output", "json")
