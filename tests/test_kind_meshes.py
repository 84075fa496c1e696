"""Istio (sidecar, ambient, waypoint), Linkerd and Cilium on kind, without a cluster.

Golden `--dry-run` plans per mesh; every flag of every mesh command traced to the file of the tool's
source it was read in (at the pinned tag: istio/istio 1.30.3, linkerd/linkerd2 edge-26.8.3,
cilium/cilium-cli v0.19.7, kubernetes-sigs/kind v0.32.0, kubernetes/kubectl v0.35.7); the mesh resources
against their CRDs; and whole runs through the fake at the `proc.run` seam (`tests/test_kind_platform.py`),
answering the verification commands with the fixtures of `tests/fixtures/mesh/`.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from testbed import cli
from testbed.errors import CommandError, TestbedError, UsageError
from testbed.kube import actions as ka
from testbed.kube import cluster as kp
from testbed.kube import images, manifests, metrics
from testbed.kube import trial as kt
from testbed.meshes import ALL_MESHES, evidence, kube_verify
from testbed.meshes.cilium import evidence as cilium_evidence
from testbed.meshes.cilium import kube as kube_cilium
from testbed.meshes.istio import evidence as istio_evidence
from testbed.meshes.istio import kube as kube_istio
from testbed.meshes.kube import KUBE_MESHES, KubeMesh, kube_mesh
from testbed.meshes.kube_resources import probe_objects
from testbed.meshes.linkerd import evidence as linkerd_evidence
from testbed.meshes.linkerd import kube as kube_linkerd
from testbed.spec.topology import load_topology
from testbed.spec.versions import load_versions
from tests.test_kind_platform import (  # pytest uses the imported fixtures (autouse) here too
    LOAD_RESULT,
    FakeCluster,
    keep_signal_handlers,  # noqa: F401
    mock_protection,  # noqa: F401
    normalise,
    select,
)
from tests.test_mesh_certs_and_resources import crd_validator
from tests.test_mesh_evidence import earlier

GOLDEN = Path(__file__).parent / "golden"
MESH_FIXTURES = Path(__file__).parent / "fixtures" / "mesh"
MESHES = ("istio", "istio-ambient", "linkerd", "cilium-plain", "cilium")
#: Each golden plan: its name, and the `testbed run` arguments that print it.
GOLDEN_PLANS = {
    **{mesh: ("--mesh", mesh) for mesh in MESHES},
    "istio-ambient-waypoint": ("--mesh", "istio-ambient", "--waypoint"),
}
HOST_PLATFORM = "linux/amd64"

SCENARIO = """
name = "tiny"
rates = [100]
duration_s = 10
warmup_s = 3
trials = 1
cooldown_s = 0
max_lateness_ms = 8
"""


def fixture(name: str) -> str:
    return (MESH_FIXTURES / name).read_text()


def ztunnel_services(*, waypoint: bool) -> str:
    """`istioctl ztunnel-config services --output json` for the shop topology in namespace testbed.

    istio/istio 1.30.3 istioctl/pkg/writer/ztunnel/configdump/services.go PrintServiceDump
    (`json.MarshalIndent(svcs, "", "    ")`, sorted by namespace and name) of api.go ZtunnelService, fields
    in struct order, empty ones with `omitempty` left out; the waypoint as ztunnel writes a hostname
    destination (istio/ztunnel a45c62f8 src/state/workload.rs: NamespacedHostname `namespace/hostname`).
    """
    services = []
    for i, name in enumerate(sorted(["catalog", "frontend", "inventory", "pricing", "waypoint"])):
        pod = f"Kubernetes//Pod/testbed/{name}-7b6d5c9f8-m2kps"
        ports = {"15008": 15008, "15021": 15021} if name == "waypoint" else {"8080": 8080}
        service: dict[str, Any] = {
            "name": name,
            "namespace": "testbed",
            "hostname": f"{name}.testbed.svc.cluster.local",
            "vips": [f"/10.96.{i}.10"],
            "ports": ports,
        }
        if waypoint and name != "waypoint":
            service["waypoint"] = {"destination": "testbed/waypoint.testbed.svc.cluster.local"}
        service |= {
            "endpoints": {
                f"{pod}:/10.244.1.1{i}": {
                    "workloadUid": pod,
                    "service": f"testbed/{name}.testbed.svc.cluster.local",
                    "address": f"/10.244.1.1{i}",
                    "port": ports,
                }
            },
            "ipFamilies": "IPv4",
        }
        services.append(service)
    return json.dumps(services, indent=4) + "\n"


def linkerd_metrics(deployment: str) -> str:
    """One deployment's part of the fixture (the fixture is loadgen's, frontend's and catalog's together)."""
    parts = re.split(r"(?m)^(?=#\n# POD )", fixture("linkerd-proxy-metrics-tls.txt"))
    return "".join(p for p in parts if p.startswith(f"#\n# POD {deployment}-"))


#: What the meshes' commands print by default: (which command lines, their stdout).
ANSWERS: list[tuple[Callable[[str], bool], Callable[[str], str]]] = [
    (lambda c: " exec deploy/loadgen " in c and " --rate 20 " in c, lambda c: LOAD_RESULT),
    (lambda c: " exec deploy/probe " in c, lambda c: fixture("plaintext-probe-reset.txt")),
    (lambda c: " exec ds/cilium " in c, lambda c: fixture("cilium-status-wireguard.txt")),
    (lambda c: " envoy-stats --selector app=ztunnel " in c, lambda c: fixture("ztunnel-metrics-mtls.txt")),
    (
        lambda c: " envoy-stats --selector gateway.networking.k8s.io/gateway-name=waypoint " in c,
        lambda c: fixture("istio-envoy-stats-waypoint.txt"),
    ),
    (lambda c: " envoy-stats " in c, lambda c: fixture("istio-envoy-stats-mtls.txt")),
    (lambda c: " ztunnel-config workloads " in c, lambda c: fixture("ztunnel-workloads-hbone.json")),
    (lambda c: " ztunnel-config services " in c, lambda c: ztunnel_services(waypoint=True)),
    (lambda c: " check --proxy " in c, lambda c: fixture("linkerd-check-proxy-ok.txt")),
    (lambda c: " diagnostics proxy-metrics " in c, lambda c: linkerd_metrics(c.rsplit("deploy/", 1)[1])),
    (
        lambda c: c.endswith(" get pods --namespace testbed --output json"),
        lambda c: fixture("pods-cross-node.json"),
    ),
    (
        lambda c: c.endswith(" get nodes -o name"),
        lambda c: "".join(f"node/{n}\n" for n in ka.kind_nodes("testbed-cilium")),
    ),
    (lambda c: c.startswith("linkerd ") and " install --crds" in c, lambda c: "# Linkerd's CRDs\n"),
    (lambda c: c.startswith("linkerd ") and " install " in c, lambda c: "# Linkerd's control plane\n"),
]


class FakeMeshCluster(FakeCluster):
    """The kind/kubectl fake, plus the meshes' CLIs and the verification commands' real output formats."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.stdin: list[tuple[str, str | None]] = []
        #: A piece of a command line and what that command prints instead of the default below.
        self.outputs: dict[str, str] = {}
        #: A piece of a command line and the exit code it ends with, after printing its output.
        self.exits: dict[str, int] = {}
        self.timeout_on: str | None = None

    def run(
        self, argv: Sequence[str], *, timeout: float = 120.0, input: str | None = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        line = " ".join([Path(argv[0]).name, *argv[1:]])
        self.stdin.append((line, input))
        if self.timeout_on is not None and self.timeout_on in line:
            self.calls.append(list(argv))
            raise CommandError(
                f"{line} did not finish within {timeout:g} s", argv=list(argv), exit_code=None, stdout="half"
            )
        for piece, code in self.exits.items():
            if piece in line:
                self.calls.append(list(argv))
                out = self.answer(line)
                raise CommandError(
                    f"{line} exited with code {code}", argv=list(argv), exit_code=code, stdout=out
                )
        return super().run(argv, timeout=timeout, input=input, **kwargs)

    def answer(self, line: str) -> str:
        for piece, text in self.outputs.items():
            if piece in line:
                return text
        if "/v1/debuginfo" in line:  # the node's agent, before or after the verification load
            node = line.split()[2].removeprefix("testbed-cilium-")
            text = fixture(f"cilium-debuginfo-{node}.json")
            # 100 kB less before: above the floor for the fake load's 1000 requests (kube_cilium).
            return text if any(" --rate 20 " in c for c in self.commands()) else earlier(text, 100_000)
        for matches, output in ANSWERS:
            if matches(line):
                return output(line)
        return super().answer(line)

    def index(self, piece: str) -> int:
        """The position of the first command that contains `piece`."""
        return next(i for i, c in enumerate(self.commands()) if piece in c)


@pytest.fixture
def images_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The archives' directory (empty), and the host's platform fixed so that their names are stable."""
    directory = tmp_path / "images"
    monkeypatch.setenv(images.ENV_DIR, str(directory))
    monkeypatch.setattr(images, "host_platform", lambda: HOST_PLATFORM)
    return directory


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, images_dir: Path) -> FakeMeshCluster:
    from testbed import proc

    monkeypatch.setattr(proc, "ECHO", False)
    return FakeMeshCluster(monkeypatch)


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SCENARIO)
    return path


def mesh_run(tmp_path: Path, scenario: Path, mesh: str, *args: str) -> int:
    argv = ["--quiet", "run", "--platform", "kind", "--mesh", mesh, "--scenario", str(scenario)]
    return cli.main([*argv, "--out", str(tmp_path / "results"), "--run-id", "r", *args])


def result(tmp_path: Path, mesh: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (tmp_path / "results" / "r" / mesh / "100" / "trial-1" / "result.json").read_text()
    )
    return data


# --- --dry-run: the golden plans ---------------------------------------------------------------------


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = cli.main(["run", "--platform", "kind", *args, "--scenario", "steady", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return normalise(out).replace(os.environ[images.ENV_DIR], "<images>")


@pytest.mark.parametrize("name", list(GOLDEN_PLANS))
def test_golden_plans(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake: FakeMeshCluster,
) -> None:
    """`testbed run --platform kind --mesh MESH --scenario steady --dry-run`, one golden file per mesh."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("PATH", str(work))  # no kind, kubectl or mesh CLI anywhere
    plan = dry_run(capsys, *GOLDEN_PLANS[name])
    golden = GOLDEN / f"plan-kind-{name}-steady.txt"
    if os.environ.get("TESTBED_UPDATE_GOLDEN"):
        golden.write_text(plan)
    assert plan == golden.read_text(), "plan changed: rerun with TESTBED_UPDATE_GOLDEN=1 and review the diff"
    assert fake.calls == [] and fake.builds == []
    assert list(work.iterdir()) == []  # nothing written: no certificates, no manifests


def cluster_sections(plan: str, mesh: str) -> str:
    """A mesh's plan from its preflight to its verification (trials are numbered across meshes)."""
    start = plan.index(f"== mesh {mesh}: preflight")
    return plan[start : plan.index("\n== trial ", start)]


def test_all_meshes_in_one_plan(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake: FakeMeshCluster,
) -> None:
    """The command of the issue prints each mesh's cluster plan as its golden file has it, in order."""
    monkeypatch.chdir(tmp_path)
    plan = dry_run(capsys, "--mesh", ",".join(MESHES))
    positions = [plan.index(f"== mesh {mesh}: preflight") for mesh in MESHES]
    assert positions == sorted(positions)
    assert plan.count("== trial ") == len(MESHES) * 10  # each mesh: 2 rates x 5 trials
    for mesh in MESHES:
        alone = (GOLDEN / f"plan-kind-{mesh}-steady.txt").read_text()
        assert cluster_sections(plan, mesh) == cluster_sections(alone, mesh)
        assert plan.count(f"+ kind delete cluster --name testbed-{mesh}\n") == 1


def test_the_archive_is_loaded_only_if_present_and_before_the_install(tmp_path: Path) -> None:
    versions = load_versions()
    archive = tmp_path / "images-istio.tar"
    plan = kp.kind_plan(
        kube_mesh("istio", "kind"),
        load_topology("shop"),
        versions=versions,
        workdir=tmp_path,
        logs_dir=tmp_path,
        archive=archive,
    )
    steps = [a for a in plan.provision if isinstance(a, ka.Step)]
    load = next(s for s in steps if "image-archive" in s.argv)
    assert load.argv == ("kind", "load", "image-archive", str(archive), "--name", "testbed-istio")
    assert load.only_if == ka.IfFile(archive) and not load.only_if.holds()
    install = next(s for s in steps if "install" in s.argv)
    assert steps.index(load) < steps.index(install)
    # `none` loads no archive, whatever it is given.
    none = kp.kind_plan(
        kube_mesh("none", "kind"),
        load_topology("shop"),
        versions=versions,
        workdir=tmp_path,
        logs_dir=tmp_path,
        archive=archive,
    )
    assert not any("image-archive" in a.argv for a in none.provision if isinstance(a, ka.Step))


# --- every flag, with the file it was read in --------------------------------------------------------

#: (program, subcommand, flag) -> the file at the pinned tag that defines the flag. The comment beside the
#: command in the module that builds it names the same file (checked below).
FLAG_SOURCES: dict[tuple[str, str, str], str] = {
    # istio/istio 1.30.3
    ("istioctl", "*", "--context"): "istioctl/pkg/cli/option.go",
    ("istioctl", "*", "--namespace"): "istioctl/pkg/cli/option.go",
    ("istioctl", "install", "--filename"): "operator/cmd/mesh/install.go",
    ("istioctl", "install", "--skip-confirmation"): "operator/cmd/mesh/install.go",
    ("istioctl", "waypoint", "--wait"): "istioctl/pkg/waypoint/waypoint.go",
    ("istioctl", "experimental", "--selector"): "istioctl/pkg/proxyconfig/proxyconfig.go",
    ("istioctl", "experimental", "--output"): "istioctl/pkg/proxyconfig/proxyconfig.go",
    ("istioctl", "experimental", "--proxy-admin-port"): "istioctl/pkg/proxyconfig/proxyconfig.go",
    ("istioctl", "ztunnel-config", "--workload-namespace"): "istioctl/pkg/ztunnelconfig/ztunnelconfig.go",
    ("istioctl", "ztunnel-config", "--output"): "istioctl/pkg/ztunnelconfig/ztunnelconfig.go",
    ("istioctl", "ztunnel-config", "--service-namespace"): "istioctl/pkg/ztunnelconfig/ztunnelconfig.go",
    # linkerd/linkerd2 edge-26.8.3
    ("linkerd", "*", "--context"): "cli/cmd/root.go",
    ("linkerd", "install", "--crds"): "cli/cmd/install.go",
    ("linkerd", "install", "--identity-trust-anchors-file"): "cli/cmd/options.go",
    ("linkerd", "install", "--identity-issuer-certificate-file"): "cli/cmd/options.go",
    ("linkerd", "install", "--identity-issuer-key-file"): "cli/cmd/options.go",
    ("linkerd", "install", "--proxy-cpu-limit"): "cli/cmd/options.go",
    ("linkerd", "install", "--proxy-cpu-request"): "cli/cmd/options.go",
    ("linkerd", "install", "--disable-heartbeat"): "cli/cmd/options.go",
    ("linkerd", "install", "--set-string"): "pkg/flags/flags.go",
    ("linkerd", "check", "--wait"): "cli/cmd/check.go",
    ("linkerd", "check", "--proxy"): "cli/cmd/check.go",
    ("linkerd", "check", "--namespace"): "cli/cmd/check.go",
    ("linkerd", "diagnostics", "--namespace"): "cli/cmd/metrics.go",
    # cilium/cilium-cli v0.19.7 (vendor/github.com/cilium/cilium/cilium-cli/)
    ("cilium", "*", "--context"): "cli/cmd.go",
    ("cilium", "install", "--version"): "cli/install.go",
    ("cilium", "install", "--set"): "cli/install.go",
    ("cilium", "status", "--wait"): "cli/status.go",
    ("cilium", "status", "--wait-duration"): "cli/status.go",
    # what `docker exec NODE` runs in a kind node: curl (curl/curl docs/cmdline-opts/)
    ("docker", "exec", "--silent"): "docs/cmdline-opts/",
    ("docker", "exec", "--show-error"): "docs/cmdline-opts/",
    ("docker", "exec", "--max-time"): "docs/cmdline-opts/",
    ("docker", "exec", "--unix-socket"): "docs/cmdline-opts/",
    # kubernetes-sigs/kind v0.32.0
    ("kind", "load", "--name"): "pkg/cmd/kind/load/image-archive/image-archive.go",
    # kubernetes/kubectl v0.35.7, kubernetes/cli-runtime v0.35.6
    ("kubectl", "*", "--context"): "pkg/genericclioptions/config_flags.go",
    ("kubectl", "*", "--namespace"): "pkg/genericclioptions/config_flags.go",
    ("kubectl", "*", "-n"): "config_flags.go",
    ("kubectl", "apply", "-f"): "pkg/cmd/apply/apply.go",
    ("kubectl", "apply", "--server-side"): "pkg/cmd/util/helpers.go AddServerSideApplyFlags",
    ("kubectl", "rollout", "--timeout"): "pkg/cmd/rollout/rollout_status.go",
    ("kubectl", "label", "--overwrite"): "pkg/cmd/label/label.go",
    ("kubectl", "exec", "-c"): "AddContainerVarFlags",
    ("kubectl", "exec", "--container"): "AddContainerVarFlags",
    ("kubectl", "get", "--output"): "pkg/cmd/get/get_flags.go",
    ("kubectl", "get", "-o"): "pkg/cmd/get/get_flags.go",
    # what kubectl exec runs in the pods: the testbed's own CLI
    ("testbed", "*", "--quiet"): "testbed/cli.py",
    ("testbed", "load", "--rate"): "testbed/cli.py",
    ("testbed", "load", "--duration"): "testbed/cli.py",
    ("testbed", "load", "--warmup"): "testbed/cli.py",
    ("testbed", "load", "--out"): "testbed/cli.py",
    ("python", "*", "-c"): "PROBE_SCRIPT",
}
#: Flags whose next word is their value (to find the subcommand after them).
VALUE_FLAGS = {"--context", "--namespace", "-n"}


def flags(argv: Sequence[str]) -> Iterator[tuple[str, str, str]]:
    """(program, subcommand, flag) of a command and of what it runs after `--` (kubectl exec)."""
    if "--" in argv:
        split = list(argv).index("--")
        yield from flags(argv[:split])
        yield from flags(argv[split + 1 :])
        return
    program, words = argv[0], list(argv[1:])
    subcommand, i = "", 0
    while i < len(words):
        if words[i] in VALUE_FLAGS:
            i += 2
        elif words[i].startswith("-"):
            i += 1
        else:
            subcommand = words[i]
            break
    for word in words:
        if word.startswith("-") and word != "-":
            yield program, subcommand, word


def commands(actions: Sequence[ka.Action]) -> Iterator[ka.Step]:
    for action in actions:
        if isinstance(action, ka.Step):
            yield action
        elif isinstance(action, ka.Pipe):
            yield from (action.producer, action.consumer)


def mesh_plans(tmp_path: Path) -> Iterator[tuple[KubeMesh, kp.ClusterPlan]]:
    for mesh in [*(kube_mesh(m, "kind") for m in MESHES), kube_mesh("istio-ambient", "kind", waypoint=True)]:
        plan = kp.kind_plan(
            mesh,
            load_topology("shop"),
            versions=load_versions(),
            workdir=tmp_path / mesh.config,
            logs_dir=tmp_path,
            archive=tmp_path / "archive.tar",
        )
        yield mesh, plan


def test_every_flag_of_the_meshes_is_cited(tmp_path: Path) -> None:
    sources = "\n".join(
        inspect.getsource(module)
        for module in (
            *(kube_istio, kube_linkerd, kube_cilium, kube_verify, evidence, kp, kt),
            *(istio_evidence, linkerd_evidence, cilium_evidence),
        )
    )
    used = set()
    for mesh, plan in mesh_plans(tmp_path):
        # All but the testbed image's load (test_kind_platform's golden plan shows its source).
        mesh_steps = [*plan.provision[1:], *plan.verify]
        for step in commands(mesh_steps):
            for program, subcommand, flag in flags(step.argv):
                key = (program, subcommand, flag)
                if key not in FLAG_SOURCES:
                    key = (program, "*", flag)
                assert key in FLAG_SOURCES, f"{mesh.name}: {program} {subcommand} {flag} has no cited source"
                assert FLAG_SOURCES[key] in sources, f"no comment names {FLAG_SOURCES[key]} ({key})"
                used.add(key)
    assert used == set(FLAG_SOURCES), f"cited but unused: {set(FLAG_SOURCES) - used}"


# --- the mesh resources ----------------------------------------------------------------------------------


def written(plan: kp.ClusterPlan, name: str) -> list[dict[str, Any]]:
    text = next(
        a.text for a in (*plan.provision, *plan.verify) if isinstance(a, ka.WriteFile) and a.path.name == name
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_istio_resources_in_the_plans_validate_against_the_crds(tmp_path: Path) -> None:
    validators = {
        "PeerAuthentication": crd_validator("istio-1.30.3-peerauthentication.yaml"),
        "Telemetry": crd_validator("istio-1.30.3-telemetry.yaml"),
    }
    for mesh, plan in mesh_plans(tmp_path):
        if not mesh.name.startswith("istio"):
            continue
        docs = written(plan, "istio-resources.yaml")
        assert [d["kind"] for d in docs] == ["PeerAuthentication", "Telemetry"]
        assert docs[0]["spec"] == {"mtls": {"mode": "STRICT"}}
        for doc in docs:
            validators[doc["kind"]].validate(doc)
        broken = {**docs[0], "spec": {"mtls": {"mode": "STRIKT"}}}
        with pytest.raises(jsonschema.ValidationError):
            validators["PeerAuthentication"].validate(broken)


def test_the_istio_operator_pins_placement_threads_and_ztunnels_log(tmp_path: Path) -> None:
    plans = {mesh.config: plan for mesh, plan in mesh_plans(tmp_path)}
    shared = {"testbed.io/pool": "apps"}  # the app workers' label in manifests/kind/cluster.yaml
    for config in ("istio", "istio-ambient", "istio-ambient-waypoint"):
        (iop,) = written(plans[config], "istio-operator.yaml")
        assert iop["apiVersion"] == "install.istio.io/v1alpha1" and iop["kind"] == "IstioOperator"
        spec = iop["spec"]
        assert spec["meshConfig"] == {"defaultConfig": {"concurrency": 2}}
        # istiod is never on the load generator's node.
        assert spec["components"]["pilot"]["k8s"]["nodeSelector"] == shared
        install = next(s for s in commands(plans[config].provision) if s.argv[3:4] == ("install",))
        assert install.argv[4:6] == ("--filename", str(tmp_path / config / "istio-operator.yaml"))
        assert "--set" not in install.argv
        # One istiod all run long: the chart's autoscaler (1 to 5 istiods) would change istio-system's
        # pods mid-trial on a cluster with metrics-server.
        assert spec["values"]["pilot"] == {"autoscaleEnabled": False}
    assert written(plans["istio"], "istio-operator.yaml")[0]["spec"]["profile"] == "minimal"
    assert set(written(plans["istio"], "istio-operator.yaml")[0]["spec"]["values"]) == {"pilot"}
    # Both ambient variants share the cluster testbed-istio-ambient: one install for both.
    (ambient,) = written(plans["istio-ambient"], "istio-operator.yaml")
    assert written(plans["istio-ambient-waypoint"], "istio-operator.yaml") == [ambient]
    values = ambient["spec"]["values"]
    assert ambient["spec"]["profile"] == "ambient"
    # The waypoint's nodeSelector reaches the chart through unvalidatedValues: under spec.values the
    # operator checks it as a corev1.NodeSelector (only `nodeSelectorTerms`) and refuses a plain map.
    assert ambient["spec"]["unvalidatedValues"] == {"global": {"waypoint": {"nodeSelector": shared}}}
    validated_waypoint = values.get("global", {}).get("waypoint", {})
    assert set(validated_waypoint.get("nodeSelector", {})) <= {"nodeSelectorTerms"}
    # ztunnel reads no ProxyConfig concurrency (its chart passes none): its threads are set explicitly,
    # and its per-connection access log (INFO, target "access") is off.
    assert values["ztunnel"] == {"env": {"ZTUNNEL_WORKER_THREADS": "2"}, "logLevel": "info,access=warn"}
    text = next(
        a.text
        for a in plans["istio-ambient"].provision
        if isinstance(a, ka.WriteFile) and a.path.name == "istio-operator.yaml"
    )
    assert "&" not in text and "*" not in text  # no YAML anchors: the same selector written twice


def test_the_probe_and_the_waypoint_namespace_validate(tmp_path: Path) -> None:
    objects = probe_objects("testbed:0.1.0")
    waypoint = next(plan for mesh, plan in mesh_plans(tmp_path) if mesh.config == "istio-ambient-waypoint")
    for obj in [*objects, *written(waypoint, "namespace.yaml")]:
        kubernetes_validate.validate(obj, "1.35.0", strict=True)
    namespace, deployment = objects
    assert namespace["metadata"]["name"] == evidence.PROBE_NAMESPACE
    # Out of every mesh explicitly, in case one enrols namespaces by default.
    assert namespace["metadata"]["labels"]["istio-injection"] == "disabled"
    assert namespace["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
    assert namespace["metadata"]["annotations"] == {"linkerd.io/inject": "disabled"}
    assert deployment["metadata"]["name"] == evidence.PROBE_DEPLOYMENT
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"testbed.io/role": "loadgen"}
    # The waypoint's namespace is the topology's, enrolled in ambient before the waypoint is applied.
    (ns,) = written(waypoint, "namespace.yaml")
    manifests = written(waypoint, "manifests.yaml")
    assert ns == manifests[0] and ns["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"


# --- the registry, images and resource attribution -----------------------------------------------------


def test_every_mesh_but_the_local_stand_in_is_registered() -> None:
    assert set(KUBE_MESHES) == set(ALL_MESHES) - {"envoy"}
    versions = load_versions()
    for name, mesh in KUBE_MESHES.items():
        assert mesh.name == name and mesh.config in images.CONFIGURATIONS
        assert list(mesh.images(versions)) == [i.ref for i in images.archived(mesh.config, versions)]
        assert set(mesh.tools) <= set(versions.tools)
    assert kube_mesh("istio-ambient", "kind", waypoint=True).config == "istio-ambient-waypoint"
    assert kube_mesh("istio", "kind", waypoint=True) is KUBE_MESHES["istio"]
    assert KUBE_MESHES["cilium"].replaces_cni and not KUBE_MESHES["istio"].replaces_cni


def pod(workload: str) -> str:
    return f"{workload}-7b6d5c9f8-m2kps" if workload != "cilium" else "cilium-x7k2p"


@pytest.mark.parametrize("name", [*MESHES, "waypoint"])
def test_each_meshs_workloads_count_for_their_component(name: str) -> None:
    mesh = (
        kube_mesh("istio-ambient", "kind", waypoint=True) if name == "waypoint" else kube_mesh(name, "kind")
    )
    for workload, expected in mesh.components.items():
        namespace = "testbed" if workload == kube_istio.WAYPOINT else "kube-system"
        assert metrics.component(namespace, pod(workload), "c", workloads=mesh.components) == expected
        if workload != kube_istio.WAYPOINT:  # the table in testbed.kube.metrics agrees
            assert metrics.component(namespace, pod(workload), "c") == expected
    # The waypoint's container is istio-proxy: without the mesh's workloads it would count as a sidecar.
    assert metrics.component("testbed", pod("waypoint"), "istio-proxy") == "sidecar"


# --- runs through the fake -----------------------------------------------------------------------------


def test_an_istio_run_verifies_then_records_the_evidence_in_every_trial(
    tmp_path: Path, scenario: Path, fake: FakeMeshCluster
) -> None:
    assert mesh_run(tmp_path, scenario, "istio") == 0
    order = [
        "kind load docker-image",
        "istioctl --context kind-testbed-istio install --filename "
        + str(tmp_path / "results" / "r" / "work" / "istio" / "istio-operator.yaml"),
        "apply -f " + str(tmp_path / "results" / "r" / "work" / "istio" / "istio-resources.yaml"),
        "manifests.yaml",
        "rollout status deploy/probe -n testbed-plain",
        "--rate 20 --duration 3 --warmup 0",
        "experimental envoy-stats",
        "exec deploy/probe",
        "get pods --namespace testbed --output json",
        "--rate 100 --duration 10",
        "kind delete cluster --name testbed-istio",
    ]
    positions = [fake.index(piece) for piece in order]
    assert positions == sorted(positions)
    assert not any("image-archive" in c for c in fake.commands())  # no archive saved: nothing to load
    found = result(tmp_path, "istio")["mesh_evidence"]
    assert found["mesh"] == "istio" and found["encrypted"] and found["mtls"] == "STRICT"
    assert [c["name"] for c in found["checks"]] == [
        "verification-load",
        "istio-sidecar-mtls",
        "envoy-concurrency",
        "plaintext-refused",
        "cross-node",
    ]
    verify = tmp_path / "results" / "r" / "work" / "istio" / "verify"
    assert (verify / "istio-envoy-stats.txt").read_text() == fixture("istio-envoy-stats-mtls.txt")


def test_a_failed_verification_stops_the_run_keeps_the_logs_and_deletes_the_cluster(
    tmp_path: Path, scenario: Path, fake: FakeMeshCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.outputs["envoy-stats"] = fixture("istio-envoy-stats-permissive.txt")
    assert mesh_run(tmp_path, scenario, "istio") == 1
    logs = tmp_path / "results" / "r" / "logs" / "istio"
    assert fake.commands()[-2:] == [
        f"kind export logs {logs} --name testbed-istio",
        "kind delete cluster --name testbed-istio",
    ]
    assert not any("--rate 100" in c for c in fake.commands())  # no trial of an unverified mesh
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the istio mesh could not be verified: istio-sidecar-mtls:" in err
    assert "were not mutual TLS" in err and "work/istio/verify" in err
    meta = json.loads((tmp_path / "results" / "r" / "run.json").read_text())
    assert meta["status"] == "failed"


def test_an_install_that_times_out_keeps_the_logs_and_deletes_the_cluster(
    tmp_path: Path, scenario: Path, fake: FakeMeshCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.timeout_on = "istioctl --context kind-testbed-istio-ambient install"
    assert mesh_run(tmp_path, scenario, "istio-ambient") == 1
    logs = tmp_path / "results" / "r" / "logs" / "istio-ambient"
    assert fake.commands()[-2:] == [
        f"kind export logs {logs} --name testbed-istio-ambient",
        "kind delete cluster --name testbed-istio-ambient",
    ]
    assert not any("manifests.yaml" in c for c in fake.commands())
    assert "did not finish within 1200 s" in capsys.readouterr().err


def test_a_check_that_exits_non_zero_is_judged_by_what_it_printed(
    tmp_path: Path, scenario: Path, fake: FakeMeshCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.outputs["check --proxy"] = fixture("linkerd-check-proxy-not-ready.txt")
    fake.exits["check --proxy"] = 1
    assert mesh_run(tmp_path, scenario, "linkerd") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "linkerd-check-proxy: linkerd check --proxy failed" in err
    kept = tmp_path / "results" / "r" / "work" / "linkerd" / "verify" / "linkerd-check-proxy.txt"
    assert kept.read_text().startswith(fixture("linkerd-check-proxy-not-ready.txt"))
    assert "# exit code 1" in kept.read_text()
    assert fake.commands()[-1] == "kind delete cluster --name testbed-linkerd"


def test_linkerds_install_pipes_each_producer_into_kubectl(
    tmp_path: Path, scenario: Path, fake: FakeMeshCluster
) -> None:
    assert mesh_run(tmp_path, scenario, "linkerd") == 0
    apply = "kubectl --context kind-testbed-linkerd apply -f -"
    for producer, produced in (
        ("linkerd --context kind-testbed-linkerd install --crds", "# Linkerd's CRDs\n"),
        (
            "linkerd --context kind-testbed-linkerd install --identity-trust-anchors-file",
            "# Linkerd's control plane\n",
        ),
    ):
        at = next(i for i, (line, _) in enumerate(fake.stdin) if line.startswith(producer))
        assert fake.stdin[at][1] is None
        assert fake.stdin[at + 1] == (apply, produced)  # the producer's stdout, as the consumer's stdin
    pki = tmp_path / "results" / "r" / "work" / "linkerd" / "linkerd-pki"
    assert sorted(p.name for p in pki.iterdir()) == ["ca.crt", "issuer.crt", "issuer.key"]
    assert stat.S_IMODE((pki / "issuer.key").stat().st_mode) == 0o600
    control_plane = next(c for c in fake.commands("linkerd") if "--identity-trust-anchors-file" in c)
    assert f"--identity-trust-anchors-file {pki / 'ca.crt'}" in control_plane
    assert "--proxy-cpu-limit 2 --proxy-cpu-request 100m --disable-heartbeat" in control_plane
    assert control_plane.endswith(" --set-string nodeSelector.testbed\\.io/pool=apps")
    # Linkerd's own install error names v1.5.1 (manifests/versions.toml gateway_api.linkerd_version).
    assert fake.index("gateway-api/releases/download/v1.5.1") < fake.index("install --crds")
    assert fake.index("install --crds") < fake.index("linkerd --context kind-testbed-linkerd check --wait 5m")
    found = result(tmp_path, "linkerd")["mesh_evidence"]
    assert found["encrypted"] and found["default_inbound_policy"] == "all-unauthenticated"
    assert found["require_identity_ports"] == "8080"
    assert [c["name"] for c in found["checks"]] == [
        "verification-load",
        "linkerd-check-proxy",
        "linkerd-proxy-tls",
        "plaintext-refused",
        "cross-node",
    ]


@pytest.mark.parametrize("archived", [False, True])
def test_cilium_without_kinds_cni_and_with_or_without_the_archive(
    archived: bool, tmp_path: Path, scenario: Path, fake: FakeMeshCluster, images_dir: Path
) -> None:
    archive = images.archive_path("cilium", versions=load_versions())
    assert archive.parent == images_dir
    if archived:
        images_dir.mkdir()
        archive.write_bytes(b"")
    assert mesh_run(tmp_path, scenario, "cilium") == 0
    create = next(c for c in fake.commands("kind") if c.startswith("kind create cluster"))
    assert "--wait" not in create
    config = yaml.safe_load((tmp_path / "results" / "r" / "work" / "cilium" / "kind-config.yaml").read_text())
    assert config["networking"] == {"disableDefaultCNI": True, "kubeProxyMode": "none"}
    installs = [c for c in fake.commands("cilium") if " install " in c]
    assert len(installs) == 1
    assert "--set encryption.enabled=true --set encryption.type=wireguard" in installs[0]
    # The operator off the load generator's node (helm strvals: the label's dot escaped).
    assert "--set operator.nodeSelector.testbed\\.io/pool=apps" in installs[0]
    assert ("--set image.useDigest=false" in installs[0]) is archived
    loaded = [c for c in fake.commands("kind") if "image-archive" in c]
    assert loaded == ([f"kind load image-archive {archive} --name testbed-cilium"] if archived else [])
    if archived:
        assert fake.index("image-archive") < fake.index("cilium --context kind-testbed-cilium install")
    found = result(tmp_path, "cilium")["mesh_evidence"]
    assert found["encrypted"] and found["mutual_auth"] is False
    assert [c["name"] for c in found["checks"]] == [
        "verification-load",
        "cilium-wireguard",
        "cross-node",
        "cilium-wireguard-transfer",
    ]
    assert not any("deploy/probe" in c for c in fake.commands())  # WireGuard refuses no plaintext
    # Each node's agent read before and after the load; every crossing pair carried it through WireGuard.
    reads = [i for i, c in enumerate(fake.commands()) if "/v1/debuginfo" in c]
    load = fake.index(" --rate 20 ")
    nodes = ka.kind_nodes("testbed-cilium")
    assert len(reads) == 2 * len(nodes) and max(reads[: len(nodes)]) < load < min(reads[len(nodes) :])
    transfer = found["checks"][-1]
    assert transfer["passed"] and [p["nodes"] for p in transfer["data"]["pairs"]] == [
        ["testbed-cilium-worker", "testbed-cilium-worker2"],
        ["testbed-cilium-worker", "testbed-cilium-worker3"],
    ]
    assert "between nodes (WireGuard)" in found["encrypted_where"]


def test_cilium_plain_is_cilium_without_encryption(
    tmp_path: Path, scenario: Path, fake: FakeMeshCluster
) -> None:
    fake.outputs[" exec ds/cilium "] = fixture("cilium-status-disabled.txt")
    assert mesh_run(tmp_path, scenario, "cilium-plain") == 0
    work = tmp_path / "results" / "r" / "work" / "cilium-plain"
    config = yaml.safe_load((work / "kind-config.yaml").read_text())
    assert config["networking"] == {"disableDefaultCNI": True, "kubeProxyMode": "none"}
    (install,) = [c for c in fake.commands("cilium") if " install " in c]
    plain = KUBE_MESHES["cilium-plain"]
    assert isinstance(plain, kube_cilium.Cilium) and not plain.encrypted
    # Exactly the values of `cilium`, but encryption.
    assert set(plain.values()) ^ set(kube_cilium.Cilium().values()) == {
        "encryption.enabled=false",
        "encryption.enabled=true",
        "encryption.type=wireguard",
    }
    assert "--set encryption.enabled=false" in install and "wireguard" not in install
    assert not any("/v1/debuginfo" in c for c in fake.commands())
    found = result(tmp_path, "cilium-plain")["mesh_evidence"]
    assert found["encrypted"] is False and found["encryption"] == "none"
    assert [c["name"] for c in found["checks"]] == ["verification-load", "cilium-unencrypted", "cross-node"]
    # Cilium with WireGuard in the baseline's place is refused: it would measure the encryption.
    fake.outputs[" exec ds/cilium "] = fixture("cilium-status-wireguard.txt")
    plan = next(plan for mesh, plan in mesh_plans(tmp_path) if mesh.name == "cilium-plain")
    outputs = {
        kube_verify.LOAD: LOAD_RESULT,
        kube_cilium.STATUS_PLAIN: fixture("cilium-status-wireguard.txt"),
        kube_verify.PODS: fixture("pods-cross-node.json"),
    }
    with pytest.raises(TestbedError, match="cilium-unencrypted: Cilium encryption is Wireguard"):
        plain.evidence(outputs, plan.mesh_context)


def test_the_waypoint_run(tmp_path: Path, scenario: Path, fake: FakeMeshCluster) -> None:
    assert mesh_run(tmp_path, scenario, "istio-ambient", "--waypoint") == 0
    # The namespace is enrolled only once the waypoint's Deployment is ready, not when its Gateway is
    # Programmed (which `waypoint apply --wait` waits for), and before the topology's pods start.
    order = [
        "gateway-api/releases/download/v1.5.1",
        "istioctl --context kind-testbed-istio-ambient install --filename ",
        "waypoint apply --namespace testbed --wait",
        "rollout status deploy/waypoint -n testbed",
        "label namespace testbed istio.io/use-waypoint=waypoint --overwrite",
        "manifests.yaml",
        "--rate 20 --duration 3 --warmup 0",
        "envoy-stats --selector app=ztunnel --output prom --proxy-admin-port 15020",
        "envoy-stats --selector gateway.networking.k8s.io/gateway-name=waypoint",
        "exec deploy/probe",
    ]
    positions = [fake.index(piece) for piece in order]
    assert positions == sorted(positions)
    assert not any("--enroll-namespace" in c for c in fake.commands())
    found = result(tmp_path, "istio-ambient")["mesh_evidence"]
    assert found["waypoint"] is True and found["encrypted"]
    assert found["ztunnel_worker_threads"] == 2 and found["ztunnel_log_level"] == "info,access=warn"
    names = [c["name"] for c in found["checks"]]
    assert names.index("ztunnel-mtls") < names.index("waypoint-mtls")
    served = next(c for c in found["checks"] if c["name"] == "waypoint-mtls")
    assert served["data"]["requests_by_service"] == {
        "inventory": 60,
        "catalog": 60,
        "pricing": 60,
        "frontend": 60,
    }
    check = next(c for c in found["checks"] if c["name"] == "waypoint-in-path")
    assert check["data"]["waypoints"] == {
        s: "testbed/waypoint.testbed.svc.cluster.local"
        for s in ("inventory", "catalog", "pricing", "frontend")
    }
    meta = json.loads((tmp_path / "results" / "r" / "run.json").read_text())
    assert meta["versions"]["gateway_api"] == "v1.5.1"


def test_without_a_waypoint_on_the_services_the_waypoint_variant_fails(tmp_path: Path) -> None:
    plan = next(plan for mesh, plan in mesh_plans(tmp_path) if mesh.config == "istio-ambient-waypoint")
    outputs = {
        kube_verify.LOAD: LOAD_RESULT,
        kube_istio.ZTUNNEL_WORKLOADS: fixture("ztunnel-workloads-hbone.json"),
        kube_istio.ZTUNNEL_SERVICES: ztunnel_services(waypoint=False),
        kube_istio.ZTUNNEL_METRICS: fixture("ztunnel-metrics-mtls.txt"),
        # No reporter="waypoint" in a sidecar's stats: nothing went through a waypoint.
        kube_istio.WAYPOINT_STATS: fixture("istio-envoy-stats-mtls.txt"),
        kube_verify.PROBE: fixture("plaintext-probe-reset.txt"),
        kube_verify.PODS: fixture("pods-cross-node.json"),
    }
    mesh = kube_mesh("istio-ambient", "kind", waypoint=True)
    with pytest.raises(TestbedError, match=r"waypoint-in-path: no waypoint for inventory, catalog, pricing"):
        mesh.evidence(outputs, plan.mesh_context)
    with pytest.raises(
        TestbedError, match=r"waypoint-mtls: no request to inventory, catalog, pricing, frontend"
    ):
        mesh.evidence(outputs, plan.mesh_context)
    outputs[kube_istio.ZTUNNEL_SERVICES] = "[]"
    with pytest.raises(TestbedError, match=r"waypoint-in-path: ztunnel knows no Service inventory"):
        mesh.evidence(outputs, plan.mesh_context)
    # The plain ambient mesh needs no waypoint, and passes on the same output.
    assert kube_mesh("istio-ambient", "kind").evidence(outputs, plan.mesh_context)["encrypted"]


def test_ambient_evidence_needs_the_loads_traffic_over_mutual_tls(tmp_path: Path) -> None:
    plan = next(plan for mesh, plan in mesh_plans(tmp_path) if mesh.config == "istio-ambient-waypoint")
    outputs = {
        kube_verify.LOAD: LOAD_RESULT,
        kube_istio.ZTUNNEL_WORKLOADS: fixture("ztunnel-workloads-hbone.json"),
        kube_istio.ZTUNNEL_SERVICES: ztunnel_services(waypoint=True),
        kube_istio.ZTUNNEL_METRICS: fixture("ztunnel-metrics-mtls.txt"),
        kube_istio.WAYPOINT_STATS: fixture("istio-envoy-stats-waypoint.txt"),
        kube_verify.PROBE: fixture("plaintext-probe-reset.txt"),
        kube_verify.PODS: fixture("pods-cross-node.json"),
    }
    waypoint = kube_mesh("istio-ambient", "kind", waypoint=True)
    found = waypoint.evidence(outputs, plan.mesh_context)
    assert [c["name"] for c in found["checks"]] == [
        "verification-load",
        "ztunnel-hbone",
        "ztunnel-mtls",
        "waypoint-in-path",
        "waypoint-mtls",
        "envoy-concurrency",
        "plaintext-refused",
        "cross-node",
    ]
    assert found["ztunnel_worker_threads"] == 2 and found["ztunnel_log_level"] == "info,access=warn"
    # Configuration alone is not enough: ztunnel must have received the load's connections over mTLS.
    ambient = kube_mesh("istio-ambient", "kind")
    for text, why in [
        (fixture("ztunnel-metrics-plaintext.txt"), "ztunnel-mtls: ztunnel accepted 1 plaintext connection"),
        ("", "ztunnel-mtls: no Prometheus samples"),
    ]:
        with pytest.raises(TestbedError, match=why):
            ambient.evidence({**outputs, kube_istio.ZTUNNEL_METRICS: text}, plan.mesh_context)
    plaintext = {**outputs, kube_istio.WAYPOINT_STATS: fixture("istio-envoy-stats-waypoint-plaintext.txt")}
    with pytest.raises(TestbedError, match=r"waypoint-mtls: the waypoint served 60 request\(s\)"):
        waypoint.evidence(plaintext, plan.mesh_context)
    assert ambient.evidence(plaintext, plan.mesh_context)["waypoint"] is False  # reads no waypoint stats


def strvals_keys(assignment: str) -> tuple[list[str], str]:
    """The key path and value Helm's `--set-string` makes of `a.b\\.c=v`: a model of helm.sh/helm/v3
    v3.21.4 pkg/strvals/parser.go (`key` stops at `.` or `=`; runesUntil takes the rune after `\\`)."""
    keys, current, i = [], "", 0
    while i < len(assignment):
        c = assignment[i]
        if c == "\\":
            current += assignment[i + 1]
            i += 2
            continue
        if c in ".=":
            keys.append(current)
            current = ""
            if c == "=":
                return keys, assignment[i + 1 :]
        else:
            current += c
        i += 1
    raise AssertionError(f"no value in {assignment!r}")


def test_linkerds_control_plane_is_pinned_off_the_load_generators_node(tmp_path: Path) -> None:
    plan = dict((m.name, p) for m, p in mesh_plans(tmp_path))["linkerd"]
    install = next(
        s
        for s in commands(plan.provision)
        if "--identity-trust-anchors-file" in s.argv and s.argv[0] == "linkerd"
    )
    values: dict[str, Any] = {}
    argv = list(install.argv)
    for at, word in enumerate(argv):
        if word == "--set-string":
            keys, value = strvals_keys(argv[at + 1])
            node = values
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
    # The chart's top-level nodeSelector (values.yaml), merged with its default kubernetes.io/os: linux.
    assert values == {"nodeSelector": manifests.SHARED_NODE_SELECTOR}
    # Without the escape, Helm would make it {"testbed": {"io/pool": "apps"}}.
    assert strvals_keys("nodeSelector.testbed.io/pool=apps") == (
        ["nodeSelector", "testbed", "io/pool"],
        "apps",
    )
    with pytest.raises(UsageError, match="--set-string"):
        kube_linkerd.helm_set_string({"a,b": "c"}, "nodeSelector")


def go_duration_s(text: str) -> float:
    """A Go duration of the forms `linkerd check --wait` is given (`45s`, `5m`, `1m30s`)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    parts = re.fullmatch(r"(?:\d+[hms])+", text) and re.findall(r"(\d+)([hms])", text)
    assert parts, f"not a Go duration of whole units: {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def test_every_linkerd_check_gives_up_before_its_step_is_killed(tmp_path: Path) -> None:
    # cli/cmd/check.go: --wait defaults to 300 s; a step killed first leaves no word of which check failed.
    plan = dict((m.name, p) for m, p in mesh_plans(tmp_path))["linkerd"]
    checks = [s for s in commands([*plan.provision, *plan.verify]) if s.argv[:1] == ("linkerd",)]
    checks = [s for s in checks if "check" in s.argv]
    assert len(checks) == 2  # the control plane's, after the install; the data plane's, in verify
    for step in checks:
        assert "--wait" in step.argv, step.argv
        wait = go_duration_s(step.argv[step.argv.index("--wait") + 1])
        assert wait < step.timeout_s, (
            f"{' '.join(step.argv)}: --wait {wait} s, step killed at {step.timeout_s} s"
        )


def test_reuse_is_refused_for_linkerd_before_anything_runs(
    tmp_path: Path, scenario: Path, fake: FakeMeshCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    # cli/cmd/install.go checkNoConfig: "ConfigMap/linkerd-config already exists" on a second install.
    assert not KUBE_MESHES["linkerd"].supports_reuse
    assert mesh_run(tmp_path, scenario, "linkerd", "--reuse") == UsageError.return_code
    err = capsys.readouterr().err
    assert "--reuse does not work with the linkerd mesh" in err
    assert "kind delete cluster --name testbed-linkerd" in err
    assert fake.commands() == []
    code = cli.main(
        ["run", "--platform", "kind", "--mesh", "linkerd", "--reuse", "--scenario", "steady", "--dry-run"]
    )
    assert code == UsageError.return_code
    # The meshes whose install may run again are not refused, and linkerd without --reuse is not either.
    for argv in (("--mesh", "istio", "--reuse"), ("--mesh", "linkerd")):
        assert cli.main(["run", "--platform", "kind", *argv, "--scenario", "steady", "--dry-run"]) == 0


@pytest.mark.parametrize("mesh", ["cilium", "cilium-plain"])
def test_reuse_is_refused_for_cilium_before_anything_runs(
    mesh: str, tmp_path: Path, scenario: Path, fake: FakeMeshCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    # cilium-cli v0.19.7 install/install.go always runs a Helm install; Helm refuses a name in use.
    assert not KUBE_MESHES[mesh].supports_reuse
    assert mesh_run(tmp_path, scenario, mesh, "--reuse") == UsageError.return_code
    err = capsys.readouterr().err
    assert f"--reuse does not work with the {mesh} mesh" in err
    assert fake.commands() == []


def test_linkerd_accepts_its_403_and_istio_does_not(tmp_path: Path) -> None:
    plans = {mesh.config: plan for mesh, plan in mesh_plans(tmp_path)}
    probe = fixture("plaintext-probe-403.txt")
    linkerd_outputs = {
        kube_verify.LOAD: LOAD_RESULT,
        kube_linkerd.CHECK_PROXY: fixture("linkerd-check-proxy-ok.txt"),
        **{kube_linkerd.METRICS.format(d): linkerd_metrics(d) for d in ("loadgen", "frontend", "catalog")},
        kube_verify.PROBE: probe,
        kube_verify.PODS: fixture("pods-cross-node.json"),
    }
    assert KUBE_MESHES["linkerd"].evidence(linkerd_outputs, plans["linkerd"].mesh_context)["encrypted"]
    istio_outputs = {
        kube_verify.LOAD: LOAD_RESULT,
        kube_istio.SIDECAR_STATS: fixture("istio-envoy-stats-mtls.txt"),
        kube_verify.PROBE: probe,
        kube_verify.PODS: fixture("pods-cross-node.json"),
    }
    with pytest.raises(TestbedError, match=r"plaintext-refused: .* answered HTTP 403"):
        KUBE_MESHES["istio"].evidence(istio_outputs, plans["istio"].mesh_context)


def test_a_verification_load_with_errors_fails() -> None:
    failing = json.loads(LOAD_RESULT) | {"errors": 3, "error_kinds": {"503": 3}}
    check = kube_verify.load_check(json.dumps(failing))
    assert not check.passed and "3 of 1000 requests" in check.detail and "503 3" in check.detail
    assert not kube_verify.load_check("Traceback (most recent call last):").passed
    assert kube_verify.load_check(LOAD_RESULT).passed


def test_cilium_without_nodes_cannot_pass(tmp_path: Path) -> None:
    plan = next(plan for mesh, plan in mesh_plans(tmp_path) if mesh.name == "cilium")
    outputs = {
        kube_verify.LOAD: LOAD_RESULT,
        kube_cilium.NODES: "",
        kube_cilium.STATUS: fixture("cilium-status-wireguard.txt"),
        kube_verify.PODS: fixture("pods-cross-node.json"),
    }
    with pytest.raises(TestbedError, match="cilium-wireguard: `kubectl get nodes -o name` listed no node"):
        KUBE_MESHES["cilium"].evidence(outputs, plan.mesh_context)


# --- the mesh's own pods, read around every trial ------------------------------------------------------

#: Per mesh, what carries or steers its traffic outside the app namespace (`KubeMesh.traffic_pods`).
TRAFFIC_PODS = {
    "none": (),
    "istio": (("istio-system", "app=istiod"),),
    "istio-ambient": (
        ("istio-system", "app=istiod"),
        ("istio-system", "app=ztunnel"),
        ("istio-system", "k8s-app=istio-cni-node"),
    ),
    "linkerd": (("linkerd", "linkerd.io/control-plane-ns=linkerd"),),
    "cilium-plain": (("kube-system", "k8s-app=cilium"), ("kube-system", "k8s-app=cilium-envoy")),
}
#: Per mesh, the pods of its fixture left out on purpose: Cilium's operator carries no traffic, and
#: restarts whenever it loses its leader lease (testbed.meshes.cilium.kube `traffic_pods`).
NOT_TRAFFIC = {"cilium": ("kube-system", "io.cilium/app=operator")}
TRAFFIC_PODS["cilium"] = TRAFFIC_PODS["cilium-plain"]


def fixture_pods(namespace: str) -> str:
    return (Path(__file__).parent / "fixtures" / "kind-trial-pods" / f"mesh-{namespace}.json").read_text()


@pytest.mark.parametrize("name", list(KUBE_MESHES))
def test_each_mesh_names_the_pods_that_carry_its_traffic(name: str) -> None:
    """Each selector picks pods of the chart-shaped fixture, and together they leave none of them out."""
    mesh = KUBE_MESHES[name]
    assert mesh.traffic_pods == TRAFFIC_PODS[name]
    assert kube_mesh(name, "kind", waypoint=True).traffic_pods == mesh.traffic_pods
    picked: dict[str, set[str]] = {}
    for namespace, selector in mesh.traffic_pods:
        names = {pod["metadata"]["name"] for pod in json.loads(select(namespace, selector))["items"]}
        assert names, f"{selector} selects no pod of mesh-{namespace}.json"
        picked.setdefault(namespace, set()).update(names)
    if name in ("istio-ambient", "linkerd", "cilium"):  # the fixtures hold these meshes' pods
        for namespace, names in picked.items():
            every = {p["metadata"]["name"] for p in json.loads(fixture_pods(namespace))["items"]}
            if name in NOT_TRAFFIC:
                left_out = {p["metadata"]["name"] for p in json.loads(select(*NOT_TRAFFIC[name]))["items"]}
                assert left_out and not left_out & names
                every -= left_out
            assert names == every


def test_a_ztunnel_restart_fails_the_ambient_trial(
    tmp_path: Path, scenario: Path, fake: FakeMeshCluster
) -> None:
    """ztunnel (istio-system) carries every connection in ambient: its restart spoils the trial."""
    healthy = select("istio-system", "app=ztunnel")
    document = json.loads(healthy)
    document["items"][0]["status"]["containerStatuses"][0] |= {
        "restartCount": 1,
        "lastState": {
            "terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-12-03T12:04:17Z"}
        },
    }
    restarted = json.dumps(document, indent=4)
    fake.selected_pods["app=ztunnel"] = [healthy, restarted]
    assert mesh_run(tmp_path, scenario, "istio-ambient", "--waypoint") == 3
    trial = tmp_path / "results" / "r" / "istio-ambient" / "100" / "trial-1"
    failed = json.loads((trial / "failed.json").read_text())
    assert failed["cause"] == (
        "container istio-proxy of pod istio-system/ztunnel-d2q7x restarted 1 time(s) "
        "(last: OOMKilled, exit code 137, at 2026-12-03T12:04:17Z)"
    )
    assert failed["problems"][0]["namespace"] == "istio-system"
    files = {entry["selector"]: entry for entry in failed["mesh_pods"]}
    assert set(files) == {"app=istiod", "app=ztunnel", "k8s-app=istio-cni-node"}
    assert Path(files["app=ztunnel"]["after"]).read_text() == restarted
    assert Path(files["app=ztunnel"]["before"]).name == "pods-istio-system-app-ztunnel-before.json"
    assert not (trial / "result.json").exists()
    # Each trial reads every mesh selector right before the load and right after it.
    reads = [
        c
        for c in fake.commands("kubectl")
        if (" exec deploy/loadgen " in c and " --tail " in c) or " get pods -n istio-system -l " in c
    ]  # the trials' loads (`--tail`), not the verification's
    selectors = [" -l app=istiod ", " -l app=ztunnel ", " -l k8s-app=istio-cni-node "]
    one_trial = [*selectors, " exec deploy/loadgen ", *selectors]
    assert [next(p for p in one_trial if p in c) for c in reads] == one_trial  # the scenario: 1 trial
