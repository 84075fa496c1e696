"""Free TCP ports on loopback for the listeners the testbed starts (services, sidecars, the Locust master).

A port the kernel hands out for `bind(port 0)` comes from the ephemeral range, the same range that every
outgoing connection's local port comes from. Between choosing a port and the listener binding it, one of
the many connections of a run (the load generator's, a sidecar's upstreams) can take it: a real failure
seen here ("ports already in use" for an Envoy sidecar). So listeners get ports *below* the ephemeral
range (`net.ipv4.ip_local_port_range`), which outgoing connections never use, chosen at random so that two
runs on one machine rarely try the same ones, and each checked by binding it. Where nothing lies below the
ephemeral range (the loadgen pod on Kubernetes opens it to 1024-65535), the ports reserved out of it
(`net.ipv4.ip_local_reserved_ports`, which the pod sets for this) are used instead.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence
from pathlib import Path

LOCALHOST = "127.0.0.1"
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_RESERVED_FILE = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")
_LISTEN_SPAN = 10_000
_LOWEST = 10_000
_TRIES = 200


def listener_range(range_file: Path = _RANGE_FILE, reserved_file: Path = _RESERVED_FILE) -> Sequence[int]:
    """Ports for listeners: up to 10,000 just below the ephemeral range, else the ports reserved out of it
    (empty when neither can be read)."""
    try:
        low = int(range_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    below = range(max(_LOWEST, low - _LISTEN_SPAN), low)
    return below or reserved_ports(reserved_file)


def reserved_ports(reserved_file: Path = _RESERVED_FILE) -> list[int]:
    """The ports of `net.ipv4.ip_local_reserved_ports` ("5557,5560-5579"), which connect() never picks."""
    ports: list[int] = []
    try:
        for item in reserved_file.read_text().strip().split(","):
            first, _, last = item.strip().partition("-")
            if first:
                ports += range(int(first), int(last or first) + 1)
    except (OSError, ValueError):
        return []
    return ports


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """`count` distinct ports that are free on `host` right now, outside the ephemeral range if possible."""
    # All sockets stay open until every port is chosen, so that no port is chosen twice.
    candidates = listener_range()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_bind_one(host, candidates))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = LOCALHOST) -> int:
    return free_ports(1, host)[0]


def _bind_one(host: str, candidates: Sequence[int]) -> socket.socket:
    for port in random.sample(candidates, min(_TRIES, len(candidates))):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            continue
        return sock
    # No usable range (or all tried were taken): let the kernel choose, from the ephemeral range.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock
