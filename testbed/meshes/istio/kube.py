"""Istio 1.30.3 on Kubernetes: sidecars (`istio`) and ambient (`istio-ambient`, optionally with a waypoint).

Both install with `istioctl install --filename` and an IstioOperator file (`operator()`), then make mutual
TLS STRICT mesh-wide (a PeerAuthentication in istio-system; Istio's default is PERMISSIVE, which accepts
plaintext) and switch off the proxies' 1 % trace sampling (a Telemetry resource):
`testbed.meshes.kube_resources` says what Istio leaves on by default and why. Envoy's access logs are off
in both profiles, and so are ztunnel's (`ZTUNNEL_LOG_LEVEL`). Verification: a plaintext request from an
un-meshed namespace is refused; the sidecars report `connection_security_policy="mutual_tls"` for every
request they received; in ambient, ztunnel carries every workload over HBONE, its own metrics show the
load's connections arriving over mutual TLS, and the waypoint (if any) served every service over mTLS.

Fairness: proxies' worker threads. A sidecar's Envoy takes `concurrency` from ProxyConfig, else from its
CPU limit (istio/istio 1.30.3 pilot/cmd/pilot-agent/config/config.go ConstructProxyConfig), which the
istio-discovery chart sets to 2000m (values.yaml global.proxy.resources): 2 threads. The install sets
`meshConfig.defaultConfig.concurrency=2` so that the number does not hang on that limit. Waypoints get
the same ProxyConfig (istio-discovery files/waypoint.yaml: PROXY_CONFIG). ztunnel does not: it would read
`concurrency` from a mesh config file or a PROXY_CONFIG variable (istio/ztunnel a45c62f8, the SHA in
istio.deps at 1.30.3, src/config.rs parse_proxy_config), but the ztunnel chart mounts no mesh config and
sets no PROXY_CONFIG (manifests/charts/ztunnel/templates/daemonset.yaml), so it runs its own default of 2
(DEFAULT_WORKER_THREADS). The install sets ztunnel's own variable ZTUNNEL_WORKER_THREADS to 2
(`ZTUNNEL_WORKER_THREADS`), so that the number is ours, not a default's. Linkerd's proxies get 2
threads as well (`testbed.meshes.linkerd.kube`).

Placement: istiod and the waypoint run on the app workers, never on the load generator's node
(`testbed.kube.manifests.SHARED_NODE_SELECTOR`); ztunnel and istio-cni are DaemonSets, one per node.

Every flag below was read at istio/istio tag 1.30.3; the file is named beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from testbed.kube import manifests as m
from testbed.kube.actions import ROLLOUT_TIMEOUT, ROLLOUT_TIMEOUT_S, Action, MeshContext, Step, WriteFile
from testbed.meshes import evidence, kube_verify
from testbed.meshes.evidence import Check
from testbed.meshes.istio import evidence as istio_evidence
from testbed.meshes.kube_resources import mesh_resources, namespace_metadata
from testbed.spec.versions import Versions

#: Envoy worker threads of every Istio proxy (sidecars, waypoints).
CONCURRENCY = 2
#: ztunnel's Tokio worker threads, as many as an Envoy's: istio/ztunnel a45c62f8 src/config.rs
#: ZTUNNEL_WORKER_THREADS (parse_worker_threads: a number, or a percentage of the CPUs), which the chart
#: passes on from `values.ztunnel.env` (manifests/charts/ztunnel/values.yaml `env`, templates/daemonset.yaml).
ZTUNNEL_WORKER_THREADS = CONCURRENCY
#: ztunnel's log filter (its RUST_LOG, from the chart's `logLevel`; default `info`). ztunnel writes one
#: line per connection at INFO to the target `access` (istio/ztunnel a45c62f8 src/proxy/metrics.rs
#: `access_log!`, `target: "access"`; failed connections at ERROR), and RUST_LOG is a list of
#: `target=level` directives (src/telemetry.rs default_filter: tracing_subscriber filter::Targets; README.md
#: "a specific target", src/admin.rs test "access=debug,info"): `access=warn` drops the per-connection
#: lines and keeps the failures, the way Envoy's access logs are off.
ZTUNNEL_LOG_LEVEL = "info,access=warn"
#: `istioctl install --readiness-timeout` is 300 s (operator/cmd/mesh/install.go addInstallFlags) per
#: component: the command's own timeout leaves room for the three of ambient.
INSTALL_TIMEOUT_S = 1200.0
#: `istioctl waypoint apply --wait` gives up after 90 s (istioctl/pkg/waypoint/waypoint.go waitTimeout).
WAYPOINT_TIMEOUT_S = 180.0
#: The namespace waypoint's name (pkg/config/constants DefaultNamespaceWaypoint, the `--name` default):
#: also its Deployment's, in the app namespace (the waypoint GatewayClass has DisableNameSuffix:
#: pilot/pkg/config/kube/gatewaycommon/classinfo.go, gateway_utils.go GetDefaultName).
WAYPOINT = "waypoint"
#: The label that sends a namespace's traffic through a waypoint (istio.io/api 2e43f07b, the version in
#: istio 1.30.3's go.mod, label/labels.gen.go IoIstioUseWaypoint), what `--enroll-namespace` sets
#: (istioctl/pkg/waypoint/waypoint.go labelNamespaceWithWaypoint).
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
#: The waypoint's pods (files/waypoint.yaml: the pod template's `gateway.networking.k8s.io/gateway-name`).
WAYPOINT_SELECTOR = f"gateway.networking.k8s.io/gateway-name={WAYPOINT}"

#: Every pod of the app namespace (testbed.kube.manifests labels them all with PART_OF).
PODS_SELECTOR = ",".join(f"{key}={value}" for key, value in m.PART_OF.items())

SIDECAR_STATS = "the sidecars' Envoy stats: every request they received must be mutual_tls"
ZTUNNEL_WORKLOADS = "ztunnel's workloads: every pod of the app namespace must be carried over HBONE"
ZTUNNEL_SERVICES = "ztunnel's services: every service of the topology must be reached through the waypoint"
ZTUNNEL_METRICS = "ztunnel's metrics: every callee must have received the load's connections over mutual TLS"
WAYPOINT_STATS = "the waypoint's Envoy stats: it must have served every service, all over mutual TLS"


def istioctl(ctx: MeshContext, *args: str) -> tuple[str, ...]:
    # --context: a persistent flag of the root command (istioctl/pkg/cli/option.go AddRootFlags, added
    # in istioctl/cmd/root.go), so that the user's current context is never used by accident.
    return ("istioctl", "--context", ctx.context, *args)


def operator(profile: str) -> m.Object:
    """The IstioOperator that `istioctl install` reads: the profile, 2 proxy threads, one istiod (no
    autoscaler), istiod and the waypoint off the load generator's node, and (ambient) ztunnel's threads
    and log filter."""

    def shared() -> dict[str, str]:  # a copy each: one object twice would become a YAML anchor and alias
        return dict(m.SHARED_NODE_SELECTOR)

    spec: dict[str, Any] = {
        # manifests/profiles/{minimal,ambient}.yaml, chosen by spec.profile (operator/pkg/render/manifest.go
        # MergeInputs: base < profile < files < --set).
        "profile": profile,
        # spec.meshConfig is validated as a MeshConfig (operator/pkg/apis/validation/validation.go
        # validateMeshConfig); ProxyConfig.concurrency is what pilot-agent gives Envoy.
        "meshConfig": {"defaultConfig": {"concurrency": CONCURRENCY}},
        # components.<name>.k8s.nodeSelector (operator/pkg/apis/types.go KubernetesResources) is patched
        # into the istiod Deployment after the chart (operator/pkg/render/postprocess.go, "nodeSelector";
        # operator/cmd/mesh/testdata/manifest-generate/input/pilot_k8s_settings.yaml); the chart value
        # values.pilot.nodeSelector does the same but is deprecated (operator/pkg/apis/values_types.proto).
        "components": {"pilot": {"k8s": {"nodeSelector": shared()}}},
        # One istiod for the whole run: the chart's default is a HorizontalPodAutoscaler of 1 to 5 istiods
        # (manifests/charts/istio-control/istio-discovery/values.yaml:4-6; templates/autoscale.yaml), which
        # on a cluster with metrics-server adds and removes istiods mid-trial, which the pod checks judge
        # a fault (a pod of istio-system app=istiod came or went). values.pilot is the chart's top level
        # (templates/zzy_descope_legacy.yaml copies `.pilot` to `.`; operator/pkg/apis/values_types.proto
        # PilotConfig.autoscaleEnabled); without the autoscaler the Deployment has replicaCount (1)
        # replicas (templates/deployment.yaml `if not .Values.autoscaleEnabled`).
        "values": {"pilot": {"autoscaleEnabled": False}},
    }
    if profile == "ambient":
        # The waypoint Deployment istiod renders: manifests/charts/istio-control/istio-discovery/files/
        # waypoint.yaml `toYaml .Values.global.waypoint.nodeSelector`, a plain map (values.yaml
        # global.waypoint; `global` is in the injector's values: templates/istiod-injector-configmap.yaml).
        # Not under spec.values: the operator validates that value strictly as a corev1.NodeSelector
        # (operator/pkg/apis/validation/validation.go: runKube(...GetWaypoint().GetNodeSelector(),
        # &corev1.NodeSelector{}, "global.waypoint.nideSelector"), yaml.UnmarshalStrict), whose only field
        # is nodeSelectorTerms, so a plain map fails the install. spec.unvalidatedValues is merged into
        # spec.values after validation (operator/pkg/render/manifest.go GenerateManifest; types.go
        # UnvalidatedValues), so the chart gets the map. In both ambient variants, which share one cluster
        # (testbed-istio-ambient), so that the install is the same for both.
        spec["unvalidatedValues"] = {"global": {"waypoint": {"nodeSelector": shared()}}}
        spec["values"] |= {
            # values.ztunnel becomes the ztunnel chart's top level (operator/pkg/component/component.go
            # FlattenValues; operator/pkg/render/manifest.go applyComponentValuesToHelmValues):
            # manifests/charts/ztunnel/values.yaml `env` (each key a container variable,
            # templates/daemonset.yaml) and `logLevel` (RUST_LOG).
            "ztunnel": {
                "env": {"ZTUNNEL_WORKER_THREADS": str(ZTUNNEL_WORKER_THREADS)},
                "logLevel": ZTUNNEL_LOG_LEVEL,
            },
        }
    return {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "spec": spec}


def install(ctx: MeshContext, profile: str) -> list[Action]:
    """`istioctl install` of `operator(profile)`; it waits until every component is ready."""
    path = ctx.workdir / "istio-operator.yaml"
    threads = f", ztunnel with {ZTUNNEL_WORKER_THREADS} worker threads" if profile == "ambient" else ""
    placed = "istiod and the waypoint" if profile == "ambient" else "istiod"
    return [
        WriteFile(
            description=f"the IstioOperator: profile {profile}, proxies with {CONCURRENCY} worker threads"
            f"{threads}; one istiod, not autoscaled; {placed} on the app workers",
            path=path,
            text=m.to_yaml([operator(profile)]),
        ),
        Step(
            description=f"install Istio {ctx.versions.istio.version} (profile {profile}) and wait until "
            "it is ready",
            # A file rather than --set: a --set path splits at every unescaped dot
            # (operator/pkg/values/map.go splitPath), so testbed.io/pool would need `testbed\.io/pool`;
            # the file also shows in the plan what was installed.
            # operator/cmd/mesh/install.go addInstallFlags: --filename (-f, IstioOperator files),
            # --skip-confirmation (-y).
            argv=istioctl(ctx, "install", "--filename", str(path), "--skip-confirmation"),
            timeout_s=INSTALL_TIMEOUT_S,
        ),
    ]


def strict_mtls(ctx: MeshContext, mesh: str) -> list[Action]:
    """PeerAuthentication STRICT and Telemetry without tracing, mesh-wide (istio-system)."""
    path = ctx.workdir / "istio-resources.yaml"
    return [
        WriteFile(
            description="mesh-wide mutual TLS STRICT (Istio's default is PERMISSIVE) and no trace sampling",
            path=path,
            text=m.to_yaml(mesh_resources(mesh)),
        ),
        # kubectl v0.35.7 pkg/cmd/apply/apply.go (-f).
        Step(
            description="apply the PeerAuthentication and the Telemetry",
            argv=(*ctx.kubectl, "apply", "-f", str(path)),
            timeout_s=120.0,
        ),
    ]


class IstioSidecar:
    """Istio with an Envoy sidecar in every pod (profile minimal: istiod only, no gateways)."""

    name = "istio"
    config = "istio"
    tools: tuple[str, ...] = ("istioctl",)
    replaces_cni = False
    # `istioctl install` server-side applies every object (istio/istio 1.30.3 operator/pkg/install/install.go:
    # types.ApplyPatchType), and `waypoint apply` patches likewise (istioctl/pkg/waypoint/waypoint.go): both
    # run again on a cluster where they ran.
    supports_reuse = True
    namespace_labels: Mapping[str, str] = namespace_metadata("istio")[0]
    namespace_annotations: Mapping[str, str] = namespace_metadata("istio")[1]
    pod_annotations: Mapping[str, str] = {}
    # The sidecars (container istio-proxy) count as `sidecar` in testbed.kube.metrics already.
    components: Mapping[str, str] = {"istiod": "control-plane"}
    # istiod (the sidecars' xDS and certificates), in istio-system: the namespace of every component
    # (manifests/profiles/default.yaml:4 metadata.namespace, which the profiles build on;
    # operator/pkg/component/component.go:70-75), labelled app=istiod on its pod template
    # (manifests/charts/istio-control/istio-discovery/templates/deployment.yaml:46). The sidecars are read
    # with the app namespace.
    traffic_pods: tuple[tuple[str, str], ...] = (("istio-system", "app=istiod"),)

    def images(self, versions: Versions) -> tuple[str, ...]:
        from testbed.kube.images import archived  # the Docker client library only when asked

        return tuple(image.ref for image in archived(self.config, versions))

    def install_steps(self, ctx: MeshContext) -> list[Action]:
        return [*install(ctx, "minimal"), *strict_mtls(ctx, self.name)]

    def verify_steps(self, ctx: MeshContext) -> list[Action]:
        return [
            *kube_verify.probe_actions(ctx),
            kube_verify.load(ctx),
            kube_verify.check_step(
                ctx,
                SIDECAR_STATS,
                istio_evidence.istio_stats_argv(ctx.context, ctx.namespace, PODS_SELECTOR),
                "istio-envoy-stats.txt",
            ),
            kube_verify.probe(ctx),
            kube_verify.pods(ctx),
        ]

    def evidence(self, outputs: Mapping[str, str], ctx: MeshContext) -> dict[str, Any]:
        checks = [
            kube_verify.load_check(outputs.get(kube_verify.LOAD, "")),
            istio_evidence.istio_sidecar_mtls(
                outputs.get(SIDECAR_STATS, ""), namespace=ctx.namespace, callees=callees_of(ctx)
            ),
            istio_evidence.envoy_concurrency(outputs.get(SIDECAR_STATS, ""), expected=CONCURRENCY),
            evidence.plaintext_refused(outputs.get(kube_verify.PROBE, "")),
            kube_verify.cross_node(outputs, ctx),
        ]
        evidence.require(self.name, checks)
        return evidence.verify(self.name, checks) | {"mtls": "STRICT", "concurrency": CONCURRENCY}

    def versions(self, versions: Versions) -> dict[str, str]:
        return {"istio": versions.istio.version}


class IstioAmbient:
    """Istio ambient: ztunnel on every node carries the pods' traffic over HBONE (mTLS); no sidecars.

    With `waypoint=True` (`testbed run --waypoint`), a namespace waypoint (an Envoy Deployment in the
    app namespace) adds L7 processing to every call: Gateway API CRDs v1.5.1 first (what Istio 1.30.3
    builds against: go.mod), then `istioctl waypoint apply --wait`, the waypoint's rollout, and only then
    the namespace's `istio.io/use-waypoint` label (`_waypoint`).
    """

    name = "istio-ambient"
    tools: tuple[str, ...] = ("istioctl",)
    replaces_cni = False
    # `istioctl install` server-side applies every object (istio/istio 1.30.3 operator/pkg/install/install.go:
    # types.ApplyPatchType), and `waypoint apply` patches likewise (istioctl/pkg/waypoint/waypoint.go): both
    # run again on a cluster where they ran.
    supports_reuse = True
    namespace_labels: Mapping[str, str] = namespace_metadata("istio-ambient")[0]
    namespace_annotations: Mapping[str, str] = namespace_metadata("istio-ambient")[1]
    pod_annotations: Mapping[str, str] = {}
    # In istio-system (as IstioSidecar's): istiod (app=istiod, istio-discovery templates/deployment.yaml:46);
    # ztunnel, which carries every connection (app=ztunnel on its pod template, manifests/charts/ztunnel/
    # templates/daemonset.yaml:31); istio-cni's node agent, which redirects each pod's traffic to ztunnel
    # (k8s-app=istio-cni-node: manifests/charts/istio-cni/templates/daemonset.yaml:44 `{{ template "name" . }}
    # -node`, templates/_helpers.tpl:1-3 name `istio-cni`). The waypoint lives in the app namespace.
    traffic_pods: tuple[tuple[str, str], ...] = (
        ("istio-system", "app=istiod"),
        ("istio-system", "app=ztunnel"),
        ("istio-system", "k8s-app=istio-cni-node"),
    )

    def __init__(self, *, waypoint: bool = False) -> None:
        self.waypoint = waypoint
        self.config = "istio-ambient-waypoint" if waypoint else "istio-ambient"
        components = {"istiod": "control-plane", "ztunnel": "node-proxy", "istio-cni-node": "node-proxy"}
        if waypoint:
            # Its container is `istio-proxy`, which would count as a sidecar: it is a shared proxy.
            components[WAYPOINT] = "node-proxy"
        self.components: Mapping[str, str] = components

    def images(self, versions: Versions) -> tuple[str, ...]:
        from testbed.kube.images import archived  # the Docker client library only when asked

        return tuple(image.ref for image in archived(self.config, versions))

    def install_steps(self, ctx: MeshContext) -> list[Action]:
        steps: list[Action] = []
        if self.waypoint:
            url = ctx.versions.gateway_api.install_url()
            steps.append(
                Step(
                    description=f"the Gateway API CRDs {ctx.versions.gateway_api.version} (standard channel) "
                    "that a waypoint is made of",
                    # --server-side: kubectl v0.35.7 pkg/cmd/util/helpers.go AddServerSideApplyFlags, as the
                    # Gateway API guide at v1.5.1 installs them (site-src/guides/getting-started/index.md).
                    argv=(*ctx.kubectl, "apply", "--server-side", "-f", url),
                    timeout_s=120.0,
                )
            )
        steps += [*install(ctx, "ambient"), *strict_mtls(ctx, self.name)]
        if self.waypoint:
            steps += self._waypoint(ctx)
        return steps

    def _waypoint(self, ctx: MeshContext) -> list[Action]:
        """The app namespace now (a waypoint lives in it), then the waypoint, rolled out, then enrolled.

        `istioctl waypoint apply --wait` returns once the Gateway is Programmed (istioctl/pkg/waypoint/
        waypoint.go: it polls for GatewayConditionProgrammed), and Programmed only says that its Service
        exists (pilot/pkg/config/kube/gateway/conversion.go setProgrammedCondition: "TODO: this only checks
        Service ready, we should also check Deployment ready?"), so `--enroll-namespace` would send the
        namespace's traffic to a waypoint whose Envoy may not be ready yet. Instead: apply, wait for the
        Deployment's rollout, then label the namespace. istiod applies the waypoint's objects in the
        template's order, Deployment before Service (pilot/pkg/config/kube/gatewaycommon/
        deploymentcontroller.go: `for _, t := range rendered`; files/waypoint.yaml), so once Programmed the
        Deployment exists and `rollout status` has something to wait for. The label goes on with
        `kubectl label`, not in the namespace's manifest (which is applied before the waypoint exists); a
        later `kubectl apply` of that manifest leaves it alone, since it is not in its last-applied
        configuration.
        """
        path = ctx.workdir / "namespace.yaml"
        namespace = m.namespace_object(
            ctx.namespace, labels=self.namespace_labels, annotations=self.namespace_annotations
        )
        return [
            WriteFile(
                description=f"the app namespace {ctx.namespace} ahead of the topology, for its waypoint "
                "(the same object as in the topology's manifests)",
                path=path,
                text=m.to_yaml([namespace]),
            ),
            Step(
                description=f"create the namespace {ctx.namespace}",
                argv=(*ctx.kubectl, "apply", "-f", str(path)),
                timeout_s=60.0,
            ),
            Step(
                description=f"a waypoint for namespace {ctx.namespace}, until its Gateway is Programmed "
                "(its Service exists; not yet enrolled)",
                # istioctl/pkg/waypoint/waypoint.go: `apply`, --wait (-w: until the Gateway is
                # Programmed); no --enroll-namespace (see above); --namespace is the root flag
                # (istioctl/pkg/cli/option.go).
                argv=istioctl(ctx, "waypoint", "apply", "--namespace", ctx.namespace, "--wait"),
                timeout_s=WAYPOINT_TIMEOUT_S,
            ),
            Step(
                description=f"wait until the waypoint's Deployment {WAYPOINT} is rolled out and ready",
                # kubectl v0.35.7 pkg/cmd/rollout/rollout_status.go.
                argv=(
                    *ctx.kubectl,
                    "rollout",
                    "status",
                    f"deploy/{WAYPOINT}",
                    "-n",
                    ctx.namespace,
                    "--timeout",
                    ROLLOUT_TIMEOUT,
                ),
                timeout_s=ROLLOUT_TIMEOUT_S,
            ),
            Step(
                description=f"enroll namespace {ctx.namespace}: its calls go through the ready waypoint "
                f"(label {USE_WAYPOINT_LABEL}={WAYPOINT})",
                # kubectl v0.35.7 pkg/cmd/label/label.go (--overwrite: replace another waypoint's name; the
                # same value needs none: validateNoOverwrites).
                argv=(
                    *ctx.kubectl,
                    "label",
                    "namespace",
                    ctx.namespace,
                    f"{USE_WAYPOINT_LABEL}={WAYPOINT}",
                    "--overwrite",
                ),
                timeout_s=60.0,
            ),
        ]

    def verify_steps(self, ctx: MeshContext) -> list[Action]:
        waypoint = [
            kube_verify.check_step(
                ctx, ZTUNNEL_SERVICES, ztunnel_services_argv(ctx), "ztunnel-services.json"
            ),
            kube_verify.check_step(
                ctx,
                WAYPOINT_STATS,
                istio_evidence.istio_stats_argv(ctx.context, ctx.namespace, WAYPOINT_SELECTOR),
                "waypoint-envoy-stats.txt",
            ),
        ]
        return [
            *kube_verify.probe_actions(ctx),
            kube_verify.load(ctx),
            kube_verify.check_step(
                ctx,
                ZTUNNEL_WORKLOADS,
                istio_evidence.ztunnel_workloads_argv(ctx.context, ctx.namespace),
                "ztunnel-workloads.json",
            ),
            # After the load and before the plaintext probe: the load's connections, none of the probe's.
            kube_verify.check_step(
                ctx, ZTUNNEL_METRICS, istio_evidence.ztunnel_metrics_argv(ctx.context), "ztunnel-metrics.txt"
            ),
            *(waypoint if self.waypoint else []),
            kube_verify.probe(ctx),
            kube_verify.pods(ctx),
        ]

    def evidence(self, outputs: Mapping[str, str], ctx: MeshContext) -> dict[str, Any]:
        hbone = istio_evidence.istio_ambient_hbone(
            outputs.get(ZTUNNEL_WORKLOADS, ""),
            namespace=ctx.namespace,
            workloads=[*ctx.services, m.LOADGEN_NAME],
        )
        callees = callees_of(ctx)
        traffic = istio_evidence.ztunnel_mtls(
            outputs.get(ZTUNNEL_METRICS, ""), namespace=ctx.namespace, workloads=callees
        )
        checks = [kube_verify.load_check(outputs.get(kube_verify.LOAD, "")), hbone, traffic]
        if self.waypoint:
            services = outputs.get(ZTUNNEL_SERVICES, "")
            checks.append(waypoint_in_path(services, namespace=ctx.namespace, services=ctx.services))
            checks.append(
                istio_evidence.istio_waypoint_mtls(
                    outputs.get(WAYPOINT_STATS, ""), namespace=ctx.namespace, services=callees
                )
            )
            checks.append(
                istio_evidence.envoy_concurrency(outputs.get(WAYPOINT_STATS, ""), expected=CONCURRENCY)
            )
        checks += [
            evidence.plaintext_refused(outputs.get(kube_verify.PROBE, "")),
            kube_verify.cross_node(outputs, ctx),
        ]
        evidence.require(self.name, checks)
        extra = {
            "mtls": "STRICT",
            "concurrency": CONCURRENCY,
            "ztunnel_worker_threads": ZTUNNEL_WORKER_THREADS,
            "ztunnel_log_level": ZTUNNEL_LOG_LEVEL,
            "waypoint": self.waypoint,
        }
        return evidence.verify(self.name, checks) | extra

    def versions(self, versions: Versions) -> dict[str, str]:
        found = {"istio": versions.istio.version}
        if self.waypoint:
            found["gateway_api"] = versions.gateway_api.version
        return found


def callees_of(ctx: MeshContext) -> list[str]:
    """The services that some call of the topology reaches (the entry's caller is the load generator)."""
    called = {callee for _, callee in ctx.edges}
    return [s for s in ctx.services if s in called]


def ztunnel_services_argv(ctx: MeshContext) -> tuple[str, ...]:
    """ztunnel's view of the namespace's Services, as JSON (each with the waypoint it sends calls through).

    istioctl/pkg/ztunnelconfig/ztunnelconfig.go servicesCmd (`service`, alias `services`;
    `--service-namespace`; `--output json`: istioctl/pkg/writer/ztunnel/configdump/services.go
    PrintServiceDump, a JSON list of api.go ZtunnelService with `waypoint.destination`).
    """
    return istioctl(
        ctx, "ztunnel-config", "services", "--service-namespace", ctx.namespace, "--output", "json"
    )


def waypoint_in_path(text: str, *, namespace: str, services: tuple[str, ...]) -> Check:
    """ztunnel sends calls to every Service of the topology through a waypoint.

    A waypoint applied without `--for` serves Service traffic (istio/istio 1.30.3
    pilot/pkg/serviceregistry/ambient/waypoints.go: `trafficType := constants.ServiceTraffic`), so the
    waypoint shows on the Services, not on the workloads.
    """
    name = "waypoint-in-path"
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        return Check(name=name, passed=False, detail=f"ztunnel's service dump is not JSON ({e.msg})", data={})
    found = {
        str(item.get("name")): (item.get("waypoint") or {}).get("destination")
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and item.get("namespace") == namespace
    }
    data = {"namespace": namespace, "waypoints": {s: found.get(s) for s in services}}
    missing = [s for s in services if s not in found]
    without = [s for s in services if s in found and not found[s]]
    if missing:
        return Check(
            name=name,
            passed=False,
            detail=f"ztunnel knows no Service {', '.join(missing)} in namespace {namespace}",
            data=data,
        )
    if without:
        return Check(
            name=name,
            passed=False,
            detail=f"no waypoint for {', '.join(without)}: is the namespace labelled "
            f"{USE_WAYPOINT_LABEL}={WAYPOINT} and the waypoint Programmed and rolled out?",
            data=data,
        )
    waypoints = sorted({str(found[s]) for s in services})
    return Check(
        name=name,
        passed=True,
        detail=f"calls to {', '.join(services)} go through the waypoint {', '.join(waypoints)}",
        data=data,
    )
