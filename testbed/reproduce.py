"""`testbed reproduce SOURCE_ID`: run a published benchmark's setup as published, and say whether it holds.

The setup comes from `testbed/data/setups.toml` (`spec/setups.py`); the plan here maps the source's meshes
to what the platform runs (`PLATFORM_MESHES`), builds the scenario and topology, runs the baseline `none`
and those meshes with `run.execute`, and writes `reproduction.json`/`.md` (`reporting/reproduce.py`) and
the report, which shows the same section.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import UsageError
from testbed.reporting.claims import Claim, load_claims
from testbed.spec.scenario import Scenario
from testbed.spec.setups import Setup, build_scenario, load_setups, scenario_data
from testbed.spec.topology import Topology, load_topology

PLATFORMS = ("local", "kind", "existing")
#: Which testbed mesh stands for a claim mesh on each platform. On local, Envoy sidecars with mTLS are
#: Istio's sidecar data plane without istiod (README, `testbed run`); the rest needs Kubernetes.
PLATFORM_MESHES: dict[str, dict[str, str]] = {
    "local": {"istio": "envoy"},
    "kind": {"istio": "istio", "istio-ambient": "istio-ambient", "linkerd": "linkerd", "cilium": "cilium"},
    "existing": {"istio": "istio", "istio-ambient": "istio-ambient", "linkerd": "linkerd"},
}
#: Why a platform cannot run a claim mesh (shown by --list and in reproduction.md).
WHY_NOT: dict[str, dict[str, str]] = {
    "local": {
        "istio-ambient": "ztunnel needs Kubernetes (--platform kind)",
        "istio-waypoint": "a waypoint needs Kubernetes (--platform kind --waypoint)",
        "linkerd": "Linkerd needs Kubernetes (--platform kind)",
        "cilium": "Cilium needs Kubernetes (--platform kind)",
    },
    "kind": {"istio-waypoint": "needs --waypoint (istio-ambient then runs with Istio's waypoint)"},
    "existing": {
        "istio-waypoint": "needs --waypoint (istio-ambient then runs with Istio's waypoint)",
        "cilium": "refused on existing: Cilium would replace the cluster's CNI (use kind)",
    },
}
#: Above this rate a claim is left to Kubernetes: the local platform runs the services, their sidecars and
#: the generator on one host, and one hop with Envoy at 1,000 rps is what a 2-core host kept valid when
#: tried by hand (issue 13); methodology.md gives about 2k rps per engine process with nothing beside it.
LOCAL_MAX_RPS = 1000.0
#: The local platform's shortened runs: enough for a session, say so in reproduction.md.
LOCAL_TRIALS, LOCAL_DURATION_S, LOCAL_WARMUP_S = 3, 3.0, 1.0
#: As scenarios/steady.toml (which the kind sessions run too): this 2-core VM alone wakes a sleeping process
#: 2-3.5 ms late at p99, and beside the services and sidecars (or the kind nodes) sends are a few ms late;
#: service latency is timed on the wire, so lateness loosens the schedule without entering the figures.
MAX_LATENESS_MS = 8.0
#: On Kubernetes, one engine process per this many rps in the loadgen pod (methodology.md: about 2k rps per
#: process with nothing beside it; half that leaves room for the pod's neighbours), up to the pod's CPU
#: limit (`testbed.kube.manifests.LOADGEN_RESOURCES`, 2 CPUs); beyond it, --loadgen-workers.
KUBE_RPS_PER_PROCESS = 1000.0
KUBE_MAX_PROCESSES = 2
#: Kubernetes runs where the source states no duration, warm-up or repetitions (kubelet-scraped resources
#: want 30 s windows: README, `existing`).
KUBE_TRIALS, KUBE_DURATION_S, KUBE_WARMUP_S = 5, 30.0, 5.0
#: Envoy worker threads where the source does not state them: Istio's default (README, `testbed run`).
DEFAULT_PROXY_WORKERS = 2
#: The open-loop twin of a closed-loop reproduction sends over this many connections per closed-loop user:
#: enough that the pool never holds a send back, so a queue forms at the system under test, where the
#: open loop measures it from the intended send time, instead of in the generator (coordinated omission).
TWIN_CONNECTIONS_PER_USER = 4
#: The twin's run directory: beside the reproduction's (inside it, its mesh folders would read as trials).
TWIN_SUFFIX = "-open-loop"
#: The twin runs at the closed loop's achieved rate and at this share of it. The achieved rate is the
#: slowest mesh's saturation throughput, where an open loop's queue grows as long as the load lasts (a
#: queue at utilisation 1): that mesh's trials there may well be invalid, which is itself what the closed
#: loop hid; at 80% every mesh carries the load on schedule and the per-request cost shows.
TWIN_LOWER_SHARE = 0.8


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a reproduction runs on a platform: meshes, rates, scenario data, and what it cannot measure."""

    setup: Setup
    claims: tuple[Claim, ...]
    platform: str
    meshes: dict[str, str]  # claim mesh -> testbed mesh, for the claims measured
    unmeasured: dict[str, str]  # claim id -> why not
    rates: tuple[float, ...]
    scenario: dict[str, Any]
    shortened: str | None
    proxy_workers: int

    @property
    def run_meshes(self) -> tuple[str, ...]:
        """The baseline first, then each testbed mesh once."""
        return (
            "none",
            *dict.fromkeys(self.meshes[c.mesh] for c in self.claims if c.id not in self.unmeasured),
        )


def sources() -> tuple[dict[str, Setup], tuple[Claim, ...]]:
    """The setups and the claims, checked against each other."""
    from testbed.reporting.reproduce import check_setups

    setups, claims = load_setups(), load_claims()
    check_setups(setups, claims)
    return setups, claims


def _why_not(claim: Claim, setup: Setup, platform: str, waypoint: bool) -> str | None:
    """Why `platform` cannot measure `claim`, or None when it can."""
    if not setup.reproducible:
        return "the source does not state its setup (call graph, rates): nothing to rebuild"
    mapping = _mesh_map(platform, waypoint)
    if claim.mesh not in mapping:
        return WHY_NOT.get(platform, {}).get(claim.mesh, f"{platform} cannot run {claim.mesh}")
    if claim.metric == "added_vcpu_pct":
        return "the source's vCPU increase is over its own applications: not measured by this testbed"
    if platform == "local" and setup.loop != "closed":
        rate = claim.rate_rps or max(setup.rates_to_run)
        if rate > LOCAL_MAX_RPS:
            return f"{rate:g} rps is over the local platform's ceiling of {LOCAL_MAX_RPS:g} rps (use kind)"
    return None


def _mesh_map(platform: str, waypoint: bool) -> dict[str, str]:
    mapping = dict(PLATFORM_MESHES[platform])
    if waypoint and platform != "local":
        mapping["istio-waypoint"] = "istio-ambient"
        mapping.pop("istio-ambient")  # with a waypoint, ztunnel's own figures are not the source's
    return mapping


def plan(
    source_id: str,
    platform: str,
    *,
    setups: Mapping[str, Setup],
    claims: Sequence[Claim],
    meshes: Sequence[str] = (),
    waypoint: bool = False,
    trials: int | None = None,
    duration_s: float | None = None,
    warmup_s: float | None = None,
) -> Plan:
    """The reproduction of one source on one platform (pure: nothing is run)."""
    if platform not in PLATFORMS:
        raise UsageError(f"unknown platform {platform!r} (known: {', '.join(PLATFORMS)})")
    if source_id not in setups:
        raise UsageError(f"unknown source {source_id!r} (see testbed reproduce --list)")
    setup = setups[source_id]
    own = tuple(c for c in claims if c.source_id == source_id)
    mapping = _mesh_map(platform, waypoint)
    unmeasured = {c.id: why for c in own if (why := _why_not(c, setup, platform, waypoint)) is not None}
    for mesh in meshes:
        if mesh not in {mapping[c.mesh] for c in own if c.id not in unmeasured}:
            runnable = sorted({mapping[c.mesh] for c in own if c.id not in unmeasured}) or ["none"]
            raise UsageError(
                f"--mesh {mesh}: not a mesh of {source_id} on {platform} (it runs: {', '.join(runnable)})"
            )
    if meshes:
        unmeasured |= {
            c.id: f"left out by --mesh {','.join(meshes)}"
            for c in own
            if c.id not in unmeasured and mapping[c.mesh] not in meshes
        }
    measured = [c for c in own if c.id not in unmeasured]
    if not measured:
        reasons = "; ".join(dict.fromkeys(unmeasured.values()))
        raise UsageError(f"{source_id}: no claim of it can be measured on {platform}: {reasons}")
    # The source's rates that a measured claim names (a claim without a rate is measured at every one).
    wanted = {c.rate_rps for c in measured}
    rates = tuple(r for r in setup.rates_to_run if None in wanted or r in wanted)
    local = platform == "local"
    stated_runs = setup.runs if isinstance(setup.runs, int) else None
    stated_duration = setup.duration_s if isinstance(setup.duration_s, float) else None
    stated_warmup = setup.warmup_s if isinstance(setup.warmup_s, float) else None
    n = trials or (LOCAL_TRIALS if local else stated_runs or KUBE_TRIALS)
    duration = duration_s or (LOCAL_DURATION_S if local else stated_duration or KUBE_DURATION_S)
    warmup = (
        warmup_s if warmup_s is not None else (LOCAL_WARMUP_S if local else stated_warmup or KUBE_WARMUP_S)
    )
    shortened = None
    if local or (stated_duration is not None and duration < stated_duration) or duration_s or trials:
        shortened = f"shortened: {n} trials of {duration:g} s (after {warmup:g} s of warm-up)"
        if stated_duration is not None or stated_runs is not None:
            shortened += (
                f"; published: {stated_runs or 'unknown'} runs of "
                f"{'unknown' if stated_duration is None else f'{stated_duration:g}'} s"
            )
    data = scenario_data(
        setup,
        rates=rates,
        trials=n,
        duration_s=duration,
        warmup_s=warmup,
        max_lateness_ms=MAX_LATENESS_MS,
        processes=1 if local or setup.loop == "closed" else kube_processes(rates),
    )
    workers = setup.proxy_workers if isinstance(setup.proxy_workers, int) else DEFAULT_PROXY_WORKERS
    return Plan(
        setup=setup,
        claims=own,
        platform=platform,
        meshes={c.mesh: mapping[c.mesh] for c in measured},
        unmeasured=unmeasured,
        rates=rates,
        scenario=data,
        shortened=shortened,
        proxy_workers=workers,
    )


def twin_rate(summary: Mapping[str, Any]) -> float | None:
    """The open-loop twin's rate: the lowest mean rate a mesh achieved under the closed loop (whole rps).

    Under a closed loop each mesh runs at its own saturation rate, so their latencies are compared at
    different loads; the twin runs every mesh at one rate, the slowest mesh's, which each can carry.
    """
    rates = [float(c["achieved_rate"]) for c in summary["cells"] if c["valid_trials"]]
    if not rates or min(rates) < 1:
        return None
    return float(int(min(rates)))


def open_twin(plan_: Plan, rate: float) -> Plan:
    """The closed-loop reproduction's open-loop twin: same topology, meshes, trials and connection use,
    sent at `rate` on the testbed's own method (open loop, latency also from the intended send time)."""
    data = {k: v for k, v in plan_.scenario.items() if k not in ("loop", "users")}
    users = int(plan_.scenario["users"])
    data |= {
        "name": f"{data['name']}{TWIN_SUFFIX}",
        "description": f"open-loop twin of {plan_.setup.source_id}'s closed loop, at its achieved rate",
        "rates": list(rates := twin_rates(rate)),
        "connections": users * TWIN_CONNECTIONS_PER_USER,
    }
    if plan_.platform != "local" and (processes := kube_processes(rates)) > 1:  # sized as any open loop
        data["processes"] = processes
    return dataclasses.replace(plan_, scenario=data, rates=rates)


def twin_rates(rate: float) -> tuple[float, ...]:
    """The twin's rates: 80% of the achieved rate, then the achieved rate itself (whole rps)."""
    return tuple(dict.fromkeys((max(1.0, float(int(rate * TWIN_LOWER_SHARE))), rate)))


def kube_processes(rates: Sequence[float]) -> int:
    """Engine processes in the loadgen pod for the highest of `rates` (at most the pod's CPU limit)."""
    return max(1, min(KUBE_MAX_PROCESSES, math.ceil(max(rates, default=0) / KUBE_RPS_PER_PROCESS)))


def build(plan_: Plan) -> tuple[Scenario, Topology]:
    """The Scenario and Topology objects of a plan (validated as any file is)."""
    scenario = build_scenario(plan_.scenario, source_id=plan_.setup.source_id)
    return scenario, load_topology(plan_.setup.topology)


def list_text(setups: Mapping[str, Setup], claims: Sequence[Claim]) -> str:
    """`testbed reproduce --list`: every source, what it needs, which platforms can run it, why not."""
    lines: list[str] = []
    for source_id, setup in setups.items():
        own = [c for c in claims if c.source_id == source_id]
        meshes = ", ".join(dict.fromkeys(c.mesh for c in own))
        rates = (
            setup.rates_rps
            if isinstance(setup.rates_rps, str)
            else "/".join(f"{r:g}" for r in setup.rates_rps)
        )
        lines.append(f"{source_id}: {len(own)} claim(s) about {meshes}")
        lines.append(
            f"  needs: {setup.call_graph} (topology {setup.topology}); {rates} rps; loop {setup.loop}"
        )
        for platform in PLATFORMS:
            why = {c.id: _why_not(c, setup, platform, waypoint=False) for c in own}
            able = [c for c in own if why[c.id] is None]
            if able:
                stands = "; ".join(
                    f"{m} for {c}"
                    for c, m in PLATFORM_MESHES[platform].items()
                    if c in {x.mesh for x in able}
                )
                rest = (
                    f"; not {len(own) - len(able)} other(s): "
                    + "; ".join(dict.fromkeys(w for w in why.values() if w))
                    if len(able) < len(own)
                    else ""
                )
                lines.append(f"  {platform}: yes, {len(able)} of {len(own)} claims ({stands}){rest}")
            else:
                lines.append(f"  {platform}: no: " + "; ".join(dict.fromkeys(w for w in why.values() if w)))
    return "\n".join(lines) + "\n"


def local_sources(setups: Mapping[str, Setup], claims: Sequence[Claim]) -> list[str]:
    """The sources the local platform can measure at least one claim of (`nox -s reproduce`)."""
    return [
        s
        for s, setup in setups.items()
        if any(_why_not(c, setup, "local", False) is None for c in claims if c.source_id == s)
    ]


def read_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """A finished run read back once: its trials (`analysis.Run`) and its summary, for the twin's rate and
    every writing of reproduction.json."""
    from testbed.reporting import analysis

    run = analysis.load_run(run_dir)
    return run, analysis.summary(run)


def write_reproduction(
    run_dir: Path,
    plan_: Plan,
    closed: tuple[Any, dict[str, Any]],
    twin_dir: Path | None = None,
    *,
    twin_error: str | None = None,
) -> dict[str, Path]:
    """Write reproduction.json and .md of the run read back as `closed` (`read_run`), with its open-loop
    twin's figures when `twin_dir` is given."""
    from testbed.reporting import analysis
    from testbed.reporting.reproduce import open_loop_section, reproduction, write

    run, summary = closed
    twin = None
    if twin_dir is not None:
        twin_summary = analysis.summary(analysis.load_run(twin_dir))
        twin = open_loop_section(
            closed=summary, open_=twin_summary, claims=plan_.claims, meshes=plan_.meshes, twin_dir=twin_dir
        )
    document = reproduction(
        summary=summary,
        trials=run.trials,
        setup=plan_.setup,
        claims=plan_.claims,
        meshes=plan_.meshes,
        unmeasured=plan_.unmeasured,
        shortened=plan_.shortened,
    )
    if plan_.setup.loop == "closed":
        why = (
            f"the open-loop twin failed: {twin_error}"
            if twin_error
            else "the open-loop twin did not run (yet, or no mesh achieved a rate under the closed loop)"
        )
        document["open_loop"] = twin or {"run_id": None, "note": why}
    return write(run_dir, document)


def describe(plan_: Plan, *, loadgen_workers: int = 1) -> str:
    """One paragraph: what the reproduction runs."""
    s = plan_.scenario
    load = (
        f"closed loop, {s['users']} users"
        + (", a new connection per request" if s.get("new_connection") else "")
        if s.get("loop") == "closed"
        else f"{'/'.join(f'{r:g}' for r in s['rates'])} rps open loop over {s['connections']} connections"
    )
    return (
        f"reproduce {plan_.setup.source_id} on {plan_.platform}: topology {plan_.setup.topology}, {load}, "
        f"{s['trials']} trial(s) of {s['duration_s']:g} s after {s['warmup_s']:g} s warm-up, "
        f"meshes {','.join(plan_.run_meshes)}"
        # Only the local Envoy takes them from here; on Kubernetes each mesh's install sets its own.
        + (f", {plan_.proxy_workers} Envoy worker threads" if plan_.platform == "local" else "")
        + (
            f"\n  the source ran {plan_.proxy_workers} proxy worker threads; on {plan_.platform} each "
            f"mesh's install keeps its own ({DEFAULT_PROXY_WORKERS} for Istio's sidecars)"
            if plan_.platform != "local" and plan_.proxy_workers != DEFAULT_PROXY_WORKERS
            else ""
        )
        + (f"; {plan_.shortened}" if plan_.shortened else "")
        + (
            "\n  then its open-loop twin: the same meshes at the lowest rate a mesh achieved and at "
            f"{TWIN_LOWER_SHARE:.0%} of it, over "
            f"{s['users'] * TWIN_CONNECTIONS_PER_USER} connections (how much of the figure is the method)"
            + (
                f"; on {plan_.platform} the twin provisions every mesh again (a second run)"
                if plan_.platform != "local"
                else ""
            )
            if s.get("loop") == "closed"
            else ""
        )
        + (
            f"\n  {max(plan_.rates):g} rps is more than {s.get('processes', 1)} engine process(es) in the "
            f"loadgen pod keep on schedule: add --loadgen-workers "
            f"{math.ceil(max(plan_.rates) / KUBE_RPS_PER_PROCESS)} (Locust's distributed mode)"
            if plan_.platform != "local"
            and s.get("loop") != "closed"
            and max(plan_.rates, default=0)
            > KUBE_RPS_PER_PROCESS * max(s.get("processes", 1), loadgen_workers)
            else ""
        )
        + "".join(f"\n  not measured: {cid}: {why}" for cid, why in plan_.unmeasured.items())
    )


def tables(run_dirs: Sequence[Path]) -> str:
    """The reproduction tables of several runs, one after the other (what `nox -s reproduce` ends with)."""
    from testbed.reporting.reproduce import open_loop_table, rates_text, table

    parts = []
    for run_dir in run_dirs:
        document = json.loads((run_dir / "reproduction.json").read_text())
        shortened = f" ({document['shortened']})" if document.get("shortened") else ""
        parts.append(f"{document['source_id']} on {document['platform']}{shortened}:\n\n{table(document)}")
        twin = document.get("open_loop") or {}
        if twin.get("run_id"):
            parts.append(
                "the same, closed loop beside its open-loop twin at "
                f"{rates_text(twin['rates_rps'])} rps:\n\n" + open_loop_table(twin)
            )
    return "\n".join(parts)


def main(argv: Sequence[str]) -> int:
    """`python -m testbed.reproduce local-sources | table RUN_DIR...`: helpers of `nox -s reproduce`."""
    if argv[:1] == ["local-sources"]:
        print(" ".join(local_sources(*sources())))
        return 0
    if argv[:1] == ["table"] and len(argv) > 1:
        print(tables([Path(a) for a in argv[1:]]), end="")
        return 0
    print("usage: python -m testbed.reproduce local-sources | table RUN_DIR...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
