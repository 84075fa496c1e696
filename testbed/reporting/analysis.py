"""From a run directory to figures: pooled percentiles per (mesh, rate), spread, overhead with intervals.

Percentiles are pooled from the merged HdrHistograms of the valid trials, never averaged per trial
(methodology.md); the spread across trials is kept beside them, and the overhead over the baseline gets
a 95% bootstrap interval that resamples trials (`stats.py`). The result is `summary()`, the
`testbed.summary/1` document that the HTML and Markdown reports, `testbed compare` and the SMP export
all read.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from testbed import __version__
from testbed.errors import UsageError
from testbed.loadgen.result import READABLE_SCHEMAS as READABLE_RESULT_SCHEMAS
from testbed.reporting import series, stats
from testbed.resources import KERNEL, NODE_OVERHEAD

#: Still /1 with `skipped_results` and each cell's `over_time` (`series.pool`, null for /1 results) added:
#: a new field is backward-compatible (readers ignore what they do not know, and a summary without it reads
#: as nothing skipped); a field changed or removed bumps it.
SUMMARY_SCHEMA = "testbed.summary/1"
HISTOGRAM = "service"  # timed on the wire: first request byte out, last response byte in
GATED = ("p50", "p90", "p99", "p999")  # percentiles that get intervals and overheads

#: pyperf-like stability checks.
MIN_TRIALS = 3
ROUGH_CI_TRIALS = 5
MAX_CV = {"p50": 0.10, "p99": 0.25}  # coefficient of variation across trials
#: Above this share of CPU time taken by the hypervisor in any measured window, the report says so.
STEAL_WARN_PERCENT = 2.0
#: Not the mesh's memory: the load generator's, the node containers' rest (mostly the page cache of the
#: images loaded with `kind load`) and the kernel's remainder (no memory of its own).
NOT_MESH_MEMORY = ("loadgen", NODE_OVERHEAD, KERNEL)
#: What local trials measure (`testbed.resources.Sampler`, 0.2 s apart); also results from before
#: `memory_source` was recorded, which only the local platform wrote.
LOCAL_CPU_SOURCE = (
    "psutil: each process's CPU times, sampled every 0.2 s and interpolated at the window's edges"
)
LOCAL_MEMORY_SOURCE = (
    "the peak resident set size (RSS) of each component's processes, psutil samples 0.2 s apart"
)
#: The memory column's label, by what the trials' `memory_source` says they measured.
MEMORY_LABELS = {"peak-rss": "peak RSS MB", "working-set": "working set MB", "mixed": "memory MB"}
#: How many distinct resource warnings of one mesh are quoted in the report (all are in summary.json).
QUOTED_WARNINGS = 3


@dataclass(frozen=True, kw_only=True)
class Skipped:
    """A trial's result.json that could not be used, and why; its path is relative to the run directory."""

    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Run:
    """A run directory read back: run.json, one row per trial, and each trial's histogram counts."""

    path: Path
    meta: dict[str, Any]
    trials: pd.DataFrame
    counts: dict[str, stats.Counts]  # trial path -> counts of its `service` histogram
    intended: dict[str, stats.Counts | None]  # trial path -> its `intended` histogram (None: closed loop)
    skipped: tuple[Skipped, ...] = ()  # damaged result files, left out of every figure


def warn(message: str) -> None:
    """One warning line on stderr, as `testbed.platforms.kube.warn` prints them (shown with --quiet too)."""
    print(f"testbed: warning: {message}", file=sys.stderr, flush=True)


def load_run(run_dir: Path) -> Run:
    """run.json and every trial's result.json under it; a damaged result is skipped (warned), not changed."""
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise UsageError(f"{run_dir} is not a run directory (no run.json): give results/<run-id>")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{meta_path} is not valid JSON ({e}): was the run written by testbed?") from e
    if not isinstance(meta, dict) or not str(meta.get("schema", "")).startswith("testbed.run/"):
        schema = meta.get("schema") if isinstance(meta, dict) else None
        raise UsageError(f"{meta_path} is not a testbed run record (schema {schema!r})")
    rows: list[dict[str, Any]] = []
    counts: dict[str, stats.Counts] = {}
    intended: dict[str, stats.Counts | None] = {}
    skipped: list[Skipped] = []
    for path in sorted(run_dir.glob("*/*/trial-*/result.json")):
        key = path.parent.relative_to(run_dir).as_posix()
        try:
            row, counts[key], intended[key] = _read_trial(path, key)
        except _DamagedError as e:
            # Left out, never removed: the file is the evidence of what went wrong.
            reason = " ".join(str(e).split())  # one warning line, whatever a decoder's message holds
            skipped.append(Skipped(path=path.relative_to(run_dir).as_posix(), reason=reason))
            continue
        rows.append(row)
    if skipped and not rows:
        first = skipped[0]
        raise UsageError(
            f"{run_dir}: none of its {len(skipped)} trial results is readable "
            f"(first: {first.path}: {first.reason}); nothing to report"
        )
    for s in skipped:
        warn(f"skipped {run_dir / s.path}: {s.reason}")
    trials = pd.DataFrame(rows, columns=_COLUMNS if not rows else None)
    return Run(
        path=run_dir, meta=meta, trials=trials, counts=counts, intended=intended, skipped=tuple(skipped)
    )


class _DamagedError(Exception):
    """A trial's result.json cannot be used; the message says why."""


_NUMBER_TYPES = (int, float)
#: What the analysis reads of every result (`_trial_row` and the histograms), with the JSON type it needs.
_REQUIRED: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("mesh", str),
    ("rate", _NUMBER_TYPES),
    ("valid", bool),
    ("requests", int),
    ("errors", int),
    ("achieved_rate", _NUMBER_TYPES),
    ("duration_s", _NUMBER_TYPES),
    *((f"latency_us.{HISTOGRAM}.{name}", _NUMBER_TYPES) for name in stats.PERCENTILES),
    ("latency_us.lateness.p99", _NUMBER_TYPES),
    ("latency_us.intended.p99", _NUMBER_TYPES),
    ("loadgen.cpu_percent", _NUMBER_TYPES),
    (f"hdr.{HISTOGRAM}", str),
    ("hdr.intended", str),
)
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _problems(result: dict[str, Any]) -> str | None:
    """Why a parsed result.json is not a `testbed.load/1` or `/2` result the analysis can read, or None."""
    if result.get("schema") not in READABLE_RESULT_SCHEMAS:  # /2 only added fields (profiles, series)
        expected = " or ".join(repr(x) for x in READABLE_RESULT_SCHEMAS)
        if "schema" not in result:
            return f"no schema (expected {expected})"
        return f"schema is {result['schema']!r}, not {expected}"
    missing, wrong = [], []
    # A closed-loop result names the fields it leaves null, with why (`testbed.loadgen.result.CLOSED_NULLS`).
    nulls = result.get("null_reasons") or {}
    for dotted, kind in _REQUIRED:
        value: Any = result
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None and any(dotted == n or dotted.startswith(f"{n}.") for n in nulls):
            continue
        if value is None:
            missing.append(dotted)
        elif not isinstance(value, kind):
            wrong.append(f"{dotted} is a JSON {_json_type(value)}")
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    return f"wrong type: {'; '.join(wrong)}" if wrong else None


def _read_trial(path: Path, key: str) -> tuple[dict[str, Any], stats.Counts, stats.Counts | None]:
    """A trial's row and the counts of its service and intended histograms; `_DamagedError` if unusable."""
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise _DamagedError(f"not valid JSON ({e.msg}: line {e.lineno} column {e.colno})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise _DamagedError(f"cannot be read ({e})") from e
    if not isinstance(result, dict):
        raise _DamagedError(f"not a JSON object (a JSON {_json_type(result)})")
    problem = _problems(result)
    if problem:
        raise _DamagedError(problem)
    try:
        row = _trial_row(key, result)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # in the optional `resources`
        raise _DamagedError(f"unreadable field ({type(e).__name__}: {e})") from e
    try:
        intended = result["hdr"]["intended"]  # null in closed loop: no intended send time
        return (
            row,
            stats.counts(result["hdr"][HISTOGRAM]),
            None if intended is None else stats.counts(intended),
        )
    # hdrh raises bare Exception subclasses (hdrh/codec.py) besides binascii's ValueError and zlib.error.
    except Exception as e:
        raise _DamagedError(f"a histogram cannot be decoded ({type(e).__name__}: {e})") from e


_COLUMNS = ["path", "mesh", "rate", "trial", "valid", "reasons", "requests", "errors", "achieved_rate"]


def _trial_row(key: str, result: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": key,
        "mesh": result["mesh"],
        # Closed loop has no rate (null): its trials are filed under 0, as the plan files them
        # (`testbed.spec.scenario.CLOSED_LOOP_RATE`).
        "rate": float(result["rate"] or 0.0),
        "trial": int(result.get("trial", 0)),
        "valid": bool(result["valid"]),
        "reasons": list(result.get("invalid_reasons", [])),
        "requests": int(result["requests"]),
        "errors": int(result["errors"]),
        "achieved_rate": float(result["achieved_rate"]),
        "duration_s": float(result["duration_s"]),
        "lateness_p99_us": _p99_or_nan(result["latency_us"]["lateness"]),
        "intended_p99_us": _p99_or_nan(result["latency_us"]["intended"]),
        "loadgen_cpu_percent": float(result["loadgen"]["cpu_percent"]),
        # `testbed.load/2`: the profile, the per-interval series and the segments (None in /1 results).
        "over_time": {k: result[k] for k in ("profile", "series", "segments")}
        if series.has_series(result)
        else None,
    }
    for name in stats.PERCENTILES:
        row[f"{name}_us"] = float(result["latency_us"][HISTOGRAM][name])
    resources = result.get("resources", {})
    cpu_source, memory_source = _sources(resources)
    row["res_source"], row["res_memory_source"] = cpu_source, memory_source
    row["res_warnings"] = [str(w) for w in resources.get("warnings", [])]
    row["res_reads"] = resources.get("reads", {})
    host = resources.get("host", {})
    row["host_steal_percent"] = float(host.get("steal_percent", float("nan")))
    for component, figures in result.get("resources", {}).get("components", {}).items():
        row[f"res:{component}:vcpu"] = float(figures["vcpu"])
        row[f"res:{component}:mb"] = float(figures["peak_rss_mb"])
        row[f"res:{component}:processes"] = int(figures["processes"])
    return row


def _p99_or_nan(summary: dict[str, Any] | None) -> float:
    """A histogram summary's p99; NaN for a closed-loop result's null intended and lateness summaries."""
    return float("nan") if summary is None else float(summary["p99"])


def _sources(resources: dict[str, Any]) -> tuple[str, str]:
    """What a trial's CPU and memory figures are (old local results name neither, or only `psutil`)."""
    source = str(resources.get("source") or "psutil")
    memory = resources.get("memory_source")
    if memory is None and source == "psutil":
        return LOCAL_CPU_SOURCE, LOCAL_MEMORY_SOURCE
    return (LOCAL_CPU_SOURCE if source == "psutil" else source), str(memory or "not recorded")


def memory_kind(memory_source: str) -> str:
    """`peak-rss` (local), `working-set` (kind's cgroups, the kubelet's) or `mixed` (anything else)."""
    if memory_source == LOCAL_MEMORY_SOURCE:
        return "peak-rss"
    # testbed/kube/metrics.py MEMORY_SOURCE and KUBELET_MEMORY_SOURCE both say "working set"
    return "working-set" if "working set" in memory_source else "mixed"


def _resource_sources(meta: dict[str, Any], trials: pd.DataFrame) -> dict[str, Any]:
    """The run's CPU and memory sources (distinct, as the trials recorded them) and the memory label."""
    cpu = sorted(set(trials["res_source"])) if "res_source" in trials else []
    memory = sorted(set(trials["res_memory_source"])) if "res_memory_source" in trials else []
    kinds = {memory_kind(m) for m in memory}
    return {
        "platform": meta.get("platform"),
        "cpu": cpu,
        "memory": memory,
        "memory_label": MEMORY_LABELS[kinds.pop()] if len(kinds) == 1 else MEMORY_LABELS["mixed"],
    }


#: A read offset or a window length in a warning: left out when counting warnings of the same kind.
_NUMBER = re.compile(r"[+-]?\d+\.\d+")


def _resource_warnings(trials: pd.DataFrame) -> tuple[dict[str, Any], list[str]]:
    """Per mesh: the trials' `resources.warnings` counted by kind, and the worst read offsets per edge."""
    per_mesh: dict[str, Any] = {}
    lines: list[str] = []
    if "res_warnings" not in trials or not len(trials):
        return per_mesh, lines
    for mesh, rows in trials.groupby("mesh", sort=False):
        kinds = Counter(_NUMBER.sub("N", w) for ws in rows["res_warnings"] for w in ws)
        worst: dict[str, float] = {}
        for reads in rows["res_reads"]:
            for edge in ("start", "end"):
                offsets = [float(v) for v in (reads or {}).get(f"{edge}_offset_s", [])]
                if offsets:
                    far = max(offsets, key=abs)
                    if edge not in worst or abs(far) > abs(worst[edge]):
                        worst[edge] = far
        flagged = sum(1 for ws in rows["res_warnings"] if ws)
        per_mesh[str(mesh)] = {
            "trials": len(rows),
            "trials_with_warnings": flagged,
            "warnings": dict(kinds.most_common()),
            "worst_read_offset_s": worst,
        }
        if not flagged:
            continue
        quoted = "; ".join(f"{w} ({n}x)" for w, n in kinds.most_common(QUOTED_WARNINGS))
        rest = len(kinds) - QUOTED_WARNINGS
        shown = ", ".join(f"{edge} {value:+.2f} s" for edge, value in worst.items())
        lines.append(
            f"{mesh}: the resource figures of {flagged} of {len(rows)} trials carry "
            f"{sum(kinds.values())} warning(s) (N: a number that varies): {quoted}"
            + (f"; and {rest} other kind(s), listed in summary.json" if rest > 0 else "")
            + (f"; worst read offsets from the window's edges: {shown}" if shown else "")
        )
    return per_mesh, lines


def _interval(i: stats.Interval | None) -> list[float] | None:
    return None if i is None else [round(i.low, 3), round(i.high, 3)]


def load_of(cell: dict[str, Any]) -> str:
    """How a cell was loaded, in words: `100 rps`, or for a closed loop (filed under rate 0, which is no
    rate: `testbed.spec.scenario.CLOSED_LOOP_RATE`) what its users achieved."""
    if cell["rate"] == 0:
        return f"closed loop, {cell.get('achieved_rate', 0):g} rps achieved"
    return f"{cell['rate']:g} rps"


def _cell(run: Run, mesh: str, rate: float, members: pd.DataFrame) -> tuple[dict[str, Any], Any]:
    """The figures of one (mesh, rate), and the bootstrap distribution of its gated percentiles."""
    valid = members[members["valid"]]
    trial_counts = [run.counts[p] for p in valid["path"]]
    pooled = stats.pooled(trial_counts)
    latency: dict[str, float] = {name: stats.percentile(pooled, q) for name, q in stats.PERCENTILES.items()}
    latency["mean"] = round(stats.mean(pooled), 1)
    latency["count"] = float(pooled.sum())
    # From the intended send time: what a user whose request was due then would have waited (includes
    # any queueing in the generator; methodology.md, coordinated omission).
    from_intended_trials = [c for p in valid["path"] if (c := run.intended[p]) is not None]
    from_intended = stats.pooled(from_intended_trials) if from_intended_trials else None  # None: closed loop
    distribution = stats.bootstrap(
        trial_counts, [stats.PERCENTILES[n] for n in GATED], seed=stats.seed_for(mesh, rate)
    )
    cell: dict[str, Any] = {
        "mesh": mesh,
        "rate": rate,
        "trials": len(members),
        "valid_trials": len(valid),
        "requests": int(valid["requests"].sum()),
        "errors": int(valid["errors"].sum()),
        "achieved_rate": round(float(valid["achieved_rate"].mean()), 2) if len(valid) else 0.0,
        "duration_s": float(valid["duration_s"].sum()),
        "latency_us": latency,
        "intended_latency_us": {
            name: None if from_intended is None else stats.percentile(from_intended, stats.PERCENTILES[name])
            for name in ("p50", "p99", "p999")
        },
        "trial_latency_us": {name: valid[f"{name}_us"].tolist() for name in stats.PERCENTILES},
        "ci_us": {name: _interval(stats.interval(distribution[:, i])) for i, name in enumerate(GATED)},
        "spectrum": dict(zip(("percentile", "value_us"), stats.spectrum(pooled), strict=True)),
        "resources": _resources(valid),
        "lateness_p99_us_max": (
            float(valid["lateness_p99_us"].max()) if valid["lateness_p99_us"].notna().any() else None
        ),
        "overhead": {},
        "over_time": _over_time(valid),
    }
    return cell, distribution


def _over_time(valid: pd.DataFrame) -> dict[str, Any] | None:
    """The valid trials' series and segments pooled (`series.pool`); None without series (/1 results).

    A series that cannot be pooled leaves the cell's other figures alone: `unavailable` says why."""
    shapes = [s for s in valid.get("over_time", []) if isinstance(s, dict)]
    if not shapes:
        return None
    try:
        return series.pool(shapes)
    # hdrh raises bare Exception subclasses on a damaged histogram (hdrh/codec.py), as in `_read_trial`.
    except Exception as e:
        return {"unavailable": f"{type(e).__name__}: {e}"}


def _resources(valid: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Mean over the valid trials of each component's CPU and memory, also per 1,000 rps."""
    out: dict[str, dict[str, float]] = {}
    components = sorted({c.split(":")[1] for c in valid.columns if c.startswith("res:")})
    for component in components:
        vcpu = valid[f"res:{component}:vcpu"].mean()
        mb = valid[f"res:{component}:mb"].mean()
        processes = valid[f"res:{component}:processes"].max()
        if pd.isna(vcpu):
            continue
        krps = float(valid["achieved_rate"].mean()) / 1000.0
        out[component] = {
            "vcpu": round(float(vcpu), 4),
            "vcpu_per_krps": round(float(vcpu) / krps, 4) if krps else 0.0,
            "mb": round(float(mb), 1),
            "mb_per_krps": round(float(mb) / krps, 1) if krps else 0.0,
            "processes": int(processes),
        }
    return out


def _overhead(cell: dict[str, Any], base: dict[str, Any], new: Any, old: Any) -> None:
    """Fill cell["overhead"] from the two cells' bootstrap distributions, and cell["resource_overhead"]."""
    for i, name in enumerate(GATED):
        a, b = cell["latency_us"][name], base["latency_us"][name]
        cell["overhead"][name] = {
            "us": a - b,
            "pct": round(100.0 * (a - b) / b, 2) if b else None,
            "ci_us": _interval(stats.interval(stats.difference(new[:, i], old[:, i]))),
            "ci_pct": _interval(stats.interval(stats.difference(new[:, i], old[:, i], relative=True))),
        }

    # What the mesh costs over the baseline: CPU of everything but the load generator (the node's and the
    # kernel's rest included: WireGuard's encryption runs there); memory without the node overhead, which
    # holds the node's page cache (the images loaded with `kind load`), shown beside it instead.
    def total(resources: dict[str, dict[str, float]], key: str, leave_out: tuple[str, ...]) -> float:
        return sum(v[key] for k, v in resources.items() if k not in leave_out)

    new_res, old_res = cell["resources"], base["resources"]
    cost = {
        "vcpu_per_krps": round(
            total(new_res, "vcpu_per_krps", ("loadgen",)) - total(old_res, "vcpu_per_krps", ("loadgen",)), 4
        ),
        "mb": round(total(new_res, "mb", NOT_MESH_MEMORY) - total(old_res, "mb", NOT_MESH_MEMORY), 4),
    }
    if NODE_OVERHEAD in new_res or NODE_OVERHEAD in old_res:
        cost["node_overhead_mb"] = round(
            new_res.get(NODE_OVERHEAD, {}).get("mb", 0.0) - old_res.get(NODE_OVERHEAD, {}).get("mb", 0.0), 4
        )
    cell["resource_overhead"] = cost


def _status_warning(meta: dict[str, Any]) -> list[str]:
    """How the run ended, when it did not simply complete."""
    failures = [f for f in meta.get("failures") or [] if isinstance(f, dict)]
    if meta.get("status") == "complete-with-failures":
        failed = sum(1 for f in failures if f.get("status") == "failed")
        return [
            f"the run is complete with failures: {failed} trial(s) failed and {len(failures) - failed} were "
            "skipped (listed under Failed and skipped trials); every figure leaves them out"
        ]
    if meta.get("status") != "complete":
        return [
            f"the run is {meta.get('status')}: {meta.get('finished_trials')} of "
            f"{meta.get('planned_trials')} planned trials finished"
            + (f" ({meta['error']})" if meta.get("error") else "")
        ]
    return []


def _warnings(meta: dict[str, Any], cells: list[dict[str, Any]], trials: pd.DataFrame) -> list[str]:
    out = _status_warning(meta)
    invalid = trials[~trials["valid"]] if len(trials) else trials
    if len(invalid):
        out.append(f"{len(invalid)} of {len(trials)} trials are invalid and excluded (listed below)")
    coarse = []
    for c in cells:
        where = f"{c['mesh']} at {load_of(c)}"
        n = c["valid_trials"]
        if n == 0:
            out.append(f"{where}: no valid trial; nothing is reported for it")
            continue
        if n < MIN_TRIALS:
            out.append(f"{where}: only {n} valid trial(s); at least {MIN_TRIALS} are needed to judge spread")
        elif n < ROUGH_CI_TRIALS:
            coarse.append(f"{where} ({n})")
        for name, limit in MAX_CV.items():
            values = pd.Series(c["trial_latency_us"][name], dtype=float)
            if len(values) >= 2 and values.mean() > 0:
                cv = float(values.std(ddof=1) / values.mean())
                if cv > limit:
                    out.append(
                        f"{where}: {name} is unstable across trials: standard deviation "
                        f"{values.std(ddof=1) / 1000:.3f} ms is {cv:.0%} of the mean "
                        f"{values.mean() / 1000:.3f} ms (over {limit:.0%}); "
                        "look for other load on the machine, or run more trials"
                    )
    if coarse:
        out.append(
            f"under {ROUGH_CI_TRIALS} valid trials, bootstrap intervals are coarse: {', '.join(coarse)}; "
            f"use --trials {ROUGH_CI_TRIALS} or more for decisions"
        )
    # NaN: a trial without host figures (kind, older runs)
    steal = [float(v) for v in trials.get("host_steal_percent", []) if not math.isnan(v)]
    if steal and max(steal) > STEAL_WARN_PERCENT:
        out.append(
            f"the hypervisor took up to {max(steal):.1f}% of this VM's CPU time (steal) in a measured "
            f"window (mean {sum(steal) / len(steal):.1f}%): the host is shared, so expect drift between "
            "trials and runs"
        )
    if len(trials) and not any(c["overhead"] for c in cells) and len({c["mesh"] for c in cells}) > 1:
        out.append("no overhead is computed: the run has no trials of the baseline mesh")
    out += _resource_warnings(trials)[1]
    return out


def _skipped_warnings(skipped: tuple[Skipped, ...]) -> list[str]:
    """First among the warnings: the figures below leave these trials out."""
    if not skipped:
        return []
    return [
        f"{len(skipped)} trial result file(s) could not be read and are left out of every figure "
        "(listed under Unreadable results); the files are left as they are"
    ]


def summary(run: Run, *, baseline: str = "none", require_baseline: bool = False) -> dict[str, Any]:
    """The `testbed.summary/1` document of a run; overheads are over `baseline` when the run has it."""
    trials = run.trials
    present = set(trials["mesh"])
    meshes = list(dict.fromkeys(run.meta.get("meshes") or sorted(present)))
    if require_baseline and baseline not in present:
        raise UsageError(
            f"baseline mesh {baseline!r} is not in this run "
            f"(it has: {', '.join(sorted(present)) or 'no trials'}); give --baseline with one of those"
        )
    cells: list[dict[str, Any]] = []
    distributions: dict[tuple[str, float], Any] = {}
    if len(trials):
        order = {m: i for i, m in enumerate(meshes)}
        groups = sorted(trials.groupby(["mesh", "rate"]), key=lambda g: (order.get(g[0][0], 99), g[0][1]))
        for key, members in groups:
            mesh, rate = str(key[0]), float(key[1])  # type: ignore[arg-type]
            cell, distributions[(mesh, rate)] = _cell(run, mesh, rate, members)
            cells.append(cell)
    by_key = {(c["mesh"], c["rate"]): c for c in cells}
    for c in cells:
        base = by_key.get((baseline, c["rate"]))
        if base is not None and c["mesh"] != baseline and c["valid_trials"] and base["valid_trials"]:
            new, old = distributions[(c["mesh"], c["rate"])], distributions[(baseline, c["rate"])]
            _overhead(c, base, new, old)
    invalid = (
        [
            {"path": r.path, "mesh": r.mesh, "rate": r.rate, "trial": r.trial, "reasons": r.reasons}
            for r in trials[~trials["valid"]].itertuples()
        ]
        if len(trials)
        else []
    )
    return {
        "schema": SUMMARY_SCHEMA,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "testbed_version": __version__,
        "histogram": HISTOGRAM,
        "confidence": stats.CONFIDENCE,
        "resamples": stats.RESAMPLES,
        "baseline": baseline if baseline in present else None,
        "run": run.meta,
        "cells": cells,
        "invalid_trials": invalid,
        "skipped_results": [{"path": s.path, "reason": s.reason} for s in run.skipped],
        # Trials whose system under test failed, or that were skipped after failures (run.json).
        "failed_trials": [f for f in run.meta.get("failures") or [] if isinstance(f, dict)],
        "warnings": _skipped_warnings(run.skipped) + _warnings(run.meta, cells, trials),
        "resource_sources": _resource_sources(run.meta, trials),
        "resource_warnings": _resource_warnings(trials)[0],
    }
