"""Linkerd edge-26.8.3 on Kubernetes (`linkerd`): the Rust linkerd2-proxy as a sidecar, mTLS between them.

Open-source Linkerd ships edge releases only. The install is the CLI's: the Gateway API CRDs (which
`linkerd install --crds` requires at this version), Linkerd's CRDs, then the control plane with a trust
anchor and issuer made here (`testbed.meshes.linkerd.certs`: ECDSA P-256, the CA constraints Linkerd
checks), each `linkerd install | kubectl apply -f -` run as two commands (`Pipe`), no shell. Meshed pods
always talk mTLS to each other; the app namespace's `config.linkerd.io/proxy-require-identity-inbound-ports`
(the app port) makes the proxies refuse clients without a mesh identity there too (Linkerd's default,
all-unauthenticated, would serve a plaintext client), and leaves the proxies' admin port open to
`linkerd diagnostics proxy-metrics` (`testbed.meshes.kube_resources`). Verification: `linkerd check
--proxy`, the callers' proxies report `tls="true"` with the callee's identity, and a plaintext request is
refused (403). The control plane runs on the app workers (`SHARED_NODE_SELECTOR`), off the load
generator's node. `--reuse` is refused: `linkerd install` stops on a cluster where it ran already.

Fairness. Access logs are off (the chart's values.yaml has no `proxy.accessLog`, so
charts/partials/templates/_proxy.tpl sets no LINKERD2_PROXY_ACCESS_LOG) and nothing traces without the
jaeger extension. Worker threads: a proxy takes `max(LINKERD2_PROXY_CORES_MAX, LINKERD2_PROXY_CORES_MIN)`
threads, capped at the CPUs it sees (linkerd2-proxy release/v2.366.0, the `.proxy-version` of
edge-26.8.3: linkerd/workers/src/lib.rs `Workers::cores`, read in linkerd2-proxy/src/rt.rs); by default
only the minimum, 1, is set (charts/linkerd-control-plane/values.yaml `proxy.runtime.workers.minimum`).
`--proxy-cpu-limit 2` sets the maximum to 2 (cli/cmd/options.go: `values.Proxy.Runtime.Workers.Maximum`,
rendered as LINKERD2_PROXY_CORES_MAX by charts/partials/templates/_proxy.tpl) together with a 2-CPU
limit, and `--proxy-cpu-request 100m` keeps the request at an Istio sidecar's (a limit alone would become
the request too: 2 CPUs a pod, more than a 4-CPU runner can schedule); the minimum that the request sets,
1 thread, is below the maximum, so the proxy runs 2 threads, as an Istio sidecar does (2 from its 2000m
CPU limit). The older `config.linkerd.io/proxy-cores` is gone at this version (pkg/k8s/labels.go has no
such annotation).
`--disable-heartbeat` removes a daily CronJob that calls home and could start in the middle of a trial.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from testbed.errors import UsageError
from testbed.kube.actions import Action, MakeFiles, MeshContext, Pipe, Step
from testbed.kube.manifests import SHARED_NODE_SELECTOR
from testbed.meshes import evidence, kube_verify
from testbed.meshes.kube_resources import namespace_metadata
from testbed.meshes.linkerd import evidence as linkerd_evidence
from testbed.meshes.linkerd.certs import make_linkerd_pki
from testbed.spec.versions import Versions

#: The proxies' worker threads (and CPU limit, in cores) and CPU request: as an Istio sidecar's
#: (istio/istio 1.30.3 istio-discovery values.yaml global.proxy.resources: 100m, 2000m).
PROXY_CORES = 2
PROXY_CPU_REQUEST = "100m"
#: `linkerd check --wait`: how long the control plane may take to pass every check.
CHECK_WAIT = "5m"
CHECK_TIMEOUT_S = 360.0
#: `linkerd check --proxy --wait`: it retries failing checks until then (default 300 s), so it must give up
#: before its verify step is killed (kube_verify.CHECK_TIMEOUT_S) to print which check failed.
CHECK_PROXY_WAIT_S = int(kube_verify.CHECK_TIMEOUT_S) - 15

CHECK_PROXY = "linkerd check --proxy for the app namespace: every data-plane check must pass"
#: One command per caller; `evidence` reads them together.
METRICS = "the linkerd-proxy metrics of {}: its calls must be tls=true to the callee's identity"


def linkerd(ctx: MeshContext, *args: str) -> tuple[str, ...]:
    # --context: a persistent flag of the root command (cli/cmd/root.go).
    return ("linkerd", "--context", ctx.context, *args)


def helm_set_string(values: Mapping[str, str], prefix: str) -> tuple[str, ...]:
    """`--set-string prefix.KEY=VALUE` per entry, the dots in each key escaped so that it stays one key.

    `linkerd install --set-string` is Helm's (linkerd/linkerd2 edge-26.8.3 pkg/flags/flags.go
    AddValueOptionsFlags; helm.sh/helm/v3 v3.21.4, its go.mod): pkg/cli/values/options.go MergeValues ->
    pkg/strvals/parser.go ParseIntoString, every value a string (a label value `true` stays one); its key
    parser splits on `.` and takes the rune after a backslash literally (runesUntil).
    """
    args: list[str] = []
    for key, value in values.items():
        if any(c in key + value for c in ",=[]\\"):
            raise UsageError(f"cannot pass {key}={value} through --set-string: it holds one of , = [ ] \\")
        escaped = key.replace(".", "\\.")
        args += ["--set-string", f"{prefix}.{escaped}={value}"]
    return tuple(args)


def apply_stdin(ctx: MeshContext, description: str, timeout_s: float = 300.0) -> Step:
    # `-f -` reads the manifests from stdin: kubectl v0.35.7 pkg/cmd/apply/apply.go; cli-runtime v0.35.6
    # pkg/resource/builder.go (`case s == "-"`: FileVisitorForSTDIN).
    return Step(description=description, argv=(*ctx.kubectl, "apply", "-f", "-"), timeout_s=timeout_s)


class Linkerd:
    """Linkerd, CLI install, the app namespace injected and closed to unauthenticated clients."""

    name = "linkerd"
    config = "linkerd"
    tools: tuple[str, ...] = ("linkerd",)
    replaces_cni = False
    # cli/cmd/install.go (checkNoConfig, installControlPlane): `linkerd install`, with --crds too, exits 1
    # with "Can't install the Linkerd control plane in the 'linkerd' namespace. Reason: ConfigMap/
    # linkerd-config already exists" once it ran; and each run makes a new trust anchor, which a `linkerd
    # upgrade` would have to roll out to every running proxy.
    supports_reuse = False
    namespace_labels: Mapping[str, str] = namespace_metadata("linkerd")[0]
    namespace_annotations: Mapping[str, str] = namespace_metadata("linkerd")[1]
    pod_annotations: Mapping[str, str] = {}
    # The sidecars (container linkerd-proxy) count as `sidecar` in testbed.kube.metrics already.
    components: Mapping[str, str] = {
        "linkerd-destination": "control-plane",
        "linkerd-identity": "control-plane",
        "linkerd-proxy-injector": "control-plane",
    }
    # The control plane (destination, identity, proxy-injector) in namespace `linkerd`, the CLI's default
    # (linkerd/linkerd2 edge-26.8.3 cli/cmd/root.go:22 defaultLinkerdNamespace). Each pod template carries
    # linkerd.io/control-plane-ns: {{.Release.Namespace}} (charts/linkerd-control-plane/templates/
    # destination.yaml:170, identity.yaml:143, proxy-injector.yaml:50); the heartbeat's pods do not
    # (heartbeat.yaml:33-34; and install_steps disables it: --disable-heartbeat). The proxies are read with
    # the app namespace.
    traffic_pods: tuple[tuple[str, str], ...] = (("linkerd", "linkerd.io/control-plane-ns=linkerd"),)

    def images(self, versions: Versions) -> tuple[str, ...]:
        from testbed.kube.images import archived  # the Docker client library only when asked

        return tuple(image.ref for image in archived(self.config, versions))

    def install_steps(self, ctx: MeshContext) -> list[Action]:
        pki = ctx.workdir / "linkerd-pki"
        ca, issuer_crt, issuer_key = pki / "ca.crt", pki / "issuer.crt", pki / "issuer.key"
        gateway_api = ctx.versions.gateway_api.linkerd_version
        return [
            Step(
                description=f"the Gateway API CRDs {gateway_api} (standard channel): "
                "`linkerd install --crds` refuses to run without them",
                # pkg/healthcheck/healthcheck.go GatewayAPICRDsMissingError (and cli/cmd/install.go
                # validateFinalValues) ask for `kubectl apply --server-side -f .../standard-install.yaml`;
                # --server-side: kubectl v0.35.7 pkg/cmd/util/helpers.go AddServerSideApplyFlags.
                argv=(
                    *ctx.kubectl,
                    "apply",
                    "--server-side",
                    "-f",
                    ctx.versions.gateway_api.install_url(gateway_api),
                ),
                timeout_s=120.0,
            ),
            MakeFiles(
                description="Linkerd's trust anchor and identity issuer (ECDSA P-256; the anchor's key is "
                "never written), made by testbed.meshes.linkerd.certs",
                paths=(ca, issuer_crt, issuer_key),
                make=functools.partial(make_linkerd_pki, pki),
            ),
            Pipe(
                description=f"Linkerd {ctx.versions.linkerd.version}'s CRDs",
                # cli/cmd/install.go: `install --crds` renders the linkerd-crds chart to stdout.
                producer=Step(
                    description="render Linkerd's CRDs",
                    argv=linkerd(ctx, "install", "--crds"),
                    timeout_s=120.0,
                ),
                consumer=apply_stdin(ctx, "apply Linkerd's CRDs"),
            ),
            Pipe(
                description=f"Linkerd's control plane with this run's trust anchor and issuer; proxies with "
                f"{PROXY_CORES} worker threads",
                producer=Step(
                    description="render Linkerd's control plane",
                    argv=linkerd(
                        ctx,
                        "install",
                        # cli/cmd/options.go makeInstallUpgradeFlags: the three PEM files, read by the CLI.
                        "--identity-trust-anchors-file",
                        str(ca),
                        "--identity-issuer-certificate-file",
                        str(issuer_crt),
                        "--identity-issuer-key-file",
                        str(issuer_key),
                        # cli/cmd/options.go makeProxyFlags: --proxy-cpu-limit sets Workers.Maximum and
                        # the CPU limit; --proxy-cpu-request the request (and Workers.Minimum, rounded up:
                        # 1), without which Kubernetes would make the request the limit, 2 CPUs a pod.
                        "--proxy-cpu-limit",
                        str(PROXY_CORES),
                        "--proxy-cpu-request",
                        PROXY_CPU_REQUEST,
                        # cli/cmd/options.go makeInstallUpgradeFlags: values.DisableHeartBeat.
                        "--disable-heartbeat",
                        # The control plane off the load generator's node: the chart's top-level
                        # `nodeSelector` (charts/linkerd-control-plane/values.yaml, default
                        # kubernetes.io/os: linux, kept: Helm merges maps) goes through
                        # charts/partials/templates/_nodeselector.tpl into destination.yaml,
                        # identity.yaml and proxy-injector.yaml (and heartbeat.yaml, disabled above).
                        *helm_set_string(SHARED_NODE_SELECTOR, "nodeSelector"),
                    ),
                    timeout_s=120.0,
                ),
                consumer=apply_stdin(ctx, "apply Linkerd's control plane"),
            ),
            Step(
                description="wait until Linkerd's control plane passes its own checks",
                # cli/cmd/check.go: --wait (a duration, default 300s); exits non-zero on a failed check.
                argv=linkerd(ctx, "check", "--wait", CHECK_WAIT),
                timeout_s=CHECK_TIMEOUT_S,
            ),
        ]

    def verify_steps(self, ctx: MeshContext) -> list[Action]:
        return [
            *kube_verify.probe_actions(ctx),
            kube_verify.load(ctx),
            kube_verify.check_step(
                ctx,
                CHECK_PROXY,
                linkerd_evidence.linkerd_check_argv(ctx.context, ctx.namespace, wait_s=CHECK_PROXY_WAIT_S),
                "linkerd-check-proxy.txt",
            ),
            *(
                kube_verify.check_step(
                    ctx,
                    METRICS.format(caller),
                    linkerd_evidence.linkerd_metrics_argv(ctx.context, ctx.namespace, caller),
                    f"linkerd-proxy-metrics-{caller}.txt",
                )
                for caller in ctx.callers
            ),
            kube_verify.probe(ctx),
            kube_verify.pods(ctx),
        ]

    def evidence(self, outputs: Mapping[str, str], ctx: MeshContext) -> dict[str, Any]:
        metrics = "".join(outputs.get(METRICS.format(caller), "") for caller in ctx.callers)
        checks = [
            kube_verify.load_check(outputs.get(kube_verify.LOAD, "")),
            linkerd_evidence.linkerd_check_proxy(outputs.get(CHECK_PROXY, "")),
            linkerd_evidence.linkerd_proxy_tls(metrics, namespace=ctx.namespace),
            evidence.plaintext_refused(
                outputs.get(kube_verify.PROBE, ""), refusal_statuses=linkerd_evidence.LINKERD_REFUSAL_STATUSES
            ),
            kube_verify.cross_node(outputs, ctx),
        ]
        evidence.require(self.name, checks)
        annotations = self.namespace_annotations
        extra = {
            "default_inbound_policy": annotations["config.linkerd.io/default-inbound-policy"],
            "require_identity_ports": annotations["config.linkerd.io/proxy-require-identity-inbound-ports"],
            "proxy_cores": PROXY_CORES,
        }
        return evidence.verify(self.name, checks) | extra

    def versions(self, versions: Versions) -> dict[str, str]:
        return {
            "linkerd": versions.linkerd.version,
            "linkerd_gateway_api": versions.gateway_api.linkerd_version,
        }
