"""The plan of one trial on Kubernetes: the load in the loadgen pod, the resource reads at its marks. No I/O.

The load generator prints a mark on stderr at the measured window's start and end
(`testbed.loadgen.marks`); at each, the platform reads every container's CPU: on kind the cgroups inside
every node container, on `existing` every node's kubelet. Flags are checked as in `testbed.kube.cluster`,
whose docstring names the pins.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testbed.kube import manifests as m
from testbed.kube import metrics
from testbed.kube.actions import (
    Step,
)
from testbed.loadgen.config import LoadConfig
from testbed.spec.trials import load_argv

if TYPE_CHECKING:
    pass
from testbed.kube.cluster import ClusterPlan, kubectl, rollout

SCRAPE_TIMEOUT_S = 30.0
#: What `kubectl exec` adds to a trial's own length (pod lookup, start of Python and Locust, the JSON).
EXEC_MARGIN_S = 120.0
#: `testbed load --tail`: the load goes on this long after the measured window, not recorded. The
#: resources are read only when the window's end mark reaches the platform, a `docker exec` (kind) or a
#: kubectl call (existing) later, up to about a second; over the tail, that read, like the start read a
#: moment after the window began, is made under the window's own load, not while it drains, so that each
#: read's own interval is at the window's steady rate. 2 s: above `metrics.READ_OFFSET_WARNING_S`, beyond
#: which a read is warned about anyway.
LOAD_TAIL_S = 2.0
#: How long the master waits for its workers to connect (`testbed.loadgen.engine.run_master`).
WORKERS_CONNECT_S = 60.0
#: When the only problems after the load are containers not ready (no restart, no pod replaced, every pod
#: Running), the pods are read once more this much later, and the trial fails only if one is still not
#: ready; the same when a pod is not Running and ready right before the load (`health.not_ready_before`).
#: A probe that failed under load is no crash: the app's readiness probe (`testbed.kube.manifests`:
#: every 2 s, 1 s timeout, failureThreshold 3) marks a busy container not ready after 3 slow answers, and a
#: single answer afterwards (successThreshold 1, the default of k8s.io/api v0.35.7 core/v1 `Probe`) makes
#: it ready again: 5 s leaves two probe periods and the kubelet's status update. The mesh's proxies probe
#: far less often, so that a proxy read not ready has failed its probe for tens of seconds, a real fault
#: that fails the trial: an Istio sidecar every 15 s, not ready after 4 failures, 45-60 s (istio/istio
#: 1.30.3 manifests/charts/istio-control/istio-discovery/values.yaml:377-383 readinessFailureThreshold,
#: readinessPeriodSeconds; files/injection-template.yaml:374-376); the Linkerd proxy with no periodSeconds
#: nor failureThreshold, the defaults 10 s and 3 (k8s.io/api v0.35.7 core/v1/types.go `Probe`), 20-30 s
#: (linkerd/linkerd2 edge-26.8.3 charts/partials/templates/_proxy.tpl:263-268); ztunnel the same defaults
#: (istio/istio 1.30.3 manifests/charts/ztunnel/templates/daemonset.yaml:102); the cilium agent every 30 s
#: (cilium-1.20.0.tgz cilium/values.yaml:2432 readinessProbe.periodSeconds). A 5 s wait cannot tell such a
#: fault from a moment, and is not meant to.
NOT_READY_RECHECK_S = 5.0


@dataclass(frozen=True, kw_only=True)
class PodsRead:
    """One read of pods right before the load and again right after it: the app namespace's, or a mesh's."""

    namespace: str
    #: A label selector (`kubectl get -l`), or None: every pod of the namespace (the app namespace).
    selector: str | None = None
    step: Step

    @property
    def name(self) -> str:
        """Its files' stem in the trial's directory: `pods` (the app namespace), else `pods-NS-SELECTOR`."""
        if self.selector is None:
            return "pods"
        return "pods-" + re.sub(r"[^A-Za-z0-9.]+", "-", f"{self.namespace}-{self.selector}").strip("-")

    @property
    def what(self) -> str:
        """The pods read, for a message."""
        if self.selector is None:
            return f"the pods of namespace {self.namespace}"
        return f"the mesh's pods {self.selector} in namespace {self.namespace}"


@dataclass(frozen=True, kw_only=True)
class TrialPlan:
    """One trial on a cluster: setup, the load (whose window marks trigger the reads), after it, cleanup."""

    setup: tuple[Step, ...]
    #: The pods read right before the load and again right after it (kind and existing alike): first the
    #: app namespace's, then the mesh's own outside it (`KubeMesh.traffic_pods`), one step each.
    #: `testbed.kube.health` compares each pair, and a restart, a replaced pod or one not ready in any fails
    #: the trial.
    pods: tuple[PodsRead, ...]
    #: Its stderr is read as it comes: at each window mark (`testbed.loadgen.marks`), the reads below run.
    load: Step
    #: The load in a few words: `100 rps`, or `closed loop, 8 users` (its trials' rate slot is
    #: `testbed.spec.scenario.CLOSED_LOOP_RATE`, 0, which is no rate).
    load_label: str
    #: At each mark, `existing`: every node's kubelet scraped. Empty on kind, which reads `node_read`.
    at_marks: tuple[Step, ...]
    #: At each mark, kind: `docker exec NODE sh -c NODE_READ` in every node container at once.
    node_containers: tuple[str, ...]
    node_read: str
    #: After the load, kind: the pods with their container ids, which name the cgroups read.
    after: tuple[Step, ...]
    cleanup: tuple[Step, ...]


def trial_plan(
    cluster: ClusterPlan,
    config: LoadConfig,
    *,
    nodes: Sequence[str],
    mesh_pods: Sequence[tuple[str, str]],
) -> TrialPlan:
    """The commands of one trial: the load runs in the loadgen pod, its JSON comes back on stdout.

    `mesh_pods`: the mesh's (namespace, label selector) pairs (`KubeMesh.traffic_pods`), read around the
    load beside the app namespace.

    The resources are read at the measured window's start and end, when the load generator's marks come
    on its stderr: on kind, the cgroups inside every node container (`testbed.kube.metrics.NODE_READ`),
    then the pods' container ids to name them; on `existing`, where the nodes cannot be entered, every
    node's kubelet (whose figures lag by up to 15 s: `testbed.kube.metrics`).
    """
    k = kubectl(cluster.context)
    ns = cluster.namespace
    scrapes = tuple(
        Step(
            description=f"CPU and memory of every container on {node} (the kubelet's /metrics/resource)",
            # get --raw: kubectl v0.35.7 pkg/cmd/get/get.go; the API server proxies to the node's kubelet.
            argv=(*k, "get", "--raw", f"/api/v1/nodes/{node}/proxy/metrics/resource"),
            timeout_s=SCRAPE_TIMEOUT_S,
        )
        for node in nodes
    )
    pods = Step(
        description="every pod with its containers' ids (containerd://ID), which name the cgroups read",
        # -A (--all-namespaces) and -o json: kubectl v0.35.7 pkg/cmd/get/get.go.
        argv=(*k, "get", "pods", "-A", "-o", "json"),
        timeout_s=SCRAPE_TIMEOUT_S,
    )
    health = PodsRead(
        namespace=ns,
        step=Step(
            description=f"the pods of namespace {ns} with their containers' restarts and readiness, read "
            "right before the load and again right after it: a restart, a replaced pod or one not ready at "
            "the end fails the trial (testbed.kube.health)",
            # -o json: kubectl v0.35.7 pkg/cmd/get/get.go (printer flags); -n from cli-runtime
            # config_flags.go (flagNamespace), as for `exec` below.
            argv=(*k, "get", "pods", "-n", ns, "-o", "json"),
            timeout_s=SCRAPE_TIMEOUT_S,
        ),
    )
    mesh_health = tuple(
        PodsRead(
            namespace=namespace,
            selector=selector,
            step=Step(
                description=f"the mesh's pods labelled {selector} in namespace {namespace}, read and judged "
                f"like those of namespace {ns}",
                # -l (--selector): kubectl v0.35.7 pkg/cmd/get/get.go:191 AddLabelSelectorFlagVar
                # (pkg/cmd/util/helpers.go:538-539); -n and -o json as above.
                argv=(*k, "get", "pods", "-n", namespace, "-l", selector, "-o", "json"),
                timeout_s=SCRAPE_TIMEOUT_S,
            ),
        )
        for namespace, selector in mesh_pods
    )
    distributed: tuple[str, ...] = ()
    setup: tuple[Step, ...] = ()
    cleanup: tuple[Step, ...] = ()
    config = dataclasses.replace(config, tail_s=LOAD_TAIL_S)
    timeout = config.warmup_s + config.duration_s + config.tail_s + config.timeout_s + EXEC_MARGIN_S
    if cluster.loadgen_workers > 1:
        assert cluster.workers_manifest is not None
        # The workers are the engine's processes: the master in the loadgen pod only coordinates.
        config = dataclasses.replace(config, processes=1)
        distributed = (
            "--expect-workers",
            str(cluster.loadgen_workers),
            "--master-bind",
            f"0.0.0.0:{m.DEFAULT_MASTER_PORT}",
        )
        timeout += WORKERS_CONNECT_S
        # A worker exits when its master quits, and its Deployment would restart it with a growing
        # back-off: fresh workers for every trial, deleted afterwards (testbed.kube.manifests).
        setup = (
            Step(
                description=f"start {cluster.loadgen_workers} load generator workers",
                argv=(*k, "apply", "-f", str(cluster.workers_manifest)),
                timeout_s=120.0,
            ),
            rollout(k, m.WORKER_NAME, ns),
        )
        cleanup = (
            Step(
                description="stop the load generator workers",
                argv=(
                    *k,
                    "delete",
                    "deployment",
                    m.WORKER_NAME,
                    "-n",
                    ns,
                    # kubectl v0.35.7 pkg/cmd/delete/delete_flags.go.
                    "--ignore-not-found",
                    # Foreground, not the default background (delete_flags.go:134-140, parsed at :239-249):
                    # the Deployment stays, with the foregroundDeletion finalizer, until the garbage
                    # collector has deleted its dependents with blockOwnerDeletion (k8s.io/apimachinery
                    # v0.35.7 pkg/apis/meta/v1/types.go:489-494), which the ReplicaSet and its pods are
                    # (controller refs: pkg/apis/meta/v1/controller_ref.go:59-67 NewControllerRef); and
                    # --wait, true by default (delete_flags.go:183, :155 "This waits for finalizers"),
                    # waits until the Deployment is gone (pkg/cmd/delete/delete.go:441-473 IsDeleted). So
                    # the old workers are gone before the next trial: none joins its master or its pods read.
                    "--cascade=foreground",
                    "--timeout",
                    "60s",
                ),
                timeout_s=90.0,
            ),
        )
    label = load_label(config)
    load = Step(
        description=f"the trial: {label} for {config.warmup_s:g} + {config.duration_s:g} s "
        f"(+ {config.tail_s:g} s not recorded, under which the end is read) from the loadgen pod; "
        "the testbed.load/2 JSON comes back on stdout",
        argv=(
            *k,
            "exec",
            # `exec (POD | TYPE/NAME) [-c CONTAINER] -- COMMAND [args...]`: kubectl v0.35.7
            # pkg/cmd/exec/exec.go; -c from pkg/cmd/util/helpers.go AddContainerVarFlags (named, because
            # a mesh may add a sidecar to the pod); -n from cli-runtime config_flags.go (flagNamespace).
            f"deploy/{m.LOADGEN_NAME}",
            "-n",
            ns,
            "-c",
            m.LOADGEN_NAME,
            "--",
            "testbed",
            "--quiet",
            *load_argv(config),
            *distributed,
            "--out",
            "-",
        ),
        timeout_s=timeout,
    )
    kind = bool(cluster.node_containers)
    return TrialPlan(
        setup=setup,
        pods=(health, *mesh_health),
        load=load,
        load_label=label,
        at_marks=() if kind else scrapes,
        node_containers=cluster.node_containers,
        node_read=metrics.NODE_READ,
        after=(pods,) if kind else (),
        cleanup=cleanup,
    )


def load_label(config: LoadConfig) -> str:
    """`100 rps`, or `closed loop, N users`: a closed loop has no rate (`LoadConfig.rate` 0)."""
    if config.loop == "closed":
        return f"closed loop, {config.users} users"
    return f"{config.rate:g} rps"
