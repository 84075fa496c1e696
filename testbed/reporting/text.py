"""What the Markdown and the HTML report both print: number formats, notes on the figures, the run's context.

A leaf of the reports: `report` (summary.json, report.md) and `html` import it, and it imports neither,
so that the two reports share their wording without an import cycle.
"""

from __future__ import annotations

from typing import Any

from testbed.reporting import analysis
from testbed.resources import KERNEL, NODE_OVERHEAD

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


def _context(summary: dict[str, Any]) -> str:
    run = summary["run"]
    scenario, topology, host = run.get("scenario", {}), run.get("topology", {}), run.get("host", {})
    versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())
    if scenario.get("loop") == "closed":  # no rate, no arrivals: filed under rate 0
        load = f"closed loop (publisher's method), {scenario.get('users')} users, no think time"
    else:
        load = f"{scenario.get('connections')} connections, {scenario.get('arrival')} open-loop arrivals"
    if scenario.get("new_connection"):
        load += ", a new connection per request"
    capacity = scenario.get("capacity")
    repeats = (
        f"a capacity search per mesh (service p99 objective {capacity.get('slo_p99_ms')} ms, "
        f"{capacity.get('repeats')} repeats at the answer)"
        if isinstance(capacity, dict)
        else f"{scenario.get('trials')} trials per mesh and rate"
    )
    return (
        f"Platform `{run.get('platform')}`, scenario `{scenario.get('name')}` "
        f"({scenario.get('duration_s')} s measured after {scenario.get('warmup_s')} s warm-up, "
        f"{repeats}, {load}), topology `{topology.get('name')}` "
        f"({topology.get('calls_per_request', '?')} meshed calls per request, "
        f"{topology.get('critical_hops', '?')} in sequence), host {host.get('cpu_count')} cores "
        f"({host.get('cpu_model')}); {versions}. Run status: **{run.get('status')}**."
    )


def left_out(summary: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]], str]]:
    """The lists of what the figures leave out, as (title, [(path, why)], separator) for either report:
    invalid, failed or skipped trials and unreadable results (summaries older than `failed_trials` and
    `skipped_results` have none)."""
    return [
        (
            "Invalid trials (excluded)",
            [(t["path"], "; ".join(t["reasons"])) for t in summary["invalid_trials"]],
            ": ",
        ),
        (
            "Failed and skipped trials",
            [(f["path"], f"{f['status']}: {f['cause']}") for f in summary.get("failed_trials") or []],
            " ",
        ),
        (
            "Unreadable results (left out)",
            [(s["path"], s["reason"]) for s in summary.get("skipped_results") or []],
            ": ",
        ),
    ]
