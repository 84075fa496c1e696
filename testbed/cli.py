"""The `testbed` command: argument parsing and the one place where fatal errors become exit codes."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from testbed import __version__, proc
from testbed.errors import TestbedError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="testbed", description="Measure what a service mesh costs.")
    parser.add_argument("--version", action="version", version=f"testbed {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(
        "--quiet", action="store_true", help="print only results and errors: no progress, no command echo"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="echo each command that is run as `+ cmd` on stderr (a run logs them all in "
        "RUN_DIR/work/commands.log either way)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    load = sub.add_parser(
        "load",
        help="one load trial against a URL (open loop; --loop closed as the publishers measured)",
        description="Send requests at a constant rate or along a --profile (open loop) and record latency "
        "in microseconds; --loop closed sends as fast as --users concurrent users get answers (the "
        "publishers' method).",
    )
    load.add_argument("url", help="target, e.g. http://127.0.0.1:8080/")
    load.add_argument(
        "--profile",
        default=None,
        metavar="ARG",
        help="open-loop rate over time instead of --rate and --duration: steps:100@5,200@5 | "
        "ramp:from=50,to=300,duration=20 | spike:base=100,multiple=3,at=10,burst=2,duration=30",
    )
    load.add_argument(
        "--rate", type=float, default=None, help="requests per second (all processes together); open loop"
    )
    load.add_argument(
        "--loop",
        default="open",
        help="open (default): send at intended times; closed: each user sends when its answer arrives, "
        "no think time (how LiveWyer's oha measured; hides stalls)",
    )
    load.add_argument(
        "--users", type=int, default=0, help="closed loop: concurrent users, one connection each"
    )
    load.add_argument(
        "--new-connection",
        action="store_true",
        help="a new TCP connection for every request, closed after its answer (no keep-alive)",
    )
    load.add_argument(
        "--duration", type=float, default=None, help="measured seconds, after the warm-up (or --profile)"
    )
    load.add_argument("--warmup", type=float, default=5.0, help="seconds sent but not recorded (default 5)")
    load.add_argument(
        "--tail",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds sent after the measured window at the same rate, not recorded (default 0): "
        "keeps the load steady while a platform reads its counters at the window's end",
    )
    load.add_argument(
        "--connections", type=int, default=None, help="keep-alive connections in all (default 16); open loop"
    )
    load.add_argument("--processes", type=int, default=1, help="engine processes, each a Locust worker")
    load.add_argument("--arrival", default=None, help="uniform or poisson (default uniform); open loop")
    load.add_argument("--method", default="GET")
    load.add_argument("--body-bytes", type=int, default=0, help="request body size")
    load.add_argument("--header", action="append", default=[], metavar="K:V", help="extra header; repeatable")
    load.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    load.add_argument("--seed", type=int, default=1, help="seed of the Poisson arrivals")
    load.add_argument("--max-error-rate", type=float, default=0.01, help="invalid above this fraction")
    load.add_argument(
        "--max-lateness-ms",
        type=float,
        default=2.0,
        help="invalid when send lateness p99 exceeds this (default 2)",
    )
    load.add_argument("--out", required=True, help="directory for result.json, or - for stdout")
    load.add_argument(
        "--expect-workers",
        type=int,
        default=0,
        metavar="N",
        help="be a Locust master: wait for N workers started elsewhere "
        "(python -m testbed.loadgen.worker HOST PORT) and share the load among them",
    )
    load.add_argument(
        "--master-bind",
        default=None,
        metavar="HOST:PORT",
        help="where the master of --expect-workers listens (default 0.0.0.0:5557)",
    )
    load.set_defaults(func=cmd_load)

    run = sub.add_parser(
        "run",
        help="a whole benchmark: every mesh, rate and trial of a scenario, then a report",
        description="Bring the topology up with each mesh, load it trial by trial, and report the overhead.",
    )
    run.add_argument(
        "--platform",
        default="local",
        help="local (default), kind (a kind cluster per mesh) or existing (a cluster of yours: --context)",
    )
    run.add_argument("--mesh", default="none,envoy", help="comma-separated meshes (default none,envoy)")
    run.add_argument("--scenario", default="steady", help="scenario name in scenarios/ or a .toml path")
    run.add_argument("--topology", default="shop", help="topology name in scenarios/topologies/ or a path")
    run.add_argument(
        "--trials", type=int, default=None, help="override the scenario's trials per mesh and rate"
    )
    run.add_argument(
        "--envoy-concurrency", type=int, default=2, help="Envoy worker threads (Istio's default 2)"
    )
    run.add_argument(
        "--out", default="results", help="parent directory of the run directory (default results)"
    )
    run.add_argument(
        "--run-id", default=None, help="name of the run directory (default: time, platform, scenario)"
    )
    _add_kube_options(run)
    run.set_defaults(func=cmd_run)

    _add_analysis_commands(sub)
    _add_capacity_command(sub)
    _add_reproduce_command(sub)
    return parser


def _add_capacity_command(sub: Any) -> None:
    """`testbed capacity`: the highest rate that meets a latency objective (testbed/capacity.py)."""
    cap = sub.add_parser(
        "capacity",
        help="the highest open-loop rate whose service p99 meets an objective",
        description="Search rates with real `testbed load` trials: doubling, bisection, repeats at the end.",
    )
    cap.add_argument("url", help="target, e.g. http://127.0.0.1:8080/")
    cap.add_argument("--slo-p99-ms", type=float, required=True, help="objective: service latency p99 in ms")
    cap.add_argument(
        "--max-error-rate", type=float, default=0.01, help="a probe fails above this fraction (default 0.01)"
    )
    cap.add_argument("--duration", type=float, default=10.0, help="measured seconds per probe (default 10)")
    cap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per probe (default 2)")
    cap.add_argument(
        "--processes",
        default="auto",
        help="engine processes per probe, or auto: 1 per 1000 rps of the probe, at most one per core "
        "(default auto)",
    )
    cap.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    cap.add_argument("--start-rate", type=float, default=100.0, help="first rate, rps (default 100)")
    cap.add_argument("--max-rate", type=float, default=100_000.0, help="highest rate tried (default 100000)")
    cap.add_argument(
        "--resolution", type=float, default=0.05, help="bisect until within this fraction (default 0.05)"
    )
    cap.add_argument(
        "--repeats", type=int, default=3, help="trials at the answer, most must pass (default 3)"
    )
    cap.add_argument(
        "--max-lateness-ms",
        type=float,
        default=2.0,
        help="a probe's generator fell behind when send lateness p99 exceeds this (default 2)",
    )
    cap.add_argument(
        "--out", default="-", help="directory for capacity.json and every probe's result, or - (default)"
    )
    cap.set_defaults(func=cmd_capacity)


def _add_analysis_commands(sub: Any) -> None:
    """`testbed report`, `testbed compare` and `testbed images`."""
    report = sub.add_parser(
        "report",
        help="the report of a finished (or interrupted) run",
        description="Write summary.json, report.md and a self-contained report.html for a run directory.",
    )
    report.add_argument("run_dir", help="results/<run-id>")
    report.add_argument(
        "--baseline", default=None, help="mesh that the overheads are measured against (default none)"
    )
    report.add_argument("--out", default=None, help="HTML file to write (default RUN_DIR/report.html)")
    report.add_argument(
        "--format",
        choices=("html", "smp"),
        default="html",
        help="html: the reports (default); smp: Service Mesh Performance JSON for Meshery (RUN_DIR/smp.json)",
    )
    report.set_defaults(func=cmd_report)

    cmp = sub.add_parser(
        "compare",
        help="exit 1 when NEW is slower than OLD beyond the thresholds and the noise",
        description="Compare two runs cell by cell, with 95%% bootstrap intervals; exit 1 on a regression.",
    )
    cmp.add_argument("old", help="results/<old-run-id>")
    cmp.add_argument("new", help="results/<new-run-id>")
    cmp.add_argument(
        "--threshold-ms", type=float, default=0.2, help="ignore changes up to this (default 0.2)"
    )
    cmp.add_argument(
        "--threshold-pct", type=float, default=5.0, help="ignore changes up to this %% (default 5)"
    )
    cmp.add_argument("--percentiles", default="p50,p90,p99", help="which to gate on (default p50,p90,p99)")
    cmp.add_argument("--md", default=None, metavar="FILE", help="also write the table as Markdown")
    cmp.set_defaults(func=cmd_compare)

    images = sub.add_parser(
        "images",
        help="every container image a configuration needs, from the pins",
        description="List the images of a mesh configuration on kind (manifests/versions.toml).",
    )
    images.add_argument(
        "--mesh",
        default="all",
        help="none, istio, istio-ambient, istio-ambient-waypoint, linkerd, cilium, a comma list, or all",
    )
    images.set_defaults(func=cmd_images)


def _add_reproduce_command(sub: Any) -> None:
    """`testbed reproduce`: a published source's setup, run as published (testbed/reproduce.py)."""
    rep = sub.add_parser(
        "reproduce",
        help="re-run a published benchmark's setup and say whether each of its claims holds here",
        description="Build the scenario and topology of a source in testbed/data/setups.toml, run the "
        "baseline and the source's meshes, and write RUN_DIR/reproduction.json and reproduction.md.",
    )
    rep.add_argument("source_id", nargs="?", help="a source_id of testbed/data/claims.toml (see --list)")
    rep.add_argument(
        "--list", action="store_true", help="every source, what it needs, which platforms run it"
    )
    rep.add_argument("--platform", default="local", help="local (default), kind or existing (--context)")
    rep.add_argument("--mesh", default=None, help="comma-separated meshes of the source to run (default all)")
    rep.add_argument("--trials", type=int, default=None, help="trials per mesh and rate (local default 3)")
    rep.add_argument(
        "--duration", type=float, default=None, help="measured seconds per trial (local default 3)"
    )
    rep.add_argument("--warmup", type=float, default=None, help="warm-up seconds per trial (local default 1)")
    rep.add_argument(
        "--out", default="results", help="parent directory of the run directory (default results)"
    )
    rep.add_argument("--run-id", default=None, help="name of the run directory (default: time, platform)")
    _add_kube_options(rep)
    rep.set_defaults(func=cmd_reproduce)


def _add_kube_options(run: argparse.ArgumentParser) -> None:
    """`testbed run` options of the Kubernetes platforms, and `--dry-run`."""
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the whole plan (every command and manifest) and run nothing",
    )
    run.add_argument(
        "--max-failures",
        type=int,
        default=2,
        metavar="K",
        help="skip a mesh's remaining trials after K consecutive failed trials of it (default 2)",
    )
    run.add_argument(
        "--reuse", action="store_true", help="kind: run on a cluster testbed-<mesh> that exists already"
    )
    run.add_argument(
        "--keep", action="store_true", help="kind, existing: keep the cluster (or namespace) at the end"
    )
    run.add_argument("--context", default=None, help="existing: the kubeconfig context of the cluster")
    run.add_argument(
        "--image",
        default=None,
        help="existing: the testbed image the nodes can pull (default testbed:VERSION-HASH, as kind tags it)",
    )
    run.add_argument(
        "--loadgen-workers",
        type=int,
        default=1,
        metavar="N",
        help="kind, existing: N > 1 runs the load in N worker pods (Locust's distributed mode)",
    )
    run.add_argument(
        "--waypoint",
        action="store_true",
        help="kind, existing: istio-ambient with Istio's L7 waypoint proxy for the app namespace",
    )


#: `testbed load` flags of the open loop's schedule and pool, refused with `--loop closed` (flag: dest).
_OPEN_LOOP_ONLY = {"--rate": "rate", "--connections": "connections", "--arrival": "arrival"}


def cmd_load(args: argparse.Namespace) -> int:
    from testbed.loadgen.config import LoadConfig, ValidityLimits, parse_header
    from testbed.loadgen.result import verdict
    from testbed.loadgen.trial import check_writable, parse_bind, run_trial, write_result

    if args.expect_workers < 0:
        raise UsageError(f"--expect-workers must be at least 1, got {args.expect_workers}")
    if args.master_bind is not None and not args.expect_workers:
        raise UsageError("--master-bind needs --expect-workers N")
    if args.expect_workers and args.processes != 1:
        raise UsageError("--processes and --expect-workers exclude each other: the workers are the processes")
    master_bind = parse_bind(args.master_bind) if args.master_bind is not None else None
    if args.loop == "closed":
        # The open loop's schedule and pool do not exist in closed loop: refused rather than ignored.
        given = [flag for flag, value in _OPEN_LOOP_ONLY.items() if getattr(args, value) is not None]
        if given:
            raise UsageError(
                f"{' and '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --loop closed: "
                "each of the --users sends as soon as "
                "its previous answer arrives, on a connection of its own"
            )
    profile = None
    if args.profile is not None:
        from testbed.loadgen.profile import parse_arg

        profile = parse_arg(args.profile)
    elif args.loop == "open" and args.rate is None:
        raise UsageError(
            "--rate is required (requests per second), or give --profile ARG, or --loop closed --users N"
        )
    rate, duration = args.rate, args.duration
    if profile is not None:  # the profile sets both; given as well, they must agree (`LoadConfig`)
        rate = profile.peak_rps if rate is None else rate
        duration = profile.duration_s if duration is None else duration
    if duration is None:
        raise UsageError("--duration is required (measured seconds after the warm-up), or give --profile")
    config = LoadConfig(
        url=args.url,
        rate=rate or 0.0,
        duration_s=duration,
        profile=profile,
        warmup_s=args.warmup,
        tail_s=args.tail,
        connections=16 if args.connections is None else args.connections,
        processes=args.processes,
        arrival=args.arrival or "uniform",
        loop=args.loop,
        users=args.users,
        new_connection=args.new_connection,
        method=args.method.upper(),
        body_bytes=args.body_bytes,
        headers=tuple(parse_header(h) for h in args.header),
        timeout_s=args.timeout,
        seed=args.seed,
        limits=ValidityLimits(
            max_error_fraction=args.max_error_rate, max_lateness_p99_ms=args.max_lateness_ms
        ),
    )
    directory = check_writable(args.out)
    result = run_trial(config, expect_workers=args.expect_workers, master_bind=master_bind)
    target = write_result(json.dumps(result, indent=2), directory)
    if target is not None:
        lat = result["latency_us"]
        intended = "" if lat["intended"] is None else f"intended p99 {lat['intended']['p99']} us; "
        print(
            f"{result['requests']} requests at {result['achieved_rate']:g} rps; "
            f"service p50 {lat['service']['p50']} us, p99 {lat['service']['p99']} us; "
            f"{intended}{verdict(result)}",
            file=sys.stderr,
        )
        for segment in result["segments"] if len(result["segments"]) > 1 else []:
            state = "valid" if segment["valid"] else "INVALID: " + "; ".join(segment["invalid_reasons"])
            print(
                f"  {segment['label']}: {segment['completed']} requests at {segment['achieved_rps']:g} rps; "
                f"service p99 {segment['latency_us']['service']['p99']} us; {state}",
                file=sys.stderr,
            )
        print(f"wrote {target}", file=sys.stderr)
    return 0


#: Which `testbed run` options each platform takes, with their defaults (others are refused, not ignored).
_PLATFORM_OPTIONS: dict[str, tuple[tuple[str, ...], object]] = {
    "reuse": (("kind",), False),
    "keep": (("kind", "existing"), False),
    "context": (("existing",), None),
    "image": (("existing",), None),
    "loadgen_workers": (("kind", "existing"), 1),
    "waypoint": (("kind", "existing"), False),
}


def _platform(name: str, args: argparse.Namespace) -> Any:
    if name not in ("local", "kind", "existing"):
        raise UsageError(f"unknown platform {name!r} (known: local, kind, existing)")
    for option, (platforms, default) in _PLATFORM_OPTIONS.items():
        if getattr(args, option) != default and name not in platforms:
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag} applies to --platform {' or '.join(platforms)} only")
    if args.loadgen_workers < 1:
        raise UsageError(f"--loadgen-workers must be at least 1, got {args.loadgen_workers}")
    if name == "local":
        from testbed.platforms.local import LocalPlatform

        if args.envoy_concurrency < 1:
            raise UsageError(f"--envoy-concurrency must be at least 1, got {args.envoy_concurrency}")
        return LocalPlatform(envoy_concurrency=args.envoy_concurrency)
    if name == "kind":
        from testbed.platforms.kind import KindPlatform

        return KindPlatform(
            keep=args.keep, reuse=args.reuse, loadgen_workers=args.loadgen_workers, waypoint=args.waypoint
        )
    from testbed.platforms.existing import ExistingPlatform

    if not args.context:
        raise UsageError(
            "--platform existing needs --context NAME: the kubeconfig context of your cluster "
            "(see `kubectl config get-contexts`)"
        )
    return ExistingPlatform(
        context=args.context,
        image=args.image,
        keep=args.keep,
        loadgen_workers=args.loadgen_workers,
        waypoint=args.waypoint,
    )


def _with_trials(scenario: Any, trials: int | None) -> Any:
    """The scenario with `--trials` applied (a capacity search's trials are its repeats at the answer)."""
    import dataclasses

    if trials is None:
        return scenario
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}")
    scenario = dataclasses.replace(scenario, trials=trials)
    if scenario.capacity is not None:
        scenario = dataclasses.replace(
            scenario, capacity=dataclasses.replace(scenario.capacity, repeats=trials)
        )
    return scenario


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from testbed.reporting.report import write_report
    from testbed.run import EXIT_WITH_FAILURES, RunOptions, dry_run, execute
    from testbed.spec.scenario import load_scenario
    from testbed.spec.topology import load_topology

    meshes = tuple(m.strip() for m in args.mesh.split(",") if m.strip())
    if not meshes:
        raise UsageError("--mesh names no mesh: give e.g. --mesh none,envoy")
    if len(set(meshes)) != len(meshes):
        raise UsageError(f"--mesh {args.mesh!r} names a mesh twice")
    if args.waypoint and "istio-ambient" not in meshes:
        raise UsageError("--waypoint adds Istio's waypoint to istio-ambient: put istio-ambient in --mesh")
    scenario = _with_trials(load_scenario(args.scenario), args.trials)
    if args.max_failures < 1:
        raise UsageError(f"--max-failures must be at least 1, got {args.max_failures}")
    options = RunOptions(
        platform=_platform(args.platform, args),
        meshes=meshes,
        scenario=scenario,
        topology=load_topology(args.topology),
        out=Path(args.out),
        run_id=args.run_id,
        max_failures=args.max_failures,
    )
    if args.dry_run:
        print(dry_run(options), end="")
        return 0
    run_dir = execute(options)
    failures = json.loads((run_dir / "run.json").read_text()).get("failures", [])
    try:
        paths = write_report(run_dir)
    except UsageError as e:
        if not failures:
            raise
        # Every trial failed: nothing to report but the failures, which run.json keeps.
        print(f"testbed: no report: {e.message}", file=sys.stderr)
    else:
        print(paths["markdown"].read_text())
        for kind, path in paths.items():
            print(f"{kind}: {path}")
    if failures:
        print(
            f"testbed: the run ended with {len(failures)} failed or skipped trial(s), listed in "
            f"{run_dir / 'run.json'} and the report (exit code {EXIT_WITH_FAILURES})",
            file=sys.stderr,
        )
        return EXIT_WITH_FAILURES
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from testbed import reproduce
    from testbed.reporting.report import write_report
    from testbed.run import EXIT_WITH_FAILURES, RunOptions, dry_run, execute

    setups, claims = reproduce.sources()
    if args.list:
        print(reproduce.list_text(setups, claims), end="")
        return 0
    if not args.source_id:
        raise UsageError("give a SOURCE_ID (see testbed reproduce --list)")
    for flag, value in (("--trials", args.trials), ("--duration", args.duration)):
        if value is not None and value <= 0:
            raise UsageError(f"{flag} must be positive, got {value:g}")
    if args.warmup is not None and args.warmup < 0:
        raise UsageError(f"--warmup must be zero or positive, got {args.warmup:g}")
    meshes = tuple(m.strip() for m in (args.mesh or "").split(",") if m.strip() and m.strip() != "none")
    plan = reproduce.plan(
        args.source_id,
        args.platform,
        setups=setups,
        claims=claims,
        meshes=meshes,
        waypoint=args.waypoint,
        trials=args.trials,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    scenario, topology = reproduce.build(plan)
    args.envoy_concurrency = plan.proxy_workers  # the source's proxy worker threads (Istio's 2 if unstated)
    options = RunOptions(
        platform=_platform(args.platform, args),
        meshes=plan.run_meshes,
        scenario=scenario,
        topology=topology,
        out=Path(args.out),
        run_id=args.run_id,
        max_failures=args.max_failures,
    )
    print(reproduce.describe(plan, loadgen_workers=getattr(args, "loadgen_workers", 1)), flush=True)
    if args.dry_run:
        print(dry_run(options), end="")
        return 0
    run_dir = execute(options)
    closed = reproduce.read_run(run_dir)
    paths = reproduce.write_reproduction(run_dir, plan, closed)  # kept even if the twin below fails
    if plan.setup.loop == "closed":
        try:
            twin_dir = _open_twin(plan, options, run_dir, closed[1], getattr(args, "loadgen_workers", 1))
        except TestbedError as e:
            print(f"testbed: the open-loop twin failed: {e.message}", file=sys.stderr)
            paths = reproduce.write_reproduction(run_dir, plan, closed, twin_error=e.message)
        else:
            paths = reproduce.write_reproduction(run_dir, plan, closed, twin_dir)
    report = write_report(run_dir)  # after reproduction.json: the report shows the same section
    print(paths["markdown"].read_text())
    for kind, path in {f"reproduction {k}": v for k, v in paths.items()}.items() | report.items():
        print(f"{kind}: {path}")
    failures = json.loads((run_dir / "run.json").read_text()).get("failures", [])
    return EXIT_WITH_FAILURES if failures else 0


def _open_twin(plan: Any, options: Any, run_dir: Any, summary: dict[str, Any], loadgen_workers: int) -> Any:
    """Run a closed-loop reproduction's open-loop twin (testbed/reproduce.py `open_twin`) beside it, at the
    rate `summary` (the closed loop's) says the slowest mesh achieved."""
    import dataclasses

    from testbed import reproduce
    from testbed.reporting.reproduce import rates_text
    from testbed.run import execute

    rate = reproduce.twin_rate(summary)
    if rate is None:
        print("testbed: no open-loop twin: no mesh achieved a rate under the closed loop", file=sys.stderr)
        return None
    twin = reproduce.open_twin(plan, rate)
    scenario, _ = reproduce.build(twin)
    rates = rates_text(reproduce.twin_rates(rate))
    print(f"open-loop twin: every mesh at {rates} rps (the lowest rate a mesh achieved: {rate:g})")
    print(reproduce.describe(twin, loadgen_workers=loadgen_workers), flush=True)
    twin_options = dataclasses.replace(
        options, scenario=scenario, run_id=run_dir.name + reproduce.TWIN_SUFFIX
    )
    return execute(twin_options)


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else None
    baseline_given = args.baseline is not None
    args.baseline = args.baseline or "none"
    if args.format == "smp":
        from testbed.reporting.report import build
        from testbed.reporting.smp import write_smp

        target = out or run_dir / "smp.json"
        write_smp(build(run_dir, baseline=args.baseline, require_baseline=baseline_given), target)
        print(f"smp: {target}")
        return 0
    from testbed.reporting.report import write_report

    if out is not None and out.suffix != ".html":
        raise UsageError(
            f"--out {out}: give a file name ending in .html (summary.json and report.md go beside it)"
        )
    paths = write_report(run_dir, baseline=args.baseline, out=out, require_baseline=baseline_given)
    if not args.quiet:
        print(paths["markdown"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from testbed.reporting.compare import compare, table

    if args.threshold_ms < 0 or args.threshold_pct < 0:
        raise UsageError("--threshold-ms and --threshold-pct must not be negative")
    percentiles = tuple(p.strip() for p in args.percentiles.split(",") if p.strip())
    unknown = [p for p in percentiles if p not in ("p50", "p90", "p99", "p999")]
    if unknown or not percentiles:
        raise UsageError(f"--percentiles {args.percentiles!r}: choose from p50,p90,p99,p999")
    result = compare(
        Path(args.old),
        Path(args.new),
        threshold_ms=args.threshold_ms,
        threshold_pct=args.threshold_pct,
        percentiles=percentiles,
    )
    if not result.rows:
        capacity = [d for d in (args.old, args.new) if any(Path(d).glob("*/capacity.json"))]
        if capacity:  # a capacity run's probes are no (mesh, rate) cells: nothing to gate on yet
            raise UsageError(
                f'{capacity[0]} is a capacity run (profile = "capacity"): compare gates latency cells '
                "only; read max_rate_rps in each run's <mesh>/capacity.json or its report"
            )
        raise UsageError(
            f"{args.old} and {args.new} share no (mesh, rate) with valid trials: "
            "compare runs of the same scenario"
        )
    print(table(result), end="")
    if args.md:
        target = Path(args.md)
        target.write_text(table(result, markdown=True))
        print(f"markdown: {target}")
    return 1 if result.regressed else 0


def cmd_capacity(args: argparse.Namespace) -> int:
    from testbed.capacity import Objective, Policy, Probe, measure
    from testbed.loadgen.config import LoadConfig, ValidityLimits
    from testbed.loadgen.trial import check_writable, preflight

    if args.slo_p99_ms <= 0:
        raise UsageError(f"--slo-p99-ms must be positive (milliseconds), got {args.slo_p99_ms:g}")
    policy = Policy(
        start_rate=args.start_rate,
        max_rate=args.max_rate,
        resolution=args.resolution,
        repeats=args.repeats,
    )
    auto = args.processes == "auto"
    if not auto and not str(args.processes).isdigit():
        raise UsageError(f"--processes must be a number of processes or auto, got {args.processes!r}")
    template = LoadConfig(  # validates the URL and the trial's own options
        url=args.url,
        rate=args.start_rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        processes=1 if auto else int(args.processes),
        limits=ValidityLimits(
            max_error_fraction=args.max_error_rate, max_lateness_p99_ms=args.max_lateness_ms
        ),
    )
    objective = Objective(slo_p99_ms=args.slo_p99_ms, max_error_rate=args.max_error_rate)
    directory = check_writable(args.out)
    preflight(template)

    def show(index: int, probe: Probe) -> None:
        if not args.quiet:
            outcome = "pass" if probe.passed else f"fail ({probe.verdict})"
            print(
                f"probe {index} ({probe.phase}) {probe.rate:g} rps: {outcome}: {probe.reason}",
                file=sys.stderr,
            )

    document = measure(template, objective, policy, directory, on_probe=show, auto_processes=auto)
    text = json.dumps(document, indent=2)
    if directory is None:
        print(text)
    else:
        (directory / "capacity.json").write_text(text + "\n")
        print(f"wrote {directory / 'capacity.json'}", file=sys.stderr)
    print(f"testbed: {document['note']}", file=sys.stderr)
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from testbed.kube.images import format_list, parse_configs
    from testbed.spec.versions import load_versions

    versions = load_versions()
    for config in parse_configs(args.mesh):
        print(format_list(config, versions), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    # SIGTERM stops a run the way Ctrl-C does, so that the same clean-up runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    code, message = 1, ""
    before = proc.live()
    try:
        code, message = _main(argv, debug)
    except KeyboardInterrupt:  # a second signal while the first one's message was being made
        code, message = 130, ""
    finally:
        _stop_every_child(keep=before)
    if code == 130 and not message:
        message = "testbed: interrupted; every process it started was stopped"
    if message:
        print(message, file=sys.stderr)
    return code


def _main(argv: Sequence[str] | None, debug: bool) -> tuple[int, str]:
    """The command's exit code and the error line to print once every child is gone."""
    try:
        args = build_parser().parse_args(argv)
        proc.ECHO = args.verbose and not args.quiet
        proc.QUIET = args.quiet
        code: int = args.func(args)
        return code, ""
    except TestbedError as e:
        if debug:
            traceback.print_exc()
        return e.return_code, f"testbed: error: {e.message}"
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        return 130, ""


def _stop_every_child(*, keep: frozenset[subprocess.Popen[bytes]]) -> None:
    """The last step of every command: no process it started outlives it. Further Ctrl-C or SIGTERM are
    ignored meanwhile, so that this clean-up itself cannot be cut short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc.stop_all(keep=keep)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())
