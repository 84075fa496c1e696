"""What the kind platform applies: valid for Kubernetes 1.35, wired together, every call across nodes."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from testbed.errors import ConfigError, UsageError
from testbed.kube import actions as ka
from testbed.kube import kindconfig
from testbed.kube.manifests import (
    APP_PORT,
    APPS_A_ROLE,
    APPS_B_ROLE,
    APPS_POOL,
    DEFAULT_MASTER_PORT,
    HEALTH_PATH,
    IMAGE_TOPOLOGIES_DIR,
    LOADGEN_NAME,
    LOADGEN_ROLE,
    POOL_LABEL,
    ROLE_LABEL,
    RUN_AS_USER,
    SHARED_NODE_SELECTOR,
    Resources,
    call_edges,
    loadgen_workers,
    manifests,
    service_url,
    to_yaml,
)
from testbed.meshes import ALL_MESHES
from testbed.ports import reserved_ports
from testbed.spec.topology import TOPOLOGIES_DIR, Topology, load_topology
from tests.conftest import REPO

KUBERNETES = "1.35.0"
IMAGE = "testbed:golden"
GOLDEN = Path(__file__).parent / "golden" / "shop-manifests.yaml"

TINY = """
name = "tiny"
entry = "edge"
[services.edge]
calls = ["leaf"]
[services.leaf]
"""

# What the meshes put on the namespace (docs/reference: mesh-install.md); they must validate too.
MESH_NAMESPACE = {
    "none": ({}, {}),
    "istio": ({"istio-injection": "enabled"}, {}),
    "istio-ambient": ({"istio.io/dataplane-mode": "ambient"}, {}),
    "linkerd": ({}, {"linkerd.io/inject": "enabled"}),
}

Obj = Mapping[str, Any]


def tiny_topology(tmp_path: Path) -> Topology:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return load_topology(path)


def everything(topology: Topology, **kwargs: Any) -> list[dict[str, Any]]:
    namespace = kwargs.get("namespace", "testbed")
    return [
        *manifests(topology, image=IMAGE, **kwargs),
        *loadgen_workers(2, image=IMAGE, namespace=namespace),
    ]


def of_kind(objects: Sequence[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(deployment: Obj) -> Obj:
    spec: Obj = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: Obj) -> Obj:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    only: Obj = containers[0]
    return only


def downstreams(deployment: Obj) -> dict[str, str]:
    command = container(deployment)["command"]
    return dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "--downstream")


def validate(obj: Obj) -> None:
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')}: {e.message} at {where}", pytrace=False)


# --- Kubernetes 1.35 accepts every object ----------------------------------------------------------


@pytest.mark.parametrize("mesh", sorted(MESH_NAMESPACE))
@pytest.mark.parametrize("which", ["shop", "tiny"])
def test_every_object_validates_strictly_for_kubernetes_1_35(tmp_path: Path, which: str, mesh: str) -> None:
    topology = load_topology("shop") if which == "shop" else tiny_topology(tmp_path)
    labels, annotations = MESH_NAMESPACE[mesh]
    objects = everything(
        topology,
        namespace_labels=labels,
        namespace_annotations=annotations,
        pod_annotations={"testbed.io/note": "validated"},
    )
    kinds = [o["kind"] for o in objects]
    services = len(topology.services)
    assert kinds.count("Deployment") == services + 2  # the apps, loadgen, loadgen-worker
    assert kinds.count("Service") == services + 1  # the apps and the Locust master
    assert kinds.count("ServiceAccount") == services + 1
    # What is validated is what kubectl will read.
    assert list(yaml.safe_load_all(to_yaml(objects))) == objects
    for obj in objects:
        validate(obj)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: container(d)["ports"][0].update(containerPort="8080"),
        lambda d: container(d)["readinessProbe"].update(httpGets={}),
        lambda d: pod_spec(d).update(nodeSelectors={}),
        lambda d: d["spec"].update(replicas="one"),
    ],
)
def test_the_validator_rejects_a_broken_deployment(break_it: Any) -> None:
    deployment = of_kind(manifests(load_topology("shop"), image=IMAGE), "Deployment")["frontend"]
    validate(deployment)
    break_it(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_names_labels_and_port_names_follow_the_rules_the_schema_does_not_check(tmp_path: Path) -> None:
    # The OpenAPI schema only says "string": the API server checks these, so they are checked here.
    dns_label = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
    # IANA_SVC_NAME: at most 15 characters, at least one letter, no leading/trailing/double hyphen.
    port_name = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
    label_value = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
    label_key = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
    for topology in (load_topology("shop"), tiny_topology(tmp_path)):
        for obj in everything(topology):
            assert dns_label.match(obj["metadata"]["name"]), obj["metadata"]["name"]
            labelled = [obj["metadata"].get("labels", {})]
            if obj["kind"] == "Deployment":
                labelled.append(obj["spec"]["template"]["metadata"]["labels"])
                labelled.append(pod_spec(obj)["nodeSelector"])
                for port in container(obj).get("ports", []):
                    assert port_name.match(port["name"]), port["name"]
            if obj["kind"] == "Service":
                labelled.append(obj["spec"]["selector"])
                for port in obj["spec"]["ports"]:
                    assert port_name.match(port["name"]), port["name"]
            for labels in labelled:
                for key, value in labels.items():
                    assert label_key.match(key) and label_value.match(value), (key, value)


# --- the objects are wired together ----------------------------------------------------------------


def test_apply_order_namespace_first_then_accounts_services_deployments_callees_first() -> None:
    shop = load_topology("shop")
    objects = everything(shop, namespace="bench")
    assert objects[0]["kind"] == "Namespace"
    assert objects[0]["metadata"]["name"] == "bench"
    assert all(o["metadata"]["namespace"] == "bench" for o in objects[1:])
    position = {(o["kind"], o["metadata"]["name"]): i for i, o in enumerate(objects)}
    for name in [*shop.names, LOADGEN_NAME]:
        assert position["ServiceAccount", name] < position["Deployment", name]
    for service in shop.services:
        assert position["Service", service.name] < position["Deployment", service.name]
        for callee in service.calls:
            assert position["Deployment", callee] < position["Deployment", service.name]
            assert position["Service", callee] < position["Deployment", service.name]


@pytest.mark.parametrize("namespace", ["testbed", "bench"])
def test_every_downstream_url_is_the_callees_service(tmp_path: Path, namespace: str) -> None:
    for topology in (load_topology("shop"), tiny_topology(tmp_path)):
        objects = everything(topology, namespace=namespace)
        services = of_kind(objects, "Service")
        deployments = of_kind(objects, "Deployment")
        for service in topology.services:
            urls = downstreams(deployments[service.name])
            assert list(urls) == list(service.calls)
            for callee, url in urls.items():
                parts = urlsplit(url)
                name, ns, svc, cluster, local = parts.hostname.split(".")  # type: ignore[union-attr]
                assert (ns, svc, cluster, local) == (namespace, "svc", "cluster", "local")
                target = services[name]
                assert name == callee
                assert target["metadata"]["namespace"] == namespace
                (port,) = target["spec"]["ports"]
                assert parts.port == port["port"] == APP_PORT
                assert (port["name"], port["appProtocol"]) == ("http", "http")
                # The Service's selector picks exactly the callee's pods, and its targetPort exists there.
                selected = [
                    d
                    for d in deployments.values()
                    if target["spec"]["selector"].items()
                    <= d["spec"]["template"]["metadata"]["labels"].items()
                ]
                assert [d["metadata"]["name"] for d in selected] == [callee]
                assert port["targetPort"] in [p["name"] for p in container(selected[0])["ports"]]
        assert service_url(topology.entry, namespace) == (
            f"http://{topology.entry}.{namespace}.svc.cluster.local:{APP_PORT}/"
        )


def test_deployments_select_their_own_pods_and_run_as_their_own_account() -> None:
    for deployment in of_kind(everything(load_topology("shop")), "Deployment").values():
        name = deployment["metadata"]["name"]
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"] == {"app": name}
        assert template_labels["app"] == name
        assert template_labels["app.kubernetes.io/part-of"] == "testbed"
        expected_account = LOADGEN_NAME if name == "loadgen-worker" else name
        assert pod_spec(deployment)["serviceAccountName"] == expected_account


def test_locust_workers_reach_the_master_in_the_loadgen_pod() -> None:
    objects = [
        *manifests(load_topology("shop"), image=IMAGE, namespace="bench", master_port=6000),
        *loadgen_workers(3, "master", 6000, image=IMAGE, namespace="bench"),
    ]
    services = of_kind(objects, "Service")
    deployments = of_kind(objects, "Deployment")
    workers = deployments["loadgen-worker"]
    assert workers["spec"]["replicas"] == 3
    assert container(workers)["command"] == [
        "python",
        "-m",
        "testbed.loadgen.worker",
        "master.bench.svc.cluster.local",
        "6000",
    ]
    master = services["master"]
    assert master["spec"]["selector"] == {"app": LOADGEN_NAME}
    (port,) = master["spec"]["ports"]
    assert port["port"] == port["targetPort"] == 6000
    assert port["name"].startswith("tcp")  # Istio: no HTTP sniffing of ZeroMQ
    loadgen_ports = container(deployments[LOADGEN_NAME])["ports"]
    assert [p["containerPort"] for p in loadgen_ports] == [6000]
    assert container(deployments[LOADGEN_NAME])["command"] == ["sleep", "infinity"]
    default = of_kind(loadgen_workers(1, image=IMAGE), "Service")
    (default_port,) = next(iter(default.values()))["spec"]["ports"]
    assert default_port["port"] == DEFAULT_MASTER_PORT


# The kubelet's safe sysctls at v1.35, the only ones a pod may set on a node without
# `allowedUnsafeSysctls` (kubernetes/kubernetes pkg/kubelet/sysctl/safe_sysctls.go, `safeSysctls`).
KUBELET_SAFE_SYSCTLS_1_35 = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
}
#: Linux's default ip_local_port_range, 32768-60999: what a --new-connection load ran out of.
DEFAULT_LOCAL_PORTS = 60999 - 32768 + 1


def sysctls(deployment: Obj) -> dict[str, str]:
    context = pod_spec(deployment).get("securityContext", {})
    return {s["name"]: s["value"] for s in context.get("sysctls", [])}


def test_the_load_generators_pods_have_more_local_ports_than_the_default(tmp_path: Path) -> None:
    """Every pod that opens the load's connections gets a wider local port range, by safe sysctls only."""
    deployments = of_kind(
        [
            *manifests(load_topology("shop"), image=IMAGE, master_port=6000),
            *loadgen_workers(2, "master", 6000, image=IMAGE),
        ],
        "Deployment",
    )
    for name in (LOADGEN_NAME, "loadgen-worker"):
        settings = sysctls(deployments[name])
        assert set(settings) <= KUBELET_SAFE_SYSCTLS_1_35, name  # else the kubelet refuses the pod
        low, high = map(int, settings["net.ipv4.ip_local_port_range"].split())
        # The kernel refuses a start below ip_unprivileged_port_start (1024 by default).
        assert 1024 <= low < high <= 65535, name
        assert high - low + 1 > 2 * DEFAULT_LOCAL_PORTS, name
    # The master binds its port anew every trial: no outgoing connection may hold it then.
    # Nor the listeners of a local master (`--processes N`): testbed.ports picks among the reserved ones.
    reserved = sysctls(deployments[LOADGEN_NAME])["net.ipv4.ip_local_reserved_ports"]
    assert reserved == "6000,5560-5579"
    file = tmp_path / "reserved"
    file.write_text(reserved)
    assert 6000 in reserved_ports(file) and len(reserved_ports(file)) == 21
    # The apps keep the node's defaults: their outgoing connections are pooled.
    assert all(not sysctls(d) for n, d in deployments.items() if n not in (LOADGEN_NAME, "loadgen-worker"))


def test_mesh_settings_reach_the_namespace_and_the_pods() -> None:
    objects = manifests(
        load_topology("shop"),
        image=IMAGE,
        namespace_labels={"istio-injection": "enabled"},
        namespace_annotations={"linkerd.io/inject": "enabled"},
        pod_annotations={"sidecar.istio.io/proxyCPU": "100m"},
    )
    namespace = objects[0]["metadata"]
    assert namespace["labels"] == {"app.kubernetes.io/part-of": "testbed", "istio-injection": "enabled"}
    assert namespace["annotations"] == {"linkerd.io/inject": "enabled"}
    for deployment in of_kind(objects, "Deployment").values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"sidecar.istio.io/proxyCPU": "100m"}
    plain = manifests(load_topology("shop"), image=IMAGE)
    assert "annotations" not in plain[0]["metadata"]
    assert all(
        "annotations" not in d["spec"]["template"]["metadata"] for d in of_kind(plain, "Deployment").values()
    )


def test_image_pull_policy_and_resources_come_from_the_parameters() -> None:
    small = Resources(cpu_request="10m", memory_request="16Mi", cpu_limit="200m", memory_limit="32Mi")
    objects = [
        *manifests(load_topology("shop"), image="example/testbed:1", app_resources=small),
        *loadgen_workers(1, image="example/testbed:1", resources=small),
    ]
    for name, deployment in of_kind(objects, "Deployment").items():
        c = container(deployment)
        assert (c["image"], c["imagePullPolicy"]) == ("example/testbed:1", "IfNotPresent")
        if name != LOADGEN_NAME:
            assert c["resources"] == {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "200m", "memory": "32Mi"},
            }
    loadgen_resources = container(of_kind(objects, "Deployment")[LOADGEN_NAME])["resources"]
    assert loadgen_resources["limits"] != small.to_dict()["limits"]


# --- the container commands work -------------------------------------------------------------------


def test_the_health_path_is_the_one_the_service_answers() -> None:
    from testbed.sut.service import HEALTH_PATH as SERVICE_HEALTH_PATH

    assert HEALTH_PATH == SERVICE_HEALTH_PATH


def test_each_app_container_command_starts_and_passes_its_readiness_probe(tmp_path: Path) -> None:
    """The Deployment's own argv, run here with only the in-image topology path and the port swapped."""
    from testbed.ports import free_ports

    deployments = of_kind(manifests(load_topology("shop"), image=IMAGE), "Deployment")
    apps = {name: d for name, d in deployments.items() if name != LOADGEN_NAME}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started: list[tuple[str, int, subprocess.Popen[bytes]]] = []
    try:
        for (name, deployment), port in zip(apps.items(), free_ports(len(apps)), strict=True):
            argv = list(container(deployment)["command"])
            assert argv[:3] == ["python", "-m", "testbed.sut.service"]
            topology_at = argv.index("--topology") + 1
            assert argv[topology_at] == f"{IMAGE_TOPOLOGIES_DIR}/shop.toml"
            argv[topology_at] = argv[topology_at].replace(IMAGE_TOPOLOGIES_DIR, str(TOPOLOGIES_DIR))
            assert argv[argv.index("--host") + 1] == "0.0.0.0"
            argv[argv.index("--host") + 1] = "127.0.0.1"
            assert argv[argv.index("--port") + 1] == str(container(deployment)["ports"][0]["containerPort"])
            argv[argv.index("--port") + 1] = str(port)
            with (tmp_path / f"{name}.log").open("wb") as log:
                process = subprocess.Popen([sys.executable, *argv[1:]], env=env, stdout=log, stderr=log)
            started.append((name, port, process))
        probe = container(deployments["frontend"])["readinessProbe"]["httpGet"]
        for name, port, process in started:
            deadline = time.monotonic() + 15
            while not _answers_200(port, probe["path"]):
                assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
                assert time.monotonic() < deadline, f"{name} never answered {probe['path']}"
                time.sleep(0.05)
    finally:
        for _, _, process in started:
            process.terminate()
            process.wait(timeout=10)


def _answers_200(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def test_containers_run_as_the_dockerfiles_non_root_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\S+)$", dockerfile, flags=re.MULTILINE)
    assert user == f"{RUN_AS_USER}:{RUN_AS_USER}"
    assert RUN_AS_USER != 0
    for deployment in of_kind(everything(load_topology("shop")), "Deployment").values():
        context = container(deployment)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == RUN_AS_USER
        assert context["allowPrivilegeEscalation"] is False
        # Pod-level runAsNonRoot would also bind the meshes' injected init containers, which need root;
        # the pod's only security setting is its network namespace's sysctls.
        assert set(pod_spec(deployment).get("securityContext", {})) <= {"sysctls"}


def test_the_dockerfile_puts_the_topologies_where_the_commands_look() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "ARG PYTHON_IMAGE"
    # A wheel-building stage first, then the image itself, both from the pinned base.
    assert [line for line in lines if line.startswith("FROM ")] == [
        "FROM ${PYTHON_IMAGE} AS wheels",
        "FROM ${PYTHON_IMAGE}",
    ]
    assert "WORKDIR /app" in lines
    assert "COPY scenarios ./scenarios" in lines
    assert IMAGE_TOPOLOGIES_DIR == "/app/scenarios/topologies"
    assert not [line for line in lines if line.startswith(("ENTRYPOINT", "CMD"))]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"results/", ".venv/", ".nox/", ".git/"} <= set(ignored)


# --- placement: every call crosses nodes ------------------------------------------------------------


def kind_nodes(mesh: str) -> list[dict[str, Any]]:
    config = yaml.safe_load(kindconfig.kind_config(mesh, name="testbed"))
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == "testbed"
    nodes: list[dict[str, Any]] = config["nodes"]
    return nodes


def node_of(nodes: Sequence[Mapping[str, Any]], deployment: Obj) -> int:
    """The one node of the kind configuration whose labels the Deployment's nodeSelector matches."""
    selector = pod_spec(deployment)["nodeSelector"].items()
    matches = [i for i, n in enumerate(nodes) if selector <= n.get("labels", {}).items()]
    assert len(matches) == 1, (deployment["metadata"]["name"], matches)
    return matches[0]


@pytest.mark.parametrize("mesh", [m for m in ALL_MESHES if m != "envoy"])
def test_three_workers_two_for_the_apps_one_for_the_load_generator(mesh: str) -> None:
    nodes = kind_nodes(mesh)
    assert [n["role"] for n in nodes] == ["control-plane", "worker", "worker", "worker"]
    assert "labels" not in nodes[0]
    workers = [n["labels"] for n in nodes[1:]]
    assert workers == [
        {ROLE_LABEL: APPS_A_ROLE, POOL_LABEL: APPS_POOL},
        {ROLE_LABEL: APPS_B_ROLE, POOL_LABEL: APPS_POOL},
        {ROLE_LABEL: LOADGEN_ROLE},
    ]
    # Shared proxies and control planes land on the app workers, never on the load generator's.
    pool = [i for i, n in enumerate(nodes) if SHARED_NODE_SELECTOR.items() <= n.get("labels", {}).items()]
    assert pool == [1, 2]
    # The plan scrapes and lists one node container per configured node, named as kind names them.
    assert ka.kind_nodes("testbed") == (
        "testbed-control-plane",
        "testbed-worker",
        "testbed-worker2",
        "testbed-worker3",
    )


@pytest.mark.parametrize("mesh", [m for m in ALL_MESHES if m != "envoy"])
def test_shop_is_placed_by_call_depth_and_every_call_crosses_nodes(mesh: str) -> None:
    nodes = kind_nodes(mesh)
    deployments = of_kind(everything(load_topology("shop")), "Deployment")
    placed = {name: node_of(nodes, d) for name, d in deployments.items()}
    # frontend is at depth 0, catalog and pricing at 1, inventory at 2 (frontend -> catalog -> inventory).
    assert placed == {
        "frontend": 1,
        "catalog": 2,
        "pricing": 2,
        "inventory": 1,
        LOADGEN_NAME: 3,
        "loadgen-worker": 3,
    }
    edges = call_edges(load_topology("shop"))
    assert edges == (
        (LOADGEN_NAME, "frontend"),
        ("frontend", "catalog"),
        ("frontend", "pricing"),
        ("catalog", "inventory"),
    )
    for caller, callee in edges:
        assert placed[caller] != placed[callee], (caller, callee)


def test_a_service_at_depths_of_both_parities_is_refused(tmp_path: Path) -> None:
    # a -> b -> c and a -> c: c is at depth 1 and 2, so no placement by parity keeps both calls off-node.
    path = tmp_path / "diamond.toml"
    path.write_text(
        'name = "diamond"\nentry = "a"\n[services.a]\ncalls = ["b", "c"]\n'
        '[services.b]\ncalls = ["c"]\n[services.c]\n'
    )
    topology = load_topology(path)  # a valid topology: the local platform runs it
    with pytest.raises(ConfigError, match=r"services\.c: reached at depth 1 \(a -> c\) and at depth 2"):
        manifests(topology, image=IMAGE)


def test_the_cilium_cluster_has_no_default_cni_and_no_kube_proxy() -> None:
    cilium = yaml.safe_load(kindconfig.kind_config("cilium", name="c"))
    assert cilium["networking"] == {"disableDefaultCNI": True, "kubeProxyMode": "none"}
    for mesh in ("none", "istio", "istio-ambient", "linkerd"):
        assert "networking" not in yaml.safe_load(kindconfig.kind_config(mesh, name="c"))
    plain = yaml.safe_load(kindconfig.kind_config("istio", name="c"))
    assert {k: v for k, v in cilium.items() if k != "networking"} == plain


def test_kind_config_names_and_meshes_are_checked() -> None:
    assert "name: bench-1.istio\n" in kindconfig.kind_config("istio", name="bench-1.istio")
    for bad in ("Testbed", "a_b", "", "x" * 51):
        with pytest.raises(UsageError, match="kind cluster name"):
            kindconfig.kind_config("istio", name=bad)
    with pytest.raises(UsageError, match="unknown mesh 'consul'"):
        kindconfig.template_name("consul")
    with pytest.raises(KeyError):
        kindconfig.render("name: ${name}\nimage: ${image}\n", name="x")


# --- refusals ---------------------------------------------------------------------------------------


def test_names_the_load_generator_uses_are_refused_for_services(tmp_path: Path) -> None:
    for taken in ("loadgen", "loadgen-worker", "loadgen-master"):
        path = tmp_path / f"{taken}.toml"
        path.write_text(TINY.replace("leaf", taken))
        with pytest.raises(ConfigError, match=f"services.{taken}: the name is taken"):
            manifests(load_topology(path), image=IMAGE)


def test_bad_worker_counts_and_names_are_refused() -> None:
    with pytest.raises(UsageError, match="at least 1 worker"):
        loadgen_workers(0, image=IMAGE)
    with pytest.raises(UsageError, match="not a DNS label"):
        loadgen_workers(1, "Master_Host", image=IMAGE)
    with pytest.raises(UsageError, match="taken"):
        loadgen_workers(1, LOADGEN_NAME, image=IMAGE)
    with pytest.raises(UsageError, match=r"must be 1\.\.65535"):
        loadgen_workers(1, port=0, image=IMAGE)
    with pytest.raises(UsageError, match="not a DNS label"):
        manifests(load_topology("shop"), image=IMAGE, namespace="Test_Bed")


# --- golden file ------------------------------------------------------------------------------------


def test_shop_manifests_match_the_golden_file() -> None:
    """A reviewable picture of what is applied; `TESTBED_UPDATE_GOLDEN=1 pytest ...` rewrites it."""
    document = to_yaml(everything(load_topology("shop")))
    if os.environ.get("TESTBED_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_bytes(document.encode())
        pytest.skip(f"rewrote {GOLDEN.relative_to(REPO)}")
    assert GOLDEN.is_file(), f"{GOLDEN} is missing: run with TESTBED_UPDATE_GOLDEN=1 to create it"
    assert document.encode() == GOLDEN.read_bytes(), (
        "manifests changed: review the diff, then rerun with TESTBED_UPDATE_GOLDEN=1 to accept it"
    )
