"""Real service processes on 127.0.0.1: payloads, request-id propagation, failures, clean stop."""

from __future__ import annotations

import http.client
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testbed.errors import TestbedError
from testbed.spec.topology import Topology, load_topology
from testbed.sut.local import (
    RunningTopology,
    free_ports,
    start_topology,
)

pytestmark = pytest.mark.timeout(60)


def get(
    url: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host_port = url.removeprefix("http://")
    host, port = host_port.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def assert_all_gone(running: RunningTopology) -> None:
    pids = running.pids()
    ports = {running.port(name) for name in running.services}
    for pid in pids:
        assert not psutil.pid_exists(pid), f"pid {pid} is still there"
    listening = {
        c.laddr.port for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr
    }
    assert not ports & listening, f"ports still listening: {sorted(ports & listening)}"


def write_topology(tmp_path: Path, text: str) -> Topology:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return load_topology(path)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTopology]:
    with start_topology(load_topology("shop"), tmp_path_factory.mktemp("shop")) as running:
        yield running


def test_every_service_answers_its_payload(shop: RunningTopology) -> None:
    for service in shop.topology.services:
        status, headers, body = get(shop.services[service.name].url)
        assert status == 200, body
        assert len(body) == service.payload_bytes
        assert headers["content-length"] == str(service.payload_bytes)


def test_entry_answers_with_the_configured_payload(shop: RunningTopology) -> None:
    status, _, body = get(shop.entry_url)
    assert status == 200, body
    assert len(body) == shop.topology.service(shop.topology.entry).payload_bytes == 1024


def test_healthz_calls_nobody(shop: RunningTopology) -> None:
    status, headers, body = get(shop.entry_url, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert "x-testbed-trace" not in headers


def test_request_id_reaches_every_service(shop: RunningTopology) -> None:
    request_id = f"test-{uuid.uuid4()}"
    status, headers, _ = get(shop.entry_url, headers={"x-request-id": request_id})
    assert status == 200
    assert headers["x-request-id"] == request_id
    # Depth first, in call order: frontend, then catalog with what it called, then pricing.
    expected = ",".join(f"{name}={request_id}" for name in ("frontend", "catalog", "inventory", "pricing"))
    assert headers["x-testbed-trace"] == expected


def test_a_request_id_is_made_when_there_is_none(shop: RunningTopology) -> None:
    status, headers, _ = get(shop.entry_url)
    assert status == 200
    request_id = headers["x-request-id"]
    assert uuid.UUID(request_id)
    entries = headers["x-testbed-trace"].split(",")
    assert sorted(entries) == sorted(f"{name}={request_id}" for name in shop.topology.names)


def test_many_requests_reuse_connections(shop: RunningTopology) -> None:
    for _ in range(50):
        assert get(shop.entry_url)[0] == 200
    frontend = psutil.Process(shop.pid("frontend"))
    catalog_port = shop.port("catalog")
    to_catalog = [c for c in frontend.net_connections(kind="tcp") if c.raddr and c.raddr.port == catalog_port]
    # Sequential requests need one pooled connection; a new one per request would leave dozens.
    assert 1 <= len(to_catalog) <= 2


def test_a_killed_downstream_makes_its_callers_answer_502(tmp_path: Path) -> None:
    with start_topology(load_topology("shop"), tmp_path) as running:
        assert get(running.entry_url)[0] == 200  # the pools now hold live keep-alive connections
        os.kill(running.pid("inventory"), signal.SIGKILL)
        running.services["inventory"].process.wait(timeout=5)

        status, headers, body = get(running.entry_url, headers={"x-request-id": "dead-1"})
        assert status == 502
        assert headers["x-request-id"] == "dead-1"
        assert body.startswith(b"frontend: downstream catalog: answered 502")
        status, _, body = get(running.services["catalog"].url)
        assert status == 502
        assert body.startswith(b"catalog: downstream inventory: ")
        assert get(running.services["pricing"].url)[0] == 200
    assert_all_gone(running)
    assert "downstream inventory" in (tmp_path / "catalog.log").read_text()


def test_a_slow_downstream_makes_its_caller_answer_504(tmp_path: Path) -> None:
    topology = write_topology(
        tmp_path,
        """
        entry = "front"
        [services.front]
        calls = ["slow", "fast"]
        call_mode = "sequential"
        call_timeout_ms = 50
        [services.fast]
        [services.slow]
        work = "sleep"
        work_us = 300000
        """,
    )
    with start_topology(topology, tmp_path) as running:
        status, _, body = get(running.entry_url)
        assert status == 504
        assert body == b"front: downstream slow: no answer within 50 ms\n"
    assert_all_gone(running)


def test_stop_leaves_no_process_and_no_listening_port(tmp_path: Path) -> None:
    running = start_topology(load_topology("shop"), tmp_path)
    assert len(set(running.pids())) == 4
    for name in running.services:
        assert psutil.Process(running.pid(name)).is_running()
        assert (tmp_path / f"{name}.log").is_file()
    running.stop()
    assert_all_gone(running)
    running.stop()  # idempotent


def test_downstream_url_redirects_calls(tmp_path: Path) -> None:
    (nowhere,) = free_ports(1)
    asked: list[tuple[str, str]] = []

    def via_nowhere(caller: str, callee: str) -> str:
        asked.append((caller, callee))
        return f"http://127.0.0.1:{nowhere}"

    with start_topology(load_topology("shop"), tmp_path, downstream_url=via_nowhere) as running:
        status, _, body = get(running.entry_url)
        assert status == 502
        assert b"downstream catalog: " in body
    assert sorted(asked) == [("catalog", "inventory"), ("frontend", "catalog"), ("frontend", "pricing")]
    assert_all_gone(running)


def test_a_service_that_cannot_start_is_named_with_its_log(tmp_path: Path) -> None:
    def bad_url(caller: str, callee: str) -> str:
        return "ftp://127.0.0.1:1"

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(TestbedError) as caught:
        start_topology(load_topology("shop"), tmp_path, downstream_url=bad_url, health_timeout_s=10)
    message = caught.value.message
    assert message.startswith("service catalog exited with code 2 before it was healthy")
    assert "catalog.log" in message
    assert "expected http://HOST:PORT" in message
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before, "the services that did start were not stopped"
