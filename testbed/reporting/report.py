"""The run's report: `summary.json` (schema-versioned), `report.md` (GitHub-flavoured) and `report.html`.

The HTML report is one self-contained file: plotly.js is inlined, so it opens offline and can be attached
to a CI run as it is. Warnings come first: a number is only worth reading once its caveats are known.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from testbed.reporting import analysis, series
from testbed.reporting import capacity as capacity_report
from testbed.reporting.claims import load_claims
from testbed.reporting.claims_check import check
from testbed.reporting.series import profile_cells, recovery_text, segment_rate
from testbed.reporting.text import (
    _ci_ms,
    _context,
    _ms,
    _pct,
    cost_text,
    left_out,
    memory_label,
    resource_notes,
)
from testbed.resources import KERNEL, NODE_OVERHEAD


def build(run_dir: Path, *, baseline: str = "none", require_baseline: bool = False) -> dict[str, Any]:
    """The summary of a run, with the published claims matched against it."""
    summary = analysis.summary(
        analysis.load_run(run_dir), baseline=baseline, require_baseline=require_baseline
    )
    summary["claims"] = check(summary, load_claims())
    capacity = capacity_report.read(run_dir, summary["run"].get("meshes") or [])
    if capacity:  # a `profile = "capacity"` run: a search per mesh, beside its probes
        summary["capacity"] = capacity_report.section(capacity, baseline=baseline)
    reproduction = run_dir / "reproduction.json"  # written by `testbed reproduce`
    if reproduction.is_file():
        summary["reproduction"] = json.loads(reproduction.read_text())
    return summary


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(
    run_dir: Path, *, baseline: str = "none", out: Path | None = None, require_baseline: bool = False
) -> dict[str, Path]:
    """Write summary.json, report.md and report.html (to `out`, default the run directory)."""
    summary = build(run_dir, baseline=baseline, require_baseline=require_baseline)
    html_path = out or run_dir / "report.html"
    target_dir = html_path.parent
    paths = {
        "summary": target_dir / "summary.json",
        "markdown": target_dir / "report.md",
        "html": html_path,
    }
    _atomic_write(paths["summary"], json.dumps(summary, indent=1) + "\n")
    _atomic_write(paths["markdown"], markdown(summary))
    from testbed.reporting.html import render

    _atomic_write(paths["html"], render(summary))
    return paths


# --- method text, shared by both reports ------------------------------------------------------------------


# --- Markdown -------------------------------------------------------------------------------------------


def _rate_cell(cell: dict[str, Any]) -> str:
    """The rate column: the rate, or for a closed loop what it achieved (it had no rate to keep)."""
    return analysis.load_of(cell).removesuffix(" rps")


def markdown(summary: dict[str, Any]) -> str:
    run = summary["run"]
    base = summary["baseline"]
    lines = [f"# Mesh overhead: run {run.get('run_id', '?')}", "", _context(summary), ""]
    if summary["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    if summary.get("capacity"):  # a capacity run: its answer first (its probes are not latency cells)
        lines += _capacity_markdown(summary["capacity"])
    if summary.get("capacity") and not summary["cells"]:  # only probes: no latency or resource cells
        lines += _tail_sections(summary)
        return "\n".join(lines).rstrip() + "\n"
    lines += [
        "## Latency",
        "",
        "Service latency (first request byte out to last response byte in), pooled over the valid trials; "
        "the range is the lowest and highest trial. The p99 from the intended send time adds any wait "
        "in the load generator (coordinated omission corrected). "
        + (
            f"Overhead is over `{base}`, with its 95% bootstrap interval."
            if base
            else "No baseline: no overhead."
        ),
        "",
        "| mesh | rate | valid trials | p50 ms | p50 range | p99 ms | p99 range | p99.9 ms | max ms "
        "| p99 from intended ms | added p50 ms (95% CI) | added p99 ms (95% CI) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in summary["cells"]:
        lat, tl = c["latency_us"], c["trial_latency_us"]

        def added(name: str, cell: dict[str, Any] = c) -> str:
            o = cell["overhead"].get(name)
            if not o:
                return ""
            return f"{o['us'] / 1000:+.3f} ({_ci_ms(o['ci_us'], signed=True)}), {_pct(o['pct'])}"

        def rng(name: str, trial_values: dict[str, list[float]] = tl) -> str:
            v = trial_values[name]
            return f"{_ms(min(v))}-{_ms(max(v))}" if v else "n/a"

        lines.append(
            f"| {c['mesh']} | {_rate_cell(c)} | {c['valid_trials']}/{c['trials']} | {_ms(lat['p50'])} | "
            f"{rng('p50')} | {_ms(lat['p99'])} | {rng('p99')} | {_ms(lat['p999'])} | {_ms(lat['max'])} | "
            f"{_ms(c['intended_latency_us']['p99'])} | "
            f"{added('p50')} | {added('p99')} |"
        )
    lines += _over_time_markdown(summary)
    notes = resource_notes(summary)
    lines += ["", "## Resources", "", notes[0], ""]
    lines += [
        f"| mesh | rate | component | processes | vCPU | vCPU per 1k rps | {memory_label(summary)} |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for c in summary["cells"]:
        for name, r in c["resources"].items():
            if not r["processes"] and not r["vcpu"]:  # the kernel's rest on kind has CPU but no process
                continue
            lines.append(
                f"| {c['mesh']} | {_rate_cell(c)} | {name} | {r['processes']} | {r['vcpu']:.3f} | "
                f"{r['vcpu_per_krps']:.3f} | {r['mb']:.1f} |"
            )
    # Notes under the table (the rows stay plain table cells, which other tools and tests read).
    lines += [""] + [line for note in notes[1:] for line in (f"Note: {note}", "")]
    costs = [c for c in summary["cells"] if c.get("resource_overhead")]
    if costs:
        lines += [
            "",
            "What the mesh costs beyond the baseline (CPU: all components but the load generator; memory: "
            f"also without {NODE_OVERHEAD} and {KERNEL}):",
            "",
        ]
        lines += [
            f"- {c['mesh']} at {analysis.load_of(c)}: {cost_text(c['resource_overhead'])}" for c in costs
        ]
    if summary.get("claims"):
        lines += [
            "",
            "## Published claims vs measured here",
            "",
            "(?) marks figures known only second-hand. The differences column says why the two may disagree.",
            "",
            "| source | mesh | metric | published | measured here | differences |",
            "|---|---|---|---:|---:|---|",
        ]
        for r in summary["claims"]:
            mark = " (?)" if r["second_hand"] else ""
            measured = "n/a" if r["measured_value"] is None else f"{r['measured_value']:.3f}"
            lines.append(
                f"| [{r['source']}]({r['url']}){mark} | {r['claim_mesh']} vs {r['mesh']} | {r['metric']} | "
                f"{r['published_value']:g}{mark} | {measured} ({r['measured_how']}) | "
                f"{'; '.join(r['differences'])} |"
            )
    lines += _tail_sections(summary)
    return "\n".join(lines) + "\n"


def _tail_sections(summary: dict[str, Any]) -> list[str]:
    """The lists of what the figures leave out (`text.left_out`)."""
    return [line for title, items, sep in left_out(summary) for line in _listing(title, items, separator=sep)]


def _over_time_markdown(summary: dict[str, Any]) -> list[str]:
    """Per mesh, each segment of a non-constant profile pooled over the valid trials; a spike's recovery."""
    cells = profile_cells(summary)
    unavailable = [c for c in summary["cells"] if "unavailable" in (c.get("over_time") or {})]
    if not cells and not unavailable:
        return []
    lines = ["", "## Load over time", ""]
    for arg in dict.fromkeys(c["over_time"]["profile"]["arg"] for c in cells):
        lines += [
            f"Profile `{arg}`. Each segment pooled over the valid trials (their histograms of the segment "
            "merged); achieved is per trial. The HTML report plots p50 and p99 per interval "
            "(summary.json: `over_time`).",
            "",
        ]
    for c in cells:
        ot = c["over_time"]
        lines += [
            f"### {c['mesh']}",
            "",
            "| segment | from s | to s | target rps | achieved rps | p50 ms | p99 ms | p99 from intended ms "
            "| errors | invalid in trials |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in ot["segments"]:
            service, intended = s["latency_us"]["service"] or {}, s["latency_us"]["intended"] or {}
            lines.append(
                f"| {s['label']} | {s['start_s']:g} | {s['end_s']:g} | {segment_rate(s)} | "
                f"{s['achieved_rps']:.1f} | {_ms(service.get('p50'))} | {_ms(service.get('p99'))} | "
                f"{_ms(intended.get('p99'))} | {s['errors']} | {s['invalid_trials']}/{ot['trials']} |"
            )
        if ot.get("recovery"):
            lines += ["", f"Spike recovery: {recovery_text(ot['recovery'])}."]
        lines.append("")
    if any(c["over_time"].get("recovery") for c in cells):
        lines += [
            f"Recovery is the time from the burst's end to the start of the first interval from which the "
            f"p99 of {series.RECOVERY_INTERVALS} consecutive intervals (their histograms merged over the "
            f"trials; fewer when the window ends first) is within {series.RECOVERY_MARGIN:.0%} of the "
            "pre-spike p99 (the `before` segment's, pooled); its resolution is one interval.",
            "",
        ]
    lines += [f"- {c['mesh']} at {analysis.load_of(c)}: no series: {c['over_time']['unavailable']}" for c in
              unavailable]  # fmt: skip
    return lines


def _listing(title: str, items: list[tuple[str, str]], *, separator: str = ": ") -> list[str]:
    """A titled list of paths and what is wrong with each; nothing when there is nothing to list."""
    if not items:
        return []
    return ["", f"## {title}", "", *(f"- `{path}`{separator}{why}" for path, why in items)]


def _capacity_markdown(cap: dict[str, Any]) -> list[str]:
    """The capacity section: the answer per mesh against the baseline's, then each mesh's curve."""
    base = cap["baseline"]
    lines = ["## Capacity", "", capacity_report.objective_text(cap), ""]
    lines += [
        f"| mesh | max rate rps | confirmed | limited by | share of {base or 'baseline'} | cost "
        "| knee | probes |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for m in cap["meshes"]:
        share, cost = capacity_report.share_text(m)
        failed = f" ({m['failed_probes']} failed)" if m["failed_probes"] else ""
        lines.append(
            f"| {m['mesh']} | {capacity_report.answer_text(m)} | {capacity_report.confirmation_text(m)} | "
            f"{m['limited_by'] or ''} | {share} | {cost} | {capacity_report.knee_text(m)} | "
            f"{m['probes']}{failed} |"
        )
    lines += ["", *(f"- {m['mesh']}: {m['note']}" for m in cap["meshes"] if m["note"])]
    lines += [
        "",
        "The latency/throughput curve, per offered rate: achieved rps, median service p99 ms of its probes "
        f"(passed of probed); **bold**: the knee ({cap['knee_method']}).",
        "",
    ]
    for m in cap["meshes"]:
        knee = m["knee"]["rate"] if m["knee"] else None
        points = []
        for p in m["points"]:
            text = f"{p['rate']:g} rps: {p['achieved_rate']:g}, {p['p99_ms']:.3f} ms"
            text += f" ({p['passed']}/{p['probes']})"
            points.append(f"**{text}**" if p["rate"] == knee else text)
        lines.append(f"- {m['mesh']}: " + ("; ".join(points) or "no probe measured anything"))
    return [*lines, ""]
