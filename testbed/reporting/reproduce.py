"""A reproduction of one published source: each claim beside the figure this run measured, and a verdict.

`testbed reproduce` (testbed/reproduce.py) runs the source's setup; this module reads the run back and
writes `reproduction.json` (schema `testbed.reproduction/1`) and `reproduction.md`. Per claim: the
published value, the measured value with its 95% interval (latency: the bootstrap interval of the overhead
over the no-mesh baseline, analysis.py; CPU and memory: a bootstrap of the per-trial figures), the ratio
measured/published, a verdict, and the differences between the setups that remain.

Verdict: `consistent` when the published value lies within the measured interval widened on each side by a
tolerance; else `higher` (measured here above the published value: the mesh costs more here than claimed)
or `lower`. No source states a tolerance of its own, so every claim gets the default: 25% of the published
value, but at least the unit's floor (0.1 ms, 0.02 vCPU per 1000 rps, 5 MB, 5 percentage points), because
a few tenths of a millisecond or a few MB separate two hosts as much as two meshes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from testbed.errors import ConfigError
from testbed.reporting import stats
from testbed.reporting.analysis import load_of
from testbed.reporting.claims import Claim
from testbed.spec.setups import UNKNOWN, Setup

REPRODUCTION_SCHEMA = "testbed.reproduction/1"
Verdict = Literal["consistent", "higher", "lower"]
NOT_MEASURED = "not measured"

#: The default tolerance: this share of the published value, or the unit's floor when that is larger.
RELATIVE_TOLERANCE = 0.25
ABSOLUTE_TOLERANCE: dict[str, float] = {
    "ms": 0.1,
    "%": 5.0,
    "vCPU per 1000 rps": 0.02,
    "MB": 5.0,
    "MB per 1000 rps": 5.0,
}
_LATENCY = {"added_p50_ms": "p50", "added_p90_ms": "p90", "added_p99_ms": "p99"}
_RESOURCE = ("proxy_vcpu_per_krps", "proxy_mb", "proxy_mb_per_krps")
#: Where a claim mesh's proxies are counted: per pod for sidecars, per node for ztunnel and Cilium.
_PROXY_COMPONENT = {"istio-ambient": "node-proxy", "cilium": "node-proxy"}


def tolerance(claim: Claim) -> float:
    """How far outside the measured interval a published value may lie and still be `consistent`."""
    return max(RELATIVE_TOLERANCE * abs(claim.value), ABSOLUTE_TOLERANCE.get(claim.unit, 0.0))


def verdict(published: float, low: float, high: float, tol: float) -> Verdict:
    """`consistent` if published is within [low - tol, high + tol]; else how the measurement compares."""
    if published < low - tol:
        return "higher"
    if published > high + tol:
        return "lower"
    return "consistent"


def check_setups(setups: Mapping[str, Setup], claims: Sequence[Claim], *, where: str = "setups") -> None:
    """One setup per source of the claims file, with the same page, listing every mesh its claims name."""
    sources = {c.source_id: c for c in claims}
    for source_id in sources:
        if source_id not in setups:
            raise ConfigError(f"{where}: setup.{source_id}: missing (claims.toml has this source_id)")
    for source_id, setup in setups.items():
        first = sources.get(source_id)
        if first is None:
            raise ConfigError(f"{where}: setup.{source_id}: no claim in claims.toml has this source_id")
        if setup.url != first.url:
            raise ConfigError(
                f"{where}: setup.{source_id}: url: differs from claim {first.id!r}'s {first.url}"
            )
        for claim in claims:
            if claim.source_id == source_id and claim.mesh not in setup.meshes:
                raise ConfigError(
                    f"{where}: setup.{source_id}: meshes: lacks {claim.mesh!r} (claim {claim.id!r})"
                )


@dataclass(frozen=True, kw_only=True)
class Measured:
    """One claim's figure in this run, in the claim's unit, with its 95% interval (None: one trial)."""

    value: float
    interval: tuple[float, float] | None
    how: str
    rate: float


def _cell(summary: dict[str, Any], mesh: str, rate: float | None) -> dict[str, Any] | None:
    cells = [c for c in summary["cells"] if c["mesh"] == mesh and c["valid_trials"]]
    if not cells:
        return None
    if rate is None:
        found: dict[str, Any] = max(cells, key=lambda c: c["rate"])
    else:
        found = min(cells, key=lambda c: (abs(c["rate"] - rate), -c["rate"]))
    return found


def _latency(claim: Claim, cell: dict[str, Any]) -> Measured | str:
    if claim.metric in _LATENCY:
        name, unit, key, scale = _LATENCY[claim.metric], "ms", "ci_us", 1000.0
        o = cell["overhead"].get(name)
        if o is None:
            return "no baseline trials at this rate"
        value = o["us"] / scale
    else:  # added_latency_pct; the percentile is unconfirmed for every such claim: read at p50
        name, unit, key, scale = "p50", "%", "ci_pct", 1.0
        o = cell["overhead"].get(name)
        if o is None or o.get("pct") is None:
            return "no baseline trials at this rate"
        value = float(o["pct"])
    ci = o.get(key)
    interval = None if ci is None else (ci[0] / scale, ci[1] / scale)
    how = f"added {name} over no mesh, {unit}, pooled trials; 95% bootstrap interval over trials"
    return Measured(value=value, interval=interval, how=how, rate=cell["rate"])


def _per_trial(
    trials: pd.DataFrame, cell: dict[str, Any], component: str, metric: str, passes: int
) -> list[float]:
    """The claim's resource figure in each valid trial of the cell (per proxy, as published)."""
    rows = trials[(trials["mesh"] == cell["mesh"]) & (trials["rate"] == cell["rate"]) & trials["valid"]]
    vcpu, mb, processes = (f"res:{component}:{k}" for k in ("vcpu", "mb", "processes"))
    if vcpu not in rows or not len(rows):
        return []
    out = []
    # Records, not itertuples: the "res:<component>:<figure>" column names are not identifiers.
    for values in rows.to_dict("records"):
        if pd.isna(values.get(vcpu)) or not values.get(processes):
            continue
        if metric == "proxy_vcpu_per_krps":
            out.append(float(values[vcpu]) / (float(values["achieved_rate"]) / 1000.0) / passes)
        else:
            out.append(float(values[mb]) / int(values[processes]))
    return out


def _bootstrap_mean(values: Sequence[float], seed: int) -> tuple[float, float] | None:
    """The percentile-bootstrap 95% interval of the mean over trials (None under 2 trials)."""
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=np.float64)
    means = data[rng.integers(0, len(data), size=(stats.RESAMPLES, len(data)))].mean(axis=1)
    found = stats.interval(means)
    return None if found is None else (found.low, found.high)


def _resource(claim: Claim, cell: dict[str, Any], trials: pd.DataFrame, passes: int) -> Measured | str:
    component = _PROXY_COMPONENT.get(claim.mesh, "sidecar")
    values = _per_trial(trials, cell, component, claim.metric, passes)
    if not values:
        return f"no {component} CPU or memory recorded"
    if claim.metric == "proxy_vcpu_per_krps":
        how = f"{component} vCPU per 1,000 entry requests / {passes} proxy passes per request, mean of trials"
    elif claim.metric == "proxy_mb":
        how = f"peak memory per {component} process, mean of trials"
    else:
        how = f"peak memory per {component} process at {load_of(cell)} (memory barely scales with rate)"
    interval = _bootstrap_mean(values, stats.seed_for(claim.id, cell["mesh"], cell["rate"]))
    return Measured(value=float(np.mean(values)), interval=interval, how=how, rate=cell["rate"])


def measure(
    claim: Claim, summary: dict[str, Any], trials: pd.DataFrame, mesh: str, *, closed_loop: bool
) -> Measured | str:
    """This run's figure for a claim about `mesh` (a testbed mesh), or why there is none."""
    cell = _cell(summary, mesh, None if closed_loop else claim.rate_rps)
    if cell is None:
        return f"no valid trial of {mesh}"
    if claim.metric in (*_LATENCY, "added_latency_pct"):
        return _latency(claim, cell)
    if claim.metric in _RESOURCE:
        passes = 2 * int(summary["run"].get("topology", {}).get("calls_per_request") or 1)
        return _resource(claim, cell, trials, passes)
    return f"metric {claim.metric} is not measured by this testbed"


def _here(run: dict[str, Any]) -> str:
    host = run.get("host", {})
    cores = f"{host.get('cpu_count', '?')}-vCPU host"
    platform = str(run.get("platform", "?"))
    return {
        "local": f"local processes on one {cores} ({host.get('cpu_model', '?')})",
        "kind": f"kind on one {cores}",
        "existing": "an existing cluster",
    }.get(platform, platform)


def _load_differences(claim: Claim, setup: Setup, measured: Measured) -> list[str]:
    """How the load differs: rate, connections, loop, payload."""
    out: list[str] = []
    open_loop = setup.loop != "closed"
    if claim.rate_rps is not None and open_loop and abs(claim.rate_rps - measured.rate) > 0.5:
        out.append(f"published at {claim.rate_rps:g} rps; here {measured.rate:g} rps")
    if open_loop and "-" in setup.connections:
        out.append(
            f"published: one figure over a sweep of {setup.connections} connections; "
            f"here {setup.connections_to_run}"
        )
    elif open_loop and setup.connections == UNKNOWN:
        out.append(f"connections unstated; here {setup.connections_to_run}")
    if setup.loop == UNKNOWN:
        out.append("the source does not say whether its load was open or closed loop; here open loop")
    if setup.payload == UNKNOWN:
        out.append("payload unstated; here the topology's sizes")
    return out


def differences(claim: Claim, setup: Setup, run: dict[str, Any], mesh: str, measured: Measured) -> list[str]:
    """What still differs between the published setup and this run (the reproduction matched the rest)."""
    out: list[str] = []
    if mesh == "envoy":
        out.append(
            "Envoy sidecars with mTLS (Istio's sidecar data plane): no istiod, no telemetry filter, "
            "not Istio's generated configuration"
        )
    published_on = claim.platform if claim.platform != UNKNOWN else "an unstated platform"
    out.append(f"published on {published_on}; here {_here(run)}")
    if "gRPC" in setup.protocol:
        out.append("HTTP/1.1 on every hop where the source used gRPC between its services")
    out += _load_differences(claim, setup, measured)
    if setup.proxy_workers == UNKNOWN and mesh in ("envoy", "istio"):
        out.append("proxy worker threads unstated; here 2")
    if setup.topology == "bookinfo":
        out.append(
            "Bookinfo's own services (Python, Java, Ruby, Node) replaced by the testbed's demo service"
        )
    if claim.metric in ("proxy_mb", "proxy_mb_per_krps") and "largest single" in setup.computed:
        out.append("published: the peak of the largest proxy; here the mean peak per proxy")
    if claim.metric in _RESOURCE and "1000 services" in setup.computed:
        out.append("published inside a load-test mesh of 1000 services; here one service")
    if "mean of" in setup.computed and claim.metric in _LATENCY:
        out.append("published: a mean of the runs' medians; here the median of the pooled trials")
    if claim.second_hand:
        out.append("the published figure is known only second-hand")
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def reproduction(
    *,
    summary: dict[str, Any],
    trials: pd.DataFrame,
    setup: Setup,
    claims: Sequence[Claim],
    meshes: Mapping[str, str],
    unmeasured: Mapping[str, str],
    shortened: str | None,
) -> dict[str, Any]:
    """The `testbed.reproduction/1` document: one row per claim of the source.

    `meshes` maps a claim mesh to the testbed mesh that stood for it in this run; `unmeasured` gives, per
    claim id, why the platform could not measure it (the claims not run at all).
    """
    run = summary["run"]
    rows: list[dict[str, Any]] = []
    for claim in claims:
        row: dict[str, Any] = {
            "claim_id": claim.id,
            "claim_mesh": f"{claim.mesh} {claim.mesh_version}",
            "mesh": meshes.get(claim.mesh),
            "metric": claim.metric,
            "unit": claim.unit,
            "published": claim.value,
            "second_hand": claim.second_hand,
        }
        found: Measured | str = unmeasured.get(claim.id) or (
            measure(claim, summary, trials, meshes[claim.mesh], closed_loop=setup.loop == "closed")
            if claim.mesh in meshes
            else "this platform cannot run the mesh"
        )
        if isinstance(found, str):
            rows.append(row | {"verdict": NOT_MEASURED, "reason": found})
            continue
        low, high = found.interval if found.interval is not None else (found.value, found.value)
        tol = tolerance(claim)
        rows.append(
            row
            | {
                "measured": _round(found.value),
                "interval": None if found.interval is None else [_round(low), _round(high)],
                "ratio": _round(found.value / claim.value) if claim.value else None,
                "tolerance": _round(tol),
                "verdict": verdict(claim.value, low, high, tol),
                "how": found.how,
                "rate": found.rate,
                "differences": differences(claim, setup, run, str(row["mesh"]), found),
            }
        )
    first = claims[0]
    return {
        "schema": REPRODUCTION_SCHEMA,
        "source_id": setup.source_id,
        "source": first.source,
        "url": setup.url,
        "run_id": run.get("run_id"),
        "platform": run.get("platform"),
        "meshes": dict(meshes),
        "shortened": shortened,
        "tolerance": (
            f"consistent: the published value within the measured 95% interval widened by "
            f"{RELATIVE_TOLERANCE:.0%} of the published value or the unit's floor "
            f"({', '.join(f'{v:g} {u}' for u, v in ABSOLUTE_TOLERANCE.items())}), whichever is larger; "
            "higher/lower: the measured interval lies above/below it"
        ),
        "setup": {k: v for k, v in dataclasses.asdict(setup).items() if v is not None},
        "claims": rows,
    }


def _added_ms(
    summary: dict[str, Any], mesh: str, name: str, rate: float | None = None
) -> tuple[float | None, list[float] | None]:
    """A mesh's added service latency at percentile `name` over the baseline in ms, with its interval."""
    cell = _exact_cell(summary, mesh, rate)
    o = None if cell is None else cell["overhead"].get(name)
    if o is None:
        return None, None
    ci = o.get("ci_us")
    return round(o["us"] / 1000, 4), None if ci is None else [round(ci[0] / 1000, 4), round(ci[1] / 1000, 4)]


def _exact_cell(summary: dict[str, Any], mesh: str, rate: float | None) -> dict[str, Any] | None:
    """The mesh's cell at exactly `rate` (None: its only one) when it has valid trials."""
    cells: list[dict[str, Any]] = summary["cells"]
    for c in cells:
        if c["mesh"] == mesh and c["valid_trials"] and (rate is None or c["rate"] == rate):
            return c
    return None


def _no_figure(summary: dict[str, Any], mesh: str, rate: float) -> str | None:
    """Why the twin has no figure for `mesh` at `rate`: its (or the baseline's) first invalid trial."""
    for who in (mesh, "none"):
        if _exact_cell(summary, who, rate) is None:
            reasons = [
                t["reasons"][0]
                for t in summary.get("invalid_trials", [])
                if t["mesh"] == who and t["rate"] == rate and t["reasons"]
            ]
            return f"no valid trial of {who}" + (f": {reasons[0]}" if reasons else "")
    return None


def _added_intended_ms(summary: dict[str, Any], mesh: str, name: str, rate: float) -> float | None:
    """The same from the intended send time (open loop only; p50, p99 and p99.9 are kept)."""
    cell, base = _exact_cell(summary, mesh, rate), _exact_cell(summary, "none", rate)
    if cell is None or base is None:
        return None
    a, b = cell["intended_latency_us"].get(name), base["intended_latency_us"].get(name)
    return None if a is None or b is None else round((a - b) / 1000, 4)


def open_loop_section(
    *,
    closed: dict[str, Any],
    open_: dict[str, Any],
    claims: Sequence[Claim],
    meshes: Mapping[str, str],
    twin_dir: Path,
) -> dict[str, Any]:
    """The closed-loop figures beside the open-loop twin's at one common rate, per latency claim.

    Under a closed loop each mesh runs at its own saturation and every user waits for its previous answer,
    so the added latency mixes what the mesh costs per request with what it costs in throughput (Little's
    law: latency = users / rate) and hides queueing. The twin sends every mesh at the same rate on
    schedule: its added service latency is the per-request cost, and from the intended send time it also
    holds the queueing the closed loop hid. `from_method` is the share of the closed-loop figure that the
    open loop does not reproduce.
    """
    rates = sorted({float(c["rate"]) for c in open_["cells"]})
    rows = []
    for claim in claims:
        if claim.mesh not in meshes or claim.metric not in (*_LATENCY, "added_latency_pct"):
            continue
        mesh, name = meshes[claim.mesh], _LATENCY.get(claim.metric, "p50")
        closed_ms, closed_ci = _added_ms(closed, mesh, name)
        for rate in rates:
            open_ms, open_ci = _added_ms(open_, mesh, name, rate)
            share = round((closed_ms - open_ms) / closed_ms, 3) if closed_ms and open_ms is not None else None
            rows.append(
                {
                    "claim_id": claim.id,
                    "mesh": mesh,
                    "percentile": name,
                    "closed_added_ms": closed_ms,
                    "closed_interval": closed_ci,
                    "rate": rate,
                    "open_added_ms": open_ms,
                    "open_interval": open_ci,
                    "open_added_intended_ms": _added_intended_ms(open_, mesh, name, rate),
                    "from_method": share,
                    "why_none": None if open_ms is not None else _no_figure(open_, mesh, rate),
                }
            )
    run = open_["run"]
    return {
        "run_id": run.get("run_id"),
        "run_dir": str(twin_dir),
        "rates_rps": rates,
        "connections": run.get("scenario", {}).get("connections"),
        "rows": rows,
        "note": (
            "closed loop: each mesh at its own saturation rate, users waiting for answers (Little's law: "
            "latency = users / rate, queueing hidden); open loop: every mesh at the same rates, the lowest "
            "a mesh achieved under the closed loop and a lower one, sent on schedule; a mesh without a "
            "figure at the achieved rate could not carry it on schedule (its queue grew); "
            "from_method = (closed - open) / closed"
        ),
    }


def rates_text(rates: Sequence[float]) -> str:
    """The twin's rates in words: `652 and 815`."""
    return " and ".join(f"{r:g}" for r in rates)


def open_loop_table(section: dict[str, Any]) -> str:
    """The twin's comparison as a Markdown table."""
    lines = [
        "| claim | mesh here | added, closed loop (ms) | open loop at | added, open loop (ms) [95% CI] | "
        "open loop from intended send (ms) | share from the method |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in section.get("rows", []):
        lines.append("| " + " | ".join(_twin_cells(r)) + " |")
    return "\n".join(lines) + "\n"


def _twin_cells(r: dict[str, Any]) -> list[str]:
    """One row of the twin's table, as text cells."""
    ci = r["open_interval"]
    open_ = _value(r["open_added_ms"]) + (f" [{_value(ci[0])}, {_value(ci[1])}]" if ci else "")
    if r.get("why_none"):
        open_ = f"n/a: {r['why_none']}"
    return [
        f"{r['claim_id']} ({r['percentile']})",
        r["mesh"],
        _value(r["closed_added_ms"]),
        f"{r['rate']:g} rps",
        open_,
        _value(r["open_added_intended_ms"]),
        "n/a" if r["from_method"] is None else f"{r['from_method']:.0%}",
    ]


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def table(document: dict[str, Any]) -> str:
    """The reproduction as a Markdown table, one row per claim."""
    lines = [
        "| claim | mesh here | metric | published | measured [95% CI] | measured/published | verdict |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in document["claims"]:
        mark = " (?)" if r["second_hand"] else ""
        if r["verdict"] == NOT_MEASURED:
            measured, ratio = f"not measured: {r['reason']}", ""
        else:
            ci = r["interval"]
            measured = _value(r["measured"]) + (
                f" [{_value(ci[0])}, {_value(ci[1])}]" if ci else " (one trial)"
            )
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
        lines.append(
            f"| {r['claim_id']} ({r['claim_mesh']}) | {r['mesh'] or '-'} | {r['metric']} ({r['unit']}) | "
            f"{r['published']:g}{mark} | {measured} | {ratio} | {r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def markdown(document: dict[str, Any]) -> str:
    """reproduction.md: what was reproduced, how, the table, and the differences that remain per claim."""
    setup = document["setup"]
    rates = setup["rates_rps"]
    rates = rates if isinstance(rates, str) else "/".join(f"{r:g}" for r in rates) + " rps"
    parts = [
        f"# Reproduction of {document['source_id']}: {document['source']}\n",
        f"Source: {document['url']}. Run `{document['run_id']}` on `{document['platform']}`; meshes here: "
        + ", ".join(f"{here} for {claim}" for claim, here in document["meshes"].items())
        + " (baseline: none).\n",
        f"Published setup: {setup['call_graph']}; payload {setup['payload']}; rates {rates}; "
        f"connections {setup['connections']}; loop {setup['loop']} (users {setup['users']}); "
        f"connection reuse {setup['connection_reuse']}; duration {setup['duration_s']} s, warm-up "
        f"{setup['warmup_s']} s, runs {setup['runs']}; proxy workers {setup['proxy_workers']}; protocol "
        f"{setup['protocol']}; {setup['computed']}.\n",
    ]
    if setup.get("choices"):
        parts.append(f"Chosen here where the source is silent: {setup['choices']}\n")
    if document.get("shortened"):
        parts.append(f"**{document['shortened']}**: intervals are wide; run longer for decisions.\n")
    parts += [f"Verdict: {document['tolerance']}.\n", table(document)]
    twin = document.get("open_loop")
    if twin:
        parts.append("## The method: the closed loop beside its open-loop twin\n")
        if twin.get("run_id"):
            parts.append(
                f"Twin run `{twin['run_id']}` ({twin['run_dir']}): every mesh at "
                f"{rates_text(twin['rates_rps'])} rps over {twin['connections']} "
                f"connections. {twin['note']}.\n"
            )
            parts.append(open_loop_table(twin))
        else:
            parts.append(twin["note"] + ".\n")
    measured = [r for r in document["claims"] if r["verdict"] != NOT_MEASURED]
    if measured:
        parts.append("## Differences that remain\n")
        for r in measured:
            parts.append(f"- **{r['claim_id']}** ({r['how']}): " + "; ".join(r["differences"]))
        parts.append("")
    return "\n".join(parts) + "\n"


def write(run_dir: Path, document: dict[str, Any]) -> dict[str, Path]:
    """Write RUN_DIR/reproduction.json and reproduction.md; return their paths."""
    paths = {"json": run_dir / "reproduction.json", "markdown": run_dir / "reproduction.md"}
    paths["json"].write_text(json.dumps(document, indent=1) + "\n")
    paths["markdown"].write_text(markdown(document))
    return paths


def html_section(document: dict[str, Any]) -> list[str]:
    """The reproduction in the HTML report: a heading, the setup line, and one table row per claim."""
    rows = []
    for r in document["claims"]:
        if r["verdict"] == NOT_MEASURED:
            measured, ratio, notes = f"not measured: {escape(r['reason'])}", "", ""
        else:
            ci = r["interval"]
            measured = _value(r["measured"]) + (
                f" [{_value(ci[0])}, {_value(ci[1])}]" if ci else " (one trial)"
            )
            measured += f"<br><small>{escape(r['how'])}</small>"
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
            notes = "<ul>" + "".join(f"<li>{escape(d)}</li>" for d in r["differences"]) + "</ul>"
        cells = [
            escape(f"{r['claim_id']} ({r['claim_mesh']})"),
            escape(r["mesh"] or "-"),
            escape(f"{r['metric']} ({r['unit']})"),
            f"{r['published']:g}" + (" (?)" if r["second_hand"] else ""),
            measured,
            ratio,
            f"<b>{escape(r['verdict'])}</b>",
            notes,
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = ["claim", "mesh here", "metric", "published", "measured [95% CI]", "measured/published"]
    header += ["verdict", "differences that remain"]
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    intro = f'Source: <a href="{escape(document["url"])}">{escape(document["source"])}</a>. '
    intro += escape(document["tolerance"]) + "."
    if document.get("shortened"):
        intro += f" <b>{escape(document['shortened'])}</b>."
    return [
        f"<h2>Reproduction of {escape(document['source_id'])}</h2>",
        f"<p>{intro}</p>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
        *_open_loop_html(document.get("open_loop")),
    ]


def _open_loop_html(twin: dict[str, Any] | None) -> list[str]:
    """The closed loop beside its open-loop twin, in the HTML report."""
    if not twin:
        return []
    if not twin.get("run_id"):
        return [f"<h3>The method: closed loop and open loop</h3><p>{escape(twin['note'])}.</p>"]
    header = ["claim", "mesh here", "added, closed loop (ms)", "open loop at"]
    header += ["added, open loop (ms) [95% CI]", "open loop from intended send (ms)", "share from the method"]
    rows = ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in _twin_cells(r)) + "</tr>" for r in twin["rows"]]
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    rates = rates_text(twin["rates_rps"])
    intro = (
        f"Twin run <code>{escape(str(twin['run_id']))}</code>: every mesh at {rates} rps over "
        f"{twin['connections']} connections. {escape(twin['note'])}."
    )
    return [
        "<h3>The method: closed loop beside its open-loop twin</h3>",
        f"<p>{intro}</p>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
    ]
