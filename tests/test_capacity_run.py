"""Capacity in `testbed run` (`profile = "capacity"`): the search per mesh through a platform, capacity.json,
failed and interrupted probes, the report's capacity section and its knee, the sessions, and a real run."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testbed import run
from testbed.capacity import Policy, advance, expected_probes, remaining, start
from testbed.errors import Interrupted, TestbedError, TrialFailed
from testbed.loadgen.config import LoadConfig
from testbed.reporting import capacity as cr
from testbed.reporting.report import write_report
from testbed.spec.scenario import load_scenario
from testbed.spec.topology import load_topology
from tests.conftest import run_testbed
from tests.test_images_and_workflow import RecordingSession, noxfile_module

SCENARIO = """
name = "cap"
description = "test"
profile = "capacity"
slo_p99_ms = 10
duration_s = 1
warmup_s = 0
cooldown_s = 0
[capacity]
start_rps = 100
max_rps = 100000
resolution = 0.05
repeats = 3
max_error_rate = 0.02
"""


def scenario_file(tmp_path: Path, text: str = SCENARIO) -> Path:
    path = tmp_path / "cap.toml"
    path.write_text(text)
    return path


def p99_ms(rate: float, capacity: float) -> float:
    """An M/M/1-like tail: 1 ms at no load, growing as 1 / (1 - load), past any objective at capacity."""
    return 1.0 / (1.0 - rate / capacity) if rate < capacity else 1000.0


def result(config: LoadConfig, p99: float) -> dict[str, Any]:
    """The fields of a `testbed.load` result that the search classifies."""
    requests = round(config.rate * config.duration_s)
    service = {"p50": 500.0, "p99": p99 * 1000}
    return {
        "schema": "testbed.load/1",
        "rate": config.rate,
        "requests": requests,
        "scheduled": requests,
        "errors": 0,
        "achieved_rate": config.rate,
        "valid": True,
        "invalid_reasons": [],
        "latency_us": {"service": service, "intended": service, "lateness": {"p99": 100.0}},
        "loadgen": {"cpu_percent": 20.0, "connection_waits": 0},
    }


@dataclass
class Deployment:
    mesh: str
    target_url: str


@dataclass
class FakePlatform:
    """A platform without processes: each mesh has a capacity; `fail` and `stop` pick probes to spoil."""

    capacity: dict[str, float]
    fail: set[tuple[str, int]] = field(default_factory=set)  # (mesh, probe number): TrialFailed
    #: (mesh, probe number): TrialFailed before the load (a pod not ready): nothing of the rate measured
    unready: set[tuple[str, int]] = field(default_factory=set)
    error_at: tuple[str, int] | None = None  # a TestbedError (the run stops)
    interrupt_at: tuple[str, int] | None = None  # Ctrl-C
    name: str = "fake"
    deployed: list[str] = field(default_factory=list)
    up: set[str] = field(default_factory=set)
    configs: dict[str, list[LoadConfig]] = field(default_factory=dict)

    def check_meshes(self, meshes: tuple[str, ...]) -> None:
        pass

    def versions(self, meshes: tuple[str, ...]) -> dict[str, str]:
        return {}

    @contextmanager
    def deploy(self, topology: Any, mesh: str, workdir: Path) -> Iterator[Deployment]:
        self.deployed.append(mesh)
        self.up.add(mesh)
        try:
            yield Deployment(mesh=mesh, target_url=f"http://{mesh}.invalid:8080/")
        finally:
            self.up.discard(mesh)

    def measure(self, deployment: Deployment, config: LoadConfig, trial_dir: Path) -> dict[str, Any]:
        assert deployment.mesh in self.up  # measured inside its deployment, never after it
        mesh = deployment.mesh
        self.configs.setdefault(mesh, []).append(config)
        where = (mesh, len(self.configs[mesh]))
        if where == self.interrupt_at:
            raise KeyboardInterrupt
        if where == self.error_at:
            raise TestbedError("the load generator failed (exit code 1): boom")
        if where in self.fail:
            raise TrialFailed("sidecar-frontend exited with code 1 during the load", failure={"died": "x"})
        if where in self.unready:
            raise TrialFailed("before the load: pod testbed/frontend-1 is not ready", before_load=True)
        return result(config, p99_ms(config.rate, self.capacity[mesh]))


def options(tmp_path: Path, platform: FakePlatform, meshes: tuple[str, ...] = ("none", "envoy")) -> Any:
    return run.RunOptions(
        platform=platform,
        meshes=meshes,
        scenario=load_scenario(scenario_file(tmp_path)),
        topology=load_topology("single"),
        out=tmp_path / "results",
        run_id="r",
    )


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "PAUSE_AFTER_FAIL_S", 0.0)


def read(path: Path) -> Any:
    return json.loads(path.read_text())


# The objective is p99 <= 10 ms: with p99 = 1 / (1 - rate / capacity), rates up to 90% of the capacity.
def test_a_capacity_run_searches_each_mesh_and_writes_capacity_json(tmp_path: Path) -> None:
    platform = FakePlatform(capacity={"none": 2000.0, "envoy": 1000.0})
    run_dir = run.execute(options(tmp_path, platform))
    meta = read(run_dir / "run.json")
    assert meta["status"] == "complete" and meta["planned_trials"] is None
    assert meta["scenario"]["capacity"]["slo_p99_ms"] == 10
    assert platform.deployed == ["none", "envoy"]  # once per mesh, the baseline first
    total = 0
    for mesh, capacity in platform.capacity.items():
        doc = read(run_dir / mesh / "capacity.json")
        assert doc["schema"] == "testbed.capacity/1" and doc["status"] == "complete"
        assert doc["mesh"] == mesh and doc["platform"] == "fake"
        assert doc["target"] == f"http://{mesh}.invalid:8080/"
        limit = 0.9 * capacity
        assert limit / 1.05 <= doc["max_rate_rps"] <= limit
        assert doc["limited_by"] == "target"
        assert doc["confirmation"] == {"rate": doc["max_rate_rps"], "passed": 3, "of": 3}
        # Every probe is a trial of its own: its rate, its files, and the search's error limit.
        dirs = sorted(p.name for p in (run_dir / mesh / "capacity").iterdir())
        assert len(dirs) == len(doc["probes"]) == len(platform.configs[mesh])
        for number, (probe, config) in enumerate(zip(doc["probes"], platform.configs[mesh], strict=True), 1):
            assert config.rate == probe["rate"] and config.seed == number
            assert config.limits.max_error_fraction == 0.02
            assert dirs[number - 1] == f"{number:02d}-{probe['phase']}-{probe['rate']:g}rps"
            saved = read(run_dir / mesh / probe["result"])
            assert saved["mesh"] == mesh and saved["trial"] == number and saved["rate"] == probe["rate"]
            assert saved["capacity_probe"] == {"phase": probe["phase"], "number": number}
        total += len(doc["probes"])
    assert meta["finished_trials"] == total

    paths = write_report(run_dir)
    summary = read(paths["summary"])
    assert summary["cells"] == []  # the probes are no latency cells
    cap = summary["capacity"]
    none, envoy = cap["meshes"]
    assert cap["baseline"] == "none" and none["vs_baseline"] is None
    share = envoy["max_rate_rps"] / none["max_rate_rps"]
    assert envoy["vs_baseline"] == {
        "share": round(share, 4),
        "cost": round(1 - share, 4),
        "bound": "measured",
    }
    assert 0.5 / 1.05 <= share <= 0.5 * 1.05
    for m in (none, envoy):
        assert m["knee"] is not None and m["knee"]["rate"] <= m["max_rate_rps"] * 1.05
    md = paths["markdown"].read_text()
    assert "## Capacity" in md
    assert f"| envoy | {envoy['max_rate_rps']:g} | 3 of 3 | target | {share:.1%} | {1 - share:.1%} |" in md
    assert f"**{envoy['knee']['rate']:g} rps:" in md
    html = paths["html"].read_text()
    assert "<h2>Capacity</h2>" in html and 'id="capacity"' in html and "SLO p99 10 ms" in html


def test_a_failed_probe_fails_with_its_cause_and_the_next_gets_a_fresh_deployment(tmp_path: Path) -> None:
    platform = FakePlatform(capacity={"none": 2000.0, "envoy": 1000.0}, fail={("envoy", 3)})
    run_dir = run.execute(options(tmp_path, platform))
    meta = read(run_dir / "run.json")
    assert meta["status"] == run.COMPLETE_WITH_FAILURES
    (failure,) = meta["failures"]
    assert failure["status"] == "failed" and failure["mesh"] == "envoy" and failure["trial"] == 3
    assert "sidecar-frontend exited" in failure["cause"]
    failed = read(run_dir / failure["path"] / "failed.json")
    assert failed["schema"] == run.FAILED_SCHEMA and failed["died"] == "x" and failed["phase"] == "step"
    assert not (run_dir / failure["path"] / "result.json").exists()
    assert platform.deployed == ["none", "envoy", "envoy"]
    doc = read(run_dir / "envoy" / "capacity.json")
    third = doc["probes"][2]
    assert third["verdict"] == "fail" and third["failed_by"] == "failed" and "exited" in third["reason"]
    assert third["result"] == f"capacity/03-step-{third['rate']:g}rps/failed.json"
    # The search went on below the rate that failed: it is the bound, the target's.
    assert doc["status"] == "complete" and doc["max_rate_rps"] < third["rate"]
    assert doc["limited_by"] == "target"
    assert third["rate"] not in [p["rate"] for p in doc["points"]]  # it measured nothing
    summary = read(write_report(run_dir)["summary"])
    assert summary["capacity"]["meshes"][1]["failed_probes"] == 1


def test_a_probe_that_failed_before_its_load_is_tried_again_at_the_same_rate(tmp_path: Path) -> None:
    """A pod not ready before the load measured nothing: the search must not call that rate too high."""
    (tmp_path / "clean").mkdir()
    (tmp_path / "unready").mkdir()
    clean = FakePlatform(capacity={"none": 2000.0, "envoy": 1000.0})
    expected = read(run.execute(options(tmp_path / "clean", clean)) / "envoy" / "capacity.json")
    platform = FakePlatform(capacity={"none": 2000.0, "envoy": 1000.0}, unready={("envoy", 3)})
    run_dir = run.execute(options(tmp_path / "unready", platform))
    doc = read(run_dir / "envoy" / "capacity.json")
    third, fourth = doc["probes"][2], doc["probes"][3]
    assert third["failed_by"] == "failed" and third["reason"].startswith("before the load: pod testbed/")
    assert fourth["rate"] == third["rate"] and fourth["phase"] == third["phase"]  # the same rate again
    assert doc["max_rate_rps"] == expected["max_rate_rps"]  # the answer is the clean run's
    assert len(doc["probes"]) == len(expected["probes"]) + 1


def test_failed_probes_in_a_row_stop_that_mesh_and_the_run_goes_on(tmp_path: Path) -> None:
    platform = FakePlatform(capacity={"none": 2000.0, "envoy": 1000.0}, fail={("none", 2), ("none", 3)})
    run_dir = run.execute(options(tmp_path, platform))
    meta = read(run_dir / "run.json")
    assert meta["status"] == run.COMPLETE_WITH_FAILURES
    assert [f["status"] for f in meta["failures"]] == ["failed", "failed", "skipped"]
    assert "2 consecutive failed probes of none" in meta["failures"][-1]["cause"]
    none = read(run_dir / "none" / "capacity.json")
    assert none["status"] == "stopped" and none["max_rate_rps"] is None and len(none["probes"]) == 3
    assert "no answer: the search is stopped after 3 probe(s)" in none["note"]
    envoy = read(run_dir / "envoy" / "capacity.json")
    assert envoy["status"] == "complete" and envoy["max_rate_rps"]
    summary = read(write_report(run_dir)["summary"])
    rows = {m["mesh"]: m for m in summary["capacity"]["meshes"]}
    assert rows["envoy"]["vs_baseline"] is None  # no baseline answer, no share
    md = (run_dir / "report.md").read_text()
    assert "| none | none (stopped) |" in md


def test_ctrl_c_keeps_every_probe_measured(tmp_path: Path) -> None:
    platform = FakePlatform(capacity={"none": 2000.0, "envoy": 1000.0}, interrupt_at=("envoy", 2))
    with pytest.raises(Interrupted) as caught:
        run.execute(options(tmp_path, platform))
    run_dir = tmp_path / "results" / "r"
    assert "kept in" in caught.value.message and "testbed report" in caught.value.message
    meta = read(run_dir / "run.json")
    none = read(run_dir / "none" / "capacity.json")
    envoy = read(run_dir / "envoy" / "capacity.json")
    assert meta["status"] == "interrupted"
    assert meta["finished_trials"] == len(none["probes"]) + 1
    assert none["status"] == "complete" and envoy["status"] == "interrupted"
    assert len(envoy["probes"]) == 1 and envoy["max_rate_rps"] is None
    summary = read(write_report(run_dir)["summary"])
    assert [m["status"] for m in summary["capacity"]["meshes"]] == ["complete", "interrupted"]


def test_an_error_stops_the_run_and_keeps_the_search(tmp_path: Path) -> None:
    platform = FakePlatform(capacity={"none": 2000.0}, error_at=("none", 4))
    with pytest.raises(TestbedError, match="boom"):
        run.execute(options(tmp_path, platform, meshes=("none",)))
    run_dir = tmp_path / "results" / "r"
    assert read(run_dir / "run.json")["status"] == "failed"
    doc = read(run_dir / "none" / "capacity.json")
    assert doc["status"] == "failed" and len(doc["probes"]) == 3 and "boom" in doc["cause"]


@pytest.mark.parametrize(
    ("platform", "meshes", "cluster"),
    [
        (["--platform", "kind"], ("none", "istio"), "+ kind create cluster --name testbed-{mesh} "),
        (["--platform", "existing", "--context", "ctx1"], ("none", "linkerd"), "kubectl --context ctx1 exec"),
    ],
)
def test_the_dry_run_of_a_kube_capacity_run_shows_each_mesh_and_its_first_probe(
    tmp_path: Path, platform: list[str], meshes: tuple[str, str], cluster: str
) -> None:
    proc = run_testbed(
        "run", *platform, "--mesh", ",".join(meshes), "--scenario", "capacity", "--dry-run",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first = load_scenario("capacity").capacity
    assert first is not None
    for number, mesh in enumerate(meshes, 1):
        assert f"== trial {number}/2: mesh {mesh}, {first.start_rps:g} rps, trial 1" in proc.stdout
        assert cluster.format(mesh=mesh) in proc.stdout
    assert proc.stdout.count(f"--rate {first.start_rps:g} --duration 5 --warmup 1 --connections 64") == 2
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_sessions_run_the_capacity_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    noxfile = noxfile_module(monkeypatch)
    session = RecordingSession()
    noxfile.bench_capacity(session)
    (argv,) = session.runs
    assert argv[:2] == ("testbed", "run")
    assert argv[argv.index("--platform") + 1] == "local" and argv[argv.index("--mesh") + 1] == "none,envoy"
    assert argv[argv.index("--scenario") + 1] == "capacity"
    # A kind session takes the capacity scenario after `--`: the last --scenario is the one argparse keeps.
    session = RecordingSession()
    session.posargs = ["--scenario", "capacity", "--dry-run"]
    noxfile.bench_istio(session)
    (argv,) = session.runs
    proc = run_testbed(*argv[1:])
    assert proc.returncode == 0, proc.stderr
    assert "== trial 2/2: mesh istio, 100 rps, trial 1" in proc.stdout  # the search's first probes


def test_the_shipped_capacity_scenario_fits_bench_capacity_in_10_minutes() -> None:
    scenario = load_scenario("capacity")
    spec = scenario.capacity
    assert spec is not None and scenario.rates == ()
    # A probe: its warm-up, window and cool-down, and about 1.5 s of load generator start-up and exit.
    probe_s = scenario.warmup_s + scenario.duration_s + scenario.cooldown_s + 1.5
    policy = Policy(start_rate=spec.start_rps, max_rate=spec.max_rps, resolution=spec.resolution)
    # A target at 1,500 rps (none) and one at 180 (Envoy): the doublings, the bisection and the repeats,
    # plus two refuted answers (3 repeats each, and a failed probe's 1 s pause) for noise.
    probes = 0
    for capacity in (1500.0, 180.0):
        state = start(policy)
        while state.phase != "done":
            state = advance(state, state.rate <= capacity, policy)
            probes += 1
        probes += 2 * spec.repeats
    assert probes * (probe_s + 0.5) + 2 * 30 <= 8 * 60  # 2 deployments of 30 s at most; 2 min to spare


# --- the search's estimates ---------------------------------------------------------------------------


def test_remaining_is_close_to_the_probes_left() -> None:
    policy = Policy(start_rate=100, max_rate=10_000, resolution=0.05, repeats=3)
    for capacity in (150.0, 1234.0, 5000.0):
        states = []
        state = start(policy)
        while state.phase != "done":
            states.append(state)
            state = advance(state, state.rate <= capacity, policy)
        assert remaining(state, policy) == 0
        for i, earlier in enumerate(states):
            left = len(states) - i
            if earlier.phase == "confirm":
                assert remaining(earlier, policy) == left
            elif earlier.phase == "bisect":
                assert abs(remaining(earlier, policy) - left) <= 1, (capacity, earlier)
    assert expected_probes(policy) == 4 + 5 + 3  # steps, log2(1 / 0.05) bisections, the repeats


def test_a_refuted_answer_steps_down_to_a_readable_rate() -> None:
    policy = Policy(start_rate=1600, max_rate=1600, resolution=0.1, repeats=1)
    state = advance(start(policy), True, policy)  # the cap passed: confirm it
    rates = []
    for _ in range(3):
        state = advance(state, False, policy)
        rates.append(state.rate)
    assert rates == [1440.0, 1296.0, 1166.4]


# --- the report's figures, on constructed documents and curves -----------------------------------------


def test_the_knee_of_a_hockey_stick_is_its_corner() -> None:
    xs = [100.0 * i for i in range(1, 11)]
    ys = [1.0 if x <= 600 else 1.0 + (x - 600) * 0.1 for x in xs]
    assert cr.knee(xs, ys) == 5  # 600 rps: flat before, steep after
    # The order of the points does not matter; the index is into the lists as given.
    order = [3, 9, 0, 5, 7, 1, 8, 2, 6, 4]
    assert order[cr.knee([xs[i] for i in order], [ys[i] for i in order]) or 0] == 5


def test_the_knee_of_a_queue_is_where_its_slope_passes_the_chords() -> None:
    xs = [50.0 * i for i in range(1, 20)]  # 50 .. 950 rps of a 1,000 rps queue
    ys = [p99_ms(x, 1000.0) for x in xs]
    k = cr.knee(xs, ys)
    assert k is not None and 0 < k < len(xs) - 1
    chord = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
    # Kneedle's point: farthest below the chord, so the curve is flatter than the chord before it and
    # steeper after it.
    assert (ys[k] - ys[k - 1]) / (xs[k] - xs[k - 1]) <= chord <= (ys[k + 1] - ys[k]) / (xs[k + 1] - xs[k])
    assert 700 <= xs[k] <= 900


def test_a_lucky_probe_past_the_turn_is_not_the_knee() -> None:
    """Measured (bench-capacity, Envoy): 300 rps had a lower p99 than 250 by luck; the knee is the turn."""
    xs = [100, 162, 180, 200, 212.5, 225, 250, 300, 400]
    ys = [13.5, 21.6, 31.3, 34.1, 35.5, 100.4, 146.7, 76.4, 303.9]
    assert cr.knee(xs, ys) == 4  # 212.5 rps; on the raw p99 it would be 300 rps
    assert cr.knee(xs, ys) == cr.knee(xs, [*ys[:7], 146.7, 303.9])  # as if 300 rps had matched 250


@pytest.mark.parametrize(
    ("xs", "ys"),
    [
        ([100, 200, 300, 400], [1.0, 2.0, 3.0, 4.0]),  # a straight line: no turn
        ([100, 200, 300, 400], [1.0, 3.0, 3.5, 3.7]),  # it flattens: concave
        ([100, 200, 400], [0.504, 0.373, 0.702]),  # noise around a flat curve: never twice its lowest
        ([100, 200], [1.0, 50.0]),  # two points
        ([100, 200, 300], [5.0, 5.0, 5.0]),  # flat
        ([100, 200, 300, 400], [10.0, 9.0, 5.0, 1.0]),  # falling
    ],
)
def test_curves_without_a_knee(xs: list[float], ys: list[float]) -> None:
    assert cr.knee(xs, ys) is None


def test_knee_needs_as_many_ys_as_xs() -> None:
    with pytest.raises(ValueError, match="3 x values for 2 y values"):
        cr.knee([1, 2, 3], [1, 2])


def probe(rate: float, p99: float, verdict: str = "pass", failed_by: str | None = None) -> dict[str, Any]:
    return {
        "rate": rate,
        "achieved_rate": rate * 0.99,
        "p50_ms": p99 / 4,
        "p99_ms": p99,
        "verdict": verdict,
        "failed_by": failed_by,
    }


def test_the_curve_has_one_point_per_rate_with_the_median_of_its_probes() -> None:
    doc = {
        "probes": [
            probe(200, 9.0),
            probe(100, 1.0),
            probe(200, 2.0),
            probe(400, 0.0, "fail", "failed"),  # a failed trial measured nothing
            probe(200, 30.0, "fail", "slo"),
        ]
    }
    points = cr.curve(doc)
    assert [p.rate for p in points] == [100, 200]
    assert points[1].p99_ms == statistics.median([9.0, 2.0, 30.0]) and points[1].probes == 3
    assert points[1].passed == 2
    assert math.isclose(points[1].achieved_rate, 198.0)


@pytest.mark.parametrize(
    ("mesh_limit", "base_limit", "bound", "share", "cost"),
    [
        ("target", "target", "measured", "50.0%", "50.0%"),
        ("generator", "target", "at least", ">= 50.0%", "<= 50.0%"),
        ("target", "max-rate", "at most", "<= 50.0%", ">= 50.0%"),
        ("generator", "generator", "unknown", "~50.0%", "unknown (both are lower bounds)"),
    ],
)
def test_a_share_from_a_lower_bound_says_which_way_it_may_be_off(
    mesh_limit: str, base_limit: str, bound: str, share: str, cost: str
) -> None:
    base = {"mesh": "none", "max_rate_rps": 1000.0, "limited_by": base_limit, "probes": []}
    mesh = {"mesh": "envoy", "max_rate_rps": 500.0, "limited_by": mesh_limit, "probes": []}
    section = cr.section({"none/capacity.json": base, "envoy/capacity.json": mesh}, baseline="none")
    envoy = section["meshes"][1]
    assert envoy["vs_baseline"] == {"share": 0.5, "cost": 0.5, "bound": bound}
    assert cr.share_text(envoy) == (share, cost)
    # Without the baseline in the run, no share.
    alone = cr.section({"envoy/capacity.json": mesh}, baseline="none")
    assert alone["baseline"] is None and alone["meshes"][0]["vs_baseline"] is None


def test_read_skips_what_is_not_a_capacity_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for mesh, text in [
        ("envoy", json.dumps({"schema": "testbed.capacity/1", "mesh": "envoy"})),
        ("none", json.dumps({"schema": "testbed.capacity/1", "mesh": "none"})),
        ("linkerd", "{not json"),
        ("istio", json.dumps({"schema": "testbed.load/1"})),
    ]:
        (tmp_path / mesh).mkdir()
        (tmp_path / mesh / "capacity.json").write_text(text)
    docs = cr.read(tmp_path, ["none", "envoy"])
    assert list(docs) == ["none/capacity.json", "envoy/capacity.json"]  # the run's order
    err = capsys.readouterr().err
    assert "linkerd/capacity.json: cannot be read" in err and "not a testbed.capacity/1 document" in err


# --- for real: the local platform ------------------------------------------------------------------------

#: One service that spins 2 ms of CPU per request on its one event loop: it serves at most 500 rps.
BUSY = """
name = "busy"
entry = "busy"
[services.busy]
payload_bytes = 64
work_us = 2000
"""


@pytest.mark.slow
def test_a_local_capacity_run_finds_a_sane_answer_and_reports_it(tmp_path: Path) -> None:
    topology = tmp_path / "busy.toml"
    topology.write_text(BUSY)
    scenario = scenario_file(
        tmp_path,
        """
name = "cap-local"
description = "the done-when test"
profile = "capacity"
slo_p99_ms = 20
duration_s = 1
warmup_s = 0.5
cooldown_s = 0
connections = 32
max_lateness_ms = 8
[capacity]
start_rps = 100
max_rps = 1600
resolution = 0.25
repeats = 1
""",
    )
    started = time.monotonic()
    proc = run_testbed(
        "run", "--platform", "local", "--mesh", "none", "--topology", str(topology),
        "--scenario", str(scenario), "--out", str(tmp_path), "--run-id", "cap", timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 60
    run_dir = tmp_path / "cap"
    doc = read(run_dir / "none" / "capacity.json")
    assert doc["status"] == "complete" and doc["platform"] == "local"
    # 2 ms of CPU per request in one process: never above 500 rps; the first rates pass easily.
    assert doc["max_rate_rps"] is not None and 100 <= doc["max_rate_rps"] <= 500
    assert doc["limited_by"] in ("target", "generator")
    assert any(p["rate"] > doc["max_rate_rps"] and p["verdict"] == "fail" for p in doc["probes"])
    for p in doc["probes"]:
        saved = read(run_dir / "none" / p["result"])
        assert saved["mesh"] == "none" and saved["resources"]["components"]["app"]["processes"] == 1
    assert "## Capacity" in proc.stdout and f"| none | {doc['max_rate_rps']:g} |" in proc.stdout
    assert (run_dir / "report.html").is_file()


def test_trials_on_the_command_line_are_the_capacity_searchs_repeats() -> None:
    from testbed.cli import _with_trials
    from testbed.errors import UsageError
    from testbed.spec.scenario import load_scenario

    scenario = _with_trials(load_scenario("capacity"), 5)
    assert scenario.capacity is not None and scenario.capacity.repeats == 5 and scenario.trials == 5
    assert _with_trials(load_scenario("steady"), 2).trials == 2
    with pytest.raises(UsageError, match="--trials must be at least 1"):
        _with_trials(load_scenario("capacity"), 0)
