"""Envoy bootstrap configurations for the local sidecars, planned as plain dicts (static, no control plane).

Each demo service gets a sidecar with one inbound listener (mTLS in, plain HTTP/1.1 to the app) and one
outbound listener per downstream (plain HTTP/1.1 from the app, mTLS to the downstream's inbound
listener). The load generator gets a client sidecar with only the outbound listener to the entry
service, so every call crosses two proxies. Pure: nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from testbed.errors import UsageError
from testbed.meshes.envoy.pki import Leaf, Pki

LOCALHOST = "127.0.0.1"
#: Istio sets every circuit-breaker threshold to MaxUint32 so that Envoy's defaults (1024 connections,
#: 3 retries) never shape a benchmark (pilot/pkg/networking/core: getDefaultCircuitBreakerThresholds).
_UNLIMITED = 2**32 - 1
#: Istio's default idle timeout for upstream connections (1 h): keep-alive connections stay pooled.
_UPSTREAM_IDLE_TIMEOUT = "3600s"
_CONNECT_TIMEOUT = "10s"
_TLS_SOCKET = "envoy.transport_sockets.tls"
_HCM = "envoy.filters.network.http_connection_manager"
_TYPE = "type.googleapis.com/"
_DOWNSTREAM_CONNECTIONS = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
_TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}

Json = dict[str, Any]


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
