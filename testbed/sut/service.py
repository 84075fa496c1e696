"""The one demo microservice: does a topology service's work, calls its downstreams, answers its payload.

Run as `python -m testbed.sut.service --topology PATH --service NAME --port P --downstream NAME=URL ...`.
The downstream URLs come from the command line, not from the topology, because under a mesh they
point at the sidecar's outbound listener instead of at the downstream itself.

Every answer carries `x-request-id` (the caller's, or a new UUID) and `x-testbed-trace`, a list of
`service=request-id` for this service and, in call order, everything its downstreams reported. It
shows which services a request reached and that the id was propagated, whatever sits in between.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools
import uvloop
from granian.constants import Interfaces
from granian.log import LogLevels
from granian.rsgi import Scope
from granian.server.embed import Server

from testbed.errors import ConfigError, TestbedError, UsageError
from testbed.spec.topology import Service, load_topology

REQUEST_ID_HEADER = "x-request-id"
TRACE_HEADER = "x-testbed-trace"
HEALTH_PATH = "/healthz"
_TRACE_HEADER_BYTES = TRACE_HEADER.encode()

# Idle keep-alive connections kept per downstream; more than the concurrency a test reaches is waste.
_MAX_IDLE = 512
# Enough to see what goes wrong without flooding the log at thousands of failing requests a second.
_MAX_LOGGED_ERRORS = 20


class _Responder(Protocol):
    """The part of granian's RSGI HTTP protocol object this service uses."""

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class _Outcome:
    """The result of one downstream call: status 502/504 and a reason when the call failed."""

    status: int
    trace: str = ""
    error: str = ""


# Downstream calls use this small HTTP/1.1 client: no asynchronous HTTP client is installed (aiohttp and
# httpx are not dependencies), the synchronous ones would need a thread per call, and asyncio streams
# parse line by line in Python. A Protocol fed straight into httptools (llhttp, the C parser uvicorn
# uses) costs one callback per read: against a granian leaf, sequential keep-alive GETs took ~88 us of
# client CPU each, against ~110 us with asyncio streams and a minimal parser, and ~25 us less at p50.
class _Connection(asyncio.Protocol):
    """One keep-alive connection to a downstream; carries one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[bool] | None = None
        self._status = 0
        self._keep_alive = False
        self._trace = b""
        self.received = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed by the downstream"))

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(e)
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == _TRACE_HEADER_BYTES:
            self._trace = value

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._keep_alive)

    async def get(self, head: bytes) -> tuple[int, bytes, bool]:
        """Send one request and wait for the whole answer: status, trace header, keep-alive."""
        assert self._transport is not None
        self._waiter = self._loop.create_future()
        self._trace = b""
        self.received = False
        self._transport.write(head)
        keep_alive = await self._waiter
        return self._status, self._trace, keep_alive

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


class _Pool:
    """Keep-alive connections to one downstream URL."""

    def __init__(self, name: str, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(f"--downstream {name}={url}: expected http://HOST:PORT[/PATH]")
        try:
            port = parts.port or 80
        except ValueError:
            raise UsageError(f"--downstream {name}={url}: bad port") from None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.name = name
        self.url = url
        self._host = parts.hostname
        self._port = port
        # Only the request id changes between requests; the rest of the head is built once.
        self._head = f"GET {path} HTTP/1.1\r\nhost: {parts.netloc}\r\n{REQUEST_ID_HEADER}: ".encode("latin-1")
        self._idle: list[_Connection] = []

    async def get(self, request_id: str) -> tuple[int, str]:
        """GET the downstream; the answer's status and trace header. Raises OSError or HttpParserError."""
        head = self._head + request_id.encode("latin-1") + b"\r\n\r\n"
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            answer = await self._exchange(conn, head, reused=True)
            if answer is not None:
                return answer
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Connection(loop), self._host, self._port)
        answer = await self._exchange(conn, head, reused=False)
        assert answer is not None
        return answer

    async def _exchange(self, conn: _Connection, head: bytes, *, reused: bool) -> tuple[int, str] | None:
        try:
            status, trace, keep_alive = await conn.get(head)
        except BaseException as e:
            # Cancelled (timeout) or broken: its state is unknown, so it never goes back to the pool.
            conn.close()
            if reused and not conn.received and isinstance(e, ConnectionError):
                # The downstream closed an idle connection as we reused it: safe to retry, nothing was
                # answered (what every keep-alive client does for idempotent requests).
                return None
            raise
        if keep_alive and not conn.closed and len(self._idle) < _MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()
        return status, trace.decode("latin-1")

    def close(self) -> None:
        """Close the idle connections."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class _App:
    """The RSGI application: one instance per process, configured from one topology service."""

    def __init__(self, service: Service, pools: Sequence[_Pool]) -> None:
        self._name = service.name
        self._parallel = service.call_mode == "parallel"
        self._pools = tuple(pools)
        self._timeout_s = service.call_timeout_ms / 1000
        self._spin_ns = service.work_us * 1000 if service.work == "busy" else 0
        self._sleep_s = service.work_us / 1e6 if service.work == "sleep" else 0.0
        self._body = b"x" * service.payload_bytes
        self.errors = 0

    async def __rsgi__(self, scope: Scope, proto: _Responder) -> None:
        """Answer one request."""
        if scope.proto != "http":
            return
        if scope.path == HEALTH_PATH:
            proto.response_bytes(200, [("content-type", "text/plain")], b"ok\n")
            return
        request_id = scope.headers.get(REQUEST_ID_HEADER)
        if not _acceptable_request_id(request_id):
            request_id = str(uuid.uuid4())

        if self._spin_ns:
            # Spinning holds the event loop like real CPU-bound handler code in a one-worker service.
            deadline = time.perf_counter_ns() + self._spin_ns
            while time.perf_counter_ns() < deadline:
                pass
        elif self._sleep_s:
            await asyncio.sleep(self._sleep_s)

        trace = f"{self._name}={request_id}"
        if self._pools:
            outcomes = await self._call_all(request_id)
            for outcome in outcomes:
                if outcome.error:
                    self._log_error(request_id, outcome.error)
                    body = f"{self._name}: downstream {outcome.error}\n".encode()
                    headers = [("content-type", "text/plain"), (REQUEST_ID_HEADER, request_id)]
                    proto.response_bytes(outcome.status, [*headers, (TRACE_HEADER, trace)], body)
                    return
            trace = ",".join([trace, *(o.trace for o in outcomes)])
        proto.response_bytes(
            200,
            [
                ("content-type", "application/octet-stream"),
                (REQUEST_ID_HEADER, request_id),
                (TRACE_HEADER, trace),
            ],
            self._body,
        )

    async def _call_all(self, request_id: str) -> list[_Outcome]:
        if self._parallel and len(self._pools) > 1:
            return list(await asyncio.gather(*(self._call(p, request_id) for p in self._pools)))
        outcomes: list[_Outcome] = []
        for pool in self._pools:
            outcome = await self._call(pool, request_id)
            outcomes.append(outcome)
            if outcome.error:
                break  # a sequential caller does not go on once a step failed
        return outcomes

    async def _call(self, pool: _Pool, request_id: str) -> _Outcome:
        try:
            async with asyncio.timeout(self._timeout_s):
                status, trace = await pool.get(request_id)
        except TimeoutError:
            return _Outcome(status=504, error=f"{pool.name}: no answer within {self._timeout_s * 1000:g} ms")
        except (OSError, httptools.HttpParserError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
            return _Outcome(status=502, error=f"{pool.name}: {reason}")
        if not 200 <= status < 300:
            return _Outcome(status=502, error=f"{pool.name}: answered {status}")
        return _Outcome(status=status, trace=trace)

    def _log_error(self, request_id: str, error: str) -> None:
        self.errors += 1
        if self.errors <= _MAX_LOGGED_ERRORS:
            suffix = " (further errors are only counted)" if self.errors == _MAX_LOGGED_ERRORS else ""
            message = f"{self._name}: request {request_id}: downstream {error}{suffix}"
            print(message, file=sys.stderr, flush=True)


def _acceptable_request_id(value: str | None) -> bool:
    # It is copied into outgoing request heads, so only short printable ASCII is passed on.
    return value is not None and 0 < len(value) <= 128 and value.isascii() and value.isprintable()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.sut.service", description="Run one service of a testbed topology."
    )
    parser.add_argument("--topology", required=True, help="topology name or path to its TOML file")
    parser.add_argument("--service", required=True, help="which service of the topology to be")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument(
        "--downstream",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="where to reach downstream NAME (repeat once per downstream in the topology's calls)",
    )
    return parser.parse_args(argv)


def _downstreams(service: Service, pairs: Sequence[str]) -> list[_Pool]:
    urls: dict[str, str] = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep or not name or not url:
            raise UsageError(f"--downstream {pair}: expected NAME=URL")
        if name in urls:
            raise UsageError(f"--downstream {name}: given twice")
        urls[name] = url
    missing = [name for name in service.calls if name not in urls]
    if missing:
        raise UsageError(f"{service.name} calls {', '.join(missing)}: give --downstream NAME=URL for each")
    extra = [name for name in urls if name not in service.calls]
    if extra:
        raise UsageError(f"--downstream {extra[0]}: {service.name} does not call it")
    return [_Pool(name, urls[name]) for name in service.calls]


async def _serve(app: _App, pools: Sequence[_Pool], host: str, port: int) -> None:
    # Granian's embedded server runs its Rust HTTP stack beside this process's own uvloop loop: one
    # process per service (its CPU and memory are one psutil.Process) and the downstream client shares
    # the loop. Against a 1 KiB leaf with wrk on 2 cores it matched uvicorn+uvloop+httptools at one
    # connection (p50 140-220 us vs 160-215 us) and served ~1.5x the requests at 16 connections (20-26k
    # vs 13-16k/s); granian's usual worker-process mode was no faster and adds a supervisor process.
    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        websockets=False,
        backlog=1024,
        log_level=LogLevels.warning,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.serve()
    finally:
        for pool in pools:
            pool.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one service until SIGINT or SIGTERM; the exit code."""
    args = _parse_args(argv)
    try:
        topology = load_topology(args.topology)
        try:
            service = topology.service(args.service)
        except KeyError:
            raise ConfigError(
                f"{args.topology}: no service {args.service!r} (defined: {', '.join(topology.names)})"
            ) from None
        if not 0 < args.port < 65536:
            raise UsageError(f"--port {args.port}: must be 1..65535")
        pools = _downstreams(service, args.downstream)
    except TestbedError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.return_code
    app = _App(service, pools)
    calls = ", ".join(f"{p.name}={p.url}" for p in pools) or "none"
    print(f"{service.name}: listening on http://{args.host}:{args.port} (downstreams: {calls})", flush=True)
    # What exists now lives for the whole run: keep the collector from scanning it again and again.
    gc.freeze()
    uvloop.run(_serve(app, pools, args.host, args.port))
    if app.errors:
        print(f"{service.name}: {app.errors} requests failed on a downstream", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
