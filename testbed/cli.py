"""The `testbed` command: argument parsing and the one place where fatal errors become exit codes."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from collections.abc import Sequence

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
    parser.add_argument("--quiet", action="store_true", help="do not echo the commands that are run")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    load = sub.add_parser(
        "load",
        help="one open-loop load trial against a URL",
        description="Send requests at a constant rate (open loop) and record latency in microseconds.",
    )
    load.add_argument("url", help="target, e.g. http://127.0.0.1:8080/")
    load.add_argument(
        "--rate", type=float, required=True, help="requests per second (all processes together)"
    )
    load.add_argument("--duration", type=float, required=True, help="measured seconds, after the warm-up")
    load.add_argument("--warmup", type=float, default=5.0, help="seconds sent but not recorded (default 5)")
    load.add_argument(
        "--connections", type=int, default=16, help="keep-alive connections in all (default 16)"
    )
    load.add_argument("--processes", type=int, default=1, help="engine processes, each a Locust worker")
    load.add_argument("--arrival", default="uniform", help="uniform or poisson (default uniform)")
    load.add_argument("--method", default="GET")
    load.add_argument("--body-bytes", type=int, default=0, help="request body size")
    load.add_argument("--header", action="append", default=[], metavar="K:V", help="extra header; repeatable")
    load.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    load.add_argument("--seed", type=int, default=1, help="seed of the Poisson arrivals")
    load.add_argument("--max-error-rate", type=float, default=0.01, help="invalid above this fraction")
    load.add_argument("--out", required=True, help="directory for result.json, or - for stdout")
    load.set_defaults(func=cmd_load)
    return parser


def cmd_load(args: argparse.Namespace) -> int:
    from testbed.loadgen.config import LoadConfig, ValidityLimits, parse_header
    from testbed.loadgen.trial import check_writable, run_trial, write_result

    config = LoadConfig(
        url=args.url,
        rate=args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        processes=args.processes,
        arrival=args.arrival,
        method=args.method.upper(),
        body_bytes=args.body_bytes,
        headers=tuple(parse_header(h) for h in args.header),
        timeout_s=args.timeout,
        seed=args.seed,
        limits=ValidityLimits(max_error_fraction=args.max_error_rate),
    )
    directory = check_writable(args.out)
    result = run_trial(config)
    target = write_result(json.dumps(result, indent=2), directory)
    if target is not None:
        lat = result["latency_us"]
        verdict = "valid" if result["valid"] else "INVALID: " + "; ".join(result["invalid_reasons"])
        print(
            f"{result['requests']} requests at {result['achieved_rate']:g} rps; "
            f"service p50 {lat['service']['p50']} us, p99 {lat['service']['p99']} us; "
            f"intended p99 {lat['intended']['p99']} us; {verdict}",
            file=sys.stderr,
        )
        print(f"wrote {target}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    # SIGTERM stops a run the way Ctrl-C does, so that the same clean-up runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        args = build_parser().parse_args(argv)
        proc.ECHO = not args.quiet
        code: int = args.func(args)
        return code
    except TestbedError as e:
        if debug:
            traceback.print_exc()
        print(f"testbed: error: {e.message}", file=sys.stderr)
        return e.return_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("testbed: interrupted; every process it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
