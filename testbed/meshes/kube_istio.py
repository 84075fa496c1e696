"""Istio 1.30.3 on Kubernetes: sidecars (`istio`) and ambient (`istio-ambient`, optionally with a waypoint).

Both install with `istioctl install` and then make mutual TLS STRICT mesh-wide (a PeerAuthentication in
istio-system; Istio's default is PERMISSIVE, which accepts plaintext) and switch off the proxies'
1 % trace sampling (a Telemetry resource): `testbed.meshes.kube_resources` says what Istio leaves on by
default and why. Access logs are off in both profiles. Verification: a plaintext request from an
un-meshed namespace is refused; the sidecars report `connection_security_policy="mutual_tls"` for every
request they received, or ztunnel carries every workload over HBONE.

Fairness: proxies' worker threads. A sidecar's Envoy takes `concurrency` from ProxyConfig, else from its
CPU limit (istio/istio 1.30.3 pilot/cmd/pilot-agent/config/config.go ConstructProxyConfig), which the
istio-discovery chart sets to 2000m (values.yaml global.proxy.resources): 2 threads. The install sets
`meshConfig.defaultConfig.concurrency=2` so that the number does not hang on that limit. Waypoints get
the same ProxyConfig (istio-discovery files/waypoint.yaml: PROXY_CONFIG), and ztunnel reads `concurrency`
from it too, with 2 as its own default (istio/ztunnel a45c62f8, the SHA in istio.deps at 1.30.3,
src/config.rs DEFAULT_WORKER_THREADS). Linkerd's proxies get 2 threads as well (`kube_linkerd`).

Every flag below was read at istio/istio tag 1.30.3; the file is named beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from testbed.kube import manifests as m
from testbed.kube.plan import Action, MeshContext, Step, WriteFile
from testbed.meshes import evidence, kube_verify
from testbed.meshes.evidence import Check
from testbed.meshes.kube_resources import mesh_resources, namespace_metadata
from testbed.versions import Versions

#: Envoy worker threads of every Istio proxy (sidecars, waypoints; ztunnel reads it too).
CONCURRENCY = 2
#: `istioctl install --readiness-timeout` is 300 s (operator/cmd/mesh/install.go addInstallFlags) per
#: component: the command's own timeout leaves room for the three of ambient.
INSTALL_TIMEOUT_S = 1200.0
#: `istioctl waypoint apply --wait` gives up after 90 s (istioctl/pkg/waypoint/waypoint.go waitTimeout).
WAYPOINT_TIMEOUT_S = 180.0
#: The namespace waypoint's name (pkg/config/constants DefaultNamespaceWaypoint, the `--name` default):
#: also its Deployment's, in the app namespace.
WAYPOINT = "waypoint"

#: Every pod of the app namespace (testbed.kube.manifests labels them all with PART_OF).
PODS_SELECTOR = ",".join(f"{key}={value}" for key, value in m.PART_OF.items())

SIDECAR_STATS = "the sidecars' Envoy stats: every request they received must be mutual_tls"
ZTUNNEL_WORKLOADS = "ztunnel's workloads: every pod of the app namespace must be carried over HBONE"
ZTUNNEL_SERVICES = "ztunnel's services: every service of the topology must be reached through the waypoint"


def istioctl(ctx: MeshContext, *args: str) -> tuple[str, ...]:
    # --context: a persistent flag of the root command (istioctl/pkg/cli/option.go AddRootFlags, added
    # in istioctl/cmd/root.go), so that the user's current context is never used by accident.
    return ("istioctl", "--context", ctx.context, *args)


def install(ctx: MeshContext, profile: str) -> Step:
    """`istioctl install` with a built-in profile; it waits until every component is ready."""
    return Step(
        description=f"install Istio {ctx.versions.istio.version} (profile {profile}; proxies with "
        f"{CONCURRENCY} worker threads) and wait until it is ready",
        argv=istioctl(
            ctx,
            # operator/cmd/mesh/install.go addInstallFlags: --set (-s, "path=value" on the
            # IstioOperator), --skip-confirmation (-y); profiles: manifests/profiles/{minimal,ambient}.yaml.
            "install",
            "--set",
            f"profile={profile}",
            # spec.meshConfig is validated as a MeshConfig (operator/pkg/apis/validation/validation.go
            # validateMeshConfig); ProxyConfig.concurrency is what pilot-agent gives Envoy.
            "--set",
            f"meshConfig.defaultConfig.concurrency={CONCURRENCY}",
            "--skip-confirmation",
        ),
        timeout_s=INSTALL_TIMEOUT_S,
    )


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
    namespace_labels: Mapping[str, str] = namespace_metadata("istio")[0]
    namespace_annotations: Mapping[str, str] = namespace_metadata("istio")[1]
    pod_annotations: Mapping[str, str] = {}
    # The sidecars (container istio-proxy) count as `sidecar` in testbed.kube.metrics already.
    components: Mapping[str, str] = {"istiod": "control-plane"}

    def images(self, versions: Versions) -> tuple[str, ...]:
        from testbed.images import archived  # the Docker client library only when asked

        return tuple(image.ref for image in archived(self.config, versions))

    def install_steps(self, ctx: MeshContext) -> list[Action]:
        return [install(ctx, "minimal"), *strict_mtls(ctx, self.name)]

    def verify_steps(self, ctx: MeshContext) -> list[Action]:
        return [
            *kube_verify.probe_actions(ctx),
            kube_verify.load(ctx),
            kube_verify.check_step(
                ctx,
                SIDECAR_STATS,
                evidence.istio_stats_argv(ctx.context, ctx.namespace, PODS_SELECTOR),
                "istio-envoy-stats.txt",
            ),
            kube_verify.probe(ctx),
            kube_verify.pods(ctx),
        ]

    def evidence(self, outputs: Mapping[str, str], ctx: MeshContext) -> dict[str, Any]:
        checks = [
            kube_verify.load_check(outputs.get(kube_verify.LOAD, "")),
            evidence.istio_sidecar_mtls(outputs.get(SIDECAR_STATS, ""), namespace=ctx.namespace),
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
    builds against: go.mod), then `istioctl waypoint apply --enroll-namespace --wait`.
    """

    name = "istio-ambient"
    tools: tuple[str, ...] = ("istioctl",)
    replaces_cni = False
    namespace_labels: Mapping[str, str] = namespace_metadata("istio-ambient")[0]
    namespace_annotations: Mapping[str, str] = namespace_metadata("istio-ambient")[1]
    pod_annotations: Mapping[str, str] = {}

    def __init__(self, *, waypoint: bool = False) -> None:
        self.waypoint = waypoint
        self.config = "istio-ambient-waypoint" if waypoint else "istio-ambient"
        components = {"istiod": "control-plane", "ztunnel": "node-proxy", "istio-cni-node": "node-proxy"}
        if waypoint:
            # Its container is `istio-proxy`, which would count as a sidecar: it is a shared proxy.
            components[WAYPOINT] = "node-proxy"
        self.components: Mapping[str, str] = components

    def images(self, versions: Versions) -> tuple[str, ...]:
        from testbed.images import archived  # the Docker client library only when asked

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
        steps += [install(ctx, "ambient"), *strict_mtls(ctx, self.name)]
        if self.waypoint:
            steps += self._waypoint(ctx)
        return steps

    def _waypoint(self, ctx: MeshContext) -> list[Action]:
        """The app namespace now (a waypoint lives in it), then the waypoint, ready, and enrolled."""
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
                description=f"a waypoint for namespace {ctx.namespace}, ready, then the namespace enrolled "
                "to use it (label istio.io/use-waypoint)",
                # istioctl/pkg/waypoint/waypoint.go: `apply`, --enroll-namespace (labels the namespace
                # once the waypoint is ready), --wait (-w: until the Gateway is Programmed); --namespace
                # is the root flag (istioctl/pkg/cli/option.go).
                argv=istioctl(
                    ctx, "waypoint", "apply", "--namespace", ctx.namespace, "--enroll-namespace", "--wait"
                ),
                timeout_s=WAYPOINT_TIMEOUT_S,
            ),
        ]

    def verify_steps(self, ctx: MeshContext) -> list[Action]:
        waypoint = [
            kube_verify.check_step(ctx, ZTUNNEL_SERVICES, ztunnel_services_argv(ctx), "ztunnel-services.json")
        ]
        return [
            *kube_verify.probe_actions(ctx),
            kube_verify.load(ctx),
            kube_verify.check_step(
                ctx,
                ZTUNNEL_WORKLOADS,
                evidence.ztunnel_workloads_argv(ctx.context, ctx.namespace),
                "ztunnel-workloads.json",
            ),
            *(waypoint if self.waypoint else []),
            kube_verify.probe(ctx),
            kube_verify.pods(ctx),
        ]

    def evidence(self, outputs: Mapping[str, str], ctx: MeshContext) -> dict[str, Any]:
        hbone = evidence.istio_ambient_hbone(
            outputs.get(ZTUNNEL_WORKLOADS, ""),
            namespace=ctx.namespace,
            workloads=[*ctx.services, m.LOADGEN_NAME],
        )
        checks = [kube_verify.load_check(outputs.get(kube_verify.LOAD, "")), hbone]
        if self.waypoint:
            services = outputs.get(ZTUNNEL_SERVICES, "")
            checks.append(waypoint_in_path(services, namespace=ctx.namespace, services=ctx.services))
        checks += [
            evidence.plaintext_refused(outputs.get(kube_verify.PROBE, "")),
            kube_verify.cross_node(outputs, ctx),
        ]
        evidence.require(self.name, checks)
        extra = {"mtls": "STRICT", "concurrency": CONCURRENCY, "waypoint": self.waypoint}
        return evidence.verify(self.name, checks) | extra

    def versions(self, versions: Versions) -> dict[str, str]:
        found = {"istio": versions.istio.version}
        if self.waypoint:
            found["gateway_api"] = versions.gateway_api.version
        return found


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
            detail=f"no waypoint for {', '.join(without)}: is the namespace labelled istio.io/use-waypoint "
            "(istioctl waypoint apply --enroll-namespace) and the waypoint Programmed?",
            data=data,
        )
    waypoints = sorted({str(found[s]) for s in services})
    return Check(
        name=name,
        passed=True,
        detail=f"calls to {', '.join(services)} go through the waypoint {', '.join(waypoints)}",
        data=data,
    )
