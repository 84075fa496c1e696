"""The Kubernetes objects of one topology, as plain dicts in apply order: pure functions, no I/O.

Every service of the topology gets a ServiceAccount (its mesh identity), a ClusterIP Service and a
one-replica Deployment running `python -m testbed.sut.service` from the testbed image. The load generator is
an idle pod in the same namespace, so that the mesh gives it the same client-side proxy as any caller;
trials are run in it with `kubectl exec`. The load generator has a worker of its own, and the services
alternate between two app workers by their depth in the call graph (`app_role`), so that every call, the
generator's and each service's, crosses nodes (`ROLE_LABEL`, set by `manifests/kind/*.yaml`).

Mesh-specific settings (namespace labels such as `istio-injection`, annotations such as
`linkerd.io/inject`) are the caller's: this module knows no mesh.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from testbed.errors import ConfigError, UsageError
from testbed.spec.topology import Service, Topology, call_depths

#: One Kubernetes object, as `kubectl apply` reads it.
Object = dict[str, Any]

DEFAULT_NAMESPACE = "testbed"
#: Every demo service listens on this port in its pod, and its Service exposes the same port.
APP_PORT = 8080
#: Istio picks the protocol from the port name (`http`, `http-*`), others from `appProtocol`: both say HTTP.
APP_PORT_NAME = "http"
#: What `testbed.sut.service` answers 200 on without doing any work (`testbed.sut.service.HEALTH_PATH`).
HEALTH_PATH = "/healthz"
#: Where the Dockerfile puts the repository's `scenarios/topologies/`.
IMAGE_TOPOLOGIES_DIR = "/app/scenarios/topologies"
#: The numeric `USER` of the Dockerfile: numeric, so that the kubelet can verify `runAsNonRoot`.
RUN_AS_USER = 10001

#: The node label that places pods; `manifests/kind/*.yaml` puts it on the three workers.
ROLE_LABEL = "testbed.io/role"
#: The app workers: a service at an even depth from the entry runs on the first, at an odd depth on the
#: second (`app_role`), so that a caller and its callee are never on one node.
APPS_A_ROLE = "apps-a"
APPS_B_ROLE = "apps-b"
APP_ROLES = (APPS_A_ROLE, APPS_B_ROLE)
LOADGEN_ROLE = "loadgen"
#: Every role a node must have, one node each: the kind configurations give each worker one.
NODE_ROLES = (*APP_ROLES, LOADGEN_ROLE)
#: Every node that may run shared proxies and control planes (waypoint, istiod, Linkerd's control plane,
#: Cilium's operator): any node but the load generator's. The kind configurations label the app workers
#: with it; a mesh pins its shared components there with this nodeSelector.
POOL_LABEL = "testbed.io/pool"
APPS_POOL = "apps"
SHARED_NODE_SELECTOR: dict[str, str] = {POOL_LABEL: APPS_POOL}

PART_OF = {"app.kubernetes.io/part-of": "testbed"}
LOADGEN_NAME = "loadgen"
WORKER_NAME = "loadgen-worker"
#: Locust's default master port; the master listens in the loadgen pod.
DEFAULT_MASTER_PORT = 5557
DEFAULT_MASTER_HOST = "loadgen-master"
#: `tcp-` tells Istio not to sniff the port: Locust's master and workers speak ZeroMQ, not HTTP.
MASTER_PORT_NAME = "tcp-locust"
#: The local ports of the load generator's pods. A `--new-connection` load leaves every connection it
#: closes in TIME_WAIT for 60 s, and the default range (32768-60999) gives ~28k ports to one destination,
#: the entry's Service: a few hundred connections a second exhaust it (connect() fails with
#: EADDRNOTAVAIL). 1024 is the lowest start the kernel takes while ip_unprivileged_port_start is at its
#: default, 1024 (Linux net/ipv4/sysctl_net_ipv4.c ipv4_local_port_range refuses a start below it).
#: `net.ipv4.ip_local_port_range` is one of the kubelet's safe sysctls, allowed on every node without
#: `allowedUnsafeSysctls` (kubernetes/kubernetes pkg/kubelet/sysctl/safe_sysctls.go at v1.35,
#: `safeSysctls`), and Pod Security's baseline allows it (pod-security-admission policy/check_sysctls.go).
#: `net.ipv4.tcp_tw_reuse`, which would let new connections take over TIME_WAIT ports, is not in that
#: list: the kubelet would refuse the pod (SysctlForbidden) unless the node allowed it as unsafe.
LOADGEN_LOCAL_PORT_RANGE = "1024 65535"
#: Reserved out of that range for listeners the pod opens itself: a trial with `--processes N` runs a local
#: Locust master on a port `testbed.ports` picks among these (nothing lies below the range any more).
LOADGEN_LISTENER_PORTS = "5560-5579"

# Service names become DNS labels in `NAME.NAMESPACE.svc.cluster.local`: RFC 1035 labels.
_DNS_LABEL = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, kw_only=True)
class Resources:
    """CPU and memory requests and limits of one container, in Kubernetes quantities."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def to_dict(self) -> Object:
        """The container's `resources` field."""
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


# Requests are small on purpose: a CI runner has 4 CPUs shared by all kind nodes, and half of the
# topology's pods land on each app worker beside their sidecars. Limits stop a runaway pod, not a busy
# one: the app is one event loop, so one CPU is all it can use.
APP_RESOURCES = Resources(cpu_request="100m", memory_request="64Mi", cpu_limit="1", memory_limit="256Mi")
# The master in the loadgen pod may also run `--processes 1` trials itself, a core's worth of Python.
LOADGEN_RESOURCES = Resources(cpu_request="500m", memory_request="256Mi", cpu_limit="2", memory_limit="1Gi")
WORKER_RESOURCES = Resources(cpu_request="250m", memory_request="128Mi", cpu_limit="1", memory_limit="512Mi")


def app_role(depth: int) -> str:
    """The app worker of a service `depth` calls from the entry: even depths on one, odd on the other."""
    return APP_ROLES[depth % 2]


def call_edges(topology: Topology) -> tuple[tuple[str, str], ...]:
    """Every call as (caller, callee) Deployment names: the load generator's to the entry, then each call."""
    return (
        (LOADGEN_NAME, topology.entry),
        *((s.name, callee) for s in reversed(topology.startup_order()) for callee in s.calls),
    )


def service_host(service: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The cluster DNS name of a topology service's Service."""
    return f"{service}.{namespace}.svc.cluster.local"


def service_url(service: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The in-cluster URL of a topology service: what its callers and the load generator use."""
    return f"http://{service_host(service, namespace)}:{APP_PORT}/"


def manifests(
    topology: Topology,
    *,
    image: str,
    namespace: str = DEFAULT_NAMESPACE,
    namespace_labels: Mapping[str, str] | None = None,
    namespace_annotations: Mapping[str, str] | None = None,
    pod_annotations: Mapping[str, str] | None = None,
    app_resources: Resources = APP_RESOURCES,
    loadgen_resources: Resources = LOADGEN_RESOURCES,
    master_port: int = DEFAULT_MASTER_PORT,
) -> list[Object]:
    """Everything for one topology in apply order: namespace, the apps, then the idle load generator."""
    return [
        namespace_object(namespace, labels=namespace_labels, annotations=namespace_annotations),
        *app_objects(
            topology,
            image=image,
            namespace=namespace,
            resources=app_resources,
            pod_annotations=pod_annotations,
        ),
        *loadgen(
            image=image,
            namespace=namespace,
            resources=loadgen_resources,
            master_port=master_port,
            pod_annotations=pod_annotations,
        ),
    ]


def namespace_object(
    name: str = DEFAULT_NAMESPACE,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Object:
    """The namespace of the apps and the load generator; a mesh enrols it with labels or annotations."""
    _check_name(name, "namespace")
    metadata: Object = {"name": name, "labels": {**PART_OF, **(labels or {})}}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def app_objects(
    topology: Topology,
    *,
    image: str,
    namespace: str = DEFAULT_NAMESPACE,
    resources: Resources = APP_RESOURCES,
    topology_path: str | None = None,
    pod_annotations: Mapping[str, str] | None = None,
) -> list[Object]:
    """ServiceAccounts, Services, then Deployments of every topology service, leaves first.

    Each Deployment runs on the app worker of its depth's parity (`app_role`); a topology with a service
    at depths of both parities is refused (`testbed.spec.topology.call_depths`).

    `topology_path` is the topology file inside the image; by default the file of the same name in
    the repository's `scenarios/topologies/`, which the Dockerfile copies to `/app/scenarios/topologies/`.
    """
    _check_name(namespace, "namespace")
    reserved = {LOADGEN_NAME, WORKER_NAME, DEFAULT_MASTER_HOST}
    for service in topology.services:
        _check_name(service.name, f"service {service.name!r}")
        if service.name in reserved:
            raise ConfigError(
                f"{topology.source}: services.{service.name}: the name is taken by the load generator "
                "on Kubernetes; rename the service"
            )
    path = topology_path or f"{IMAGE_TOPOLOGIES_DIR}/{topology.source.name}"
    order = topology.startup_order()
    depths = call_depths(topology)
    return [
        *(_service_account(s.name, namespace) for s in order),
        *(_app_service(s.name, namespace) for s in order),
        *(
            _app_deployment(
                s,
                role=app_role(depths[s.name]),
                namespace=namespace,
                image=image,
                topology_path=path,
                resources=resources,
                pod_annotations=pod_annotations or {},
            )
            for s in order
        ),
    ]


def loadgen(
    *,
    image: str,
    namespace: str = DEFAULT_NAMESPACE,
    resources: Resources = LOADGEN_RESOURCES,
    master_port: int = DEFAULT_MASTER_PORT,
    pod_annotations: Mapping[str, str] | None = None,
) -> list[Object]:
    """The load generator's ServiceAccount and idle Deployment; trials run in it with `kubectl exec`."""
    _check_name(namespace, "namespace")
    _check_port(master_port)
    container: Object = {
        "name": LOADGEN_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sleep", "infinity"],
        # Declared so that a sidecar knows the Locust master's inbound port from the start.
        "ports": [{"name": MASTER_PORT_NAME, "containerPort": master_port, "protocol": "TCP"}],
        "resources": resources.to_dict(),
        # Writable: a trial may write its result directory before it is copied out.
        "securityContext": _security_context(read_only_root=False),
    }
    sysctls = {
        "net.ipv4.ip_local_port_range": LOADGEN_LOCAL_PORT_RANGE,
        # connect() never picks a port a socket is bound to (Linux net/ipv4/inet_hashtables.c
        # __inet_hash_connect), so the mesh proxy's listeners, bound when the pod starts, are safe; but
        # the master binds its port anew for every trial, after the last trial's connections may have
        # left it in TIME_WAIT: reserved, no connection takes it. A safe sysctl from kernel 3.16
        # (safe_sysctls.go at v1.35, IPLocalReservedPortsNamespacedKernelVersion).
        "net.ipv4.ip_local_reserved_ports": f"{master_port},{LOADGEN_LISTENER_PORTS}",
    }
    return [
        _service_account(LOADGEN_NAME, namespace),
        _deployment(
            LOADGEN_NAME,
            namespace,
            replicas=1,
            role=LOADGEN_ROLE,
            container=container,
            pod_annotations=pod_annotations or {},
            # `sleep` as PID 1 ignores SIGTERM: without this, every deletion would wait 30 s.
            termination_grace_s=2,
            sysctls=sysctls,
        ),
    ]


def loadgen_workers(
    n: int,
    master_host: str = DEFAULT_MASTER_HOST,
    port: int = DEFAULT_MASTER_PORT,
    *,
    image: str,
    namespace: str = DEFAULT_NAMESPACE,
    resources: Resources = WORKER_RESOURCES,
    service_annotations: Mapping[str, str] | None = None,
    pod_annotations: Mapping[str, str] | None = None,
) -> list[Object]:
    """Locust's distributed mode: a Service `master_host` for the master in the loadgen pod, and `n` workers.

    The workers dial `master_host.NAMESPACE.svc.cluster.local:port`, so the master must listen on all
    interfaces of the loadgen pod on `port`. Each worker exits when its master quits; the Deployment
    then restarts it with a growing back-off, so apply it per trial and delete it afterwards.
    """
    if n < 1:
        raise UsageError(f"the load generator needs at least 1 worker, got {n}")
    _check_name(namespace, "namespace")
    _check_name(master_host, "master host")
    _check_port(port)
    if master_host in {LOADGEN_NAME, WORKER_NAME}:
        raise UsageError(f"master host {master_host!r}: the name is taken by a load generator object")
    master_metadata: Object = {"name": master_host, "namespace": namespace, "labels": _labels(master_host)}
    if service_annotations:
        master_metadata["annotations"] = dict(service_annotations)
    master_service: Object = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": master_metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": LOADGEN_NAME},
            "ports": [
                {
                    "name": MASTER_PORT_NAME,
                    "port": port,
                    "targetPort": port,
                    "protocol": "TCP",
                    "appProtocol": "tcp",
                }
            ],
        },
    }
    container: Object = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "python",
            "-m",
            "testbed.loadgen.worker",
            service_host(master_host, namespace),
            str(port),
        ],
        "resources": resources.to_dict(),
        # Writable, like the loadgen pod's: Locust has not been tried on a read-only root here.
        "securityContext": _security_context(read_only_root=False),
    }
    # The workers run as the loadgen ServiceAccount: to the mesh they are the same client.
    return [
        master_service,
        _deployment(
            WORKER_NAME,
            namespace,
            replicas=n,
            role=LOADGEN_ROLE,
            container=container,
            pod_annotations=pod_annotations or {},
            service_account=LOADGEN_NAME,
            # Python as PID 1 ignores SIGTERM too (no handler installed).
            termination_grace_s=2,
            # The workers open the connections of a distributed trial: the same range as the loadgen pod's.
            sysctls={"net.ipv4.ip_local_port_range": LOADGEN_LOCAL_PORT_RANGE},
        ),
    ]


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream for `kubectl apply -f -`, keys in the order they were built."""
    return yaml.safe_dump_all(
        [dict(o) for o in objects],
        sort_keys=False,
        explicit_start=True,
        default_flow_style=False,
        # Long URLs in commands stay on one line.
        width=1_000_000,
    )


def _service_account(name: str, namespace: str) -> Object:
    # One per service: Istio and Linkerd derive the workload identity (SPIFFE ID) from it.
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
    }


def _app_service(name: str, namespace: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "ports": [
                {
                    "name": APP_PORT_NAME,
                    "port": APP_PORT,
                    "targetPort": APP_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def _app_deployment(
    service: Service,
    *,
    role: str,
    namespace: str,
    image: str,
    topology_path: str,
    resources: Resources,
    pod_annotations: Mapping[str, str],
) -> Object:
    command = [
        "python",
        "-m",
        "testbed.sut.service",
        "--topology",
        topology_path,
        "--service",
        service.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(APP_PORT),
    ]
    for callee in service.calls:
        command += ["--downstream", f"{callee}={service_url(callee, namespace)}"]
    container: Object = {
        "name": "app",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "ports": [{"name": APP_PORT_NAME, "containerPort": APP_PORT, "protocol": "TCP"}],
        # Readiness only: a liveness probe could restart a service that is slow under load mid-trial.
        "readinessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": APP_PORT_NAME},
            "periodSeconds": 2,
            "timeoutSeconds": 1,
            "failureThreshold": 3,
        },
        "resources": resources.to_dict(),
        "securityContext": _security_context(read_only_root=True),
    }
    return _deployment(
        service.name,
        namespace,
        replicas=1,
        role=role,
        container=container,
        pod_annotations=pod_annotations,
    )


def _deployment(
    name: str,
    namespace: str,
    *,
    replicas: int,
    role: str,
    container: Object,
    pod_annotations: Mapping[str, str],
    service_account: str | None = None,
    termination_grace_s: int | None = None,
    sysctls: Mapping[str, str] | None = None,
) -> Object:
    pod_metadata: Object = {"labels": _labels(name)}
    if pod_annotations:
        pod_metadata["annotations"] = dict(pod_annotations)
    pod_spec: Object = {
        "serviceAccountName": service_account or name,
        "nodeSelector": {ROLE_LABEL: role},
        # No FOO_SERVICE_HOST variables for every Service in the namespace: a minimal environment.
        "enableServiceLinks": False,
        "containers": [container],
    }
    if sysctls:
        # Pod-level: sysctls are per network namespace, which every container of the pod shares.
        pod_spec["securityContext"] = {"sysctls": [{"name": k, "value": v} for k, v in sysctls.items()]}
    if termination_grace_s is not None:
        pod_spec["terminationGracePeriodSeconds"] = termination_grace_s
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


def _security_context(*, read_only_root: bool) -> Object:
    # Set on the container, not the pod: a mesh's injected init container (istio-init, linkerd-init)
    # needs root and NET_ADMIN, which a pod-level runAsNonRoot would forbid.
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _labels(name: str) -> dict[str, str]:
    return {"app": name, **PART_OF}


def _check_name(name: str, what: str) -> None:
    if not _DNS_LABEL.match(name):
        raise UsageError(
            f"{what} {name!r}: not a DNS label (lowercase letters, digits and '-', starting with a letter)"
        )


def _check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise UsageError(f"port {port}: must be 1..65535")
