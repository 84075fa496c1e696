"""The HTML report: one file with plotly.js inlined (opens offline), warnings first, then tables and plots."""

from __future__ import annotations

import math
from html import escape
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline

from testbed.reporting import capacity as capacity_text
from testbed.reporting.analysis import load_of
from testbed.reporting.series import (
    RECOVERY_INTERVALS,
    RECOVERY_MARGIN,
    profile_cells,
    recovery_text,
    segment_rate,
)
from testbed.reporting.text import (
    _context,
    _ms,
    _pct,
    left_out,
    memory_label,
    resource_notes,
    trial_order,
)
from testbed.resources import KERNEL, NODE_OVERHEAD

_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d"]
_CONFIG = {"displaylogo": False, "responsive": True}


def _color(meshes: list[str], mesh: str) -> str:
    return _COLORS[meshes.index(mesh) % len(_COLORS)]


def _div(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50}, height=420)
    return str(pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id, config=_CONFIG))


def _spectrum(summary: dict[str, Any], meshes: list[str], rate: float) -> str:
    fig = go.Figure()
    top = 10.0
    for c in summary["cells"]:
        if c["rate"] != rate or not c["spectrum"].get("percentile"):
            continue
        qs, values = c["spectrum"]["percentile"], c["spectrum"]["value_us"]
        x = [1.0 / (1.0 - q / 100.0) if q < 100 else None for q in qs]
        top = max(top, *(v for v in x if v is not None))
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[v / 1000 for v in values],
                mode="lines",
                name=c["mesh"],
                line={"color": _color(meshes, c["mesh"]), "shape": "hv"},
                customdata=qs,
                hovertemplate="%{customdata:.4f}%: %{y:.3f} ms<extra>" + c["mesh"] + "</extra>",
            )
        )
    ticks = [1, 2] + [10**k for k in range(1, int(math.log10(top)) + 1)]
    labels = [f"{100 * (1 - 1 / t):.{max(0, int(math.log10(t)) - 2)}f}%" for t in ticks]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=labels, title="percentile")
    fig.update_yaxes(title="service latency (ms)", rangemode="tozero")
    at = "a closed loop" if rate == 0 else f"{rate:g} rps"  # a closed loop's cells are filed under rate 0
    fig.update_layout(title=f"Latency by percentile at {at} (pooled valid trials)")
    return _div(fig, f"spectrum-{rate:g}")


def _overhead(summary: dict[str, Any], meshes: list[str]) -> str | None:
    cells = [c for c in summary["cells"] if c["overhead"]]
    if not cells:
        return None
    fig = go.Figure()
    in_legend: set[str] = set()
    for c in cells:
        xs, ys, plus, minus = [], [], [], []
        for name in ("p50", "p99"):
            o = c["overhead"][name]
            xs.append(f"{name} at {load_of(c)}")
            ys.append(o["us"] / 1000)
            ci = o.get("ci_us")
            plus.append((ci[1] - o["us"]) / 1000 if ci else 0)
            minus.append((o["us"] - ci[0]) / 1000 if ci else 0)
        fig.add_trace(
            go.Bar(
                x=xs,
                y=ys,
                name=c["mesh"],
                legendgroup=c["mesh"],
                showlegend=c["mesh"] not in in_legend,  # one legend entry per mesh, not per rate
                marker_color=_color(meshes, c["mesh"]),
                error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True},
                hovertemplate="%{x}: %{y:+.3f} ms<extra>" + c["mesh"] + "</extra>",
            )
        )
        in_legend.add(c["mesh"])
    fig.update_layout(
        barmode="group", title=f"Added latency over {summary['baseline']} (whiskers: 95% bootstrap CI)"
    )
    fig.update_yaxes(title="added latency (ms)", zeroline=True)
    return _div(fig, "overhead")


def _by_rate(summary: dict[str, Any], meshes: list[str]) -> str:
    fig = go.Figure()
    for mesh in meshes:
        cells = [c for c in summary["cells"] if c["mesh"] == mesh and c["valid_trials"]]
        for name, dash in (("p50", "solid"), ("p99", "dot")):
            ys = [c["latency_us"][name] / 1000 for c in cells]
            cis = [c["ci_us"].get(name) for c in cells]
            fig.add_trace(
                go.Scatter(
                    x=[c["rate"] for c in cells],
                    y=ys,
                    mode="lines+markers",
                    name=f"{mesh} {name}",
                    line={"color": _color(meshes, mesh), "dash": dash},
                    error_y={
                        "type": "data",
                        "array": [(ci[1] / 1000 - y) if ci else 0 for ci, y in zip(cis, ys, strict=True)],
                        "arrayminus": [
                            (y - ci[0] / 1000) if ci else 0 for ci, y in zip(cis, ys, strict=True)
                        ],
                    },
                )
            )
    fig.update_layout(title="Latency against offered rate (whiskers: 95% bootstrap CI)")
    fig.update_xaxes(title="offered rate (requests per second)")
    fig.update_yaxes(title="service latency (ms)", rangemode="tozero")
    return _div(fig, "by-rate")


def _steps(
    points: list[dict[str, Any]], values: list[float | None]
) -> tuple[list[float], list[float | None]]:
    """An interval's figure held across the interval (a step per interval, plotted with shape `hv`)."""
    if not points:
        return [], []
    return [p["start_s"] for p in points] + [points[-1]["end_s"]], [*values, values[-1]]


def _over_time(summary: dict[str, Any], meshes: list[str], rate: float) -> str:
    """p50 and p99 per interval of every mesh at one rate slot, the target and achieved rates on a second
    axis, the profile's segments shaded and each mesh's spike recovery marked."""
    cells = [c for c in profile_cells(summary) if c["rate"] == rate]
    fig = go.Figure()
    back: dict[float, list[str]] = {}  # a spike's recovery: when each mesh's p99 was back
    for c in cells:
        points, color = c["over_time"]["points"], _color(meshes, c["mesh"])
        for name, dash in (("p50", "solid"), ("p99", "dot")):
            # An interval without a sample (nothing completed) is a gap, not a zero.
            x, y = _steps(
                points, [p["service"][name] / 1000 if p["service"]["count"] else None for p in points]
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=f"{c['mesh']} {name}",
                    line={"color": color, "dash": dash, "shape": "hv"},
                    hovertemplate="from %{x:g} s: %{y:.3f} ms<extra>" + f"{c['mesh']} {name}" + "</extra>",
                )
            )
        x, y = _steps(points, [p["achieved_rps"] for p in points])
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                yaxis="y2",
                mode="lines",
                name=f"{c['mesh']} achieved rps",
                line={"color": color, "width": 1, "dash": "dashdot", "shape": "hv"},
                opacity=0.6,
                hovertemplate="from %{x:g} s: %{y:.1f} rps<extra>" + f"{c['mesh']} achieved" + "</extra>",
            )
        )
        recovery = c["over_time"].get("recovery")
        if recovery and recovery.get("recovered_at_s") is not None:
            back.setdefault(recovery["recovered_at_s"], []).append(c["mesh"])
    for at, names in back.items():  # one mark per time, naming every mesh back then (labels would overlap)
        fig.add_vline(
            x=at,
            line={"color": "#444", "dash": "dash", "width": 1},
            annotation={"text": f"p99 back: {', '.join(names)}", "font": {"size": 10}},
            annotation_position="bottom right",
        )
    first = cells[0]["over_time"]
    segments = first["segments"]  # the same profile in every cell of the rate slot
    fig.add_trace(
        go.Scatter(  # the profile's rate itself, exact (a ramp is a slope, a step a jump)
            x=[t for s in segments for t in (s["start_s"], s["end_s"])],
            y=[r for s in segments for r in (s["start_rps"], s["end_rps"])],
            yaxis="y2",
            mode="lines",
            name="target rps",
            line={"color": "#888", "width": 2, "dash": "dash"},
            hovertemplate="%{x:g} s: %{y:.1f} rps<extra>target</extra>",
        )
    )
    for i, s in enumerate(segments):
        fig.add_vrect(
            x0=s["start_s"],
            x1=s["end_s"],
            fillcolor="#999" if i % 2 else "#ddd",
            opacity=0.15,
            line_width=0,
            annotation={"text": escape(s["label"]), "font": {"size": 10}},
            annotation_position="top left",
        )
    fig.update_layout(
        title=f"Latency and rate over the window: {first['profile']['arg']} (valid trials pooled)",
        yaxis={"title": "service latency (ms)", "rangemode": "tozero"},
        yaxis2={
            "title": "requests per second",
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
            "tickmode": "auto",
        },
        legend={"orientation": "h", "y": -0.2},
    )
    fig.update_xaxes(title=f"seconds into the measured window (intervals of {first['interval_s']:g} s)")
    return _div(fig, f"over-time-{rate:g}")


def _over_time_section(summary: dict[str, Any], meshes: list[str]) -> list[str]:
    """The figure, each mesh's segments and a spike's recovery, for non-constant profiles only."""
    cells = profile_cells(summary)
    if not cells:
        return []
    parts = ["<h2>Load over time</h2>"]
    parts += [_over_time(summary, meshes, rate) for rate in sorted({c["rate"] for c in cells})]
    rows = []
    for c in cells:
        ot = c["over_time"]
        for s in ot["segments"]:
            service, intended = s["latency_us"]["service"] or {}, s["latency_us"]["intended"] or {}
            rows.append(
                [
                    escape(c["mesh"]),
                    escape(s["label"]),
                    f"{s['start_s']:g}&ndash;{s['end_s']:g}",
                    escape(segment_rate(s)),
                    f"{s['achieved_rps']:.1f}",
                    _ms(service.get("p50")),
                    _ms(service.get("p99")),
                    _ms(intended.get("p99")),
                    str(s["errors"]),
                    f"{s['invalid_trials']}/{ot['trials']}",
                ]
            )
    header = ["mesh", "segment", "seconds", "target rps", "achieved rps", "p50 ms", "p99 ms"]
    header += ["p99 from intended ms", "errors", "invalid in trials"]
    parts.append(_table(header, rows, range(2, 10)))
    recoveries = [(c["mesh"], c["over_time"]["recovery"]) for c in cells if c["over_time"].get("recovery")]
    if recoveries:
        parts.append(
            "<p>Spike recovery: the time from the burst's end to the start of the first interval from "
            f"which the p99 of {RECOVERY_INTERVALS} consecutive intervals (merged over the trials; fewer "
            f"when the window ends first) is within {RECOVERY_MARGIN:.0%} of the pre-spike p99:</p><ul>"
        )
        parts += [f"<li>{escape(mesh)}: {escape(recovery_text(r))}</li>" for mesh, r in recoveries]
        parts.append("</ul>")
    return parts


def _resources(summary: dict[str, Any]) -> str | None:
    cells = [c for c in summary["cells"] if c["resources"]]
    if not cells:
        return None
    components = sorted({k for c in cells for k, v in c["resources"].items() if v["processes"] or v["vcpu"]})
    fig = go.Figure()
    labels = [f"{c['mesh']} {load_of(c)}" for c in cells]
    for i, component in enumerate(components):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[c["resources"].get(component, {}).get("vcpu_per_krps", 0) for c in cells],
                name=component,
                marker_color=_COLORS[i % len(_COLORS)],
                customdata=[c["resources"].get(component, {}).get("mb", 0) for c in cells],
                hovertemplate="%{y:.3f} vCPU per 1k rps, %{customdata:.0f} "
                + memory_label(summary).removesuffix(" MB")
                + " MB<extra>"
                + component
                + "</extra>",
            )
        )
    fig.update_layout(barmode="stack", title="CPU per component, per 1,000 requests per second")
    fig.update_yaxes(title="vCPU per 1k rps")
    return _div(fig, "resources")


def _resources_table(summary: dict[str, Any]) -> str:
    rows = []
    for c in summary["cells"]:
        cost = c.get("resource_overhead")
        for name, r in c["resources"].items():
            if not r["processes"] and not r["vcpu"]:  # the kernel's rest on kind has CPU but no process
                continue
            rows.append(
                [
                    escape(c["mesh"]),
                    load_of(c).removesuffix(" rps"),
                    escape(name) + ("<sup>*</sup>" if name in (KERNEL, NODE_OVERHEAD) else ""),
                    str(r["processes"]),
                    f"{r['vcpu']:.3f}",
                    f"{r['vcpu_per_krps']:.3f}",
                    f"{r['mb']:.1f}",
                ]
            )
        if cost:
            rows.append(
                [
                    escape(c["mesh"]),
                    load_of(c).removesuffix(" rps"),
                    f"<b>the mesh's cost over {escape(summary['baseline'])}</b>",
                    "",
                    "",
                    f"<b>{cost['vcpu_per_krps']:+.3f}</b>",
                    f"<b>{cost['mb']:+.1f}</b>"
                    + (
                        f"<br><small>{NODE_OVERHEAD} {cost['node_overhead_mb']:+.1f}, not counted</small>"
                        if "node_overhead_mb" in cost
                        else ""
                    ),
                ]
            )
    header = [
        "mesh",
        "rate (rps)",
        "component",
        "processes",
        "vCPU",
        "vCPU per 1k rps",
        memory_label(summary),
    ]
    notes = "".join(
        f'<p class="note">{"<sup>*</sup> " if n.startswith((KERNEL, NODE_OVERHEAD)) else ""}{escape(n)}</p>'
        for n in resource_notes(summary)[1:]
    )
    return _table(header, rows, range(3, 7)) + notes


def _table(header: list[str], rows: list[list[str]], numeric: range = range(1, 99)) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if i in numeric else ""}">{cell}</td>' for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_table(summary: dict[str, Any]) -> str:
    rows = []
    for c in summary["cells"]:
        lat = c["latency_us"]
        row = [
            escape(c["mesh"]),
            escape(load_of(c).removesuffix(" rps")),
            f"{c['valid_trials']}/{c['trials']}",
        ]
        row += [_ms(lat[n]) for n in ("p50", "p90", "p99", "p999", "max")]
        row.append(_ms(c["intended_latency_us"]["p99"]))
        for name in ("p50", "p99"):
            o = c["overhead"].get(name)
            if o:
                ci = o.get("ci_us")
                ci_text = f" [{ci[0] / 1000:+.3f}, {ci[1] / 1000:+.3f}]" if ci else ""
                row.append(f"{o['us'] / 1000:+.3f}{ci_text}<br><small>{_pct(o['pct'])}</small>")
            else:
                row.append("")
        rows.append(row)
    header = ["mesh", "rate (rps)", "valid trials", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"]
    header += ["p99 from intended send ms"]
    header += ["added p50 ms [95% CI]", "added p99 ms [95% CI]"]
    return _table(header, rows)


def _claims_table(summary: dict[str, Any]) -> str:
    rows = []
    for r in summary.get("claims", []):
        mark = ' <span class="q" title="known only second-hand">(?)</span>' if r["second_hand"] else ""
        source = f'<a href="{escape(r["url"])}">{escape(r["source"])}</a>{mark}'
        if r.get("bias"):
            source += f"<br><small>{escape(r['bias'])}</small>"
        measured = "n/a" if r["measured_value"] is None else f"{r['measured_value']:.3f}"
        rows.append(
            [
                source,
                escape(f"{r['claim_mesh']} / here: {r['mesh']}"),
                escape(r["metric"]),
                f"{r['published_value']:g}{mark}",
                f"{measured}<br><small>{escape(r['measured_how'])}</small>",
                "<ul>" + "".join(f"<li>{escape(d)}</li>" for d in r["differences"]) + "</ul>",
            ]
        )
    if not rows:
        return "<p>No published claim concerns the meshes of this run.</p>"
    return _table(
        ["source", "mesh", "metric", "published", "measured here", "how the setups differ"], rows, range(3, 5)
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.3rem .5rem;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e5;border-left:4px solid #f58518;padding:.5rem 1rem}.ok{background:#eef7ee;
border-left:4px solid #54a24b;padding:.5rem 1rem}.q{color:#b00;font-weight:bold}small{color:#555}
td ul{margin:0;padding-left:1rem}
"""

_LOAD_OPEN = """Load is open-loop: requests leave at their intended times (uniform spacing or Poisson
arrivals) whatever the responses do, so a stall shows up in the latency instead of slowing the load down."""
_LOAD_CLOSED = """Load is a <b>closed loop</b>, to reproduce a publisher's method: each user sends its next
request as soon as the previous answer arrives, so the rate is whatever the system allows and a stall slows
the load instead of showing in the latency (coordinated omission); there is no intended send time and no
lateness."""
_METHOD = """
<p>{load} Latency is the load
generator's service time on the wire (first request byte out to last response byte in), recorded in
microseconds in HdrHistograms (1 &micro;s to 60 s, 3 significant digits); the latency from the intended send
time is recorded too. The warm-up is sent but not recorded. {order}</p>
<p>A trial is invalid, and excluded, when the generator fell behind its schedule (send lateness p99 above the
scenario's limit), reached under 97% of the rate, saw more than 1% errors or used more than 90% of a core.
Percentiles are pooled from the merged histograms of the valid trials, never averaged. Overheads are the
difference of pooled percentiles; their 95% confidence intervals come from {resamples} bootstrap resamples
of the trials (the percentile bootstrap, as scipy.stats.bootstrap computes it; the tests check the two
agree), each resampled set of trials pooled again. An
interval that contains zero means the overhead is not distinguishable from noise in this run.</p>
<p>Resources are measured per process (local platform) or per container (Kubernetes). {resources}</p>
"""


def _capacity(cap: dict[str, Any]) -> list[str]:
    """The capacity section: the answer per mesh, and p99 against the achieved rate with the SLO and knees."""
    meshes = [m["mesh"] for m in cap["meshes"]]
    base = cap["baseline"] or "baseline"
    rows = []
    for m in cap["meshes"]:
        share, cost = capacity_text.share_text(m)
        failed = f" ({m['failed_probes']} failed)" if m["failed_probes"] else ""
        rows.append(
            [
                escape(m["mesh"]),
                escape(capacity_text.answer_text(m)),
                escape(capacity_text.confirmation_text(m)),
                escape(m["limited_by"] or ""),
                escape(share),
                escape(cost),
                escape(capacity_text.knee_text(m)),
                f"{m['probes']}{failed}",
            ]
        )
    header = ["mesh", "max rate rps", "confirmed", "limited by", f"share of {base}", "cost", "knee", "probes"]
    fig = go.Figure()
    for m in cap["meshes"]:
        color = _color(meshes, m["mesh"])
        points = m["points"]
        fig.add_trace(
            go.Scatter(
                x=[p["achieved_rate"] for p in points],
                y=[p["p99_ms"] for p in points],
                mode="lines+markers",
                name=m["mesh"],
                line={"color": color},
                text=[f"offered {p['rate']:g} rps, {p['passed']}/{p['probes']} passed" for p in points],
                hovertemplate="%{x:.1f} rps achieved, p99 %{y:.3f} ms<br>%{text}",
            )
        )
        if m["knee"]:
            knee = m["knee"]
            fig.add_trace(
                go.Scatter(
                    x=[knee["achieved_rate"]],
                    y=[knee["p99_ms"]],
                    mode="markers",
                    name=f"{m['mesh']} knee",
                    marker={"symbol": "star", "size": 16, "color": color, "line": {"width": 1}},
                    hovertemplate=f"knee of {escape(m['mesh'])}: offered {knee['rate']:g} rps<extra></extra>",
                )
            )
    fig.add_hline(
        y=cap["slo_p99_ms"],
        line={"dash": "dash", "color": "#b00"},
        annotation_text=f"SLO p99 {cap['slo_p99_ms']:g} ms",
    )
    # Past saturation p99 grows by orders of magnitude: a log axis keeps the flat part readable.
    fig.update_xaxes(title="achieved rate (rps)", rangemode="tozero")
    fig.update_yaxes(title="service p99 (ms), median of the probes at each rate", type="log")
    fig.update_layout(title="Latency against throughput, to saturation (star: the knee)")
    notes = "".join(f'<p class="note">{escape(m["mesh"])}: {escape(m["note"])}</p>' for m in cap["meshes"])
    return [
        "<h2>Capacity</h2>",
        f"<p>{escape(capacity_text.objective_text(cap))} The knee: {escape(cap['knee_method'])}.</p>",
        _table(header, rows, range(1, 8)),
        notes,
        _div(fig, "capacity"),
    ]


def _listing(title: str, items: list[tuple[str, str]], *, separator: str = ": ") -> list[str]:
    """A titled list of paths and what is wrong with each; nothing when there is nothing to list."""
    if not items:
        return []
    rows = [f"<li><code>{escape(path)}</code>{separator}{escape(why)}</li>" for path, why in items]
    return [f"<h2>{escape(title)}</h2><ul>", *rows, "</ul>"]


def _cell_sections(summary: dict[str, Any], meshes: list[str], rates: list[float]) -> list[str]:
    """The figures of the (mesh, rate) cells: summary, percentiles, overhead, rate, over time, resources."""
    parts = ["<h2>Summary</h2>", _summary_table(summary), "<h2>Latency by percentile</h2>"]
    parts += [_spectrum(summary, meshes, rate) for rate in rates]
    overhead = _overhead(summary, meshes)
    if overhead:
        parts += ["<h2>Overhead</h2>", overhead]
    parts += ["<h2>Latency against rate</h2>", _by_rate(summary, meshes)]
    parts += _over_time_section(summary, meshes)
    resources = _resources(summary)
    if resources:
        parts += ["<h2>Resources</h2>", resources, _resources_table(summary)]
    return parts


def render(summary: dict[str, Any]) -> str:
    run = summary["run"]
    meshes = list(dict.fromkeys(c["mesh"] for c in summary["cells"]))
    rates = sorted({c["rate"] for c in summary["cells"]})
    warnings = summary["warnings"]
    parts = [
        f"<h1>Mesh overhead: run {escape(run.get('run_id', '?'))}</h1>",
        f"<p>{escape(_context(summary)).replace('**', '')}</p>",
    ]
    if warnings:
        parts.append('<div class="warn"><h2>Warnings</h2><ul>')
        parts += [f"<li>{escape(w)}</li>" for w in warnings]
        parts.append("</ul></div>")
    else:
        parts.append('<div class="ok">No warnings: every cell has enough valid, stable trials.</div>')
    if summary.get("capacity"):  # a capacity run: its answer first (its probes are not latency cells)
        parts += _capacity(summary["capacity"])
    if summary["cells"]:  # a capacity run has only probes: no latency or resource cells to show
        parts += _cell_sections(summary, meshes, rates)
    if summary.get("reproduction"):  # `testbed reproduce` runs only
        from testbed.reporting.reproduce import html_section

        parts += html_section(summary["reproduction"])
    parts += ["<h2>Published claims vs measured here</h2>", _claims_table(summary)]
    for title, items, sep in left_out(summary):
        parts += _listing(title, items, separator=sep)
    method = _METHOD.format(
        load=_LOAD_CLOSED if run.get("scenario", {}).get("loop") == "closed" else _LOAD_OPEN,
        resamples=summary["resamples"],
        order=escape(trial_order(summary)),
        resources=" ".join(escape(n) for n in resource_notes(summary)),
    )
    parts += ["<h2>Method</h2>", method]
    title = escape(f"testbed report {run.get('run_id', '')}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="generator" content="testbed {escape(summary["testbed_version"])}">'
        f"<style>{_CSS}</style><script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
