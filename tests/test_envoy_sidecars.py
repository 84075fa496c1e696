"""Envoy sidecars with SPIFFE mTLS: certificates, configurations that Envoy 1.40 accepts, and real proxies."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import http.server
import json
import os
import re
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from testbed.errors import CommandError, TestbedError, UsageError
from testbed.meshes.envoy.bootstrap import (
    ClientSidecar,
    Downstream,
    ServiceSidecar,
    client_sidecar_bootstrap,
    sidecar_bootstrap,
)
from testbed.meshes.envoy.pki import Pki, make_pki
from testbed.meshes.envoy.sidecar import (
    Sidecar,
    plaintext_refused,
    start_sidecar,
    tls_evidence,
    validate_bootstrap,
    write_bootstrap,
)
from testbed.ports import free_ports

IDENTITIES = ["productpage", "reviews", "loadgen", "intruder"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), IDENTITIES)


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _free_ports(n: int) -> list[int]:
    return free_ports(n)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- certificates ---------------------------------------------------------------------------------


def test_ca_is_an_ecdsa_p256_ca(pki: Pki) -> None:
    ca = _load_cert(pki.ca_cert)
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign
    assert ca.subject == ca.issuer


def test_leaves_carry_spiffe_ids_and_chain_to_the_ca(pki: Pki) -> None:
    ca = _load_cert(pki.ca_cert)
    verifier = PolicyBuilder().store(Store([ca])).build_client_verifier()
    for identity in IDENTITIES:
        leaf = pki.leaf(identity)
        assert leaf.spiffe_id == f"spiffe://testbed.local/ns/demo/sa/{identity}"
        cert = _load_cert(leaf.cert)
        cert.verify_directly_issued_by(ca)
        verified = verifier.verify(cert, [])
        assert verified.chain[-1] == ca
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [leaf.spiffe_id]
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime <= datetime.timedelta(days=1, minutes=10)
        key = serialization.load_pem_private_key(leaf.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert key.public_key() == cert.public_key()
        assert stat.S_IMODE(os.stat(leaf.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pki.ca_key).st_mode) == 0o600


def test_make_pki_rejects_bad_identities(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        make_pki(tmp_path, ["Reviews"])
    with pytest.raises(UsageError):
        make_pki(tmp_path, ["a", "a"])


# --- configurations -------------------------------------------------------------------------------


def _service(ports: list[int], *, downstreams: tuple[Downstream, ...] = ()) -> ServiceSidecar:
    app, inbound, admin = ports[:3]
    return ServiceSidecar(
        service="productpage",
        app_port=app,
        inbound_port=inbound,
        admin_port=admin,
        allowed_callers=("loadgen",),
        downstreams=downstreams,
    )


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def test_service_bootstrap_requires_and_checks_client_identities(pki: Pki) -> None:
    reviews = Downstream(name="reviews", outbound_port=15001, inbound_port=16001)
    config = sidecar_bootstrap(_service([15080, 15006, 15000], downstreams=(reviews,)), pki)
    inbound, outbound = config["static_resources"]["listeners"]
    tls = inbound["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    sans = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert sans == [{"san_type": "URI", "matcher": {"exact": "spiffe://testbed.local/ns/demo/sa/loadgen"}}]
    assert "transport_socket" not in outbound["filter_chains"][0]  # the app speaks plaintext to it
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    upstream = clusters["outbound|reviews"]["transport_socket"]["typed_config"]
    assert upstream["sni"]
    assert upstream["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://testbed.local/ns/demo/sa/reviews"}}
    ]
    assert "transport_socket" not in clusters["inbound|productpage"]
    keys = {key for key, _ in _walk(config)}
    assert not keys & {"access_log", "access_log_path", "tracing"}
    addresses = {v["address"] for k, v in _walk(config) if k == "socket_address"}
    assert addresses == {"127.0.0.1"}


def test_client_bootstrap_has_only_the_outbound_listener(pki: Pki) -> None:
    entry = Downstream(name="productpage", outbound_port=15001, inbound_port=16001)
    config = client_sidecar_bootstrap(ClientSidecar(admin_port=15000, entry=entry), pki)
    (listener,) = config["static_resources"]["listeners"]
    (cluster,) = config["static_resources"]["clusters"]
    assert listener["address"]["socket_address"]["port_value"] == 15001
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"] == str(
        pki.leaf("loadgen").cert
    )


def test_bootstrap_planning_rejects_unsafe_input(pki: Pki) -> None:
    with pytest.raises(UsageError, match="allowed_callers"):
        sidecar_bootstrap(replace(_service([1, 2, 3]), allowed_callers=()), pki)
    with pytest.raises(UsageError, match="distinct"):
        sidecar_bootstrap(_service([1, 2, 2]), pki)
    with pytest.raises(UsageError, match="no certificate"):
        sidecar_bootstrap(replace(_service([1, 2, 3]), service="ratings"), pki)


def test_every_bootstrap_passes_envoy_validate(pki: Pki, tmp_path: Path) -> None:
    reviews = Downstream(name="reviews", outbound_port=15001, inbound_port=16001)
    entry = Downstream(name="productpage", outbound_port=15002, inbound_port=15006)
    configs = {
        "with-downstream": sidecar_bootstrap(_service([15080, 15006, 15000], downstreams=(reviews,)), pki),
        "leaf-service": sidecar_bootstrap(
            ServiceSidecar(
                service="reviews",
                app_port=16080,
                inbound_port=16001,
                admin_port=16000,
                allowed_callers=("productpage", "loadgen"),
            ),
            pki,
        ),
        "client": client_sidecar_bootstrap(ClientSidecar(admin_port=17000, entry=entry), pki),
    }
    for name, config in configs.items():
        validate_bootstrap(write_bootstrap(config, tmp_path / f"{name}.json"))
    # The check is real: a misspelt field fails.
    broken = json.loads(
        json.dumps(configs["leaf-service"]).replace("require_client_certificate", "require_cert")
    )
    with pytest.raises(CommandError):
        validate_bootstrap(write_bootstrap(broken, tmp_path / "broken.json"))


# --- real processes -------------------------------------------------------------------------------


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with its request headers as JSON, keep-alive."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class Mesh:
    pki: Pki
    app_port: int
    server: Sidecar
    client: Sidecar
    inbound_port: int
    entry_port: int
    workdir: Path


@pytest.fixture
def app_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def mesh(pki: Pki, app_port: int, tmp_path: Path) -> Iterator[Mesh]:
    inbound, server_admin, entry, client_admin = _free_ports(4)
    server_config = sidecar_bootstrap(
        ServiceSidecar(
            service="productpage",
            app_port=app_port,
            inbound_port=inbound,
            admin_port=server_admin,
            allowed_callers=("loadgen",),
        ),
        pki,
    )
    client_config = client_sidecar_bootstrap(
        ClientSidecar(
            admin_port=client_admin,
            entry=Downstream(name="productpage", outbound_port=entry, inbound_port=inbound),
        ),
        pki,
    )
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(start_sidecar("productpage", server_config, tmp_path))
        client = stack.enter_context(start_sidecar("loadgen", client_config, tmp_path))
        yield Mesh(
            pki=pki,
            app_port=app_port,
            server=server,
            client=client,
            inbound_port=inbound,
            entry_port=entry,
            workdir=tmp_path,
        )


def _get(port: int, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _mtls_get(port: int, pki: Pki, identity: str | None) -> int | None:
    """A direct TLS client to an inbound listener; the HTTP status, or None if refused."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the server proves a SPIFFE URI, not a DNS name
    context.load_verify_locations(cafile=pki.ca_cert)
    if identity is not None:
        leaf = pki.leaf(identity)
        context.load_cert_chain(leaf.cert, leaf.key)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: productpage\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
    except (ssl.SSLError, ConnectionError):
        return None  # with TLS 1.3 the server's verdict on the client certificate arrives after the handshake
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data.split(b" ", 2)[1])


def test_request_crosses_both_sidecars_with_mtls(mesh: Mesh) -> None:
    before_server = tls_evidence(mesh.server.admin_port)
    before_client = tls_evidence(mesh.client.admin_port)
    assert before_server["inbound"]["handshake"] == 0
    assert before_client["outbound"]["handshake"] == 0

    for _ in range(3):
        status, headers, body = _get(mesh.entry_port, "/productpage")
        assert status == 200
        assert "x-envoy-upstream-service-time" in headers  # answered through Envoy
        seen = json.loads(body)
        # The server sidecar tells the app who called: the client sidecar's SPIFFE identity.
        assert "URI=spiffe://testbed.local/ns/demo/sa/loadgen" in seen["x-forwarded-client-cert"]

    server = tls_evidence(mesh.server.admin_port)
    client = tls_evidence(mesh.client.admin_port)
    assert server["inbound"]["handshake"] >= 1
    assert client["outbound"]["handshake"] >= 1
    # Keep-alive: three requests do not need three handshakes per worker... at most one per worker thread.
    assert client["outbound"]["handshake"] <= mesh.client.concurrency
    assert server["inbound"]["fail_verify_san"] == 0
    assert server["inbound"]["no_certificate"] == 0
    assert f"127.0.0.1_{mesh.inbound_port}" in server["listeners"]
    assert "outbound|productpage" in client["clusters"]


def test_plaintext_to_the_inbound_listener_is_refused(mesh: Mesh) -> None:
    assert plaintext_refused("127.0.0.1", mesh.inbound_port)
    # The check tells the two apart: the app itself answers plaintext.
    assert not plaintext_refused("127.0.0.1", mesh.app_port)
    closed = _free_ports(1)[0]
    with pytest.raises(TestbedError):
        plaintext_refused("127.0.0.1", closed, timeout=1)


def test_callers_outside_the_allowed_identities_are_refused(mesh: Mesh) -> None:
    assert _mtls_get(mesh.inbound_port, mesh.pki, "loadgen") == 200  # the client below works for a caller
    assert _mtls_get(mesh.inbound_port, mesh.pki, "intruder") is None
    assert _mtls_get(mesh.inbound_port, mesh.pki, None) is None
    inbound = tls_evidence(mesh.server.admin_port)["inbound"]
    assert inbound["fail_verify_san"] == 1
    assert inbound["fail_verify_no_cert"] == 1
    assert inbound["handshake"] == 1


def test_client_sidecar_checks_the_server_identity(mesh: Mesh) -> None:
    # A client that expects "reviews" behind the port where "productpage" answers must not connect.
    admin, entry = _free_ports(2)
    impostor = Downstream(name="reviews", outbound_port=entry, inbound_port=mesh.inbound_port)
    config = client_sidecar_bootstrap(ClientSidecar(admin_port=admin, entry=impostor), mesh.pki)
    with start_sidecar("loadgen-expects-reviews", config, mesh.workdir, concurrency=1) as client:
        status, _, _ = _get(entry)
        assert status == 503
        assert tls_evidence(client.admin_port)["outbound"]["fail_verify_san"] >= 1
    assert tls_evidence(mesh.server.admin_port)["inbound"]["handshake"] == 0


def test_stop_leaves_no_process_and_no_port(pki: Pki, app_port: int, tmp_path: Path) -> None:
    inbound, admin = _free_ports(2)
    config = sidecar_bootstrap(
        ServiceSidecar(
            service="reviews",
            app_port=app_port,
            inbound_port=inbound,
            admin_port=admin,
            allowed_callers=("loadgen",),
        ),
        pki,
    )
    sidecar = start_sidecar("reviews", config, tmp_path, concurrency=3)
    pid = sidecar.pid
    # Envoy names its worker threads wrk:worker_<n>: --concurrency 3 made exactly three.
    threads = [
        Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip() for t in psutil.Process(pid).threads()
    ]
    assert sum(name.startswith("wrk:worker_") for name in threads) == 3
    assert not _port_free(inbound)
    sidecar.stop()
    sidecar.stop()  # safe to repeat
    assert not psutil.pid_exists(pid)
    assert _port_free(inbound) and _port_free(admin)


def test_a_sidecar_that_cannot_start_says_why(pki: Pki, tmp_path: Path) -> None:
    inbound, admin, app = _free_ports(3)
    config = sidecar_bootstrap(
        ServiceSidecar(
            service="reviews",
            app_port=app,
            inbound_port=inbound,
            admin_port=admin,
            allowed_callers=("loadgen",),
        ),
        replace(pki, ca_cert=tmp_path / "missing-ca.pem"),
    )
    with pytest.raises(TestbedError, match=re.escape("missing-ca.pem")):
        start_sidecar("reviews", config, tmp_path, ready_timeout=10)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", inbound))
        busy.listen()
        with pytest.raises(TestbedError, match="in use"):
            start_sidecar("reviews", sidecar_bootstrap(_service([app, inbound, admin]), pki), tmp_path)
