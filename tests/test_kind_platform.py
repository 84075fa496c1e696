"""The kind and existing platforms without a cluster: the plan, and every path through a fake at the seam.

No kind cluster can run here, so `testbed.proc.run` and `proc.stream` (the one command helper) are
replaced by `FakeCluster`, which answers kind and kubectl like the real tools do (kubelet scrapes from the
fixture, the load generator's JSON from a real `testbed load` result and its window marks on stderr), and
the Docker layer's public functions by stand-ins (the node reads from `fixtures/kind-node-reads/`).
`mock_protection` makes any real kind, kubectl, docker or helm call fail, like cibuildwheel's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed import cli, proc
from testbed.errors import CommandError, TrialFailed, UsageError
from testbed.kube import actions as ka
from testbed.kube import cluster as kp
from testbed.kube import docker, metrics, tools
from testbed.kube import trial as kt
from testbed.kube.manifests import WORKER_NAME
from testbed.kube.render import render_trial
from testbed.loadgen import marks
from testbed.loadgen.config import LoadConfig
from testbed.meshes.kube import kube_mesh
from testbed.platforms.kind import KindPlatform, inotify_problems
from testbed.platforms.kube import KubeDeployment, resources
from testbed.ports import free_port
from testbed.spec.scenario import CLOSED_LOOP_RATE
from testbed.spec.topology import load_topology
from testbed.spec.trials import Trial
from testbed.spec.versions import load_versions
from tests.conftest import REPO, NullServer
from tests.test_kube_metrics import NODE_READS, advance_read

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
METRICS = (FIXTURES / "kubelet-metrics-resource.txt").read_text()
#: A real `testbed load --out -` document (100 rps, 3 + 10 s, against the null server), target renamed.
LOAD_RESULT = (FIXTURES / "kind-load-result.json").read_text()
#: `kubectl get pods -n testbed -o json` before and after a trial (`testbed.kube.health`).
TRIAL_PODS = FIXTURES / "kind-trial-pods"

CLUSTER = "testbed-none"
NODES = ka.kind_nodes(CLUSTER)
FORBIDDEN = {"kind", "kubectl", "docker", "helm", "istioctl", "linkerd", "cilium"}

SCENARIO = """
name = "tiny"
rates = [100]
duration_s = 10
warmup_s = 3
trials = 2
cooldown_s = 0
max_lateness_ms = 8
"""


@pytest.fixture(autouse=True)
def mock_protection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any real run of a cluster tool fails the test (python-on-whales and proc both go through Popen)."""
    real_popen = subprocess.Popen

    def guarded(args: Any, *rest: Any, **kwargs: Any) -> Any:
        argv = [args] if isinstance(args, str | os.PathLike) else list(args)
        if any(Path(str(a)).name in FORBIDDEN for a in argv):
            raise AssertionError(f"a test tried to run a real cluster tool: {argv}")
        return real_popen(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", guarded)


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    """`cli.main` routes SIGTERM to KeyboardInterrupt; put the test process's handler back."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def advance(text: str, seconds: float, rate: Callable[[str], float]) -> str:
    """The kubelet's output `seconds` later: CPU counters grown by `rate(container)` per second."""

    def line(match: re.Match[str]) -> str:
        name, labels, value, stamp = match.groups()
        container = re.search(r'container="([^"]*)"', labels or "")
        if name == "container_cpu_usage_seconds_total":
            value = repr(float(value) + rate(container[1] if container else "") * seconds)
        elif name == "node_cpu_usage_seconds_total":
            value = repr(float(value) + 2.0 * seconds)
        return f"{name}{labels or ''} {value} {int(stamp) + int(seconds * 1000)}"

    return re.sub(r"^(\w+)(\{[^}]*\})? (\S+) (\d{13})$", line, text, flags=re.MULTILINE)


def small_node(name: str) -> str:
    """A node that runs nothing of the testbed's: its own series only."""
    return (
        f"node_cpu_usage_seconds_total 500.5 1764763199000\n"
        f"node_memory_working_set_bytes 1.073741824e+09 1764763199000\n"
        'container_cpu_usage_seconds_total{container="kindnet-cni",namespace="kube-system",'
        f'pod="kindnet-{name[-5:]}"}} 1.5 1764763199000\n'
        "resource_scrape_error 0\n"
    )


#: CPU per second that each container uses in the fake: the apps and the load generator busy, others idle.
RATES = {"app": 0.25, "loadgen": 0.8}
#: Seconds between two scrapes or reads of a node in the fake (a trial's window).
SCRAPE_INTERVAL_S = 13.0
#: When the fixture's control plane was read (its first line).
READ_TIME = 1764763212.261378201


class FakeCluster:
    """kind and kubectl as `testbed.proc.run` would see them; every call is kept in `calls`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []
        self.clusters: list[str] = []
        self.contexts = ["kind-testbed-none", "lab"]
        # By label selector: the three role nodes of `existing`, and the pool on the two app nodes.
        self.labelled = {
            "testbed.io/role=apps-a": ["lab-node-a"],
            "testbed.io/role=apps-b": ["lab-node-b"],
            "testbed.io/role=loadgen": ["lab-node-c"],
            "testbed.io/pool=apps": ["lab-node-a", "lab-node-b"],
        }
        self.fail_on: str | None = None
        self.fail_stderr = "error: boom\n"
        self.interrupt_on: str | None = None
        self.load_output = LOAD_RESULT
        self.scrapes: Counter[str] = Counter()
        self.node_reads: Counter[str] = Counter()
        self.last_reads: dict[str, str] = {}
        self.read_failure: CommandError | None = None
        self.marks = (marks.START, marks.END)
        #: The answers to `get pods -n NS -o json`, one per read (an error is raised); then `none.json`.
        self.namespace_pods: list[str | CommandError] = []
        #: The same for `get pods -n NS -l SELECTOR -o json` (a mesh's pods), by selector; then the pods of
        #: `kind-trial-pods/mesh-NS.json` that the selector matches.
        self.selected_pods: dict[str, list[str | CommandError]] = {}
        self.builds: list[tuple[Path, str, dict[str, str]]] = []
        self.ids = metrics.container_ids((NODE_READS / "pods.json").read_text())
        monkeypatch.setattr(proc, "run", self.run)
        monkeypatch.setattr(proc, "stream", self.stream)
        monkeypatch.setattr(tools, "tool_path", lambda name, **_: Path(f"/fake/bin/{name}"))
        monkeypatch.setattr(docker, "daemon_reachable", lambda **_: None)
        monkeypatch.setattr(docker, "daemon_cgroup_version", lambda **_: 2)
        monkeypatch.setattr(docker, "build_image", self.build_image)
        monkeypatch.setattr(docker, "run_in_nodes", self.run_in_nodes)

    def build_image(self, context: Path, tag: str, *, build_args: dict[str, str], timeout: float) -> None:
        self.builds.append((context, tag, build_args))

    def run_in_nodes(self, containers: Sequence[str], script: str, *, timeout: float) -> dict[str, str]:
        """Each node's read: the fixture, then `SCRAPE_INTERVAL_S` of work after the one before at each edge.

        Each from the one before, as the counters read after a read's scan of the containers hold that
        scan's own CPU, which every later read holds too (`advance_read`).
        """
        assert script == metrics.NODE_READ and timeout > 0
        if self.read_failure is not None:
            raise self.read_failure
        out = {}
        for node in containers:
            reads = self.node_reads[node]
            self.node_reads[node] += 1
            role = re.search(r"-(control-plane|worker\d*)$", node)
            assert role is not None, node
            text = (NODE_READS / f"{CLUSTER}-{role[1]}.txt").read_text()  # the same nodes in every cluster
            if reads:
                text = advance_read(self.last_reads[node], SCRAPE_INTERVAL_S, self.rate, host_busy_vcpu=2.5)
            out[node] = self.last_reads[node] = text
        return out

    def rate(self, cid: str) -> float:
        key = self.ids.get(cid)
        return 0.0 if key is None else RATES.get(key[2], 0.01)  # the pause sandboxes idle

    def stream(
        self, argv: Sequence[str], *, on_line: Callable[[str], None], timeout: float = 120.0, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl exec` of the load: its window marks on stderr, each just before the nodes are read."""
        done = self.run(argv, timeout=timeout, **kwargs)
        lines = []
        for edge in self.marks:
            # The reads happen 50 ms after the mark: the fixture's control plane was read at READ_TIME.
            at = READ_TIME + SCRAPE_INTERVAL_S * max(self.node_reads.values(), default=0) - 0.05
            lines.append(marks.line(edge, at))
            on_line(lines[-1])
        return subprocess.CompletedProcess(
            done.args, 0, done.stdout, "".join(f"{x}\n" for x in lines) + done.stderr
        )

    def commands(self, program: str | None = None) -> list[str]:
        """Every call as one string, `/fake/bin/` dropped; only `program`'s if given."""
        lines = [" ".join([Path(argv[0]).name, *argv[1:]]) for argv in self.calls]
        return [line for line in lines if program is None or line.split()[0] == program]

    def run(
        self, argv: Sequence[str], *, timeout: float = 120.0, input: str | None = None, **_: Any
    ) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        assert timeout > 0
        self.calls.append(argv)
        line = " ".join([Path(argv[0]).name, *argv[1:]])
        if self.interrupt_on is not None and self.interrupt_on in line:
            raise KeyboardInterrupt
        if self.fail_on is not None and self.fail_on in line:
            raise CommandError(
                f"{line} exited with code 1: {self.fail_stderr.strip()}",
                argv=argv,
                exit_code=1,
                stdout="",
                stderr=self.fail_stderr,
            )
        return subprocess.CompletedProcess(argv, 0, self.answer(line), "a line on stderr\n")

    def answer(self, line: str) -> str:
        out = ""
        match line.split():
            case ["kind", "version"]:
                out = "kind v0.32.0 go1.26.3 linux/amd64\n"
            case ["kubectl", "version", *_]:
                out = json.dumps({"clientVersion": {"gitVersion": "v1.35.7"}})
            case ["kind", "get", "clusters"]:
                out = "".join(f"{c}\n" for c in self.clusters)
            case ["kind", "export", "logs", directory, *_]:
                Path(directory).mkdir(parents=True, exist_ok=True)
                (Path(directory) / "kind-version.txt").write_text("kind v0.32.0\n")
                out = f"{directory}\n"
            case ["kubectl", "config", "get-contexts", "-o", "name"]:
                out = "".join(f"{c}\n" for c in self.contexts)
            case ["kubectl", "--context", _, "get", "nodes", "-l", selector, "-o", "name"]:
                out = "".join(f"node/{n}\n" for n in self.labelled[selector])
            case ["kubectl", "--context", _, "get", "--raw", path]:
                out = self.scrape(path.split("/")[4])
            case ["kubectl", "--context", _, "exec", *_]:
                out = self.load_output
            case ["kubectl", "--context", _, "get", "pods", "-A", "-o", "json"]:
                out = (NODE_READS / "pods.json").read_text()
            case ["kubectl", "--context", _, "get", "pods", "-n", _, "-o", "json"]:
                answer = self.namespace_pods.pop(0) if self.namespace_pods else None
                if isinstance(answer, CommandError):
                    raise answer
                out = answer if answer is not None else (TRIAL_PODS / "none.json").read_text()
            case ["kubectl", "--context", _, "get", "pods", "-n", namespace, "-l", selector, "-o", "json"]:
                out = self.selected(namespace, selector)
        return out

    def selected(self, namespace: str, selector: str) -> str:
        """A mesh's pods: the next queued answer for `selector` (an error is raised), else the fixture's."""
        queued = self.selected_pods.get(selector)
        answer = queued.pop(0) if queued else None
        if isinstance(answer, CommandError):
            raise answer
        return answer if answer is not None else select(namespace, selector)

    def scrape(self, node: str) -> str:
        """Scrapes alternate before/after: each "after" is one trial's length after its "before"."""
        self.scrapes[node] += 1
        text = METRICS if node in ("testbed-none-worker", "lab-node-a") else small_node(node)
        return advance(text, SCRAPE_INTERVAL_S * (self.scrapes[node] - 1), lambda c: RATES.get(c, 0.01))


def select(namespace: str, selector: str) -> str:
    """The API server's answer to `-l KEY=VALUE[,...]` (equality only): the fixture's pods that match."""
    document = json.loads((TRIAL_PODS / f"mesh-{namespace}.json").read_text())
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    document["items"] = [
        pod for pod in document["items"] if wanted.items() <= pod["metadata"].get("labels", {}).items()
    ]
    return json.dumps(document, indent=4)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    monkeypatch.setattr(proc, "ECHO", False)
    return FakeCluster(monkeypatch)


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SCENARIO)
    return path


def kube_run(tmp_path: Path, scenario: Path, *args: str, platform: str = "kind") -> int:
    argv = ["--quiet", "run", "--platform", platform, "--mesh", "none", "--scenario", str(scenario)]
    return cli.main([*argv, "--out", str(tmp_path / "results"), "--run-id", "r", *args])


def run_json(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "results" / "r" / "run.json").read_text())
    return data


# --- --dry-run ---------------------------------------------------------------------------------------


#: The testbed image's tag changes with every source edit (`ka.image_tag`): the golden plans show this.
IMAGE = ka.image_tag(load_versions().python_image)
GOLDEN_IMAGE = "testbed:0.1.0-<content hash>"


def normalise(text: str) -> str:
    text = text.replace(str(REPO), "<repo>").replace(IMAGE, GOLDEN_IMAGE)
    return re.sub(r"\d{8}T\d{6}Z", "<time>", text)


def test_dry_run_prints_the_whole_plan_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake: FakeCluster
) -> None:
    """`testbed run --platform kind --mesh none --scenario steady --dry-run`, against the golden plan."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker, kind or kubectl anywhere
    code = cli.main(["run", "--platform", "kind", "--mesh", "none", "--scenario", "steady", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert fake.calls == [] and fake.builds == []
    assert list(tmp_path.iterdir()) == []  # no run directory, no file written
    plan = normalise(out)
    golden = GOLDEN / "plan-kind-none-steady.txt"
    if os.environ.get("TESTBED_UPDATE_GOLDEN"):
        golden.write_text(plan)
    assert plan == golden.read_text(), "plan changed: rerun with TESTBED_UPDATE_GOLDEN=1 and review the diff"
    # Every manifest is in the plan, whole, and applied from the file it is written to.
    config = "results/<time>-kind-steady/work/none/kind-config.yaml"
    assert (
        f"+ kind create cluster --name testbed-none --config {config} --image kindest/node:v1.35.5@" in plan
    )
    assert f"+ kind load docker-image {GOLDEN_IMAGE} --name testbed-none" in plan
    assert (
        plan.count("kubectl --context kind-testbed-none exec deploy/loadgen -n testbed -c loadgen --") == 10
    )  # 2 rates x 5 trials
    # No kubelet scrape on kind: at each window mark, one cgroup read per node container; then the pods.
    assert plan.count("get --raw /api/v1/nodes/") == 0
    assert plan.count(f"+ docker exec testbed-none-worker sh -c '{metrics.NODE_READ}'") == 10
    assert plan.count("+ docker exec testbed-none-") == 10 * len(NODES)
    assert plan.count("+ kubectl --context kind-testbed-none get pods -A -o json") == 10
    assert plan.rstrip().endswith("+ kind delete cluster --name testbed-none")


def test_the_manifests_in_the_plan_are_the_ones_applied(tmp_path: Path) -> None:
    topology = load_topology("shop")
    plan = kp.kind_plan(
        kube_mesh("none", "kind"),
        topology,
        versions=load_versions(),
        workdir=tmp_path / "work",
        logs_dir=tmp_path / "logs",
    )
    written = {a.path: a.text for a in (*plan.create, *plan.provision) if isinstance(a, ka.WriteFile)}
    manifests = written[tmp_path / "work" / "manifests.yaml"]
    kinds = [doc["kind"] for doc in yaml.safe_load_all(manifests)]
    assert kinds[0] == "Namespace" and kinds.count("Deployment") == len(topology.services) + 1
    applied = [a.argv for a in plan.provision if isinstance(a, ka.Step) and "apply" in a.argv]
    assert applied == [
        (
            "kubectl",
            "--context",
            "kind-testbed-none",
            "apply",
            "-f",
            str(tmp_path / "work" / "manifests.yaml"),
        )
    ]
    rollouts = [a.argv[5] for a in plan.provision if isinstance(a, ka.Step) and "rollout" in a.argv]
    assert rollouts == [f"deploy/{s.name}" for s in topology.startup_order()] + ["deploy/loadgen"]
    # kind names workers in config order (apps-a, apps-b, loadgen): namer.go at kind v0.32.0.
    assert plan.nodes == (
        "testbed-none-control-plane",
        "testbed-none-worker",
        "testbed-none-worker2",
        "testbed-none-worker3",
    )


def test_a_trial_with_workers_starts_and_stops_them_around_a_master(tmp_path: Path) -> None:
    plan = kp.kind_plan(
        kube_mesh("none", "kind"),
        load_topology("shop"),
        versions=load_versions(),
        workdir=tmp_path,
        logs_dir=tmp_path / "logs",
        loadgen_workers=3,
    )
    config = LoadConfig(url=plan.target_url, rate=5000, duration_s=30, warmup_s=5, processes=4)
    trial = kt.trial_plan(plan, config, nodes=plan.nodes, mesh_pods=())
    assert [s.argv[3] for s in trial.setup] == ["apply", "rollout"]
    assert trial.cleanup[0].argv[3:6] == ("delete", "deployment", WORKER_NAME)
    # Foreground: kubectl returns once the workers' pods are gone, not just their Deployment.
    assert "--cascade=foreground" in trial.cleanup[0].argv and "--wait=false" not in trial.cleanup[0].argv
    load = trial.load.argv
    assert load[load.index("--processes") + 1] == "1"  # the workers are the processes
    assert load[load.index("--expect-workers") + 1] == "3"
    assert load[load.index("--master-bind") + 1] == "0.0.0.0:5557"
    assert trial.load.timeout_s == 5 + 30 + kt.LOAD_TAIL_S + 10 + kt.EXEC_MARGIN_S + kt.WORKERS_CONNECT_S
    assert load[load.index("--tail") + 1] == f"{kt.LOAD_TAIL_S:g}"  # the load goes on under the end's read
    workers = next(
        a for a in plan.provision if isinstance(a, ka.WriteFile) and a.path == plan.workers_manifest
    )
    deployment = next(d for d in yaml.safe_load_all(workers.text) if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3


def test_a_topology_outside_the_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text((REPO / "scenarios" / "topologies" / "shop.toml").read_text())
    with pytest.raises(UsageError, match=r"holds .*scenarios/topologies/ only"):
        kp.kind_plan(
            kube_mesh("none", "kind"),
            load_topology(path),
            versions=load_versions(),
            workdir=tmp_path,
            logs_dir=tmp_path,
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--platform", "existing", "--context", "x", "--mesh", "cilium"], "replaces the cluster's CNI"),
        (["--platform", "kind", "--mesh", "istio", "--waypoint"], "put istio-ambient in --mesh"),
        (["--platform", "local", "--mesh", "istio-ambient", "--waypoint"], "--waypoint applies to"),
        (["--platform", "kind", "--mesh", "consul"], "unknown mesh 'consul'"),
        (["--platform", "kind", "--mesh", "envoy"], "stand-in for Istio's sidecars"),
        (["--platform", "local", "--reuse"], "--reuse applies to --platform kind only"),
        (["--platform", "local", "--loadgen-workers", "2"], "--loadgen-workers applies to"),
        (["--platform", "kind", "--context", "x"], "--context applies to --platform existing only"),
        (["--platform", "existing"], "--platform existing needs --context NAME"),
        (["--platform", "kind", "--loadgen-workers", "0"], "--loadgen-workers must be at least 1"),
        (["--platform", "moon"], "unknown platform 'moon' (known: local, kind, existing)"),
    ],
)
def test_bad_options_are_one_line_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], fake: FakeCluster
) -> None:
    assert cli.main(["run", *args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert fake.calls == []


# --- running through the fake --------------------------------------------------------------------


def test_a_whole_run_creates_measures_and_deletes(tmp_path: Path, scenario: Path, fake: FakeCluster) -> None:
    assert kube_run(tmp_path, scenario) == 0
    commands = fake.commands()
    kind = fake.commands("kind")
    assert kind[:2] == ["kind version", "kind get clusters"]
    assert kind[2].startswith("kind create cluster --name testbed-none --config ")
    assert kind[3:] == [
        f"kind load docker-image {IMAGE} --name testbed-none",
        "kind delete cluster --name testbed-none",
    ]
    assert commands[-1] == "kind delete cluster --name testbed-none"  # last of all, after every trial
    assert not any("export logs" in c for c in commands)
    assert len([c for c in commands if " exec deploy/loadgen " in c]) == 2
    assert fake.builds == [(REPO, IMAGE, {"PYTHON_IMAGE": load_versions().python_image})]
    run_dir = tmp_path / "results" / "r"
    config = yaml.safe_load((run_dir / "work" / "none" / "kind-config.yaml").read_text())
    assert config["name"] == CLUSTER and len(config["nodes"]) == 4
    meta = run_json(tmp_path)
    assert meta["status"] == "complete" and meta["finished_trials"] == 2
    assert meta["versions"]["kind"] == "v0.32.0" and meta["versions"]["image"] == IMAGE
    assert (run_dir / "report.html").is_file()


def test_the_loadgen_pods_json_and_the_cgroup_reads_at_its_marks_make_the_result(
    tmp_path: Path, scenario: Path, fake: FakeCluster
) -> None:
    assert kube_run(tmp_path, scenario) == 0
    trial_dir = tmp_path / "results" / "r" / "none" / "100" / "trial-2"
    result = json.loads((trial_dir / "result.json").read_text())
    expected = json.loads(LOAD_RESULT)
    assert result["latency_us"] == expected["latency_us"] and result["hdr"] == expected["hdr"]
    assert result["requests"] == 1000 and result["valid"]
    assert (result["mesh"], result["trial"], result["platform"]) == ("none", 2, "kind")
    assert result["mesh_evidence"] == {"mesh": "none", "encrypted": False}
    log = (trial_dir / "loadgen.log").read_text().splitlines()
    assert [marks.parse(line).edge for line in log[:2]] == ["start", "end"]  # type: ignore[union-attr]
    assert log[2:] == ["a line on stderr"]
    res = result["resources"]
    assert res["source"] == metrics.CGROUP_SOURCE and res["memory_source"] == metrics.MEMORY_SOURCE
    assert res["window_s"] == SCRAPE_INTERVAL_S
    # Four app containers at 0.25 CPU each, the load generator at 0.8, every other container 0.01.
    working_set = (47_194_112 + 44_642_304 + 45_162_496 + 44_859_392 - 4 * 1_323_008) / 2**20
    assert res["components"]["app"] == {
        "cpu_seconds": 13.0,
        "vcpu": 1.0,
        "peak_rss_mb": round(working_set, 1),
        "processes": 4,
    }
    assert res["components"]["loadgen"]["vcpu"] == 0.8
    assert res["components"]["kubernetes"]["processes"] == 15
    assert res["components"]["node-overhead"]["vcpu"] == 0.2  # 0.05 per node beyond its containers
    assert res["components"]["kernel-unattributed"]["vcpu"] == pytest.approx(2.5 - 1.0 - 0.8 - 0.15 - 0.2)
    assert res["host"]["busy_vcpu"] == 2.5 and res["host"]["cores"] == 4
    assert res["warnings"] == []
    assert set(res["nodes"]) == set(NODES)
    worker = res["nodes"]["testbed-none-worker"]
    assert (
        # From after the start read's scan of the containers (0.04 s in the fixtures) to before the end's.
        worker["cpu_seconds"] == pytest.approx((13 - 0.04) * 0.57)
        and worker["source"] == "kind node container (cgroup cpu.stat)"
    )
    # The second trial's reads: 50 ms after each of its marks, as the fake answers; the start's figures
    # are those read after its scan, 0.04 s later.
    assert res["reads"]["start_offset_s"][1] == pytest.approx(0.09, abs=0.01)
    assert res["reads"]["end_offset_s"][1] == pytest.approx(0.05, abs=0.01)
    assert fake.node_reads == Counter({node: 4 for node in NODES})  # two trials, two edges each
    commands = fake.commands("kubectl")
    assert commands.count("kubectl --context kind-testbed-none get pods -A -o json") == 2
    assert not any("get --raw" in c for c in commands)  # no kubelet scrape on kind
    # The report shows the node overhead and the kernel's rest per mesh, the latter with no process.
    summary = json.loads((tmp_path / "results" / "r" / "summary.json").read_text())
    cell = summary["cells"][0]["resources"]
    assert cell["kernel-unattributed"]["vcpu"] == pytest.approx(0.35, abs=1e-3)
    assert cell["node-overhead"]["processes"] == 4
    md = (tmp_path / "results" / "r" / "report.md").read_text()
    assert "| none | 100 | kernel-unattributed | 0 | 0.350 | 3.500 | 0.0 |" in md
    assert "| none | 100 | node-overhead | 4 | 0.200 |" in md
    assert "kernel-unattributed" in (tmp_path / "results" / "r" / "report.html").read_text()


def test_resources_without_node_containers_use_the_kubelets_node_counter() -> None:
    before = {"n": METRICS}
    after = {"n": advance(METRICS, 10.0, lambda c: 0.5)}
    res = resources(before, after, namespace="testbed")
    assert res["nodes"]["n"] == {
        "cpu_seconds": 20.0,
        "vcpu": 2.0,
        "source": "node_cpu_usage_seconds_total",
        "memory_mb": 2588.5,
    }
    assert res["components"]["app"]["vcpu"] == 2.0


def test_a_failed_apply_keeps_the_logs_and_deletes_the_cluster(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_on = "apply -f"
    assert kube_run(tmp_path, scenario) == 1
    logs = tmp_path / "results" / "r" / "logs" / "none"
    assert fake.commands()[-2:] == [
        f"kind export logs {logs} --name testbed-none",
        "kind delete cluster --name testbed-none",
    ]
    assert (logs / "kind-version.txt").is_file()
    assert not any(" exec " in c for c in fake.commands())
    meta = run_json(tmp_path)
    assert meta["status"] == "failed" and "apply" in meta["error"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("testbed: error: ") and "0 finished trial(s) kept" in err[-1]


def test_ctrl_c_during_a_trial_deletes_the_cluster(tmp_path: Path, scenario: Path, fake: FakeCluster) -> None:
    fake.interrupt_on = " exec deploy/loadgen "
    assert kube_run(tmp_path, scenario) == 130
    assert fake.commands()[-1] == "kind delete cluster --name testbed-none"
    assert not any("export logs" in c for c in fake.commands())
    assert run_json(tmp_path)["status"] == "interrupted"


def test_keep_keeps_the_cluster(tmp_path: Path, scenario: Path, fake: FakeCluster) -> None:
    assert kube_run(tmp_path, scenario, "--keep") == 0
    assert not any("delete" in c for c in fake.commands())


def test_a_failed_teardown_says_how_to_clean_up(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_on = "kind delete cluster"
    assert kube_run(tmp_path, scenario) == 0  # the results are there; the warning says what is left
    assert "run it yourself: kind delete cluster --name testbed-none" in capsys.readouterr().err


def test_an_existing_cluster_is_refused_without_reuse(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.clusters = ["other", CLUSTER]
    assert kube_run(tmp_path, scenario) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "a kind cluster testbed-none exists already: pass --reuse" in err[-1]
    assert fake.commands("kind") == ["kind version", "kind get clusters"]  # nothing created, nothing deleted
    assert fake.builds == []


def test_reuse_runs_on_the_existing_cluster(tmp_path: Path, scenario: Path, fake: FakeCluster) -> None:
    fake.clusters = [CLUSTER]
    assert kube_run(tmp_path, scenario, "--reuse", "--keep") == 0
    assert not any("create cluster" in c or "delete" in c for c in fake.commands())
    assert f"kind load docker-image {IMAGE} --name testbed-none" in fake.commands()


def test_a_load_generator_older_than_the_plan_is_named(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image built before a flag the plan passes (`--tail`): argparse's error, and what it means."""
    fake.fail_on = " exec deploy/loadgen "
    fake.fail_stderr = "usage: testbed [-h]\ntestbed: error: unrecognized arguments: --tail 2\n"
    assert kube_run(tmp_path, scenario) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unrecognized arguments: --tail 2: is the loadgen pod's image (--image) older than" in err


def test_a_failing_load_generator_points_at_its_log(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_on = " exec deploy/loadgen "
    assert kube_run(tmp_path, scenario) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the load generator in the loadgen pod failed: error: boom" in err
    assert (
        tmp_path / "results" / "r" / "none" / "100" / "trial-1" / "loadgen.log"
    ).read_text() == "error: boom\n"
    assert fake.commands()[-1] == "kind delete cluster --name testbed-none"


def test_output_that_is_not_a_result_is_a_clear_error(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.load_output = "Traceback (most recent call last):\n"
    assert kube_run(tmp_path, scenario) == 1
    assert "printed no result JSON" in capsys.readouterr().err


def test_loadgen_workers_are_started_and_stopped_around_each_trial(
    tmp_path: Path, scenario: Path, fake: FakeCluster
) -> None:
    assert kube_run(tmp_path, scenario, "--loadgen-workers", "2") == 0
    commands = fake.commands("kubectl")
    workers_file = tmp_path / "results" / "r" / "work" / "none" / "loadgen-workers.yaml"
    assert commands.count(f"kubectl --context kind-testbed-none apply -f {workers_file}") == 2
    deletes = [c for c in commands if f"delete deployment {WORKER_NAME}" in c]
    assert len(deletes) == 2
    exec_line = next(c for c in commands if " exec " in c)
    assert "--expect-workers 2 --master-bind 0.0.0.0:5557" in exec_line
    assert commands.index(deletes[0]) > commands.index(exec_line)


def test_a_load_generator_without_window_marks_is_a_clear_error(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.marks = (marks.START,)  # e.g. an image older than the testbed, or a window cut short
    assert kube_run(tmp_path, scenario) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the load generator printed no `testbed: measured window end ...` line on stderr" in err
    assert fake.commands()[-1] == "kind delete cluster --name testbed-none"


def test_a_failed_read_at_a_mark_is_reported_as_such_not_as_the_load_generators_failure(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.read_failure = CommandError(
        "docker exec testbed-none-worker sh -c ... exited with code 1: Error response from daemon: no such "
        "container",
        argv=["docker"],
        exit_code=1,
        stdout="",
        stderr="",
    )
    assert kube_run(tmp_path, scenario) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "docker exec testbed-none-worker sh -c ... exited with code 1" in err
    assert "the load generator in the loadgen pod failed" not in err


def test_the_reads_run_while_the_load_runs_at_each_mark(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On `existing`, the kubelets are scraped when the marks come: after the exec started, before it ends."""
    events: list[str] = []
    stream = fake.stream

    def recorded(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        events.append("exec starts")
        done = stream(argv, **kwargs)
        events.append("exec ends")
        return done

    run = fake.run

    def recorded_run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if "get" in argv and "--raw" in argv:
            events.append("scrape")
        return run(argv, **kwargs)

    monkeypatch.setattr(proc, "stream", recorded)
    monkeypatch.setattr(proc, "run", recorded_run)
    assert kube_run(tmp_path, scenario, "--context", "lab", platform="existing") == 0
    scrapes = events.count("scrape") // 2  # per trial: every labelled node, at each of the two marks
    assert scrapes > 0 and scrapes % 2 == 0
    assert events == ["exec starts", *["scrape"] * scrapes, "exec ends"] * 2


@pytest.mark.slow
def test_testbed_load_prints_its_window_marks_as_the_window_starts_and_ends() -> None:
    """The real `testbed load` through `proc.stream`: each mark comes when its edge is reached."""
    server = NullServer()
    seen: list[tuple[marks.Mark, float]] = []

    def on_line(line: str) -> None:
        mark = marks.parse(line)
        if mark is not None:
            seen.append((mark, time.time()))

    try:
        argv = [sys.executable, "-m", "testbed", "--quiet", "load", server.url, "--rate", "50"]
        done = proc.stream(
            [*argv, "--duration", "1.5", "--warmup", "1", "--out", "-"], on_line=on_line, timeout=120
        )
    finally:
        server.stop()
    result = json.loads(done.stdout)
    assert [mark.edge for mark, _ in seen] == ["start", "end"]
    (start, start_seen), (end, end_seen) = seen
    assert [start.at_unix, end.at_unix] == pytest.approx(result["window_unix"], abs=0.002)
    assert end.at_unix - start.at_unix == pytest.approx(1.5, abs=0.002)
    # Each line comes when its edge is reached, not before, and not long after. The mark prints its time
    # in whole ms (`marks.line`), rounded: up to 0.5 ms after the moment it stands for.
    precision = 0.0005
    assert -precision <= start_seen - start.at_unix < 0.25
    assert -precision <= end_seen - end.at_unix < 0.25


# --- the pods' health around each trial ----------------------------------------------------------------


def pods_fixture(name: str) -> str:
    return (TRIAL_PODS / f"{name}.json").read_text()


#: `get pods -n testbed -o json`, the read before and after each trial's load.
PODS_READ = "get pods -n testbed -o json"


def trial_files(tmp_path: Path, trial: int) -> Path:
    return tmp_path / "results" / "r" / "none" / "100" / f"trial-{trial}"


@pytest.mark.parametrize("platform", ["kind", "existing"])
def test_a_restart_during_a_trial_fails_that_trial_and_the_run_goes_on(
    platform: str, tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loadgen container is OOM-killed during trial 1; trial 2 starts from there and is valid."""
    args = ("--context", "lab") if platform == "existing" else ()
    oom = pods_fixture("none-loadgen-oomkilled")
    fake.namespace_pods = [pods_fixture("none"), oom, oom, oom]
    assert kube_run(tmp_path, scenario, *args, platform=platform) == 3
    # Each trial: the pods read right before the load and right after it.
    commands = [c for c in fake.commands("kubectl") if PODS_READ in c or " exec deploy/loadgen " in c]
    assert [("exec" if " exec " in c else "pods") for c in commands] == ["pods", "exec", "pods"] * 2
    first, second = trial_files(tmp_path, 1), trial_files(tmp_path, 2)
    assert not (first / "result.json").exists()
    failed = json.loads((first / "failed.json").read_text())
    cause = (
        "container loadgen of pod loadgen-66b8f4c9d7-gvzgc restarted 1 time(s) "
        "(last: OOMKilled, exit code 137, at 2026-12-03T12:04:17Z)"
    )
    assert failed["status"] == "failed" and failed["cause"] == cause
    (problem,) = failed["problems"]
    assert (problem["kind"], problem["reason"], problem["exit_code"]) == ("restarted", "OOMKilled", 137)
    assert Path(failed["pods_before"]).read_text() == pods_fixture("none")
    assert Path(failed["pods_after"]).read_text() == oom
    assert failed["measured"] == json.loads(LOAD_RESULT)  # what the load measured is kept, as it came
    result = json.loads((second / "result.json").read_text())
    assert result["valid"] and not (second / "failed.json").exists()
    meta = run_json(tmp_path)
    assert meta["status"] == "complete-with-failures"
    assert [(f["path"], f["status"], f["cause"]) for f in meta["failures"]] == [
        ("none/100/trial-1", "failed", cause)
    ]
    assert fake.commands()[-1].startswith("kind delete cluster" if platform == "kind" else "kubectl")
    assert not any("export logs" in c for c in fake.commands())  # not a failed run
    assert "FAILED: container loadgen of pod" in capsys.readouterr().out


def test_a_load_that_failed_with_a_pod_restart_is_a_failed_trial_with_both_causes(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loadgen pod died under `kubectl exec`: the trial failed, not the run (else a fatal error)."""
    fake.namespace_pods = [pods_fixture("none"), pods_fixture("none-loadgen-oomkilled")] + [
        pods_fixture("none-loadgen-oomkilled")
    ] * 2
    stream = fake.stream
    execs: list[int] = []

    def dies_once(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        execs.append(1)
        if len(execs) == 1:
            fake.calls.append(list(argv))
            stderr = "command terminated with exit code 137\n"
            raise CommandError("kubectl exec ...", argv=list(argv), exit_code=137, stdout="", stderr=stderr)
        return stream(argv, **kwargs)

    monkeypatch.setattr(proc, "stream", dies_once)
    assert kube_run(tmp_path, scenario) == 3
    failed = json.loads((trial_files(tmp_path, 1) / "failed.json").read_text())
    assert failed["cause"].startswith("container loadgen of pod loadgen-66b8f4c9d7-gvzgc restarted 1 time(s)")
    load_error = "the load generator in the loadgen pod failed: command terminated with exit code 137"
    assert f"; {load_error} (see " in failed["cause"]
    assert failed["load_error"].startswith(load_error) and failed["measured"] is None
    assert not (trial_files(tmp_path, 1) / "result.json").exists()
    assert (trial_files(tmp_path, 2) / "result.json").is_file()
    assert [f["path"] for f in run_json(tmp_path)["failures"]] == ["none/100/trial-1"]


def test_a_failed_load_with_healthy_pods_is_still_the_fatal_error(
    tmp_path: Path, scenario: Path, fake: FakeCluster
) -> None:
    fake.fail_on = " exec deploy/loadgen "
    assert kube_run(tmp_path, scenario) == 1
    assert run_json(tmp_path)["status"] == "failed"
    assert fake.commands("kubectl").count(f"kubectl --context kind-testbed-none {PODS_READ}") == 2
    assert not (trial_files(tmp_path, 1) / "failed.json").exists()


def test_pods_that_cannot_be_read_after_the_load_fail_the_trial(
    tmp_path: Path, scenario: Path, fake: FakeCluster
) -> None:
    unreachable = CommandError(
        f"kubectl --context kind-testbed-none {PODS_READ} exited with code 1: The connection to the server "
        "127.0.0.1:6443 was refused",
        argv=["kubectl"],
        exit_code=1,
    )
    fake.namespace_pods = [pods_fixture("none"), unreachable]
    assert kube_run(tmp_path, scenario) == 3
    failed = json.loads((trial_files(tmp_path, 1) / "failed.json").read_text())
    assert failed["cause"].startswith("the pods of namespace testbed could not be read after the load: ")
    assert "connection to the server 127.0.0.1:6443 was refused" in failed["cause"]
    assert failed["pods_after"] is None and failed["problems"] == []
    assert failed["measured"]["requests"] == 1000
    assert (trial_files(tmp_path, 2) / "result.json").is_file()


def test_a_mesh_is_skipped_after_max_failures_unhealthy_trials(
    tmp_path: Path, scenario: Path, fake: FakeCluster
) -> None:
    fake.namespace_pods = [pods_fixture("none"), pods_fixture("none-pricing-replaced")]
    assert kube_run(tmp_path, scenario, "--max-failures", "1") == 3
    failures = run_json(tmp_path)["failures"]
    assert [(f["path"], f["status"]) for f in failures] == [
        ("none/100/trial-1", "failed"),
        ("none/100/trial-2", "skipped"),
    ]
    assert failures[0]["cause"] == "pod pricing-6d4b9c7f5b-q5jn6 is gone (and 2 more)"
    assert len([c for c in fake.commands() if " exec deploy/loadgen " in c]) == 1


def not_ready(name: str = "frontend-7c9d8b6f4d-qgv6d") -> str:
    """`none.json` with pod `name`'s app container not ready (its probe failed), Running, never restarted."""
    document = json.loads(pods_fixture("none"))
    for pod in document["items"]:
        if pod["metadata"]["name"] == name:
            pod["status"]["containerStatuses"][0]["ready"] = False
    return json.dumps(document, indent=4)


def test_a_container_not_ready_only_for_a_moment_is_a_warning_not_a_failure(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its readiness probe failed under load: read again after the wait, ready: the trial stands."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    fake.namespace_pods = [pods_fixture("none"), not_ready(), pods_fixture("none")]
    assert kube_run(tmp_path, scenario) == 0
    assert waits.count(kt.NOT_READY_RECHECK_S) == 1 and kt.NOT_READY_RECHECK_S == 5.0
    commands = [c for c in fake.commands("kubectl") if PODS_READ in c or " exec deploy/loadgen " in c]
    # Trial 1: before, the load, after, and again; trial 2: before, the load, after.
    kinds = ["pods", "exec", "pods", "pods", "pods", "exec", "pods"]
    assert [("exec" if " exec " in c else "pods") for c in commands] == kinds
    first = trial_files(tmp_path, 1)
    (warning,) = json.loads((first / "result.json").read_text())["pod_warnings"]
    assert (warning["kind"], warning["pod"], warning["container"]) == (
        "not-ready",
        "frontend-7c9d8b6f4d-qgv6d",
        "app",
    )
    assert (first / "pods-again.json").read_text() == pods_fixture("none")
    assert "pod_warnings" not in json.loads((trial_files(tmp_path, 2) / "result.json").read_text())


def test_a_container_still_not_ready_after_the_wait_fails_the_trial(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    fake.namespace_pods = [pods_fixture("none"), not_ready(), not_ready()]
    assert kube_run(tmp_path, scenario) == 3
    failed = json.loads((trial_files(tmp_path, 1) / "failed.json").read_text())
    assert failed["cause"] == (
        "container app of pod frontend-7c9d8b6f4d-qgv6d is not ready (read again 5 s after the load)"
    )
    assert failed["pods_again"] == str(trial_files(tmp_path, 1) / "pods-again.json")
    assert [p["kind"] for p in failed["problems"]] == ["not-ready"]


def test_a_restart_is_not_read_again(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not ready with a pod replaced: no second chance, the trial fails at once."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    fake.namespace_pods = [pods_fixture("none"), pods_fixture("none-pricing-replaced")]
    assert kube_run(tmp_path, scenario, "--max-failures", "1") == 3
    assert not (trial_files(tmp_path, 1) / "pods-again.json").exists()
    assert kt.NOT_READY_RECHECK_S not in waits


def test_a_pod_not_ready_before_the_load_is_read_again_and_then_measured(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Still recovering from the last trial at the first read, ready 5 s later: the trial runs from there."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    fake.namespace_pods = [not_ready(), pods_fixture("none")]
    assert kube_run(tmp_path, scenario) == 0
    assert waits.count(kt.NOT_READY_RECHECK_S) == 1
    commands = [c for c in fake.commands("kubectl") if PODS_READ in c or " exec deploy/loadgen " in c]
    # Trial 1: before, before again, the load, after; trial 2: before, the load, after.
    kinds = ["pods", "pods", "exec", "pods", "pods", "exec", "pods"]
    assert [("exec" if " exec " in c else "pods") for c in commands] == kinds
    first = trial_files(tmp_path, 1)
    assert (first / "pods-before.json").read_text() == not_ready()
    assert (first / "pods-before-again.json").read_text() == pods_fixture("none")
    assert json.loads((first / "result.json").read_text())["valid"]


def test_a_pod_still_not_ready_before_the_load_fails_that_trial_unmeasured(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not measured against a topology that is not whole; the next trial reads the pods afresh."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    fake.namespace_pods = [not_ready(), not_ready()]
    assert kube_run(tmp_path, scenario) == 3
    first = trial_files(tmp_path, 1)
    failed = json.loads((first / "failed.json").read_text())
    assert failed["cause"] == (
        "before the load: container app of pod frontend-7c9d8b6f4d-qgv6d is not ready (read again 5 s later)"
    )
    assert failed["cause"].count("frontend-7c9d8b6f4d-qgv6d") == 1  # the pod is named once
    assert [(p["kind"], p["pod"]) for p in failed["problems"]] == [("not-ready", "frontend-7c9d8b6f4d-qgv6d")]
    assert failed["pods_before_again"] == str(first / "pods-before-again.json")
    assert failed["pods_after"] is None and failed["measured"] is None
    assert not (first / "result.json").exists()
    # The load never ran in trial 1; trial 2 did, and stands.
    assert len([c for c in fake.commands() if " exec deploy/loadgen " in c]) == 1
    assert (trial_files(tmp_path, 2) / "result.json").is_file()


def test_an_evicted_pod_before_the_load_is_not_read_again(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod an earlier eviction left Failed stays there, replaced: no wait, and the trial stands."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    document = json.loads(pods_fixture("none"))
    document["items"].append(json.loads(json.dumps(document["items"][2])))
    evicted = document["items"][-1]
    evicted["metadata"] |= {"name": "pricing-6d4b9c7f5b-old01", "uid": "0f0f0f0f-0000-0000-0000-000000000001"}
    evicted["status"] |= {"phase": "Failed", "reason": "Evicted"}
    stale = json.dumps(document, indent=4)
    fake.namespace_pods = [stale, stale, stale, stale]
    assert kube_run(tmp_path, scenario) == 0
    assert kt.NOT_READY_RECHECK_S not in waits
    assert not (trial_files(tmp_path, 1) / "pods-before-again.json").exists()


def test_pods_that_cannot_be_read_before_the_load_fail_only_that_trial(
    tmp_path: Path, scenario: Path, fake: FakeCluster
) -> None:
    """A busy API server's timeout on the first read: a failed trial, as on the read after the load."""
    timed_out = CommandError(
        f"kubectl --context kind-testbed-none {PODS_READ} did not finish within 30 s",
        argv=["kubectl"],
        exit_code=None,
    )
    fake.namespace_pods = [timed_out]
    assert kube_run(tmp_path, scenario) == 3
    failed = json.loads((trial_files(tmp_path, 1) / "failed.json").read_text())
    assert failed["cause"].startswith("the pods of namespace testbed could not be read before the load: ")
    assert failed["pods_before"] is None and failed["pods_after"] is None and failed["measured"] is None
    # The load never ran in trial 1; trial 2 did, and stands.
    assert len([c for c in fake.commands() if " exec deploy/loadgen " in c]) == 1
    assert (trial_files(tmp_path, 2) / "result.json").is_file()
    assert run_json(tmp_path)["status"] == "complete-with-failures"


def _exec_fails(fake: FakeCluster, monkeypatch: pytest.MonkeyPatch, code: int, stderr: str) -> None:
    """The first `kubectl exec` of the load ends with `code`; the later ones run."""
    stream = fake.stream
    execs: list[int] = []

    def fails_once(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        execs.append(1)
        if len(execs) == 1:
            fake.calls.append(list(argv))
            raise CommandError("kubectl exec ...", argv=list(argv), exit_code=code, stdout="", stderr=stderr)
        return stream(argv, **kwargs)

    monkeypatch.setattr(proc, "stream", fails_once)


def test_a_load_generator_killed_in_a_container_that_did_not_restart_is_a_failed_trial(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 137 (128 + SIGKILL) with healthy pods: the OOM killer took the load, not the container."""
    _exec_fails(fake, monkeypatch, 137, "command terminated with exit code 137\n")
    assert kube_run(tmp_path, scenario) == 3
    failed = json.loads((trial_files(tmp_path, 1) / "failed.json").read_text())
    assert failed["cause"].startswith(
        "the load generator was killed (exit 137 = 128 + SIGKILL, e.g. by the OOM killer inside a container "
        "that did not restart): the load generator in the loadgen pod failed: command terminated with exit "
        "code 137"
    )
    assert failed["load_exit_code"] == 137 and failed["problems"] == []
    assert (trial_files(tmp_path, 2) / "result.json").is_file()


@pytest.mark.parametrize("code", [1, 2, 128])
def test_a_load_generator_that_exited_by_itself_is_still_the_fatal_error(
    code: int, tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. argparse's 2 from a stale image: no signal, so the run stops (128 is 128 + no signal)."""
    _exec_fails(fake, monkeypatch, code, "testbed: error: unrecognized arguments: --tail 2\n")
    assert kube_run(tmp_path, scenario) == 1
    assert run_json(tmp_path)["status"] == "failed"
    assert not (trial_files(tmp_path, 1) / "failed.json").exists()


def test_the_pods_are_read_around_the_load_on_existing_too(tmp_path: Path) -> None:
    """The one step, in the plan before the load and after it, whether or not there are node containers."""
    plan = kp.existing_plan(
        kube_mesh("none", "existing"),
        load_topology("shop"),
        versions=load_versions(),
        context="lab",
        image="reg.example/testbed:0.1.0",
        workdir=tmp_path,
        logs_dir=tmp_path / "logs",
    )
    config = LoadConfig(url=plan.target_url, rate=100, duration_s=10, warmup_s=3)
    mesh_pods = kube_mesh("linkerd", "existing").traffic_pods
    steps = kt.trial_plan(plan, config, nodes=("lab-node-a",), mesh_pods=mesh_pods)
    app, control_plane = steps.pods
    assert app.step.argv == ("kubectl", "--context", "lab", "get", "pods", "-n", "testbed", "-o", "json")
    assert control_plane.step.argv == (
        *("kubectl", "--context", "lab", "get", "pods", "-n", "linkerd"),
        *("-l", "linkerd.io/control-plane-ns=linkerd", "-o", "json"),
    )
    assert (app.name, control_plane.name) == ("pods", "pods-linkerd-linkerd.io-control-plane-ns-linkerd")
    assert steps.after == ()
    trial = Trial(mesh="linkerd", rate=100, index=1)
    lines = render_trial(1, 1, trial, steps, cooldown_s=0)
    reads = ["+ " + " ".join(read.step.argv) for read in steps.pods]
    load = next(n for n, line in enumerate(lines) if " exec deploy/loadgen " in line)
    again = lines.index(reads[0], load)
    assert [n for n, line in enumerate(lines) if line in reads] == [load - 5, load - 3, again, again + 2]
    assert lines[load - 2].startswith("# if a pod is not Running and ready")
    assert lines[again - 2] == "# when the load has finished:"
    assert lines[again + 3].startswith("# if the only problems are containers not ready")


def test_a_closed_loop_trial_is_named_by_its_users_not_a_rate(tmp_path: Path) -> None:
    """Its trials are filed under rate 0 (`CLOSED_LOOP_RATE`), which the plan must not print as `0 rps`."""
    plan = kp.kind_plan(
        kube_mesh("none", "kind"),
        load_topology("shop"),
        versions=load_versions(),
        workdir=tmp_path,
        logs_dir=tmp_path / "logs",
    )
    config = LoadConfig(url=plan.target_url, duration_s=10, warmup_s=3, loop="closed", users=8)
    steps = kt.trial_plan(plan, config, nodes=plan.nodes, mesh_pods=())
    assert steps.load.description.startswith("the trial: closed loop, 8 users for 3 + 10 s ")
    lines = render_trial(1, 2, Trial(mesh="none", rate=CLOSED_LOOP_RATE, index=1), steps, cooldown_s=0)
    assert lines[0] == "== trial 1/2: mesh none, closed loop, 8 users, trial 1"
    assert not any(" 0 rps" in line for line in lines)
    opened = LoadConfig(url=plan.target_url, rate=100, duration_s=10, warmup_s=3)
    assert kt.trial_plan(plan, opened, nodes=plan.nodes, mesh_pods=()).load_label == "100 rps"


# --- existing ------------------------------------------------------------------------------------


def test_existing_with_an_unknown_context_is_one_line(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kube_run(tmp_path, scenario, "--context", "prod", platform="existing") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "testbed: error: no context 'prod' in your kubeconfig (known: kind-testbed-none, lab): "
        "give one of them with --context"
    )
    assert fake.commands() == ["kubectl version --client -o json", "kubectl config get-contexts -o name"]


def test_existing_runs_on_the_labelled_nodes_and_deletes_only_its_namespace(
    tmp_path: Path, scenario: Path, fake: FakeCluster
) -> None:
    assert (
        kube_run(
            tmp_path,
            scenario,
            "--context",
            "lab",
            "--image",
            "reg.example/testbed:0.1.0",
            platform="existing",
        )
        == 0
    )
    commands = fake.commands()
    assert not any(c.startswith("kind") for c in commands) and fake.builds == []
    assert commands[-1] == "kubectl --context lab delete namespace testbed --ignore-not-found --timeout 5m"
    scraped = {c.split("/")[4] for c in commands if "get --raw" in c}
    assert scraped == {"lab-node-a", "lab-node-b", "lab-node-c"}
    manifests = (tmp_path / "results" / "r" / "work" / "none" / "manifests.yaml").read_text()
    assert "image: reg.example/testbed:0.1.0" in manifests
    result = json.loads((tmp_path / "results" / "r" / "none" / "100" / "trial-1" / "result.json").read_text())
    assert result["resources"]["nodes"]["lab-node-a"]["source"] == "node_cpu_usage_seconds_total"
    assert result["resources"]["components"]["app"]["vcpu"] == 1.0


def test_existing_without_labelled_nodes_says_how_to_label_them(
    tmp_path: Path, scenario: Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.labelled["testbed.io/role=apps-b"] = []
    assert kube_run(tmp_path, scenario, "--context", "lab", platform="existing") == 1
    err = capsys.readouterr().err
    assert "kubectl --context lab label node NODE testbed.io/role=apps-b" in err
    assert "three different nodes: apps-a, apps-b, loadgen" in err
    assert not any("delete" in c or "apply" in c for c in fake.commands())


@pytest.mark.parametrize(
    "case",
    [
        ([], "no node of context lab is labelled testbed.io/pool=apps"),
        (["lab-node-a", "lab-node-c"], "node lab-node-c of context lab is labelled both"),
    ],
)
def test_existing_needs_a_pool_for_shared_components_off_the_load_generator(
    case: tuple[list[str], str],
    tmp_path: Path,
    scenario: Path,
    fake: FakeCluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pool, expected = case
    fake.labelled["testbed.io/pool=apps"] = pool
    assert kube_run(tmp_path, scenario, "--context", "lab", platform="existing") == 1
    err = capsys.readouterr().err
    assert expected in err
    assert not any("delete" in c or "apply" in c for c in fake.commands())


def test_existing_failure_keeps_pod_descriptions(tmp_path: Path, scenario: Path, fake: FakeCluster) -> None:
    fake.fail_on = "rollout status deploy/frontend"
    assert kube_run(tmp_path, scenario, "--context", "lab", platform="existing") == 1
    logs = tmp_path / "results" / "r" / "logs" / "none"
    assert (logs / "pods.txt").is_file() and (logs / "events.txt").is_file()
    assert fake.commands()[-1].startswith("kubectl --context lab delete namespace testbed")


# --- preflight pieces ------------------------------------------------------------------------------


def test_inotify_limits_below_kinds_needs_are_warned_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "max_user_watches").write_text("8192\n")
    (tmp_path / "max_user_instances").write_text("1024\n")
    assert inotify_problems(tmp_path) == [
        "fs.inotify.max_user_watches is 8192, below the 524288 that kind's nodes need (pods fail with "
        "'too many open files'): sudo sysctl fs.inotify.max_user_watches=524288"
    ]


def test_a_missing_helm_is_only_warned_about(
    tmp_path: Path,
    scenario: Path,
    fake: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """helm is part of the toolset but no CLI-based install runs it: preflight says so and goes on."""

    def tool_path(name: str, **_: Any) -> Path:
        if name == "helm":
            raise UsageError("helm v4.2.4 is neither in the tool cache nor on PATH: run `nox -s tools`")
        return Path(f"/fake/bin/{name}")

    monkeypatch.setattr(tools, "tool_path", tool_path)
    assert kube_run(tmp_path, scenario) == 0
    assert "helm v4.2.4 is neither in the tool cache nor on PATH" in capsys.readouterr().err
    assert "kind delete cluster --name testbed-none" in fake.commands("kind")


def test_no_docker_daemon_stops_before_anything_is_created(
    tmp_path: Path,
    scenario: Path,
    fake: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(docker, "daemon_reachable", lambda **_: "no Docker daemon answers: permission denied")
    assert kube_run(tmp_path, scenario) == 1
    assert "start Docker" in capsys.readouterr().err
    assert fake.commands("kind") == ["kind version"]


# --- `testbed load` as the in-cluster master, with real processes ------------------------------------


@pytest.mark.slow
def test_a_master_shares_the_load_among_workers_it_did_not_start(tmp_path: Path) -> None:
    """`--expect-workers 2 --master-bind 127.0.0.1:PORT` and two `python -m testbed.loadgen.worker`."""
    server = NullServer()
    port = free_port()
    master = subprocess.Popen(
        [
            *(sys.executable, "-m", "testbed", "--quiet", "load", server.url, "--rate", "200"),
            *("--duration", "2", "--warmup", "1", "--expect-workers", "2"),
            *("--master-bind", f"127.0.0.1:{port}", "--out", "-"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # the workers may also start first: they connect when the master listens
    workers = [
        subprocess.Popen([sys.executable, "-m", "testbed.loadgen.worker", "127.0.0.1", str(port)])
        for _ in range(2)
    ]
    try:
        out, err = master.communicate(timeout=120)
        assert master.returncode == 0, err
        result = json.loads(out)
        assert result["loadgen"]["processes"] == 2
        assert result["requests"] == 400 and result["errors"] == 0
        for worker in workers:  # a worker quits with its master
            assert worker.wait(timeout=30) == 0
    finally:
        for p in (master, *workers):
            if p.poll() is None:
                p.kill()
                p.wait()
        server.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--expect-workers", "2", "--processes", "2"],
            "--processes and --expect-workers exclude each other",
        ),
        (["--master-bind", "0.0.0.0:5557"], "--master-bind needs --expect-workers N"),
        (["--expect-workers", "2", "--master-bind", "nope"], "--master-bind 'nope': give HOST:PORT"),
    ],
)
def test_bad_master_options_are_one_line_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["load", "http://127.0.0.1:9/", "--rate", "1", "--duration", "1", "--out", "-", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def _fails_at(fake: FakeCluster, monkeypatch: pytest.MonkeyPatch, nth: Mapping[str, int]) -> None:
    """The `nth[fragment]`-th call whose command line holds `fragment` fails as kubectl does (exit 1)."""
    run = fake.run
    seen: Counter[str] = Counter()

    def failing(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        line = " ".join([Path(argv[0]).name, *argv[1:]])
        for fragment, n in nth.items():
            if fragment in line:
                seen[fragment] += 1
                if seen[fragment] == n:
                    fake.calls.append(list(argv))
                    stderr = "error: object has been deleted" if "rollout" in line else "error: timed out"
                    raise CommandError(
                        f"{line} exited with code 1: {stderr}",
                        argv=list(argv),
                        exit_code=1,
                        stdout="",
                        stderr=stderr + "\n",
                    )
        return run(argv, **kwargs)

    monkeypatch.setattr(proc, "run", failing)


def test_a_failed_setup_step_fails_that_trial_not_the_run(
    tmp_path: Path, scenario: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trial 1's workers were not deleted in time (a warning); trial 2's rollout then sees the old Deployment
    go: trial 2 fails before its load, its cleanup runs, and the run goes on to its end."""
    rollout = f"rollout status deploy/{WORKER_NAME}"
    delete = f"delete deployment {WORKER_NAME}"
    _fails_at(fake, monkeypatch, {delete: 1, rollout: 2})
    assert kube_run(tmp_path, scenario, "--loadgen-workers", "2") == 3
    assert (trial_files(tmp_path, 1) / "result.json").is_file()
    second = trial_files(tmp_path, 2)
    assert not (second / "result.json").exists()
    failed = json.loads((second / "failed.json").read_text())
    kubectl = "kubectl --context kind-testbed-none"
    assert failed["cause"] == (
        f"before the load: wait until {WORKER_NAME} is rolled out and ready failed: {kubectl} {rollout} "
        "-n testbed --timeout 5m exited with code 1: error: object has been deleted"
    )
    assert failed["setup_step"] == f"wait until {WORKER_NAME} is rolled out and ready"
    assert rollout in failed["setup_command"] and failed["measured"] is None
    # Trial 2 ran no load, but its cleanup ran after the failed rollout.
    commands = fake.commands("kubectl")
    assert len([c for c in commands if " exec deploy/loadgen " in c]) == 1
    deletes = [n for n, c in enumerate(commands) if delete in c]
    assert len(deletes) == 2 and deletes[1] > max(n for n, c in enumerate(commands) if rollout in c)
    meta = run_json(tmp_path)
    assert meta["status"] == "complete-with-failures"
    assert [f["path"] for f in meta["failures"]] == ["none/100/trial-2"]
    assert fake.commands()[-1] == "kind delete cluster --name testbed-none"
    assert not any("export logs" in c for c in fake.commands())  # not a failed run


def test_a_setup_failure_is_a_trial_failed_before_its_load(
    tmp_path: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`before_load`: a capacity search tries the same rate again rather than call it too high."""
    plan = kp.kind_plan(
        kube_mesh("none", "kind"),
        load_topology("shop"),
        versions=load_versions(),
        workdir=tmp_path / "work",
        logs_dir=tmp_path / "logs",
        loadgen_workers=2,
    )
    platform = KindPlatform(loadgen_workers=2)
    deployment = KubeDeployment(mesh="none", target_url=plan.target_url, plan=plan, nodes=NODES)
    _fails_at(fake, monkeypatch, {f"apply -f {plan.workers_manifest}": 1})
    config = LoadConfig(url=plan.target_url, rate=100, duration_s=10, warmup_s=3)
    with pytest.raises(TrialFailed) as failed:
        platform.measure(deployment, config, tmp_path / "trial")
    assert failed.value.before_load
    assert failed.value.message.startswith("before the load: start 2 load generator workers failed: ")
    # A pod not ready before the load, still not ready when read again, measured nothing either.
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    fake.namespace_pods = [not_ready(), not_ready()]
    with pytest.raises(TrialFailed) as unready:
        KindPlatform().measure(deployment, config, tmp_path / "trial-2")
    assert unready.value.before_load and "is not ready" in unready.value.message
    assert not any(" exec " in c for c in fake.commands())
    assert fake.commands()[-1].endswith(
        f"delete deployment {WORKER_NAME} -n testbed --ignore-not-found --cascade=foreground --timeout 60s"
    )


def test_a_second_session_creates_the_cluster_that_the_first_reused_and_deleted(
    tmp_path: Path, fake: FakeCluster
) -> None:
    """`testbed reproduce --reuse`: its open-loop twin is a second run on the same platform object."""
    platform = KindPlatform(reuse=True)
    topology = load_topology("shop")
    fake.clusters = [CLUSTER]
    with platform.session(tmp_path / "first"), platform.deploy(topology, "none", tmp_path / "first"):
        pass
    assert not any("create cluster" in c for c in fake.commands())
    assert fake.commands()[-1] == "kind delete cluster --name testbed-none"
    fake.clusters = []  # deleted at the end of the first
    fake.calls.clear()
    with platform.session(tmp_path / "second"), platform.deploy(topology, "none", tmp_path / "second"):
        pass
    assert any(c.startswith("kind create cluster --name testbed-none") for c in fake.commands())
