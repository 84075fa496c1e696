"""Entry point of a load generator worker process: `python -m testbed.loadgen.worker HOST PORT`."""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testbed-loadgen-worker")
    parser.add_argument("master_host")
    parser.add_argument("master_port", type=int)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="worker: %(levelname)s %(message)s")
    from testbed.loadgen.engine import run_worker

    try:
        run_worker(args.master_host, args.master_port, parent_pid=args.parent_pid)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
