"""The meshes the `local` platform can run for real: `none` (direct calls) and `envoy` (Istio-style sidecars).

A local mesh is told, before the apps start, where each app must send its calls (`downstream_url`), and
then starts its data plane around the running apps (`start`), returning where the load generator sends.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from testbed.errors import TestbedError
from testbed.meshes.envoy.bootstrap import (
    LOCALHOST,
    ClientSidecar,
    Downstream,
    ServiceSidecar,
    client_sidecar_bootstrap,
    sidecar_bootstrap,
)
from testbed.meshes.envoy.pki import make_pki
from testbed.meshes.envoy.sidecar import (
    DEFAULT_CONCURRENCY,
    Sidecar,
    envoy_binary,
    plaintext_refused,
    start_sidecar,
    tls_evidence,
)
from testbed.ports import free_ports
from testbed.spec.topology import Topology
from testbed.sut.local import RunningTopology

LOADGEN_IDENTITY = "loadgen"


class LocalMesh(Protocol):
    name: str

    def routes(self) -> Callable[[str, str], str] | None:
        """Where an app sends its calls to a downstream (None: directly)."""

    def start(self, running: RunningTopology, workdir: Path) -> str: ...

    def pids(self) -> list[int]: ...

    def processes(self) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
        """The data plane's processes and logs, by a name for messages (watched during a trial)."""

    def evidence(self) -> dict[str, Any]: ...

    def versions(self) -> dict[str, str]: ...

    def stop(self) -> None: ...


class NoMesh:
    """Apps call each other directly; the load generator calls the entry service."""

    name = "none"

    def __init__(self, topology: Topology, *, concurrency: int = 2, nice: int = 0) -> None:
        self.topology = topology

    def routes(self) -> Callable[[str, str], str] | None:
        return None

    def start(self, running: RunningTopology, workdir: Path) -> str:
        return running.entry_url

    def pids(self) -> list[int]:
        return []

    def processes(self) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
        return {}

    def evidence(self) -> dict[str, Any]:
        return {"mesh": "none", "encrypted": False}

    def versions(self) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        pass


class EnvoySidecars:
    """A real Envoy sidecar per service and one beside the load generator, mTLS on every hop."""

    name = "envoy"

    def __init__(self, topology: Topology, *, concurrency: int = DEFAULT_CONCURRENCY, nice: int = 0) -> None:
        self.topology = topology
        self.concurrency = concurrency
        self.nice = nice
        pairs = [(s.name, callee) for s in topology.services for callee in s.calls]
        ports = iter(free_ports(len(pairs) + 2 * len(topology.services) + 2))
        self.outbound = {pair: next(ports) for pair in pairs}
        self.inbound = {s.name: next(ports) for s in topology.services}
        self.admin = {s.name: next(ports) for s in topology.services}
        self.client_port, self.client_admin = next(ports), next(ports)
        self.sidecars: list[Sidecar] = []

    def routes(self) -> Callable[[str, str], str] | None:
        return lambda caller, callee: f"http://{LOCALHOST}:{self.outbound[(caller, callee)]}"

    def _callers(self, name: str) -> tuple[str, ...]:
        callers = tuple(s.name for s in self.topology.services if name in s.calls)
        return (*callers, LOADGEN_IDENTITY) if name == self.topology.entry else callers

    def start(self, running: RunningTopology, workdir: Path) -> str:
        identities = [*self.topology.names, LOADGEN_IDENTITY]
        pki = make_pki(workdir / "pki", identities)
        try:
            for service in self.topology.services:
                spec = ServiceSidecar(
                    service=service.name,
                    app_port=running.port(service.name),
                    inbound_port=self.inbound[service.name],
                    admin_port=self.admin[service.name],
                    allowed_callers=self._callers(service.name),
                    downstreams=tuple(
                        Downstream(
                            name=callee,
                            outbound_port=self.outbound[(service.name, callee)],
                            inbound_port=self.inbound[callee],
                        )
                        for callee in service.calls
                    ),
                )
                bootstrap = sidecar_bootstrap(spec, pki)
                self._start(f"sidecar-{service.name}", bootstrap, workdir)
            entry = Downstream(
                name=self.topology.entry,
                outbound_port=self.client_port,
                inbound_port=self.inbound[self.topology.entry],
            )
            client = ClientSidecar(admin_port=self.client_admin, entry=entry, identity=LOADGEN_IDENTITY)
            self._start("sidecar-loadgen", client_sidecar_bootstrap(client, pki), workdir)
            target = f"http://{LOCALHOST}:{self.client_port}/"
            _check_path(target, self.sidecars)
            return target
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, bootstrap: dict[str, Any], workdir: Path) -> None:
        self.sidecars.append(
            start_sidecar(name, bootstrap, workdir, concurrency=self.concurrency, nice=self.nice)
        )

    def pids(self) -> list[int]:
        return [s.pid for s in self.sidecars]

    def processes(self) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
        return {f"sidecar {s.name.removeprefix('sidecar-')}": (s.process, s.log_path) for s in self.sidecars}

    def evidence(self) -> dict[str, Any]:
        """mTLS at work: handshakes on every sidecar, and every inbound listener refusing plaintext."""
        handshakes = {s.name: tls_evidence(s.admin_port) for s in self.sidecars}
        refused = {name: plaintext_refused(LOCALHOST, port) for name, port in self.inbound.items()}
        inbound_ok = all(
            h["inbound"].get("handshake", 0) > 0 for n, h in handshakes.items() if n != "sidecar-loadgen"
        )
        outbound_ok = handshakes.get("sidecar-loadgen", {}).get("outbound", {}).get("handshake", 0) > 0
        return {
            "mesh": "envoy",
            "encrypted": True,
            "mtls_verified": inbound_ok and outbound_ok and all(refused.values()),
            "peer_identity": "spiffe://testbed.local/ns/demo/sa/<service> (URI SAN checked on every hop)",
            "plaintext_refused": refused,
            "tls": {
                name: {"inbound": h["inbound"], "outbound": h["outbound"]} for name, h in handshakes.items()
            },
            "concurrency": self.concurrency,
        }

    def versions(self) -> dict[str, str]:
        return {"envoy": envoy_version()}

    def stop(self) -> None:
        for sidecar in reversed(self.sidecars):
            sidecar.stop()


def envoy_version() -> str:
    """The Envoy binary's version, e.g. `1.40.0` (from `<commit>/1.40.0/Clean/RELEASE/BoringSSL`)."""
    from testbed import proc

    out = proc.run([envoy_binary(), "--version"], timeout=30).stdout
    build = out.strip().split("version:")[-1].strip()
    parts = build.split("/")
    return parts[1] if len(parts) > 1 else build


def _check_path(url: str, sidecars: list[Sidecar], timeout_s: float = 10.0) -> None:
    """One request through the whole chain before measuring: a broken hop fails here, with its log."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a loopback URL we built)
                if response.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}: {e.read()[:200].decode(errors='replace')}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    logs = "\n".join(f"--- {s.name}\n{s.log_tail(5)}" for s in sidecars)
    raise TestbedError(f"a request through the Envoy sidecars to {url} failed: {last}\n{logs}")


LOCAL_MESHES: dict[str, Callable[..., LocalMesh]] = {"none": NoMesh, "envoy": EnvoySidecars}
