"""`nox -s bench-report`: how long and how much memory `testbed report` takes for a big run.

Writes a run directory of synthetic trials (histograms of lognormal latencies drawn with numpy, recorded
into real HdrHistograms with counts, so that the files are exactly what the engine writes), then times
`testbed report` on it in a child process and reads the child's peak RSS. The synthetic run is clearly
named and kept out of results/: it measures the report's cost, never a mesh.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from testbed.loadgen.result import HISTOGRAMS, encode, new_histogram, summarize


def _histogram(rng: np.random.Generator, n: int, median_us: float, sigma: float) -> str:
    values = np.clip(rng.lognormal(np.log(median_us), sigma, n).round(), 1, 60_000_000).astype(np.int64)
    unique, counts = np.unique(values, return_counts=True)
    h = new_histogram()
    for v, c in zip(unique.tolist(), counts.tolist(), strict=True):
        h.record_value(v, c)
    return encode(h)


def trial_result(
    rng: np.random.Generator,
    *,
    mesh: str,
    rate: float,
    trial: int,
    requests: int,
    median_us: float,
    sigma: float = 0.5,
    valid: bool = True,
    reasons: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A `testbed.load/1` result with histograms drawn from a lognormal of the given median."""
    hdr = {
        "service": _histogram(rng, requests, median_us, sigma),
        "intended": _histogram(rng, requests, median_us * 1.1, sigma),
        "lateness": _histogram(rng, requests, 200.0, 0.3),
    }
    from testbed.loadgen.result import decode

    latency = {name: summarize(decode(hdr[name])) for name in HISTOGRAMS}
    duration = requests / rate
    return {
        "schema": "testbed.load/1",
        "target": "http://127.0.0.1:1/",
        "rate": rate,
        "duration_s": duration,
        "warmup_s": 1.0,
        "arrival": "uniform",
        "connections": 16,
        "requests": requests,
        "scheduled": requests,
        "errors": 0,
        "error_kinds": {},
        "achieved_rate": rate,
        "valid": valid,
        "invalid_reasons": list(reasons),
        "latency_us": latency,
        "hdr": hdr,
        "loadgen": {"cpu_percent": 20.0, "processes": 1, "locust_version": "synthetic", "python": "3"},
        "started_at": "2026-01-01T00:00:00+00:00",
        "resources": {
            "window_s": duration,
            "source": "synthetic",
            "components": {
                "app": {"cpu_seconds": 0.2 * duration, "vcpu": 0.2, "peak_rss_mb": 120.0, "processes": 4},
                "sidecar": {
                    "cpu_seconds": (0.3 if mesh != "none" else 0.0) * duration,
                    "vcpu": 0.3 if mesh != "none" else 0.0,
                    "peak_rss_mb": 300.0 if mesh != "none" else 0.0,
                    "processes": 5 if mesh != "none" else 0,
                },
                "loadgen": {"cpu_seconds": 0.1 * duration, "vcpu": 0.1, "peak_rss_mb": 50.0, "processes": 1},
            },
        },
        "mesh": mesh,
        "trial": trial,
        "platform": "synthetic",
    }


def write_run(
    run_dir: Path,
    cells: dict[tuple[str, float], list[dict[str, Any]]],
    *,
    scenario: str = "synthetic",
) -> Path:
    """A run directory as `testbed run` writes it, from trial results per (mesh, rate)."""
    meshes = list(dict.fromkeys(mesh for mesh, _ in cells))
    rates = sorted({rate for _, rate in cells})
    total = sum(len(v) for v in cells.values())
    meta = {
        "schema": "testbed.run/1",
        "run_id": run_dir.name,
        "platform": "synthetic",
        "meshes": meshes,
        "baseline": "none" if "none" in meshes else None,
        "scenario": {
            "name": scenario,
            "rates": rates,
            "duration_s": 10,
            "warmup_s": 1,
            "trials": max(len(v) for v in cells.values()),
            "connections": 16,
            "arrival": "uniform",
            "max_lateness_ms": 2,
        },
        "topology": {
            "name": "one",
            "entry": "a",
            "services": ["a"],
            "calls": {"a": []},
            "calls_per_request": 1,
            "critical_hops": 1,
        },
        "host": {"cpu_model": "synthetic", "cpu_count": 2, "kernel": "", "system": "Linux", "hostname": "x"},
        "versions": {"testbed": "synthetic"},
        "planned_trials": total,
        "finished_trials": total,
        "status": "complete",
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T01:00:00+00:00",
    }
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(meta, indent=1))
    for (mesh, rate), results in cells.items():
        for result in results:
            target = run_dir / mesh / f"{rate:g}" / f"trial-{result['trial']}" / "result.json"
            target.parent.mkdir(parents=True)
            target.write_text(json.dumps(result))
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.bench.report", description=__doc__)
    parser.add_argument("--trials", type=int, default=50, help="trials in the run (default 50)")
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests per trial (default 1M)")
    parser.add_argument("--keep", default=None, help="write the synthetic run here and keep it")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    # 50 trials as a real scenario would spread them: 2 meshes x 5 rates x 5 trials.
    layout = [(m, r) for m in ("none", "envoy") for r in (200.0, 400.0, 600.0, 800.0, 1000.0)]
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {key: [] for key in layout}
    started = time.perf_counter()
    for i in range(args.trials):
        mesh, rate = layout[i % len(layout)]
        median = (1000.0 if mesh == "none" else 1400.0) * (1 + rate / 4000)
        cells[(mesh, rate)].append(
            trial_result(
                rng, mesh=mesh, rate=rate, trial=len(cells[(mesh, rate)]) + 1, requests=args.requests,
                median_us=median * rng.uniform(0.97, 1.03),
            )
        )  # fmt: skip
    cells = {k: v for k, v in cells.items() if v}
    with tempfile.TemporaryDirectory(prefix="testbed-bench-report-") as tmp:
        run_dir = write_run(Path(args.keep or tmp) / "synthetic-run", cells)
        print(f"wrote {args.trials} synthetic trials of {args.requests:,} requests in "
              f"{time.perf_counter() - started:.1f} s: {run_dir}")  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "testbed", "--quiet", "report", str(run_dir)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        elapsed = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        summary = json.loads((run_dir / "summary.json").read_text())
        requests = sum(c["requests"] for c in summary["cells"])
        html_mb = (run_dir / "report.html").stat().st_size / 1e6
        print(
            f"testbed report: {args.trials} trials, {requests:,} requests, {len(summary['cells'])} cells: "
            f"{elapsed:.2f} s wall, peak RSS {peak_mb:.0f} MB (child), report.html {html_mb:.1f} MB"
        )
        limits_ok = elapsed <= 10.0 and peak_mb <= 500.0
        print("within the limits (10 s, 500 MB)" if limits_ok else "OVER the limits (10 s, 500 MB)")
        return 0 if limits_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
