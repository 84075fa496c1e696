"""`testbed compare OLD NEW`: did latency get worse, beyond thresholds and beyond the noise?

For each (mesh, rate) in both runs and each percentile: the difference NEW - OLD of the pooled values, with
a 95% bootstrap interval of that difference (trials of each run resampled independently), and each run's
own interval. A cell is a regression when the difference exceeds both thresholds (ms and %) and the two
runs' intervals do not overlap: a CI gate that fails on noise is soon ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.reporting import analysis, stats

DEFAULT_PERCENTILES = ("p50", "p90", "p99")
#: Below this many valid trials on either side, percentile-bootstrap intervals are too narrow to gate on
#: (with 3 trials, all of one run's below all of the other's happens by chance 1 time in 20 per
#: percentile): such a cell is shown, never failed.
MIN_GATE_TRIALS = analysis.ROUGH_CI_TRIALS


@dataclass(frozen=True, kw_only=True)
class Row:
    mesh: str
    rate: float
    percentile: str
    old_us: float
    new_us: float
    old_ci: stats.Interval | None
    new_ci: stats.Interval | None
    diff_ci: stats.Interval | None
    regression: bool
    improvement: bool
    trials: tuple[int, int]  # valid trials in OLD and NEW

    @property
    def gated(self) -> bool:
        return min(self.trials) >= MIN_GATE_TRIALS

    @property
    def diff_us(self) -> float:
        return self.new_us - self.old_us

    @property
    def diff_pct(self) -> float | None:
        return 100.0 * self.diff_us / self.old_us if self.old_us else None


@dataclass(frozen=True, kw_only=True)
class Comparison:
    old: str
    new: str
    rows: tuple[Row, ...]
    only_old: tuple[str, ...]
    only_new: tuple[str, ...]
    threshold_ms: float
    threshold_pct: float
    # Damaged result files of each run, left out of its figures (`analysis.load_run` warned about each).
    skipped_old: tuple[analysis.Skipped, ...] = ()
    skipped_new: tuple[analysis.Skipped, ...] = ()

    @property
    def regressed(self) -> bool:
        return any(r.regression for r in self.rows)


def _beyond(diff_us: float, base_us: float, threshold_ms: float, threshold_pct: float) -> bool:
    pct = 100.0 * abs(diff_us) / base_us if base_us else float("inf")
    return abs(diff_us) > threshold_ms * 1000.0 and pct > threshold_pct


def compare(
    old_dir: Path,
    new_dir: Path,
    *,
    threshold_ms: float = 0.2,
    threshold_pct: float = 5.0,
    percentiles: tuple[str, ...] = DEFAULT_PERCENTILES,
) -> Comparison:
    old, new = analysis.load_run(old_dir), analysis.load_run(new_dir)

    def groups(run: analysis.Run) -> dict[tuple[str, float], list[stats.Counts]]:
        out: dict[tuple[str, float], list[stats.Counts]] = {}
        valid = run.trials[run.trials["valid"]] if len(run.trials) else run.trials
        for mesh, rate, path in zip(valid["mesh"], valid["rate"], valid["path"], strict=True):
            out.setdefault((str(mesh), float(rate)), []).append(run.counts[str(path)])
        return out

    a, b = groups(old), groups(new)
    rows = []
    qs = [stats.PERCENTILES[name] for name in percentiles]
    for key in sorted(a.keys() & b.keys()):
        mesh, rate = key
        old_pooled, new_pooled = stats.pooled(a[key]), stats.pooled(b[key])
        # Each run's trials are resampled on their own (seeds differ by run), all percentiles at once.
        old_dist = stats.bootstrap(a[key], qs, seed=stats.seed_for("old", mesh, rate))
        new_dist = stats.bootstrap(b[key], qs, seed=stats.seed_for("new", mesh, rate))
        for i, name in enumerate(percentiles):
            o, n = stats.percentile(old_pooled, qs[i]), stats.percentile(new_pooled, qs[i])
            old_ci, new_ci = stats.interval(old_dist[:, i]), stats.interval(new_dist[:, i])
            apart = old_ci is not None and new_ci is not None and not old_ci.overlaps(new_ci)
            beyond = _beyond(n - o, o, threshold_ms, threshold_pct)
            trials = (len(a[key]), len(b[key]))
            gated = min(trials) >= MIN_GATE_TRIALS
            rows.append(
                Row(
                    mesh=mesh,
                    rate=rate,
                    percentile=name,
                    old_us=o,
                    new_us=n,
                    old_ci=old_ci,
                    new_ci=new_ci,
                    diff_ci=stats.interval(stats.difference(new_dist[:, i], old_dist[:, i])),
                    regression=beyond and apart and n > o and gated,
                    improvement=beyond and apart and n < o and gated,
                    trials=trials,
                )
            )

    def label(k: tuple[str, float]) -> str:
        return f"{k[0]} at {k[1]:g} rps"

    return Comparison(
        old=str(old_dir),
        new=str(new_dir),
        rows=tuple(rows),
        only_old=tuple(label(k) for k in sorted(a.keys() - b.keys())),
        only_new=tuple(label(k) for k in sorted(b.keys() - a.keys())),
        threshold_ms=threshold_ms,
        threshold_pct=threshold_pct,
        skipped_old=old.skipped,
        skipped_new=new.skipped,
    )


def _ci(i: stats.Interval | None, *, signed: bool = False) -> str:
    if i is None:
        return "n/a"
    f = "+.3f" if signed else ".3f"
    return f"[{i.low / 1000:{f}}, {i.high / 1000:{f}}]"


def _verdict(r: Row) -> str:
    if r.regression:
        return "REGRESSION"
    if r.improvement:
        return "improved"
    if not r.gated:
        return f"not judged: {min(r.trials)} valid trials (need {MIN_GATE_TRIALS})"
    return "same"


def table(c: Comparison, *, markdown: bool = False) -> str:
    header = [
        "mesh",
        "rate",
        "pct",
        "old ms [95% CI]",
        "new ms [95% CI]",
        "change ms [95% CI]",
        "change %",
        "verdict",
    ]
    body = [
        [
            r.mesh,
            f"{r.rate:g}",
            r.percentile,
            f"{r.old_us / 1000:.3f} {_ci(r.old_ci)}",
            f"{r.new_us / 1000:.3f} {_ci(r.new_ci)}",
            f"{r.diff_us / 1000:+.3f} {_ci(r.diff_ci, signed=True)}",
            "n/a" if r.diff_pct is None else f"{r.diff_pct:+.1f}%",
            _verdict(r),
        ]
        for r in c.rows
    ]
    rule = (
        f"A regression: worse by more than {c.threshold_ms:g} ms and {c.threshold_pct:g}%, "
        f"and the two runs' 95% intervals do not overlap (cells with {MIN_GATE_TRIALS}+ valid trials)."
    )
    notes = [f"Only in OLD: {', '.join(c.only_old)}"] if c.only_old else []
    unjudged = sorted({f"{r.mesh} at {r.rate:g} rps" for r in c.rows if not r.gated})
    if unjudged:
        notes += [
            f"Not judged, under {MIN_GATE_TRIALS} valid trials in a run: {', '.join(unjudged)} "
            f"(run with --trials {MIN_GATE_TRIALS} or more to gate on them)"
        ]
    notes += [f"Only in NEW: {', '.join(c.only_new)}"] if c.only_new else []
    for side, skipped in (("OLD", c.skipped_old), ("NEW", c.skipped_new)):
        if skipped:
            listed = "; ".join(f"{s.path} ({s.reason})" for s in skipped)
            notes.append(f"Unreadable results left out of {side}: {listed}")
    verdict = "REGRESSION" if c.regressed else "no regression"
    if markdown:
        lines = [f"## testbed compare: {verdict}", "", f"OLD `{c.old}`, NEW `{c.new}`. {rule}", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        lines += [""] + [f"- {n}" for n in notes]
        return "\n".join(lines).rstrip() + "\n"
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [f"OLD {c.old}", f"NEW {c.new}", rule, ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in body]
    lines += [*notes, "", f"verdict: {verdict}"]
    return "\n".join(lines) + "\n"
