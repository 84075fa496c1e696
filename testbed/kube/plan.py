"""The plan of a run on Kubernetes (kind, existing): every command and every file, as data. No I/O.

The platforms (`testbed/platforms/kind.py`, `existing.py`) run exactly these actions, and `--dry-run`
prints them, so what is printed is what runs. A cluster's plan has phases, run in this order:

    preflight   checks with clear errors (and warnings) before anything is created
    prepare     the testbed image, built once per cluster (Docker's cache makes repeats cheap)
    create      the kind cluster; skipped when an existing one is reused (--reuse)
    provision   images into the nodes (the testbed's, and the mesh's archive if one was saved), the
                mesh installed, the topology applied, every Deployment rolled out
    verify      the mesh's own evidence that it is in the path (a short load first, then its checks)
    teardown    at the end, and after Ctrl-C, unless --keep
    on_failure  before the teardown when something failed: logs into the run directory

and each trial has its own small plan (`trial_plan`): the load in the loadgen pod, and at the measured
window's start and end (the load generator's marks on stderr) the reads of every container's CPU.

Every flag below was read in the tool's source at the pinned version; the file is named beside it:
kind at tag v0.32.0 (kubernetes-sigs/kind), kubectl at v0.35.7 (kubernetes/kubectl, the staging copy of
kubernetes v1.35.7's `staging/src/k8s.io/kubectl`) and its global flags at v0.35.6 (kubernetes/cli-runtime).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from testbed.errors import UsageError
from testbed.kube import manifests as m
from testbed.kube import metrics
from testbed.kube.actions import (
    OPTIONAL_TOOLS,
    ROLLOUT_TIMEOUT,
    ROLLOUT_TIMEOUT_S,
    SOURCE,
    Action,
    BuildImage,
    Check,
    IfFile,
    MakeFiles,
    MeshContext,
    Pipe,
    Step,
    WriteFile,
    cluster_name,
    image_tag,
    kind_context,
    kind_nodes,
)
from testbed.kube.kindconfig import kind_config
from testbed.loadgen import marks
from testbed.loadgen.config import LoadConfig
from testbed.plan import Trial, load_argv
from testbed.topology import Topology
from testbed.versions import Versions

if TYPE_CHECKING:
    from testbed.meshes.kube import KubeMesh


NAMESPACE = m.DEFAULT_NAMESPACE
#: `kind create cluster --wait`: until the control plane node is Ready.
KIND_WAIT = "5m"
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
#: Shown instead of node names on `existing`, where the nodes are found at run time.
ANY_NODE = "NODE"


@dataclass(frozen=True, kw_only=True)
class ClusterPlan:
    """Everything done to bring one mesh's cluster up and down."""

    platform: str
    mesh: str
    cluster: str | None
    context: str
    namespace: str
    image: str
    nodes: tuple[str, ...]  # empty on `existing`: the labelled nodes are found by preflight
    node_containers: tuple[str, ...]  # kind's nodes are Docker containers; empty on `existing`
    target_url: str
    workdir: Path
    logs_dir: Path
    loadgen_workers: int
    workers_manifest: Path | None
    preflight: tuple[Check, ...]
    prepare: tuple[Action, ...]
    create: tuple[Action, ...]
    provision: tuple[Action, ...]
    verify: tuple[Action, ...]
    teardown: tuple[Step, ...]
    on_failure: tuple[Step, ...]
    #: What the mesh planned with; its `evidence()` reads the verify steps' output with it.
    mesh_context: MeshContext


@dataclass(frozen=True, kw_only=True)
class TrialPlan:
    """One trial on a cluster: setup, the load (whose window marks trigger the reads), after it, cleanup."""

    setup: tuple[Step, ...]
    #: Its stderr is read as it comes: at each window mark (`testbed.loadgen.marks`), the reads below run.
    load: Step
    #: At each mark, `existing`: every node's kubelet scraped. Empty on kind, which reads `node_read`.
    at_marks: tuple[Step, ...]
    #: At each mark, kind: `docker exec NODE sh -c NODE_READ` in every node container at once.
    node_containers: tuple[str, ...]
    node_read: str
    #: After the load, kind: the pods with their container ids, which name the cgroups read.
    after: tuple[Step, ...]
    cleanup: tuple[Step, ...]


def kubectl(context: str) -> tuple[str, ...]:
    # --context: kubernetes/cli-runtime v0.35.6 pkg/genericclioptions/config_flags.go (flagContext),
    # on every command, so that the user's current context is never used by accident.
    return ("kubectl", "--context", context)


def kind_plan(
    mesh: KubeMesh,
    topology: Topology,
    *,
    versions: Versions,
    workdir: Path,
    logs_dir: Path,
    loadgen_workers: int = 1,
    source: Path = SOURCE,
    archive: Path | None = None,
) -> ClusterPlan:
    """A kind cluster `testbed-<mesh>` of its own: created, provisioned, deleted.

    `archive` is where `nox -s pull-images` saves the mesh's images (`testbed.images.archive_path`):
    loaded into the nodes before the install when it is there, so that nothing is pulled in the cluster.
    """
    name = cluster_name(mesh.name)
    context = kind_context(name)
    image = image_tag(versions.python_image, source)
    _check_topology_in_image(topology, source)
    config_path = workdir / "kind-config.yaml"
    tools = ("kind", "kubectl", *mesh.tools)
    optional = tuple(t for t in OPTIONAL_TOOLS if t not in tools)
    preflight = (
        Check(
            name="tools",
            tools=tools,
            optional_tools=optional,
            description=f"{', '.join(tools)} found (the pinned copies from `nox -s tools` first, then PATH); "
            "a warning for a version that is not the pin"
            + (f"; {', '.join(optional)} only warned about (not used by this plan)" if optional else ""),
        ),
        Check(name="docker", description="a Docker daemon answers (kind's nodes are Docker containers)"),
        Check(
            name="cgroup",
            description="Docker's host runs cgroup v2 (a Kubernetes 1.35 kubelet does not start on v1)",
        ),
        Check(name="source", description=f"{source} is a source checkout with the Dockerfile"),
        Check(
            name="inotify",
            description="fs.inotify.max_user_watches >= 524288, max_user_instances >= 512 (else a warning)",
        ),
        Check(
            name="memory", description="about 8 GB of memory available for four kind nodes (else a warning)"
        ),
        Check(
            name="cluster",
            description=f"no kind cluster {name} exists yet (with --reuse: reuse it)",
            # `kind get clusters` prints one name per line (pkg/cmd/kind/get/clusters/clusters.go).
            argv=("kind", "get", "clusters"),
        ),
    )
    prepare = (
        BuildImage(
            description=f"build the testbed image {image}",
            context=source,
            tag=image,
            build_args=(("PYTHON_IMAGE", versions.python_image),),
            timeout_s=1800.0,
        ),
    )
    create_argv = [
        "kind",
        "create",
        "cluster",
        # --name, --config, --image, --wait: pkg/cmd/kind/create/cluster/createcluster.go (kind v0.32.0);
        # --name overrides the config's `name`; --wait is a Go duration.
        "--name",
        name,
        "--config",
        str(config_path),
        "--image",
        versions.node_image,
    ]
    if not mesh.replaces_cni:
        # Without a CNI the control plane never gets Ready: --wait would only time out (mesh-install.md).
        create_argv += ["--wait", KIND_WAIT]
    create = (
        WriteFile(
            description="the kind configuration: a control plane and three workers (apps-a, apps-b, loadgen)",
            path=config_path,
            text=kind_config(mesh.name, name=name),
        ),
        Step(description=f"create the kind cluster {name}", argv=tuple(create_argv), timeout_s=900.0),
    )
    mesh_images = mesh.images(versions)
    if not mesh_images:
        archive = None
    ctx = _mesh_context(
        topology,
        context=context,
        cluster=name,
        versions=versions,
        workdir=workdir,
        image=image,
        archive=archive,
    )
    load_images: list[Action] = [
        Step(
            description=f"load {image} into every node (no registry needed)",
            # `load docker-image IMAGE... --name`: pkg/cmd/kind/load/docker-image/docker-image.go
            # (kind v0.32.0).
            argv=("kind", "load", "docker-image", image, "--name", name),
            timeout_s=600.0,
        )
    ]
    if archive is not None:
        load_images.append(
            Step(
                description=f"load the {mesh.config} images saved by `nox -s pull-images` into every node "
                f"(nothing is pulled in the cluster then): {', '.join(mesh_images)}",
                # `load image-archive <IMAGE.tar> --name`: pkg/cmd/kind/load/image-archive/image-archive.go
                # (kind v0.32.0).
                argv=("kind", "load", "image-archive", str(archive), "--name", name),
                timeout_s=900.0,
                only_if=IfFile(archive),
            )
        )
    deploy, workers_manifest = _deploy_topology(mesh, topology, ctx, image=image, workers=loadgen_workers)
    return ClusterPlan(
        platform="kind",
        mesh=mesh.name,
        cluster=name,
        context=context,
        namespace=NAMESPACE,
        image=image,
        nodes=kind_nodes(name),
        node_containers=kind_nodes(name),
        target_url=m.service_url(topology.entry, NAMESPACE),
        workdir=workdir,
        logs_dir=logs_dir,
        loadgen_workers=loadgen_workers,
        workers_manifest=workers_manifest,
        preflight=preflight,
        prepare=prepare,
        create=create,
        provision=(*load_images, *mesh.install_steps(ctx), *deploy),
        verify=tuple(mesh.verify_steps(ctx)),
        mesh_context=ctx,
        # `delete cluster --name`: pkg/cmd/kind/delete/cluster/deletecluster.go (kind v0.32.0); it
        # succeeds when the cluster is already gone.
        teardown=(
            Step(
                description=f"delete the kind cluster {name}",
                argv=("kind", "delete", "cluster", "--name", name),
                timeout_s=300.0,
            ),
        ),
        on_failure=(
            Step(
                description=f"export the cluster's logs (nodes, pods, kubelet, containerd) to {logs_dir}",
                # `export logs [output-dir] --name`: pkg/cmd/kind/export/logs/logs.go (kind v0.32.0).
                argv=("kind", "export", "logs", str(logs_dir), "--name", name),
                timeout_s=300.0,
            ),
        ),
    )


def existing_plan(
    mesh: KubeMesh,
    topology: Topology,
    *,
    context: str,
    image: str,
    versions: Versions,
    workdir: Path,
    logs_dir: Path,
    loadgen_workers: int = 1,
    source: Path = SOURCE,
) -> ClusterPlan:
    """A cluster the user already has (`--context`): nothing created or deleted but the app namespace."""
    _check_topology_in_image(topology, source)
    k = kubectl(context)
    tools = ("kubectl", *mesh.tools)
    label = f"{m.ROLE_LABEL}="
    preflight = (
        Check(
            name="tools",
            tools=tools,
            description=f"{', '.join(tools)} found (the pinned copies from `nox -s tools` first, then PATH); "
            "a warning for a version that is not the pin",
        ),
        Check(
            name="context",
            description=f"the kubeconfig has a context {context}",
            # `config get-contexts -o name`: kubectl v0.35.7 pkg/cmd/config/get_contexts.go.
            argv=("kubectl", "config", "get-contexts", "-o", "name"),
        ),
        # Three nodes, one per role, so that every call crosses nodes (manifests.app_role), and the pool
        # where the meshes put control planes and shared proxies: not the load generator's node.
        *(
            Check(
                name=f"nodes-{role}",
                description=f"a node labelled {label}{role} (label one yourself: the testbed does not)",
                # -l and -o name: kubectl v0.35.7 pkg/cmd/util/helpers.go AddLabelSelectorFlagVar,
                # pkg/cmd/get/get_flags.go (`name` printer).
                argv=(*k, "get", "nodes", "-l", f"{label}{role}", "-o", "name"),
            )
            for role in m.NODE_ROLES
        ),
        Check(
            name=f"pool-{m.APPS_POOL}",
            description=f"nodes labelled {m.POOL_LABEL}={m.APPS_POOL}, none of them the load generator's "
            "(the meshes' control planes and shared proxies run there)",
            # As above: kubectl v0.35.7 AddLabelSelectorFlagVar and the `name` printer.
            argv=(*k, "get", "nodes", "-l", f"{m.POOL_LABEL}={m.APPS_POOL}", "-o", "name"),
        ),
    )
    ctx = _mesh_context(
        topology, context=context, cluster=None, versions=versions, workdir=workdir, image=image
    )
    deploy, workers_manifest = _deploy_topology(mesh, topology, ctx, image=image, workers=loadgen_workers)
    verify = tuple(mesh.verify_steps(ctx))
    namespaces = [NAMESPACE, *_verify_namespaces(verify)]
    return ClusterPlan(
        platform="existing",
        mesh=mesh.name,
        cluster=None,
        context=context,
        namespace=NAMESPACE,
        image=image,
        nodes=(),
        node_containers=(),
        target_url=m.service_url(topology.entry, NAMESPACE),
        workdir=workdir,
        logs_dir=logs_dir,
        loadgen_workers=loadgen_workers,
        workers_manifest=workers_manifest,
        preflight=preflight,
        prepare=(),
        create=(),
        provision=(*mesh.install_steps(ctx), *deploy),
        verify=verify,
        mesh_context=ctx,
        teardown=tuple(
            Step(
                description=f"delete the namespace {namespace} and everything in it",
                # --ignore-not-found, --timeout (and --wait, true by default): kubectl v0.35.7
                # pkg/cmd/delete/delete_flags.go.
                argv=(
                    *k,
                    "delete",
                    "namespace",
                    namespace,
                    "--ignore-not-found",
                    "--timeout",
                    ROLLOUT_TIMEOUT,
                ),
                timeout_s=ROLLOUT_TIMEOUT_S,
            )
            for namespace in namespaces
        ),
        on_failure=(
            Step(
                description=f"describe the pods of {NAMESPACE}, with their events",
                # `describe (TYPE [NAME_PREFIX] ...)`: kubectl v0.35.7 pkg/cmd/describe/describe.go.
                argv=(*k, "describe", "pods", "-n", NAMESPACE),
                timeout_s=60.0,
                output=logs_dir / "pods.txt",
            ),
            Step(
                description=f"the events of {NAMESPACE}",
                argv=(*k, "get", "events", "-n", NAMESPACE),
                timeout_s=60.0,
                output=logs_dir / "events.txt",
            ),
        ),
    )


def trial_plan(cluster: ClusterPlan, config: LoadConfig, *, nodes: Sequence[str]) -> TrialPlan:
    """The commands of one trial: the load runs in the loadgen pod, its JSON comes back on stdout.

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
            _rollout(k, m.WORKER_NAME, ns),
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
                    "--timeout",
                    "60s",
                ),
                timeout_s=90.0,
            ),
        )
    load = Step(
        description=f"the trial: {config.rate:g} rps for {config.warmup_s:g} + {config.duration_s:g} s "
        f"(+ {config.tail_s:g} s not recorded, under which the end is read) from the loadgen pod; "
        "the testbed.load/1 JSON comes back on stdout",
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
        load=load,
        at_marks=() if kind else scrapes,
        node_containers=cluster.node_containers,
        node_read=metrics.NODE_READ,
        after=(pods,) if kind else (),
        cleanup=cleanup,
    )


def _mesh_context(
    topology: Topology,
    *,
    context: str,
    cluster: str | None,
    versions: Versions,
    workdir: Path,
    image: str,
    archive: Path | None = None,
) -> MeshContext:
    order = topology.startup_order()
    return MeshContext(
        kubectl=kubectl(context),
        context=context,
        cluster=cluster,
        namespace=NAMESPACE,
        versions=versions,
        workdir=workdir,
        image=image,
        target_url=m.service_url(topology.entry, NAMESPACE),
        services=tuple(s.name for s in order),
        callers=(m.LOADGEN_NAME, *(s.name for s in reversed(order) if s.calls)),
        edges=m.call_edges(topology),
        archive=archive,
    )


def _verify_namespaces(verify: Iterable[Action]) -> list[str]:
    """Namespaces besides the app's that the verification creates (the plaintext probe's)."""
    found = [
        doc["metadata"]["name"]
        for action in verify
        if isinstance(action, WriteFile)
        for doc in yaml.safe_load_all(action.text)
        if isinstance(doc, dict) and doc.get("kind") == "Namespace"
    ]
    return [name for name in dict.fromkeys(found) if name != NAMESPACE]


def _rollout(k: tuple[str, ...], deployment: str, namespace: str) -> Step:
    return Step(
        description=f"wait until {deployment} is rolled out and ready",
        # `rollout status TYPE/NAME --timeout`: kubectl v0.35.7 pkg/cmd/rollout/rollout_status.go
        # (--watch is true by default).
        argv=(*k, "rollout", "status", f"deploy/{deployment}", "-n", namespace, "--timeout", ROLLOUT_TIMEOUT),
        timeout_s=ROLLOUT_TIMEOUT_S,
    )


def _deploy_topology(
    mesh: KubeMesh, topology: Topology, ctx: MeshContext, *, image: str, workers: int
) -> tuple[tuple[Action, ...], Path | None]:
    """Write and apply the manifests, then wait for every Deployment; the workers' file if any."""
    if workers < 1:
        raise UsageError(f"--loadgen-workers must be at least 1, got {workers}")
    k, ns = ctx.kubectl, ctx.namespace
    objects = m.manifests(
        topology,
        image=image,
        namespace=ns,
        namespace_labels=mesh.namespace_labels,
        namespace_annotations=mesh.namespace_annotations,
        pod_annotations=mesh.pod_annotations,
    )
    path = ctx.workdir / "manifests.yaml"
    actions: list[Action] = [
        WriteFile(
            description=f"the {topology.name} topology and the idle load generator (namespace {ns})",
            path=path,
            text=m.to_yaml(objects),
        ),
        # -f: kubectl v0.35.7 pkg/cmd/apply/apply.go (DeleteFlags.AddFlags), from cli-runtime
        # pkg/genericclioptions/filename_flags.go ("filename", "f").
        Step(description="apply the manifests", argv=(*k, "apply", "-f", str(path)), timeout_s=120.0),
        *(_rollout(k, s.name, ns) for s in topology.startup_order()),
        _rollout(k, m.LOADGEN_NAME, ns),
    ]
    workers_manifest = None
    if workers > 1:
        workers_manifest = ctx.workdir / "loadgen-workers.yaml"
        objects = m.loadgen_workers(workers, image=image, namespace=ns, pod_annotations=mesh.pod_annotations)
        actions.append(
            WriteFile(
                description=f"{workers} Locust workers and the master's Service (applied per trial)",
                path=workers_manifest,
                text=m.to_yaml(objects),
            )
        )
    return tuple(actions), workers_manifest


def _check_topology_in_image(topology: Topology, source: Path) -> None:
    topologies = (source / "scenarios" / "topologies").resolve()
    if topology.source.resolve().parent != topologies:
        raise UsageError(
            f"topology {topology.source}: on Kubernetes the services read their topology from the image, "
            f"which holds {topologies}/ only: put the file there"
        )


# --- The plan as text (--dry-run) ----------------------------------------------------------------


def render_actions(actions: Iterable[Action]) -> list[str]:
    """Each action as a `# why` line and the command (`+ ...`) or the file's whole text."""
    lines: list[str] = []
    for action in actions:
        match action:
            case Check():
                lines.append(f"# check: {action.description}")
                if action.argv:
                    lines.append("+ " + shlex.join(action.argv))
            case WriteFile():
                lines.append(f"# write {action.path}: {action.description}")
                lines += [f"    {line}".rstrip() for line in action.text.splitlines()]
            case BuildImage():
                lines.append(
                    f"# {action.description} (timeout {action.timeout_s:g} s; with the buildx plugin: "
                    "docker buildx build --load)"
                )
                lines.append("+ " + shlex.join(action.argv()))
            case Step():
                notes = [f"timeout {action.timeout_s:g} s"]
                if action.output is not None:
                    notes.append(f"stdout to {action.output}")
                if action.may_fail:
                    notes.append("read by the checks whatever its exit status")
                if action.only_if is not None:
                    notes.append(action.only_if.describe())
                lines.append(f"# {action.description} ({'; '.join(notes)})")
                lines.append("+ " + shlex.join(action.argv))
                if action.stdin is not None:
                    lines.append("  with stdin:")
                    lines += [f"    {line}".rstrip() for line in action.stdin.splitlines()]
            case Pipe():
                timeouts = f"{action.producer.timeout_s:g} s and {action.consumer.timeout_s:g} s"
                lines.append(f"# {action.description} (timeouts {timeouts}; no shell: stdout to stdin)")
                lines.append(f"+ {shlex.join(action.producer.argv)} | {shlex.join(action.consumer.argv)}")
            case MakeFiles():
                lines.append(f"# make {', '.join(map(str, action.paths))}: {action.description}")
    return lines


def render_cluster(plan: ClusterPlan, *, reuse: bool) -> list[str]:
    """The phases that bring a mesh's cluster up, as they run before its first trial."""
    where = f"kind cluster {plan.cluster}" if plan.cluster else "the existing cluster"
    created = (
        "skipped if the cluster exists: --reuse" if reuse else "refused if the cluster exists: see --reuse"
    )
    sections: list[tuple[str, Sequence[Action]]] = [
        (f"mesh {plan.mesh}: preflight ({where}, context {plan.context})", plan.preflight),
        ("prepare", plan.prepare),
        (f"create ({created})" if plan.cluster else "create", plan.create),
        ("provision", plan.provision),
        ("verify the mesh", plan.verify),
    ]
    return _sections(sections)


def render_trial(number: int, total: int, trial: Trial, plan: TrialPlan, *, cooldown_s: float) -> list[str]:
    title = f"trial {number}/{total}: mesh {trial.mesh}, {trial.rate:g} rps, trial {trial.index}"
    lines = [f"== {title}", f"# wait {cooldown_s:g} s (the scenario's cooldown)"]
    lines += render_actions(plan.setup)
    lines += render_actions([plan.load])
    lines.append(
        f"# its stderr is read as it comes: at the line `{marks.PREFIX}{marks.START} UNIX_TIME` and again "
        f"at `{marks.PREFIX}{marks.END} UNIX_TIME`, the reads below run"
    )
    lines += render_actions(plan.at_marks)
    if plan.node_containers:
        lines.append(
            f"# in every kind node container at once (the Docker layer, timeout {SCRAPE_TIMEOUT_S:g} s "
            "each): the time, the host's /proc/stat, and the cgroup v2 cpu.stat, memory.current and "
            "memory.stat of the node and of each container (testbed.kube.metrics.NODE_READ)"
        )
        lines += [
            "+ " + shlex.join(("docker", "exec", node, "sh", "-c", plan.node_read))
            for node in plan.node_containers
        ]
    if plan.after:
        lines.append("# when the load has finished:")
    lines += render_actions(plan.after)
    lines += render_actions(plan.cleanup)
    return [*lines, ""]


def render_end(plan: ClusterPlan, *, keep: bool) -> list[str]:
    """What happens to a cluster at the end: its teardown, and what a failure adds before it."""
    teardown = "skipped: --keep" if keep else "at the end, and after Ctrl-C, unless --keep"
    return _sections(
        [
            (f"mesh {plan.mesh}: on failure, first ({plan.logs_dir})", plan.on_failure),
            (f"mesh {plan.mesh}: teardown ({teardown})", plan.teardown),
        ]
    )


def _sections(sections: Sequence[tuple[str, Sequence[Action]]]) -> list[str]:
    lines: list[str] = []
    for title, actions in sections:
        if actions:
            lines += [f"== {title}", *render_actions(actions), ""]
    return lines


def describe_versions(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in versions.items())
