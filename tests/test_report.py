"""Analysis, reports and comparison on run directories written exactly as `testbed run` writes them.

The trials here are synthetic (histograms drawn with a fixed seed, `testbed/bench/report.py`) so that
the expected figures are known; `test_compare_catches_a_real_regression` does the same on real runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats

from testbed.bench.report import trial_result, write_run
from testbed.loadgen.result import decode, encode, new_histogram
from testbed.reporting import analysis, stats
from tests.conftest import run_testbed


def _run(
    tmp_path: Path,
    name: str,
    medians: dict[tuple[str, float], list[float]],
    *,
    requests: int = 2000,
    sigma: float = 0.3,
    seed: int = 1,
    invalid: dict[tuple[str, float], int] | None = None,
) -> Path:
    rng = np.random.default_rng(seed)
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for key, values in medians.items():
        cells[key] = [
            trial_result(
                rng, mesh=key[0], rate=key[1], trial=i + 1, requests=requests, median_us=m, sigma=sigma,
                valid=(invalid or {}).get(key) != i + 1,
                reasons=("send lateness p99 9.1 ms exceeds 2 ms: the generator fell behind",)
                if (invalid or {}).get(key) == i + 1 else (),
            )
            for i, m in enumerate(values)
        ]  # fmt: skip
    return write_run(tmp_path / name, cells)


def _constant(value: int, n: int) -> str:
    h = new_histogram()
    h.record_value(value, n)
    return encode(h)


# --- statistics ----------------------------------------------------------------------------------------


def test_percentiles_from_counts_equal_hdrhistogram() -> None:
    rng = np.random.default_rng(7)
    for sigma in (0.1, 0.8, 2.0):
        h = new_histogram()
        for v in np.clip(rng.lognormal(7, sigma, 5000).astype(int), 1, 60_000_000):
            h.record_value(int(v))
        counts = stats.counts(encode(h))
        for q in (0.1, 50, 90, 99, 99.9, 99.99):
            assert stats.percentile(counts, q) == h.get_value_at_percentile(q)
        assert stats.percentile(counts, 100) == h.get_max_value()
        assert stats.mean(counts) == pytest.approx(h.get_mean_value(), rel=1e-3)


def test_bootstrap_interval_agrees_with_scipy() -> None:
    """Same method, independent code: scipy resamples trial indices, pooled percentile as the statistic."""
    rng = np.random.default_rng(3)
    trials = [stats.counts(_histogram_of(rng.lognormal(np.log(m), 0.3, 3000))) for m in
              rng.uniform(900, 1300, 10)]  # fmt: skip
    ours = stats.interval(stats.bootstrap(trials, [99.0], seed=stats.SEED)[:, 0])
    assert ours is not None

    def pooled_p99(indices: np.ndarray[Any, Any]) -> float:
        return stats.percentile(np.sum([trials[int(i)] for i in indices], axis=0), 99.0)

    theirs = scipy.stats.bootstrap(
        (np.arange(10),), pooled_p99, vectorized=False, method="percentile", n_resamples=2000,
        rng=np.random.default_rng(5),
    ).confidence_interval  # fmt: skip
    width = theirs.high - theirs.low
    assert abs(ours.low - theirs.low) < 0.15 * width
    assert abs(ours.high - theirs.high) < 0.15 * width


def _histogram_of(values: np.ndarray[Any, Any]) -> str:
    h = new_histogram()
    for v in np.clip(values.astype(int), 1, 60_000_000):
        h.record_value(int(v))
    return encode(h)


def test_identical_trials_give_a_zero_width_interval_and_exact_overhead(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rng = np.random.default_rng(1)
    cells = {}
    for mesh, value in (("none", 1000), ("envoy", 1500)):
        results = []
        for i in range(3):
            r = trial_result(rng, mesh=mesh, rate=100.0, trial=i + 1, requests=100, median_us=value)
            r["hdr"]["service"] = _constant(value, 100)
            results.append(r)
        cells[(mesh, 100.0)] = results
    write_run(run, cells)
    summary = analysis.summary(analysis.load_run(run))
    envoy = next(c for c in summary["cells"] if c["mesh"] == "envoy")
    p50 = envoy["overhead"]["p50"]
    assert p50["us"] == decode(_constant(1500, 1)).get_value_at_percentile(50) - decode(
        _constant(1000, 1)
    ).get_value_at_percentile(50)
    assert p50["ci_us"] == [p50["us"], p50["us"]]
    assert p50["pct"] == pytest.approx(50.0, abs=0.2)


# --- analysis -----------------------------------------------------------------------------------------


def test_summary_pools_valid_trials_and_lists_invalid_ones(tmp_path: Path) -> None:
    run = _run(
        tmp_path, "r",
        {("none", 100.0): [1000, 1010, 990, 1000], ("envoy", 100.0): [1500, 1490, 1510, 9000]},
        invalid={("envoy", 100.0): 4},
    )  # fmt: skip
    summary = analysis.summary(analysis.load_run(run))
    assert summary["schema"] == "testbed.summary/1"
    envoy = next(c for c in summary["cells"] if c["mesh"] == "envoy")
    assert envoy["trials"] == 4 and envoy["valid_trials"] == 3
    # The invalid 9 ms trial is excluded: the pooled median stays near 1.5 ms.
    assert 1400 < envoy["latency_us"]["p50"] < 1600
    assert 400 < envoy["overhead"]["p50"]["us"] < 600
    low, high = envoy["overhead"]["p50"]["ci_us"]
    assert low <= envoy["overhead"]["p50"]["us"] <= high and low > 0
    assert [t["path"] for t in summary["invalid_trials"]] == ["envoy/100/trial-4"]
    assert "fell behind" in summary["invalid_trials"][0]["reasons"][0]
    assert any("1 of 8 trials are invalid" in w for w in summary["warnings"])
    # Resource cost per 1,000 rps: 0.3 vCPU of sidecars at 100 rps is 3 vCPU per 1k rps.
    assert envoy["resources"]["sidecar"]["vcpu_per_krps"] == pytest.approx(3.0)
    assert envoy["resource_overhead"]["vcpu_per_krps"] == pytest.approx(3.0)


def test_hypervisor_steal_is_warned_about(tmp_path: Path) -> None:
    medians = {("none", 100.0): [1000, 1000, 1000], ("envoy", 100.0): [1500, 1500, 1500]}
    quiet = _run(tmp_path, "quiet", medians)
    assert not any("steal" in w for w in analysis.summary(analysis.load_run(quiet))["warnings"])
    noisy = _run(tmp_path, "noisy", medians)
    stolen = noisy / "envoy" / "100" / "trial-2" / "result.json"
    result = json.loads(stolen.read_text())
    result["resources"]["host"] = {"cores": 2, "busy_vcpu": 1.2, "steal_percent": 6.5}
    stolen.write_text(json.dumps(result))
    warnings = analysis.summary(analysis.load_run(noisy))["warnings"]
    assert any("took up to 6.5% of this VM's CPU time (steal)" in w for w in warnings), warnings


def test_unstable_and_thin_cells_are_warned_about(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", {("none", 100.0): [1000, 2000, 700], ("envoy", 100.0): [1500]})
    warnings = analysis.summary(analysis.load_run(run))["warnings"]
    assert any("none at 100 rps: p50 is unstable" in w for w in warnings), warnings
    assert any("envoy at 100 rps: only 1 valid trial" in w for w in warnings), warnings
    stable = _run(tmp_path, "s", {("none", 100.0): [1000] * 5, ("envoy", 100.0): [1500] * 5}, seed=2)
    assert not [w for w in analysis.summary(analysis.load_run(stable))["warnings"] if "unstable" in w]


# --- the report command ----------------------------------------------------------------------------------


def test_report_writes_html_markdown_and_summary(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", {("none", 100.0): [1000, 1010, 990], ("envoy", 100.0): [1500, 1490, 1510]})
    proc = run_testbed("report", str(run))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schema"] == "testbed.summary/1" and summary["baseline"] == "none"
    md = (run / "report.md").read_text()
    assert "| envoy | 100 | 3/3 |" in md and "## Published claims vs measured here" in md
    page = (run / "report.html").read_text()
    assert page.count('class="plotly-graph-div"') == 4  # 1 spectrum, overhead, by rate, resources
    assert "<script src=" not in page and "<script>/**" in page  # plotly.js inlined: opens offline
    # Claims about Istio's sidecars are matched to the local Envoy sidecars, with the setup differences.
    assert any(c["claim_id"].startswith("istio") for c in summary["claims"])
    assert all(c["differences"] for c in summary["claims"])


def test_report_out_and_bad_input(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", {("none", 100.0): [1000, 1000], ("envoy", 100.0): [1500, 1500]})
    out = tmp_path / "site" / "index.html"
    assert run_testbed("report", str(run), "--out", str(out)).returncode == 0
    assert out.is_file() and (out.parent / "summary.json").is_file() and (out.parent / "report.md").is_file()
    for args, words in (
        ([str(tmp_path)], "not a run directory"),
        ([str(run), "--baseline", "istio"], "baseline mesh 'istio' is not in this run"),
        ([str(run), "--out", str(tmp_path / "x.txt")], "ending in .html"),
    ):
        proc = run_testbed("report", *args)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_report_in_smp_format(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", {("none", 100.0): [1000, 1000], ("envoy", 100.0): [1500, 1500]})
    proc = run_testbed("report", str(run), "--format", "smp")
    assert proc.returncode == 0, proc.stderr
    exported = json.loads((run / "smp.json").read_text())
    docs = exported if isinstance(exported, list) else [exported]
    assert len(docs) == 2
    p50 = sorted(d["result"]["latencies_ms"]["p50"] for d in docs)
    assert p50[0] == pytest.approx(1.0, rel=0.05) and p50[1] == pytest.approx(1.5, rel=0.05)


def test_report_scales_to_many_trials(tmp_path: Path) -> None:
    """A smaller cousin of `nox -s bench-report` (50 trials of 1M requests in under 10 s)."""
    medians = {
        (m, r): [1000.0 + 100 * i for i in range(5)] for m in ("none", "envoy") for r in (100.0, 200.0)
    }
    run = _run(tmp_path, "r", medians, requests=20_000)
    proc = run_testbed("report", str(run), timeout=60)
    assert proc.returncode == 0, proc.stderr


# --- compare ----------------------------------------------------------------------------------------------


def test_compare_passes_the_same_and_catches_a_shift(tmp_path: Path) -> None:
    base = {("none", 100.0): [1000, 1020, 980, 1010, 990]}
    old = _run(tmp_path, "old", base, seed=1)
    same = _run(tmp_path, "same", base, seed=2)
    slower = _run(tmp_path, "slower", {k: [m + 1000 for m in v] for k, v in base.items()}, seed=3)
    slightly = _run(tmp_path, "slightly", {k: [m + 100 for m in v] for k, v in base.items()}, seed=4)

    proc = run_testbed("compare", str(old), str(same))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdict: no regression" in proc.stdout

    md = tmp_path / "cmp.md"
    proc = run_testbed("compare", str(old), str(slower), "--md", str(md))
    assert proc.returncode == 1, proc.stdout
    assert "REGRESSION" in proc.stdout and "## testbed compare: REGRESSION" in md.read_text()

    # 0.1 ms worse is real here but under the default 0.2 ms threshold; a 0.05 ms threshold catches it.
    assert run_testbed("compare", str(old), str(slightly)).returncode == 0
    assert run_testbed("compare", str(old), str(slightly), "--threshold-ms", "0.05").returncode == 1
    # Better is never a failure.
    assert run_testbed("compare", str(slower), str(old)).returncode == 0


def test_compare_does_not_gate_on_too_few_trials(tmp_path: Path) -> None:
    """With 3 trials a side, intervals are too narrow to fail a build on: shown, never failed."""
    base = {("none", 100.0): [1000, 1020, 980]}
    old = _run(tmp_path, "old", base, seed=1)
    slower = _run(tmp_path, "slower", {k: [m + 1000 for m in v] for k, v in base.items()}, seed=3)
    proc = run_testbed("compare", str(old), str(slower))
    assert proc.returncode == 0, proc.stdout
    assert "not judged: 3 valid trials (need 5)" in proc.stdout
    assert "Not judged, under 5 valid trials in a run: none at 100 rps" in proc.stdout


def test_compare_bad_input(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", {("none", 100.0): [1000, 1000]})
    b = _run(tmp_path, "b", {("none", 200.0): [1000, 1000]})
    for args, words in (
        ([str(a), str(b)], "share no (mesh, rate)"),
        ([str(a), str(tmp_path / "nope")], "not a run directory"),
        ([str(a), str(a), "--percentiles", "p42"], "choose from"),
        ([str(a), str(a), "--threshold-ms", "-1"], "must not be negative"),
    ):
        proc = run_testbed("compare", *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert words in proc.stderr and "Traceback" not in proc.stderr


# --- a real regression, made on purpose ----------------------------------------------------------------

_TOPOLOGY = """
name = "pair"
entry = "front"

[services.front]
work = "sleep"
work_us = {work}
calls = ["back"]

[services.back]
work_us = 100
"""

_SCENARIO = """
name = "cmp"
description = "compare test: short trials"
rates = [100]
duration_s = 2
warmup_s = 1
trials = 6
connections = 8
arrival = "uniform"
cooldown_s = 0.5
max_lateness_ms = 8
"""


@pytest.mark.slow
def test_compare_catches_a_real_regression(tmp_path: Path) -> None:
    """The same topology with 2 ms more simulated work (an event-loop sleep, so that the extra time does not
    compete for the 2 cores) is caught; a rerun of the same configuration passes.

    2 ms, not 1: on this 2-core VM 1 ms more work showed as +0.47 to +1.4 ms at p50 between runs while
    identical runs drift by up to 0.33 ms, too close to the thresholds for a test that must never flake
    (`testbed compare` did flag the 1 ms runs with its default thresholds: see the issue's note).

    Six trials a run: `compare` gates on cells with at least five valid ones, and on this shared machine a
    two-second trial is now and then invalid (the generator's lateness)."""
    (tmp_path / "cmp.toml").write_text(_SCENARIO)
    runs = {}
    for name, work in (("old", 1000), ("same", 1000), ("slower", 3000)):
        topology = tmp_path / f"{name}-topology.toml"
        topology.write_text(_TOPOLOGY.format(work=work))
        proc = run_testbed(
            "run", "--platform", "local", "--mesh", "none", "--scenario", str(tmp_path / "cmp.toml"),
            "--topology", str(topology), "--out", str(tmp_path / "results"), "--run-id", name, timeout=240,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        runs[name] = tmp_path / "results" / name
    # Gated as a CI job on a shared 2-core VM would be: at p50, where runs a minute apart drift by up to
    # about 0.3 ms (20%) with nothing changed; the p90 and p99 of 2-second trials here swing by up to 2x
    # between identical runs (test_compare_passes_the_same_and_catches_a_shift covers those percentiles).
    gate = ("--percentiles", "p50", "--threshold-ms", "0.4", "--threshold-pct", "20")
    same = run_testbed("compare", str(runs["old"]), str(runs["same"]), *gate)
    assert same.returncode == 0, same.stdout
    slower = run_testbed("compare", str(runs["old"]), str(runs["slower"]), *gate)
    assert slower.returncode == 1, slower.stdout
    p50 = next(line for line in slower.stdout.splitlines() if line.startswith("none") and " p50 " in line)
    assert "REGRESSION" in p50
