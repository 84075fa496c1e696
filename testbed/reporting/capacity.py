"""The capacity section of a report: per mesh, the highest rate that meets the objective, as a share of the
baseline's, and the latency/throughput curve with its knee. Pure: documents in, figures out.

It reads the `testbed.capacity/1` documents that `testbed run` writes per mesh for a `profile =
"capacity"` scenario (RUN_DIR/<mesh>/capacity.json). A mesh's share is its highest sustainable rate over
the baseline's; its cost is 1 - share (the part of the baseline's capacity that the mesh takes away).

The curve has one point per offered rate the search probed: the median service p99 and the mean achieved
rate of the probes at that rate (the repeats at the answer are several probes at one rate); a probe whose
trial failed measured nothing and is left out. Its knee is found by the Kneedle method (Satopaa, Albrecht,
Irwin and Raghavan, "Finding a 'Kneedle' in a Haystack", ICDCS workshops 2011), for a curve that
rises ever faster, as latency does towards saturation: both axes (offered rate, p99) are scaled to
[0, 1], and the knee is the point farthest below the straight line from the first point to the last
(the largest `x - y` once scaled), where the curve turns from flat to steep. A curve without such a
point (a straight line, a curve that flattens, fewer than three rates) has no knee: the point must lie
at least `KNEE_MIN_DISTANCE` of the scaled range below that line. Nor has a curve whose p99 never rose
to `KNEE_MIN_RISE` times its lowest: scaling stretches any noise to [0, 1], and a p99 that wanders
between 0.4 and 0.7 ms has not turned towards saturation. The p99 used is the running maximum over the
rates (the curve's monotone envelope): towards saturation latency only grows with the offered rate, so a
lower p99 at a higher rate is one probe's luck, and a lucky probe past the turn must not become the knee.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = "testbed.capacity/1"
#: Each mesh's document in a run directory (`testbed.run.CAPACITY_FILE`).
FILE = "capacity.json"
#: A knee must lie this far (of the scaled [0, 1] range) below the line from the curve's first point to
#: its last: Kneedle's difference curve is 0 on a straight line, so a small value is noise, not a turn.
KNEE_MIN_DISTANCE = 0.1
#: A curve whose highest p99 is under this multiple of its lowest stayed flat (noise): no knee.
KNEE_MIN_RISE = 2.0
KNEE_METHOD = (
    "Kneedle (Satopaa et al., 2011): offered rate and p99 (its running maximum over the rates) scaled to "
    "[0, 1], the knee is the point farthest below the line from the first point to the last (at least "
    f"{KNEE_MIN_DISTANCE:g} of the range), on a curve whose p99 rose to at least {KNEE_MIN_RISE:g} times "
    "its lowest"
)


@dataclass(frozen=True, kw_only=True)
class Point:
    """One offered rate of the curve: what its probes achieved and their median latency."""

    rate: float
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    probes: int
    passed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "achieved_rate": round(self.achieved_rate, 2),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "probes": self.probes,
            "passed": self.passed,
        }


def curve(document: Mapping[str, Any]) -> list[Point]:
    """The latency/throughput curve of a capacity document: one point per offered rate, by rate."""
    by_rate: dict[float, list[Mapping[str, Any]]] = {}
    for probe in document.get("probes") or []:
        if probe.get("failed_by") == "failed":  # the trial failed: nothing measured
            continue
        by_rate.setdefault(float(probe["rate"]), []).append(probe)
    return [
        Point(
            rate=rate,
            achieved_rate=statistics.fmean(float(p["achieved_rate"]) for p in probes),
            p50_ms=statistics.median(float(p["p50_ms"]) for p in probes),
            p99_ms=statistics.median(float(p["p99_ms"]) for p in probes),
            probes=len(probes),
            passed=sum(p["verdict"] == "pass" for p in probes),
        )
        for rate, probes in sorted(by_rate.items())
    ]


def knee(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    min_distance: float = KNEE_MIN_DISTANCE,
    min_rise: float = KNEE_MIN_RISE,
) -> int | None:
    """The index of the knee of an increasing, ever steeper curve (Kneedle), or None when it has none."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values for {len(ys)} y values")
    if len(xs) < 3 or max(ys) < min_rise * min(ys):
        return None
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    envelope: dict[int, float] = {}  # the running maximum of y by x: noise below it is left out
    highest = -math.inf
    for i in order:
        highest = envelope[i] = max(highest, ys[i])
    x_low, x_span = min(xs), max(xs) - min(xs)
    y_low, y_span = min(envelope.values()), max(envelope.values()) - min(envelope.values())
    if x_span <= 0 or y_span <= 0:
        return None
    first, last = order[0], order[-1]

    def scaled(i: int) -> tuple[float, float]:
        return (xs[i] - x_low) / x_span, (envelope[i] - y_low) / y_span

    (x0, y0), (x1, y1) = scaled(first), scaled(last)
    if y1 <= y0:  # not a rising curve: no turn towards saturation to find
        return None

    def below(i: int) -> float:
        """How far the point lies below the chord from the first point to the last, vertically."""
        x, y = scaled(i)
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0) - y

    best = max(order[1:-1], key=below)
    return best if below(best) >= min_distance else None


def mesh_figures(document: Mapping[str, Any], *, path: str) -> dict[str, Any]:
    """One mesh's row: the answer, how it was confirmed, what limited it, the curve and its knee."""
    points = curve(document)
    at = knee([p.rate for p in points], [p.p99_ms for p in points])
    probes = document.get("probes") or []
    return {
        "mesh": document.get("mesh") or Path(path).parent.name,
        "path": path,
        "status": document.get("status", "complete"),
        "max_rate_rps": document.get("max_rate_rps"),
        "limited_by": document.get("limited_by"),
        "confirmation": document.get("confirmation"),
        "note": document.get("note", ""),
        "probes": len(probes),
        "failed_probes": sum(p.get("failed_by") == "failed" for p in probes),
        "points": [p.to_dict() for p in points],
        "knee": None if at is None else points[at].to_dict(),
    }


def share(mesh: Mapping[str, Any], base: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The mesh's capacity as a share of the baseline's, the cost (1 - share), and how far to trust it: a
    capacity not limited by the target is a lower bound, which bounds the share on one side only."""
    if base is None or not base.get("max_rate_rps") or mesh.get("max_rate_rps") is None:
        return None
    value = mesh["max_rate_rps"] / base["max_rate_rps"]
    mesh_bound = mesh.get("limited_by") != "target"  # the mesh's true capacity may be higher
    base_bound = base.get("limited_by") != "target"  # the baseline's may be higher
    if mesh_bound and base_bound:
        bound = "unknown"  # both are lower bounds: the ratio of two lower bounds bounds nothing
    elif mesh_bound:
        bound = "at least"
    elif base_bound:
        bound = "at most"
    else:
        bound = "measured"
    return {"share": round(value, 4), "cost": round(1 - value, 4), "bound": bound}


def section(documents: Mapping[str, Mapping[str, Any]], *, baseline: str | None) -> dict[str, Any]:
    """The report's capacity section from each mesh's document (`path -> document`, meshes in run order)."""
    meshes = [mesh_figures(doc, path=path) for path, doc in documents.items()]
    base = next((m for m in meshes if m["mesh"] == baseline), None)
    for m in meshes:
        m["vs_baseline"] = None if m is base else share(m, base)
    first = next(iter(documents.values()), {})
    return {
        "baseline": base["mesh"] if base else None,
        "slo_p99_ms": first.get("slo_p99_ms"),
        "max_error_rate": first.get("max_error_rate"),
        "search": first.get("search"),
        "knee_method": KNEE_METHOD,
        "meshes": meshes,
    }


def read(run_dir: Path, meshes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every mesh's capacity.json in a run directory (`<mesh>/capacity.json` -> document), the run's meshes
    first in their order; an unreadable one is left out with a warning on stderr."""
    from testbed.reporting.analysis import warn

    found = {p.parent.name: p for p in sorted(run_dir.glob(f"*/{FILE}"))}
    order = [m for m in meshes if m in found] + sorted(set(found) - set(meshes))
    documents: dict[str, dict[str, Any]] = {}
    for mesh in order:
        path = found[mesh]
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            warn(f"skipped {path}: cannot be read ({e})")
            continue
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            schema = data.get("schema") if isinstance(data, dict) else None
            warn(f"skipped {path}: not a {SCHEMA} document (schema {schema!r})")
            continue
        documents[path.relative_to(run_dir).as_posix()] = data
    return documents


# --- text, shared by both reports ---------------------------------------------------------------------


def objective_text(cap: Mapping[str, Any]) -> str:
    search = cap.get("search") or {}
    text = (
        f"The highest open-loop rate whose service p99 stays within {cap['slo_p99_ms']:g} ms with at most "
        f"{cap['max_error_rate']:.2%} errors and a generator that kept up"
    )
    if search:
        text += (
            f": rates double from {search['start_rate']:g} rps (up to {search['max_rate']:g}) until one "
            f"fails, then bisection to within {search['resolution']:.0%}, then {search['repeats']} fresh "
            f"trials at the answer, a majority of which must pass; each probe is {search['warmup_s']:g} s "
            f"of warm-up and {search['duration_s']:g} s measured"
        )
    return text + "."


def answer_text(m: Mapping[str, Any]) -> str:
    """`512 rps` or why there is none."""
    if m["max_rate_rps"] is None:
        return "none" if m["status"] == "complete" else f"none ({m['status']})"
    return f"{m['max_rate_rps']:g}"


def confirmation_text(m: Mapping[str, Any]) -> str:
    c = m.get("confirmation") or {}
    return f"{c['passed']} of {c['of']}" if c.get("of") else ""


def share_text(m: Mapping[str, Any]) -> tuple[str, str]:
    """The share and cost cells: `87.5%`, `12.5%`, with `>=`/`<=` when one side is a lower bound."""
    v = m.get("vs_baseline")
    if not v:
        return "", ""
    if v["bound"] == "unknown":
        return f"~{v['share']:.1%}", "unknown (both are lower bounds)"
    share_sign = {"at least": ">= ", "at most": "<= "}.get(v["bound"], "")
    cost_sign = {"at least": "<= ", "at most": ">= "}.get(v["bound"], "")
    return f"{share_sign}{v['share']:.1%}", f"{cost_sign}{v['cost']:.1%}"


def knee_text(m: Mapping[str, Any]) -> str:
    k = m.get("knee")
    return "" if not k else f"{k['rate']:g} rps (p99 {k['p99_ms']:.3f} ms)"
