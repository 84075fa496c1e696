"""Published claims beside what this run measured: matched by mesh and metric, differences said plainly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from testbed.reporting.analysis import load_of
from testbed.reporting.claims import MESH_EQUIVALENTS, Claim

_LATENCY = {"added_p50_ms": "p50", "added_p90_ms": "p90", "added_p99_ms": "p99"}
_PLATFORM_WORDS = {
    "local": "local processes on one host (no Kubernetes, no kernel networking between pods)",
    "kind": "kind (Kubernetes in Docker) on one host",
    "existing": "an existing Kubernetes cluster",
}
_MESH_NOTES = {
    "envoy": "measured here: Envoy sidecars with mTLS (Istio's sidecar data plane), without istiod, "
    "telemetry or Istio's filter chain",
}


def _nearest(cells: Sequence[dict[str, Any]], rate: float | None) -> dict[str, Any] | None:
    if not cells:
        return None
    if rate is None:
        return max(cells, key=lambda c: c["rate"])
    return min(cells, key=lambda c: (abs(c["rate"] - rate), -c["rate"]))


def _latency(claim: Claim, cell: dict[str, Any]) -> tuple[float | None, str]:
    if claim.metric in _LATENCY:
        o = cell["overhead"].get(_LATENCY[claim.metric])
        if o is None:
            return None, "no baseline in this run"
        ci = o.get("ci_us")
        ci_text = f" (95% CI {ci[0] / 1000:+.3f} to {ci[1] / 1000:+.3f})" if ci else ""
        return o["us"] / 1000, f"added {_LATENCY[claim.metric]} over no mesh{ci_text}"
    stated = claim.percentile if isinstance(claim.percentile, int | float) else None
    name = {50.0: "p50", 90.0: "p90", 99.0: "p99"}.get(float(stated or 0.0), "p50")
    o = cell["overhead"].get(name)
    if o is None or o.get("pct") is None:
        return None, "no baseline in this run"
    note = "" if stated else " (the claim names no percentile: compared at p50)"
    return float(o["pct"]), f"added {name} in % of no mesh{note}"


def _resource(claim: Claim, cell: dict[str, Any], passes: int) -> tuple[float | None, str]:
    sidecar = cell["resources"].get("sidecar")
    if not sidecar or not sidecar.get("processes"):
        return None, "no sidecar resources recorded"
    per_proxy_mb = sidecar["mb"] / sidecar["processes"]
    if claim.metric == "proxy_vcpu_per_krps":
        how = f"all sidecars' vCPU per 1,000 entry requests / {passes} proxy passes per request"
        return sidecar["vcpu_per_krps"] / passes, how
    if claim.metric == "proxy_mb":
        return per_proxy_mb, f"memory per sidecar, as in the resources ({sidecar['processes']} sidecars)"
    return per_proxy_mb, f"memory per sidecar at {load_of(cell)} (memory barely scales with rate)"


def _measured(claim: Claim, cell: dict[str, Any], passes: int) -> tuple[float | None, str]:
    """The figure of this run that answers the claim's metric, in the claim's unit, and how it was got."""
    if claim.metric in (*_LATENCY, "added_latency_pct"):
        return _latency(claim, cell)
    if claim.metric in ("proxy_vcpu_per_krps", "proxy_mb", "proxy_mb_per_krps"):
        return _resource(claim, cell, passes)
    return None, f"metric {claim.metric} is not measured by this testbed"


def _differences(
    claim: Claim, cell: dict[str, Any], run: dict[str, Any], value: float | None
) -> tuple[list[str], float | None]:
    """How the published setup differs from this run, and the per-call figure where hops differ."""
    topology = run.get("topology", {})
    hops = int(topology.get("critical_hops") or 1)
    calls = int(topology.get("calls_per_request") or 1)
    platform = str(run.get("platform", "?"))
    mesh = cell["mesh"]
    out = [_MESH_NOTES[mesh]] if mesh in _MESH_NOTES else []
    if claim.rate_rps is None:
        out.append(f"published at saturation or an unstated rate; here {load_of(cell)}")
    elif abs(claim.rate_rps - cell["rate"]) / claim.rate_rps > 0.1:
        nearest = " (nearest)" if cell["rate"] else ""
        out.append(f"published at {claim.rate_rps:g} rps; here {load_of(cell)}{nearest}")
    published_on = "an unstated platform" if claim.platform in ("", "unknown") else claim.platform
    out.append(f"published on {published_on}; here on {_PLATFORM_WORDS.get(platform, platform)}")
    per_hop = None
    if claim.metric in _LATENCY and value is not None and hops != (claim.proxies_per_request or 2) // 2:
        per_hop = value / hops
        out.append(
            f"published: {claim.topology}; here {hops} meshed calls in sequence on the critical "
            f"path ({calls} in all): {per_hop:+.3f} ms per call"
        )
    here_loop = run.get("scenario", {}).get("loop", "open")
    if claim.open_loop is False and here_loop != "closed":
        out.append("published with a closed-loop load (hides queueing); here open loop")
    elif claim.open_loop is not False and here_loop == "closed":
        out.append("published with an open-loop (or unstated) load; here a closed loop, as another publisher")
    here = run.get("scenario", {}).get("connections")
    if claim.connections and here is not None and str(here) != str(claim.connections):
        out.append(f"published with {claim.connections} connections; here {here}")
    return out, per_hop


def check(summary: dict[str, Any], claims: Sequence[Claim]) -> list[dict[str, Any]]:
    """One row per claim about a mesh in this run: the claim, the measured figure, the differences."""
    run = summary["run"]
    passes = 2 * int(run.get("topology", {}).get("calls_per_request") or 1)  # client + server proxy per call
    rows: list[dict[str, Any]] = []
    for mesh in dict.fromkeys(c["mesh"] for c in summary["cells"]):
        cells = [c for c in summary["cells"] if c["mesh"] == mesh and c["valid_trials"]]
        for claim in claims:
            cell = _nearest(cells, claim.rate_rps)
            if claim.mesh != MESH_EQUIVALENTS.get(mesh) or cell is None:
                continue
            value, how = _measured(claim, cell, passes)
            differences, per_hop = _differences(claim, cell, run, value)
            rows.append(
                {
                    "claim_id": claim.id,
                    "source": claim.source,
                    "url": claim.url,
                    "published": claim.published,
                    "second_hand": claim.second_hand,
                    "bias": claim.publisher_bias,
                    "mesh": mesh,
                    "claim_mesh": f"{claim.mesh} {claim.mesh_version}",
                    "metric": claim.metric,
                    "published_value": claim.value,
                    "measured_value": None if value is None else round(value, 4),
                    "measured_per_hop": None if per_hop is None else round(per_hop, 4),
                    "measured_how": how,
                    "rate": cell["rate"],
                    "differences": differences,
                }
            )
    return rows
