"""The demo services of a topology as local processes on 127.0.0.1, one `testbed.sut.service` each.

`start_topology()` gives every service a free port, starts them leaves first, and returns once all
answer `/healthz`. A mesh layer passes `downstream_url` to send each call through its proxies.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType

from testbed import proc
from testbed.errors import TestbedError
from testbed.ports import free_ports
from testbed.spec.topology import Topology

LOCALHOST = "127.0.0.1"
#: A Python service imports granian and uvloop in well under a second; this allows for a busy machine.
DEFAULT_HEALTH_TIMEOUT_S = 15.0
_LOG_TAIL_LINES = 20
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True, kw_only=True)
class RunningService:
    """One started service: where it listens, its process and its log."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The service's process id."""
        return self.process.pid

    @property
    def url(self) -> str:
        """Its direct URL, without any proxy in between."""
        return f"http://{LOCALHOST}:{self.port}"


class RunningTopology:
    """All services of a topology, running; `stop()` (or leaving the `with` block) ends them."""

    def __init__(self, topology: Topology, services: Mapping[str, RunningService]) -> None:
        self.topology = topology
        self.services: Mapping[str, RunningService] = MappingProxyType(dict(services))
        self._stopped = False

    @property
    def entry_url(self) -> str:
        """The direct URL of the entry service: what the load generator calls without a mesh."""
        return self.services[self.topology.entry].url

    def port(self, name: str) -> int:
        """The port service `name` listens on."""
        return self.services[name].port

    def pid(self, name: str) -> int:
        """The process id of service `name`."""
        return self.services[name].pid

    def pids(self) -> list[int]:
        """The process ids of all services (for resource sampling)."""
        return [s.pid for s in self.services.values()]

    def processes(self) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
        """Every service's process and log, by a name for messages (watched during a trial)."""
        return {f"service {s.name}": (s.process, s.log) for s in self.services.values()}

    def stop(self) -> None:
        """Stop every service; calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        _stop_all(list(self.services.values()))

    def __enter__(self) -> RunningTopology:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_topology(
    topology: Topology,
    workdir: Path,
    *,
    downstream_url: Callable[[str, str], str] | None = None,
    health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S,
    nice: int = 0,
) -> RunningTopology:
    """Start every service of `topology` (logs in `workdir/<service>.log`) and wait until all are healthy."""
    workdir.mkdir(parents=True, exist_ok=True)
    order = topology.startup_order()
    ports = dict(zip((s.name for s in order), free_ports(len(order)), strict=True))

    def url_of(caller: str, callee: str) -> str:
        if downstream_url is not None:
            return downstream_url(caller, callee)
        return f"http://{LOCALHOST}:{ports[callee]}"

    # The child must import this very package, installed or not.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)

    started: list[RunningService] = []
    try:
        # All are spawned before any is waited for: start-up time is then that of the slowest, not
        # the sum. Leaves still come first, so that a caller never waits long for a missing callee.
        for service in order:
            log = workdir / f"{service.name}.log"
            argv = [
                sys.executable,
                "-m",
                "testbed.sut.service",
                "--topology",
                str(topology.source.resolve()),
                "--service",
                service.name,
                "--port",
                str(ports[service.name]),
            ]
            for callee in service.calls:
                argv += ["--downstream", f"{callee}={url_of(service.name, callee)}"]
            with log.open("wb") as out:
                process = proc.spawn(argv, env=env, stdout=out, stderr=subprocess.STDOUT, nice=nice)
            started.append(
                RunningService(name=service.name, port=ports[service.name], process=process, log=log)
            )
        deadline = time.monotonic() + health_timeout_s
        for running in started:
            _wait_healthy(running, deadline, health_timeout_s)
    except BaseException:
        _stop_all(started)
        raise
    return RunningTopology(topology, {s.name: s for s in started})


def _stop_all(services: list[RunningService]) -> None:
    # Callers first: a service never sees its downstream vanish while it is still being called.
    for running in reversed(services):
        proc.stop(running.process)


def _wait_healthy(running: RunningService, deadline: float, timeout_s: float) -> None:
    while True:
        code = running.process.poll()
        if code is not None:
            raise TestbedError(
                f"service {running.name} exited with code {code} before it was healthy; "
                f"last lines of {running.log}:\n{_tail(running.log)}"
            )
        if _healthy(running.port):
            return
        if time.monotonic() > deadline:
            raise TestbedError(
                f"service {running.name} did not answer GET /healthz on port {running.port} within "
                f"{timeout_s:g} s; last lines of {running.log}:\n{_tail(running.log)}"
            )
        time.sleep(0.05)


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=1.0)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"
