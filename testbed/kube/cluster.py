"""The plan of a cluster on Kubernetes (kind, existing): every command and every file, as data. No I/O.

The platforms (`testbed/platforms/kind.py`, `existing.py`) run exactly these actions, and `--dry-run`
prints them (`testbed.kube.render`), so what is printed is what runs. A cluster's plan has phases, run
in this order:

    preflight   checks with clear errors (and warnings) before anything is created
    prepare     the testbed image, built once per cluster (Docker's cache makes repeats cheap)
    create      the kind cluster; skipped when an existing one is reused (--reuse)
    provision   images into the nodes (the testbed's, and the mesh's archive if one was saved), the
                mesh installed, the topology applied, every Deployment rolled out
    verify      the mesh's own evidence that it is in the path (a short load first, then its checks)
    teardown    at the end, and after Ctrl-C, unless --keep
    on_failure  before the teardown when something failed: logs into the run directory

and each trial has its own small plan (`testbed.kube.trial`): the load in the loadgen pod, and at the
measured window's start and end (the load generator's marks on stderr) the reads of every container's CPU.

Every flag below was read in the tool's source at the pinned version; the file is named beside it:
kind at tag v0.32.0 (kubernetes-sigs/kind), kubectl at v0.35.7 (kubernetes/kubectl, the staging copy of
kubernetes v1.35.7's `staging/src/k8s.io/kubectl`) and its global flags at v0.35.6 (kubernetes/cli-runtime).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from testbed.errors import UsageError
from testbed.kube import manifests as m
from testbed.kube.actions import (
    OPTIONAL_TOOLS,
    ROLLOUT_TIMEOUT,
    ROLLOUT_TIMEOUT_S,
    SOURCE,
    Action,
    BuildImage,
    Check,
    IfFile,
    MeshContext,
    Step,
    WriteFile,
    cluster_name,
    image_tag,
    kind_context,
    kind_nodes,
)
from testbed.kube.kindconfig import kind_config
from testbed.spec.topology import Topology
from testbed.spec.versions import Versions

if TYPE_CHECKING:
    from testbed.meshes.kube import KubeMesh


NAMESPACE = m.DEFAULT_NAMESPACE
#: `kind create cluster --wait`: until the control plane node is Ready.
KIND_WAIT = "5m"
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

    `archive` is where `nox -s pull-images` saves the mesh's images (`testbed.kube.images.archive_path`):
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


def rollout(k: tuple[str, ...], deployment: str, namespace: str) -> Step:
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
        *(rollout(k, s.name, ns) for s in topology.startup_order()),
        rollout(k, m.LOADGEN_NAME, ns),
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
