"""From a run directory to figures: pooled percentiles per (mesh, rate), spread across trials, overhead.

Percentiles are pooled from the merged HdrHistograms of the valid trials, never averaged per trial
(methodology.md); the spread across trials is shown beside them so that an unstable result is visible.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import UsageError
from testbed.loadgen.result import decode, merge, summarize

PERCENTILES = ("p50", "p90", "p99", "p999", "max")


@dataclass(frozen=True, kw_only=True)
class Cell:
    """Everything measured for one (mesh, rate)."""

    mesh: str
    rate: float
    pooled: dict[str, float | int]
    per_trial: dict[str, list[float]]  # percentile -> the valid trials' values, in trial order
    trials: int
    valid_trials: int
    invalid: list[tuple[str, list[str]]] = field(default_factory=list)  # (trial path, reasons)
    resources: dict[str, dict[str, float]] = field(default_factory=dict)  # component -> mean figures

    def spread(self, percentile: str) -> tuple[float, float]:
        values = self.per_trial.get(percentile) or [0.0]
        return min(values), max(values)


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[tuple[Path, dict[str, Any]]]]:
    """run.json and every trial's result.json under it."""
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise UsageError(f"{run_dir} is not a run directory (no run.json): give results/<run-id>")
    meta = json.loads(meta_path.read_text())
    trials = [(p.parent, json.loads(p.read_text())) for p in sorted(run_dir.glob("*/*/trial-*/result.json"))]
    return meta, trials


def cells(trials: list[tuple[Path, dict[str, Any]]], *, histogram: str = "service") -> list[Cell]:
    """Group the trials by (mesh, rate) and pool the valid ones."""
    groups: dict[tuple[str, float], list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    for path, result in trials:
        groups[(result["mesh"], float(result["rate"]))].append((path, result))
    out = []
    for (mesh, rate), members in sorted(groups.items()):
        valid = [r for _, r in members if r["valid"]]
        pooled = summarize(merge([r["hdr"][histogram] for r in valid])) if valid else {}
        per_trial: dict[str, list[float]] = {p: [] for p in PERCENTILES}
        for r in valid:
            s = summarize(decode(r["hdr"][histogram]))
            for p in PERCENTILES:
                per_trial[p].append(float(s[p]))
        resources: dict[str, dict[str, float]] = defaultdict(dict)
        for r in valid:
            for component, figures in r.get("resources", {}).get("components", {}).items():
                for key in ("vcpu", "peak_rss_mb"):
                    resources[component][key] = resources[component].get(key, 0.0) + figures[key] / len(valid)
        out.append(
            Cell(
                mesh=mesh,
                rate=rate,
                pooled=pooled,
                per_trial=per_trial,
                trials=len(members),
                valid_trials=len(valid),
                invalid=[(str(p), r["invalid_reasons"]) for p, r in members if not r["valid"]],
                resources=dict(resources),
            )
        )
    return out


def overhead(cell: Cell, baseline: Cell | None, percentile: str) -> float | None:
    """Added latency over the baseline at a percentile, in microseconds (None without both)."""
    if baseline is None or not cell.pooled or not baseline.pooled:
        return None
    return float(cell.pooled[percentile]) - float(baseline.pooled[percentile])
