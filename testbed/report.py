"""The run's report: a Markdown table of p50/p99 per mesh and rate with the overhead over the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed.analysis import Cell, cells, load_run, overhead


def _ms(us: float | int | None) -> str:
    return "n/a" if us is None else f"{us / 1000:.3f}"


def _signed_ms(us: float | None) -> str:
    return "n/a" if us is None else f"{us / 1000:+.3f}"


def markdown(meta: dict[str, Any], table: list[Cell], *, baseline: str = "none") -> str:
    lines = [
        f"# Mesh overhead: run {meta.get('run_id', '?')}",
        "",
        f"Platform `{meta.get('platform')}`, scenario `{meta.get('scenario', {}).get('name')}`, "
        f"topology `{meta.get('topology', {}).get('name')}`, {meta.get('host', {}).get('cpu_count')} cores "
        f"({meta.get('host', {}).get('cpu_model')}). Latency is the load generator's service time "
        "(timed on the wire: first request byte out, last response byte in), pooled over the valid trials; "
        "the range is across trials. "
        f"Overhead is over `{baseline}`. A trial counts when its generator kept to the schedule "
        f"(send lateness p99 at most {meta.get('scenario', {}).get('max_lateness_ms', 2)} ms), "
        "reached 97% of the rate, had at most 1% errors and used at most 90% of a core.",
        "",
        "| mesh | rate (rps) | valid trials | p50 ms | p50 range | p99 ms | p99 range "
        "| added p50 ms | added p99 ms | CPU per 1k rps (vCPU) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = {c.rate: c for c in table if c.mesh == baseline}
    for c in table:
        lo50, hi50 = c.spread("p50")
        lo99, hi99 = c.spread("p99")
        cpu = ", ".join(f"{k} {v['vcpu'] * 1000 / c.rate:.3f}" for k, v in sorted(c.resources.items()))
        lines.append(
            f"| {c.mesh} | {c.rate:g} | {c.valid_trials}/{c.trials} | {_ms(c.pooled.get('p50'))} | "
            f"{_ms(lo50)}-{_ms(hi50)} | {_ms(c.pooled.get('p99'))} | {_ms(lo99)}-{_ms(hi99)} | "
            f"{_signed_ms(overhead(c, base.get(c.rate), 'p50')) if c.mesh != baseline else ''} | "
            f"{_signed_ms(overhead(c, base.get(c.rate), 'p99')) if c.mesh != baseline else ''} | {cpu} |"
        )
    invalid = [(c, path, reasons) for c in table for path, reasons in c.invalid]
    if invalid:
        lines += ["", "## Invalid trials (excluded)", ""]
        lines += [f"- `{path}`: {'; '.join(reasons)}" for _, path, reasons in invalid]
    few = [c for c in table if c.valid_trials < 3]
    if few:
        lines += ["", "## Warnings", ""]
        lines += [
            f"- {c.mesh} at {c.rate:g} rps: only {c.valid_trials} valid trial(s); too few to judge spread"
            for c in few
        ]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, *, baseline: str = "none") -> Path:
    meta, trials = load_run(run_dir)
    text = markdown(meta, cells(trials), baseline=baseline)
    target = run_dir / "report.md"
    target.write_text(text)
    return target
