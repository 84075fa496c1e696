"""The meshes' own Kubernetes settings as plain dicts: custom resources to apply, namespace labels and
annotations, and the un-meshed probe that tries plaintext. Pure functions, no I/O; the mesh modules
apply them.

What Istio 1.30.3 leaves on and off by default (istio/istio at 1.30.3), for the `minimal` and `ambient`
profiles alike (`manifests/profiles/{minimal,ambient}.yaml` and `manifests/helm-profiles/ambient.yaml`
set neither logs nor tracing; only `demo` sets `meshConfig.accessLogFile: /dev/stdout`, tracing providers
and `pilot.traceSampling: 100`):

- Access logs are off: `pkg/config/mesh/mesh.go` DefaultMeshConfig has `AccessLogFile: ""` and no
  `defaultProviders.accessLogging`, and the istiod chart's mesh (`templates/configmap.yaml`) adds one
  only for Stackdriver.
- No spans are reported: the chart's `global.proxy.tracer: "none"` writes no `defaultConfig.tracing`,
  and DefaultProxyConfig has none. But `EnableTracing: true` is the default, and without a Telemetry
  resource `pilot/pkg/networking/core/tracing.go` (configureTracingFromTelemetry) still gives every
  HTTP connection manager a provider-less tracing block sampling `PILOT_TRACE_SAMPLING` (1%, from
  `pilot.traceSampling: 1.0`). `istio_telemetry()` turns that off too, as Linkerd does nothing of the kind.
- Prometheus metrics stay on (`telemetry.v2.prometheus.enabled`): verification reads them.
- mTLS is PERMISSIVE until `peer_authentication()` makes it STRICT.

The ambient waypoint variant needs nothing here: `istioctl waypoint apply` creates the Gateway, and
`istio/kube.py` labels the namespace `istio.io/use-waypoint` once the waypoint's Deployment is rolled out.
"""

from __future__ import annotations

from typing import Literal

from testbed.errors import UsageError
from testbed.kube.manifests import (
    APP_PORT,
    LOADGEN_ROLE,
    PART_OF,
    ROLE_LABEL,
    RUN_AS_USER,
    Object,
    namespace_object,
)
from testbed.meshes.evidence import PROBE_DEPLOYMENT, PROBE_NAMESPACE

#: Istio's root namespace (meshConfig.rootNamespace): a policy there without a selector is mesh-wide.
ISTIO_ROOT_NAMESPACE = "istio-system"

PeerAuthenticationMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]

# Who enrols the app namespace, and how (labels, annotations):
# - istio: the sidecar injector's namespaceSelector (istio/istio 1.30.3,
#   manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml: `istio-injection`).
# - istio-ambient: `istio.io/dataplane-mode=ambient` (label.IoIstioDataplaneMode and
#   constants.DataplaneModeAmbient; istioctl/pkg/waypoint/waypoint.go checks for it).
# - linkerd: linkerd/linkerd2 edge-26.8.3 pkg/k8s/labels.go: ProxyInjectAnnotation `linkerd.io/inject`
#   = `enabled`; the injector copies the namespace's `config.linkerd.io/*` annotations onto each pod
#   (pkg/inject/inject.go ProxyAnnotations, AppendNamespaceAnnotations), where the policy controller reads
#   them (policy-controller/k8s/index/src/inbound/workload.rs Settings::from_metadata). The app port alone
#   requires a mesh identity: `config.linkerd.io/proxy-require-identity-inbound-ports` turns that port's
#   default policy into authenticated-only (index.rs default_inbound_server: `require_id_ports`), while
#   every other port keeps `all-unauthenticated` (the chart's proxy.defaultInboundPolicy, said explicitly
#   so that a cluster with another default changes nothing). Not `default-inbound-policy:
#   all-authenticated` for the whole pod: the proxy puts its admin port 4191 under the same policy
#   (linkerd2-proxy release/v2.366.0 linkerd/app/src/env.rs: "Ensure that the admin server port is
#   included in policy discovery"; linkerd/app/admin/src/stack.rs NewHttpPolicy), so `linkerd diagnostics
#   proxy-metrics`, a port-forward with no mesh identity, would get a 403 with an empty body (linkerd/
#   linkerd2 issue 10691). The kubelet's probes of the app port still pass: the policy controller adds a
#   route for the pod's probe paths that admits unauthenticated clients from `probeNetworks` (index.rs
#   default_inbound_http_routes; charts/linkerd-control-plane/values.yaml probeNetworks 0.0.0.0/0).
# - cilium: WireGuard transparent encryption is node-wide (Helm `encryption.*`): nothing per namespace.
#   (The beta ztunnel mode's `io.cilium/mtls-enabled` label is not used.)
_NAMESPACE_METADATA: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "none": ({}, {}),
    "istio": ({"istio-injection": "enabled"}, {}),
    "istio-ambient": ({"istio.io/dataplane-mode": "ambient"}, {}),
    "linkerd": (
        {},
        {
            "linkerd.io/inject": "enabled",
            "config.linkerd.io/default-inbound-policy": "all-unauthenticated",
            "config.linkerd.io/proxy-require-identity-inbound-ports": str(APP_PORT),
        },
    ),
    "cilium-plain": ({}, {}),
    "cilium": ({}, {}),
}


def namespace_metadata(mesh: str) -> tuple[dict[str, str], dict[str, str]]:
    """The labels and annotations that put the app namespace in `mesh` (fresh dicts, safe to change)."""
    try:
        labels, annotations = _NAMESPACE_METADATA[mesh]
    except KeyError:
        known = ", ".join(_NAMESPACE_METADATA)
        raise UsageError(f"no Kubernetes namespace settings for mesh {mesh!r} (known: {known})") from None
    return dict(labels), dict(annotations)


def peer_authentication(
    mode: PeerAuthenticationMode = "STRICT", *, name: str = "default", namespace: str = ISTIO_ROOT_NAMESPACE
) -> Object:
    """PeerAuthentication `default` in the root namespace: mesh-wide mTLS `mode` (default PERMISSIVE)."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"mtls": {"mode": mode}},
    }


def istio_telemetry(*, name: str = "mesh-default", namespace: str = ISTIO_ROOT_NAMESPACE) -> Object:
    """A mesh-wide Telemetry that removes the proxies' tracing (access logs are off already)."""
    # pilot/pkg/model/telemetry.go (Telemetries.Tracing): `disableSpanReporting` sets TracingSpec.Disabled,
    # and configureTracingFromTelemetry then leaves the connection manager's tracing unset.
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tracing": [{"disableSpanReporting": True}]},
    }


def mesh_resources(mesh: str) -> list[Object]:
    """The custom resources to apply once `mesh`'s control plane is up (none for Linkerd and Cilium)."""
    if mesh in ("istio", "istio-ambient"):
        return [peer_authentication(), istio_telemetry()]
    namespace_metadata(mesh)  # the same names, the same error for an unknown one
    return []


#: What keeps the probe's namespace out of every mesh, even one that enrols namespaces by default:
#: Istio's injector skips `istio-injection: disabled` (its mutatingwebhook.yaml namespaceSelector),
#: ambient skips `istio.io/dataplane-mode: none` (pkg/config/constants DataplaneModeNone), Linkerd's
#: injector skips `linkerd.io/inject: disabled` (edge-26.8.3 pkg/k8s/labels.go ProxyInjectDisabled).
PROBE_NAMESPACE_LABELS = {"istio-injection": "disabled", "istio.io/dataplane-mode": "none"}
PROBE_NAMESPACE_ANNOTATIONS = {"linkerd.io/inject": "disabled"}


def probe_objects(
    image: str, *, namespace: str = PROBE_NAMESPACE, name: str = PROBE_DEPLOYMENT
) -> list[Object]:
    """An un-meshed namespace with an idle pod of the testbed image, for `evidence.PROBE_SCRIPT`.

    The pod runs on the load generator's worker, so that its plaintext request crosses nodes like the
    load does, and has no API token (it only makes one HTTP request).
    """
    labels = {"app": name, **PART_OF}
    container: Object = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sleep", "infinity"],
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"cpu": "500m", "memory": "128Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return [
        namespace_object(namespace, labels=PROBE_NAMESPACE_LABELS, annotations=PROBE_NAMESPACE_ANNOTATIONS),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {ROLE_LABEL: LOADGEN_ROLE},
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        # `sleep` as PID 1 ignores SIGTERM: no 30 s wait when the namespace goes.
                        "terminationGracePeriodSeconds": 2,
                        "containers": [container],
                    },
                },
            },
        },
    ]
