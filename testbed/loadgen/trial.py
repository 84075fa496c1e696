"""One trial end to end: preflight, the engine in one or several processes, the merged result."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from testbed import proc
from testbed.errors import TestbedError, UsageError
from testbed.loadgen.config import LoadConfig
from testbed.ports import free_port

#: Locust's own default master port (`locust --master-bind-port`).
DEFAULT_MASTER_PORT = 5557


def preflight(config: LoadConfig, *, timeout_s: float = 3.0) -> None:
    """Fail fast, before anything is measured, when the target cannot be reached at all."""
    parts = urlsplit(config.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror as e:
        raise UsageError(f"cannot resolve the host of {config.url}: {e.strerror}") from None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UsageError(
            f"cannot reach {config.url}: {reason} (is the server running on {host}:{port}?)"
        ) from None


def run_trial(
    config: LoadConfig, *, expect_workers: int = 0, master_bind: tuple[str, int] | None = None
) -> dict[str, Any]:
    """Run the trial and return its `testbed.load/2` document (valid or not).

    With `expect_workers`, this process is a Locust master listening on `master_bind` that waits for
    that many workers started elsewhere (`python -m testbed.loadgen.worker HOST PORT`, e.g. in other
    pods) and gives each a share of the load, instead of starting `config.processes` workers itself.
    """
    preflight(config)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # Imported here: Locust monkey-patches the whole process with gevent on import.
    from testbed.loadgen import engine
    from testbed.loadgen.result import build_result

    if expect_workers:
        host, port = master_bind or ("0.0.0.0", DEFAULT_MASTER_PORT)
        shares = engine.run_master(config, workers=expect_workers, bind_host=host, bind_port=port)
    elif config.processes == 1:
        shares = engine.run_local(config)
    else:
        shares = _run_distributed(config, engine)
    return build_result(config, shares, started_at=started_at, locust_version=engine.LOCUST_VERSION)


def parse_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`--master-bind`), checked."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--master-bind {text!r}: give HOST:PORT, e.g. 0.0.0.0:{DEFAULT_MASTER_PORT}")
    return host, int(port)


def _run_distributed(config: LoadConfig, engine: Any) -> list[Any]:
    port = free_port()
    workers: list[subprocess.Popen[bytes]] = []
    logs = tempfile.TemporaryFile()  # noqa: SIM115 (closed in finally; shared by the workers)

    def start_workers() -> None:
        argv = [sys.executable, "-m", "testbed.loadgen.worker", "127.0.0.1", str(port)]
        argv += ["--parent-pid", str(os.getpid())]
        for _ in range(config.processes):
            workers.append(proc.spawn(argv, stdout=logs, stderr=subprocess.STDOUT))

    try:
        result: list[Any] = engine.run_master(
            config, workers=config.processes, bind_port=port, on_listening=start_workers
        )
        return result
    except TestbedError as e:
        logs.seek(0)
        tail = logs.read().decode(errors="replace").strip().splitlines()[-5:]
        raise TestbedError(e.message + ("\nworker log:\n" + "\n".join(tail) if tail else "")) from None
    finally:
        for worker in workers:
            proc.stop(worker, interrupt_timeout=2.0, terminate_timeout=2.0)
        logs.close()


def check_writable(out: str) -> Path | None:
    """Make sure the result can be written before spending minutes measuring it."""
    if out == "-":
        return None
    directory = Path(out)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(
            f"cannot write to the output directory {out}: {e.strerror}; choose another --out"
        ) from None
    return directory


def write_result(document: str, directory: Path | None) -> Path | None:
    """Write atomically, so that an interrupted write never leaves half a result."""
    if directory is None:
        sys.stdout.write(document + "\n")
        sys.stdout.flush()
        return None
    target = directory / "result.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(document + "\n")
    os.replace(tmp, target)
    with contextlib.suppress(OSError):
        os.chmod(target, 0o644)
    return target
