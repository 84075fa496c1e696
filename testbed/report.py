"""The run's report: `summary.json` (schema-versioned), `report.md` (GitHub-flavoured) and `report.html`.

The HTML report is one self-contained file: plotly.js is inlined, so it opens offline and can be attached
to a CI run as it is. Warnings come first: a number is only worth reading once its caveats are known.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from testbed import analysis
from testbed.claims import load_claims
from testbed.claims_check import check
from testbed.kube.metrics import KERNEL, NODE_OVERHEAD

#: Platforms whose trials of one mesh run as a block, each mesh on its own cluster: `one_mesh_at_a_time`
#: of `testbed.platforms.kube.KubePlatform`, which both subclass (`testbed.run._trials`).
BLOCK_PLATFORMS = ("kind", "existing")

_NAMES = {"p50": "p50", "p90": "p90", "p99": "p99", "p999": "p99.9", "max": "max"}


def _ms(us: float | None, digits: int = 3) -> str:
    return "n/a" if us is None else f"{us / 1000:.{digits}f}"


def _ci_ms(ci: list[float] | None, *, signed: bool = False) -> str:
    if not ci:
        return "n/a"
    f = "+.3f" if signed else ".3f"
    return f"{ci[0] / 1000:{f}} to {ci[1] / 1000:{f}}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def build(run_dir: Path, *, baseline: str = "none", require_baseline: bool = False) -> dict[str, Any]:
    """The summary of a run, with the published claims matched against it."""
    summary = analysis.summary(
        analysis.load_run(run_dir), baseline=baseline, require_baseline=require_baseline
    )
    summary["claims"] = check(summary, load_claims())
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
    from testbed.report_html import render

    _atomic_write(paths["html"], render(summary))
    return paths


# --- method text, shared by both reports ------------------------------------------------------------------


def memory_label(summary: dict[str, Any]) -> str:
    """The memory column's header, from what the trials measured (summaries from before: peak RSS)."""
    return str(summary.get("resource_sources", {}).get("memory_label", analysis.MEMORY_LABELS["peak-rss"]))


def trial_order(summary: dict[str, Any]) -> str:
    """How the trials were ordered, and what that means for drift, on the run's platform."""
    platform = summary["run"].get("platform")
    if platform in BLOCK_PLATFORMS:
        return (
            f"On {platform}, the trials of one mesh run as a block, each mesh on its own cluster "
            + ("(a kind cluster created for it)" if platform == "kind" else "(installed in turn)")
            + ", so the meshes are measured at different times: drift in the machine or the cluster between "
            "blocks is not spread over the meshes, and it shows up as overhead. Repeat the run (another day, "
            "or with the meshes in another order) to see how large it is."
        )
    return "Meshes are alternated trial by trial so that drift in the machine hits them alike."


#: Why `kernel-unattributed` is what it is (`testbed.kube.metrics.cgroup_window`).
KERNEL_NOTE = (
    f"{KERNEL} is a remainder: the host's busy CPU from /proc/stat less every kind node container's cgroup. "
    "It holds the kernel's own work (softirq, kernel threads such as WireGuard's wg-crypt workers) and every "
    "host process outside the kind nodes (dockerd, containerd, the testbed's own docker exec and kubectl "
    "calls). /proc/stat is sampled at the timer tick while the cgroups count exactly, so it carries a few "
    "hundredths of a vCPU of noise in a 5 s window, and can be slightly negative."
)
NODE_OVERHEAD_NOTE = (
    f"{NODE_OVERHEAD} is each node container's usage outside its pods' containers (kubelet, containerd and "
    "its shims, the pause sandboxes); its memory is mostly the node's page cache, which holds the images "
    "loaded with `kind load`, so it is shown apart and left out of the mesh's memory cost."
)


def resource_notes(summary: dict[str, Any]) -> list[str]:
    """What the resource figures are, from the sources the trials recorded."""
    sources = summary.get("resource_sources") or {}
    cpu = "; ".join(sources.get("cpu") or [analysis.LOCAL_CPU_SOURCE])
    memory = "; ".join(sources.get("memory") or [analysis.LOCAL_MEMORY_SOURCE])
    notes = [
        "Mean over the valid trials, over the measured window only; vCPU is CPU seconds per second, "
        f"from {cpu}. Memory (column {memory_label(summary)}): {memory}."
    ]
    if sources.get("platform") == "existing":
        notes.append(
            "On existing, the kubelet takes each container's figures from cAdvisor, which samples it every "
            "10-15 s: with windows under 30 s many containers have no new sample (the trial warns)."
        )
    components = {name for c in summary["cells"] for name in c["resources"]}
    if NODE_OVERHEAD in components:
        notes.append(NODE_OVERHEAD_NOTE)
    if KERNEL in components:
        notes.append(KERNEL_NOTE)
    return notes


def cost_text(cost: dict[str, float]) -> str:
    """One cell's cost over the baseline, with the node overhead's memory apart."""
    text = f"{cost['vcpu_per_krps']:+.3f} vCPU per 1k rps, {cost['mb']:+.1f} MB"
    if "node_overhead_mb" in cost:
        text += f" ({NODE_OVERHEAD}, not counted: {cost['node_overhead_mb']:+.1f} MB)"
    return text


# --- Markdown -------------------------------------------------------------------------------------------


def _context(summary: dict[str, Any]) -> str:
    run = summary["run"]
    scenario, topology, host = run.get("scenario", {}), run.get("topology", {}), run.get("host", {})
    versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())
    return (
        f"Platform `{run.get('platform')}`, scenario `{scenario.get('name')}` "
        f"({scenario.get('duration_s')} s measured after {scenario.get('warmup_s')} s warm-up, "
        f"{scenario.get('trials')} trials per mesh and rate, {scenario.get('connections')} connections, "
        f"{scenario.get('arrival')} open-loop arrivals), topology `{topology.get('name')}` "
        f"({topology.get('calls_per_request', '?')} meshed calls per request, "
        f"{topology.get('critical_hops', '?')} in sequence), host {host.get('cpu_count')} cores "
        f"({host.get('cpu_model')}); {versions}. Run status: **{run.get('status')}**."
    )


def markdown(summary: dict[str, Any]) -> str:
    run = summary["run"]
    base = summary["baseline"]
    lines = [f"# Mesh overhead: run {run.get('run_id', '?')}", "", _context(summary), ""]
    if summary["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
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
            f"| {c['mesh']} | {c['rate']:g} | {c['valid_trials']}/{c['trials']} | {_ms(lat['p50'])} | "
            f"{rng('p50')} | {_ms(lat['p99'])} | {rng('p99')} | {_ms(lat['p999'])} | {_ms(lat['max'])} | "
            f"{_ms(c['intended_latency_us']['p99'])} | "
            f"{added('p50')} | {added('p99')} |"
        )
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
                f"| {c['mesh']} | {c['rate']:g} | {name} | {r['processes']} | {r['vcpu']:.3f} | "
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
        lines += [f"- {c['mesh']} at {c['rate']:g} rps: {cost_text(c['resource_overhead'])}" for c in costs]
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
    if summary["invalid_trials"]:
        lines += ["", "## Invalid trials (excluded)", ""]
        lines += [f"- `{t['path']}`: {'; '.join(t['reasons'])}" for t in summary["invalid_trials"]]
    return "\n".join(lines) + "\n"
