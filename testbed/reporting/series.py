"""Load over time: a cell's trials pooled per interval and per segment, and a spike's recovery time.

A `testbed.load/2` result carries its `profile`, a `series` of intervals (1 s by default) and one entry per
profile `segment`, each with its own HdrHistograms. Pooling the trials of a (mesh, rate) cell merges those
histograms exactly (`testbed.loadgen.result.merge`: the counts add up, no percentile is averaged), interval
by interval and segment by segment, as the run's figures pool whole trials.

Spike recovery. The reference is the service p99 of the pooled `before` segment (every valid trial's
histogram of the time before the burst, merged). The p99 has *returned* at the start of the first interval,
at or after the burst's end, from which the p99 of the next `RECOVERY_INTERVALS` (3) intervals, their
histograms merged over the trials, is at most `RECOVERY_MARGIN` (10%) above the reference; when the window
ends sooner, of the intervals left. One interval's p99 alone is too noisy (a 1 s interval at 60 rps holds
60 samples per trial, its p99 is nearly its maximum): three merged hold three times as many, and a stall of
over 1% of their requests still keeps them out. An interval that completed nothing is not a return. The
recovery time is that interval's start less the burst's end, at the series' resolution (one interval): 0 s
when the tail is back at once (`rose` is false when the burst did not lift the p99 beyond the margin at
all); None, with the reason, when it is not back before the window ends. Falling below the reference counts
as returned: the question is whether the tail is still raised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hdrh.histogram import HdrHistogram

from testbed.loadgen.result import HISTOGRAMS, decode, merge, new_histogram, summarize

#: How far above the pre-spike p99 an interval's p99 may be and still count as returned (the issue's 10%).
RECOVERY_MARGIN = 0.10
#: Consecutive intervals, merged, whose p99 must be within the margin (fewer when the window ends first).
RECOVERY_INTERVALS = 3
#: Interval bounds are compared after rounding: they are sums of floating-point seconds.
_DIGITS = 6


def has_series(result: Mapping[str, Any]) -> bool:
    """Whether a result carries a time series (`testbed.load/2`); /1 results have none."""
    return isinstance(result.get("series"), dict) and isinstance(result.get("segments"), list)


def _key(point: Mapping[str, Any]) -> tuple[float, float]:
    return round(float(point["start_s"]), _DIGITS), round(float(point["end_s"]), _DIGITS)


def _merged(encoded: Sequence[str | None]) -> dict[str, float | int] | None:
    """The summary of the merged histograms; None when every one is null (closed loop: no intended time)."""
    present = [e for e in encoded if e is not None]
    return summarize(merge(present)) if present else None


def pool(trials: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The trials' series and segments pooled: per interval and per segment, counts summed and histograms
    merged; a spike's recovery. `trials` are `testbed.load/2` results (or their profile, series, segments),
    all of the same profile; a `ValueError` says when they are not."""
    if not trials:
        raise ValueError("no trial to pool")
    profile = trials[0].get("profile")
    args = {None if t.get("profile") is None else t["profile"].get("arg") for t in trials}
    if len(args) > 1:
        raise ValueError(f"the trials ran different profiles ({', '.join(sorted(map(str, args)))})")
    n = len(trials)
    points = _pool_points(trials)
    segments = _pool_segments(trials)
    return {
        "profile": profile,
        "trials": n,
        "interval_s": float(trials[0]["series"]["interval_s"]),
        "points": points,
        "segments": segments,
        "recovery": recovery(trials, segments) if _is_spike(profile) else None,
    }


def _pool_points(trials: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_key: dict[tuple[float, float], list[Mapping[str, Any]]] = {}
    for t in trials:
        for p in t["series"]["points"]:
            by_key.setdefault(_key(p), []).append(p)
    out = []
    for (start, end), members in sorted(by_key.items()):
        length = end - start
        targets = [float(p["target_rps"]) for p in members if p.get("target_rps") is not None]
        completed = sum(int(p["completed"]) for p in members)
        out.append(
            {
                "start_s": start,
                "end_s": end,
                "trials": len(members),  # fewer than the cell's when a trial's window ended sooner
                "target_rps": round(sum(targets) / len(targets), 3) if targets else None,
                "scheduled": _sum_or_none([p.get("scheduled") for p in members]),
                "sent": sum(int(p["sent"]) for p in members),
                "completed": completed,
                "errors": sum(int(p["errors"]) for p in members),
                # Per trial: what one generator achieved, comparable with the target rate.
                "achieved_rps": round(completed / (length * len(members)), 3) if length > 0 else 0.0,
                "service": _merged([p["hdr"]["service"] for p in members]),
                "intended": _merged([p["hdr"].get("intended") for p in members]),
            }
        )
    return out


def _sum_or_none(values: Sequence[Any]) -> int | None:
    return None if any(v is None for v in values) else sum(int(v) for v in values)


def _pool_segments(trials: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    counts = {len(t["segments"]) for t in trials}
    if len(counts) > 1:
        raise ValueError(f"the trials have different numbers of segments ({sorted(counts)})")
    out = []
    for i, first in enumerate(trials[0]["segments"]):
        members = [t["segments"][i] for t in trials]
        length = float(first["end_s"]) - float(first["start_s"])
        completed = sum(int(s["completed"]) for s in members)
        invalid = [s for s in members if not s.get("valid", True)]
        out.append(
            {
                "label": first["label"],
                "start_s": float(first["start_s"]),
                "end_s": float(first["end_s"]),
                "start_rps": float(first["start_rps"]),
                "end_rps": float(first["end_rps"]),
                "scheduled": _sum_or_none([s.get("scheduled") for s in members]),
                "sent": sum(int(s["sent"]) for s in members),
                "completed": completed,
                "errors": sum(int(s["errors"]) for s in members),
                "achieved_rps": round(completed / (length * len(members)), 3) if length > 0 else 0.0,
                "cpu_percent_max": max(float(s.get("cpu_percent", 0.0)) for s in members),
                "latency_us": {name: _merged([s["hdr"].get(name) for s in members]) for name in HISTOGRAMS},
                "invalid_trials": len(invalid),
                "invalid_reasons": sorted({r for s in invalid for r in s.get("invalid_reasons", [])}),
            }
        )
    return out


def _is_spike(profile: Mapping[str, Any] | None) -> bool:
    return profile is not None and profile.get("kind") == "spike" and len(profile.get("segments", [])) == 3


def recovery(trials: Sequence[Mapping[str, Any]], segments: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A spike's recovery (module docstring): pooled over `trials` with their pooled `segments`, and each
    trial's own from its intervals and its own `before` segment (`per_trial_s`)."""
    if len(segments) != 3:
        raise ValueError("recovery is defined for a spike profile only (before, burst, after)")
    out = _recovery(_intervals(trials), segments[0], segments[1])
    out["per_trial_s"] = [
        _recovery(_intervals([t]), t["segments"][0], t["segments"][1])["recovery_s"]
        if len(t["segments"]) == 3
        else None
        for t in trials
    ]
    return out


_Interval = tuple[float, float, list[HdrHistogram]]


def _intervals(trials: Sequence[Mapping[str, Any]]) -> list[_Interval]:
    """Each interval's bounds and the trials' service histograms of it, decoded once."""
    by_key: dict[tuple[float, float], list[HdrHistogram]] = {}
    for t in trials:
        for p in t["series"]["points"]:
            by_key.setdefault(_key(p), []).append(decode(p["hdr"]["service"]))
    return [(start, end, hs) for (start, end), hs in sorted(by_key.items())]


def _pooled(intervals: Sequence[_Interval]) -> HdrHistogram:
    """The intervals' histograms merged exactly (the counts add up)."""
    total = new_histogram()
    for _, _, histograms in intervals:
        for h in histograms:
            total.add(h)
    return total


def _recovery(
    intervals: Sequence[_Interval], before: Mapping[str, Any], burst: Mapping[str, Any]
) -> dict[str, Any]:
    reference = before["latency_us"]["service"] or {}
    reference_us, reference_count = float(reference.get("p99", 0)), int(reference.get("count", 0))
    burst_start, burst_end = float(burst["start_s"]), float(burst["end_s"])
    threshold = reference_us * (1 + RECOVERY_MARGIN)
    burst_p99 = (burst["latency_us"]["service"] or {}).get("p99")
    peaks = [
        h.get_value_at_percentile(99.0)
        for start, end, hs in intervals
        if end > burst_start and (h := _pooled([(start, end, hs)])).get_total_count()
    ]
    out: dict[str, Any] = {
        "pre_spike_p99_us": reference_us,
        "pre_spike_samples": reference_count,
        "threshold_us": threshold,
        "margin": RECOVERY_MARGIN,
        "window_intervals": RECOVERY_INTERVALS,
        "burst_start_s": burst_start,
        "burst_end_s": burst_end,
        "burst_p99_us": burst_p99,
        "peak_interval_p99_us": max(peaks) if peaks else None,
        "rose": True,
        "recovery_s": None,
        "recovered_at_s": None,
        "confirmed_intervals": 0,
        "window_p99_us": None,
        "window_samples": 0,
        "reason": None,
    }
    if reference_count == 0:
        out["reason"] = "no latency sample before the burst: nothing to return to"
        return out
    after = [i for i in intervals if i[0] >= round(burst_end, _DIGITS)]
    if not after:
        out["reason"] = "no interval starts after the burst: the window ends with it"
        return out
    for i, (start, _, _) in enumerate(after):
        window = after[i : i + RECOVERY_INTERVALS]
        if any(sum(h.get_total_count() for h in hs) == 0 for _, _, hs in window):
            continue  # an interval that completed nothing is a stall, not a return
        pooled = _pooled(window)
        p99 = pooled.get_value_at_percentile(99.0)
        if p99 <= threshold:
            out |= {
                "recovered_at_s": start,
                "recovery_s": round(start - burst_end, _DIGITS),
                "confirmed_intervals": len(window),
                "window_p99_us": p99,
                "window_samples": pooled.get_total_count(),
                # Raised when the burst's own p99 was over the threshold, or some window after it.
                "rose": (burst_p99 or 0) > threshold or start > round(burst_end, _DIGITS),
            }
            return out
    last = after[-1][1]
    out["reason"] = (
        f"no {RECOVERY_INTERVALS} consecutive intervals had their p99 within {RECOVERY_MARGIN:.0%} of the "
        f"pre-spike {reference_us / 1000:.3f} ms in the {last - burst_end:g} s after the burst"
    )
    return out


# --- what both reports print of it ------------------------------------------------------------------------


def profile_cells(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary's cells run with a non-constant profile (steps, ramp, spike), pooled over time."""
    return [
        c
        for c in summary["cells"]
        if ((c.get("over_time") or {}).get("profile") or {}).get("kind", "constant") != "constant"
    ]


def segment_rate(segment: Mapping[str, Any]) -> str:
    """A segment's target rate: `100`, or `50 to 300` for a ramp."""
    a, b = segment["start_rps"], segment["end_rps"]
    return f"{a:g}" if a == b else f"{a:g} to {b:g}"


def _ms(us: float | None) -> str:
    return "n/a" if us is None else f"{us / 1000:.3f}"


def recovery_text(recovery: Mapping[str, Any]) -> str:
    """A spike's recovery in words, with the figures it was judged on."""
    figures = (
        f"pre-spike p99 {_ms(recovery['pre_spike_p99_us'])} ms over {recovery['pre_spike_samples']} samples, "
        f"burst p99 {_ms(recovery['burst_p99_us'])} ms"
    )
    if recovery.get("peak_interval_p99_us") is not None:
        figures += f", worst interval p99 {_ms(recovery['peak_interval_p99_us'])} ms"
    trials = recovery.get("per_trial_s") or []
    if trials:
        figures += "; per trial: " + ", ".join("none" if t is None else f"{t:g} s" for t in trials)
    if recovery["recovery_s"] is None:
        return f"not back within the window: {recovery['reason']} ({figures})"
    n = recovery["confirmed_intervals"]
    text = (
        f"back {recovery['recovery_s']:g} s after the burst ended: p99 {_ms(recovery['window_p99_us'])} ms "
        f"over the {n} interval(s) from {recovery['recovered_at_s']:g} s "
        f"({recovery['window_samples']} samples)"
    )
    if not recovery["rose"]:
        text += "; the burst never lifted the p99 beyond the margin"
    elif n < recovery["window_intervals"]:
        text += ", fewer intervals than the rule's: the window ended"
    return f"{text} ({figures})"
