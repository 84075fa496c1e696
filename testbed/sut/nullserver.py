"""A calibration target: an HTTP/1.1 keep-alive server with a known delay and known stalls.

It answers every request after `--delay-ms` (slept with nanosleep, far more exact than an event loop's
millisecond timers) and, with `--stall-ms S --stall-every-s E`, holds every request that arrives during
the first S ms of each E-second period until the stall ends: the server freezes for S/E of the time,
which is what closed-loop load generators hide (coordinated omission). One thread per connection.
With `--serial` the server takes one request at a time, each for `--delay-ms`, and the others queue in
arrival order: its capacity is exactly 1000/delay-ms requests per second (`testbed capacity` finds it).
A request with `Connection: close` is answered with it and the connection closed (RFC 9112 section 9.6).
`GET /_testbed/connections` answers how many connections the server has accepted so far (that one too),
so that a test can count the connections a client opened.
`python -m testbed.sut.nullserver --port 0` prints `listening on HOST:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    delay_s: float = 0.0
    stall_s: float = 0.0
    stall_every_s: float = 0.0
    body: bytes = b"ok"
    status: int = 200
    serial: bool = False  # one request at a time, each for delay_s: capacity exactly 1/delay_s


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    behaviour = Behaviour()
    epoch = time.monotonic()
    busy_until = 0.0  # --serial: when the request now being served ends (monotonic seconds)
    turns = threading.Lock()
    accepted = 0  # connections accepted so far (`COUNTER_PATH`)
    counting = threading.Lock()

    def count_connection(self) -> None:
        with self.counting:
            self.accepted += 1

    def next_turn(self, service_s: float) -> float:
        """--serial: seconds until the end of this request's turn, after every request queued before it."""
        # A virtual single server: the clock advances by exactly service_s per request, so a thread that
        # wakes late adds to its own latency but never lowers the capacity below 1/service_s.
        with self.turns:
            now = time.monotonic()
            self.busy_until = max(now, self.busy_until) + service_s
            return self.busy_until - now

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that hangs up is normal here
            super().handle_error(request, client_address)  # type: ignore[arg-type]


COUNTER_PATH = b"/_testbed/connections"


def _parse_head(head: bytes) -> tuple[bytes, int, bool]:
    """A request head's target, its body's length, and whether the client asked to close."""
    lines = head.split(b"\r\n")
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"connection":
            close = value.strip().lower() == b"close"
    return b"".join(lines[0].split(b" ")[1:2]), length, close


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        server.count_connection()
        b = server.behaviour
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reason = b"OK" if b.status < 400 else b"Error"
        response = (
            b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n"
            % (b.status, reason, len(b.body))
        ) + b.body
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            target, length, close = _parse_head(head)
            while len(buffer) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            buffer = buffer[length:]
            if target == COUNTER_PATH:
                count = b"%d" % server.accepted
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(count), count))
                continue
            if b.stall_s > 0 and b.stall_every_s > 0:
                phase = (time.monotonic() - server.epoch) % b.stall_every_s
                if phase < b.stall_s:
                    time.sleep(b.stall_s - phase)
            if b.serial:
                time.sleep(server.next_turn(b.delay_s))
            elif b.delay_s > 0:
                time.sleep(b.delay_s)
            if close:
                sock.sendall(response.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
                return
            sock.sendall(response)


def serve(host: str, port: int, behaviour: Behaviour) -> _Server:
    server = _Server((host, port), _Handler)
    server.behaviour = behaviour
    server.epoch = time.monotonic()
    server.turns = threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.sut.nullserver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--stall-ms", type=float, default=0.0)
    parser.add_argument("--stall-every-s", type=float, default=0.0)
    parser.add_argument("--body-bytes", type=int, default=2)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument(
        "--serial",
        action="store_true",
        help="one request at a time, each for --delay-ms, the rest queued: capacity 1000/delay-ms rps",
    )
    args = parser.parse_args(argv)
    if args.serial and args.delay_ms <= 0:
        parser.error("--serial needs --delay-ms above 0: the service time of each request")
    behaviour = Behaviour(
        delay_s=args.delay_ms / 1000,
        stall_s=args.stall_ms / 1000,
        stall_every_s=args.stall_every_s,
        body=b"x" * args.body_bytes,
        status=args.status,
        serial=args.serial,
    )
    server = serve(args.host, args.port, behaviour)
    host, port = server.socket.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
