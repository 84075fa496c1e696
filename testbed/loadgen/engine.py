"""The open-loop engine on Locust. Importing this module monkey-patches the process with gevent (Locust does).

One greenlet walks the intended send times (`schedule.py`) and hands each send to a bounded gevent pool of
`connections` greenlets sharing a FastHttpSession (Locust's FastHttpUser client) with as many keep-alive
connections. A send never waits for an earlier response, only for a free connection, and every wait shows
up as lateness: the `intended` histogram is the coordinated-omission-corrected latency.

Closed loop (`LoadConfig.loop`, the publishers' method, labelled as such in the result) runs `users`
greenlets instead, each sending its next request as soon as the previous answer arrives, one keep-alive
connection each. With `new_connection` (either loop) every request opens a fresh TCP connection, and the
pool closes it after the response instead of keeping it: the connect is then timed as part of the request.

The same User class runs in-process (LocalRunner) and in Locust worker processes (WorkerRunner); the
configuration and the common start time come in a `testbed_go` message and the histograms go back in a
`testbed_result` message, so `--processes N` locally and Locust's distributed mode in a cluster share code.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import gc
import logging
import math
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
import gevent.local
import gevent.lock
import gevent.monkey
import gevent.socket
import gevent.threadpool
import locust
import psutil
from geventhttpclient.connectionpool import ConnectionPool
from geventhttpclient.url import URL
from hdrh.histogram import HdrHistogram
from locust import User, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment

from testbed.errors import TestbedError
from testbed.loadgen import marks
from testbed.loadgen.config import LoadConfig
from testbed.loadgen.result import (
    HISTOGRAMS,
    SERIES_HISTOGRAMS,
    SERIES_INTERVAL_S,
    ShareResult,
    decode,
    encode,
    new_histogram,
    record,
)
from testbed.loadgen.schedule import intervals, phase, profile_offsets
from testbed.loadgen.timer import ScheduleClock

LOCUST_VERSION: str = locust.__version__
GO, RESULT = "testbed_go", "testbed_result"

#: A send that is due inside the window still goes out after the window closes, up to this late: its
#: lateness is recorded (and judged), rather than the last requests of a trial being silently dropped
#: because of one hiccup of the host in the final milliseconds. Beyond it the generator is hopelessly
#: behind; the sends left are counted as not sent and the achieved rate shows it.
LATE_GRACE_S = 1.0

log = logging.getLogger("testbed.loadgen")

#: Set by the `testbed_go` message: (config, share index, share count, common start as wall-clock time).
_go: gevent.event.AsyncResult = gevent.event.AsyncResult()


class _Wire(gevent.local.local):  # type: ignore[misc]
    """Per-greenlet timestamps of the bytes: the request's first byte out, the response's last byte in."""

    sent: float | None = None
    received: float | None = None
    connecting: float | None = None  # when this request's connect() began (a fresh connection only)


_wire = _Wire()


class _StampedSocket(gevent.socket.socket):  # type: ignore[misc]
    """A TCP socket that stamps when the request leaves and when the response arrives.

    Service time is then what the wire saw, without the client's own Python work before the send and
    after the last byte (Locust and geventhttpclient cost about 0.3 ms per request on a slow core, which
    would otherwise be measured as latency of the system under test).
    """

    def connect(self, address: Any) -> None:
        if _wire.connecting is None:
            _wire.connecting = time.perf_counter()
        super().connect(address)

    def sendall(self, data: Any, flags: int = 0) -> None:
        if _wire.sent is None:
            _wire.sent = time.perf_counter()
        super().sendall(data, flags)

    def recv(self, *args: Any) -> bytes:
        data: bytes = super().recv(*args)
        _wire.received = time.perf_counter()
        return data

    def recv_into(self, *args: Any) -> int:
        n: int = super().recv_into(*args)
        _wire.received = time.perf_counter()
        return n


def _create_stamped_socket(pool: Any, family: int, socktype: int, protocol: int) -> gevent.socket.socket:
    return _StampedSocket(family, socktype, protocol)


# Only this process's own client pools create sockets here: the engine process does nothing else.
ConnectionPool._create_tcp_socket = _create_stamped_socket  # type: ignore[method-assign,assignment]


#: A Locust worker hands its statistics to the master every few seconds and resets them: keep the sums.
_reported_to_master: Counter[str] = Counter()


def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    stats_total = data.get("stats_total", {})
    _reported_to_master["num_requests"] += stats_total.get("num_requests", 0)
    _reported_to_master["num_failures"] += stats_total.get("num_failures", 0)


def _on_go(environment: Environment, msg: Any, **_: Any) -> None:
    data = msg.data
    _go.set((LoadConfig.from_json(data["config"]), data["share"], data["shares"], data["t0"]))


def error_kind(error: object) -> str:
    """The error kind a failed request is counted under: the exception's type, or what EADDRNOTAVAIL means."""
    # connect() fails with EADDRNOTAVAIL when every local port to the destination is taken, most of them
    # in TIME_WAIT after a --new-connection load: a limit of the generator's host, not of the target.
    if isinstance(error, OSError) and error.errno == errno.EADDRNOTAVAIL:
        return "EADDRNOTAVAIL (local ports exhausted)"
    return type(error).__name__


def users_of_share(users: int, share: int, shares: int) -> int:
    """Closed loop: this share's users, the remainder spread over the first shares (they add up)."""
    return users // shares + (1 if share < users % shares else 0)


#: Indexes into `_Bucket.hists` (the order of `testbed.loadgen.result.HISTOGRAMS`).
SERVICE, INTENDED, LATENESS = range(3)


class _Bucket:
    """The measured requests of one interval of the series within one profile segment.

    A request is recorded once, into its bucket; the series (by interval), the segments and the whole
    window are exact merges of buckets at the end. Once the schedule has moved on and its last request
    has finished, a bucket is sealed: its three histograms (about 140 KB each) are kept encoded instead.
    """

    __slots__ = (
        "completed",
        "encoded",
        "errors",
        "hists",
        "in_flight",
        "interval",
        "passed",
        "scheduled",
        "segment",
        "sent",
        "waits",
    )

    def __init__(self, interval: int, segment: int) -> None:
        self.interval, self.segment = interval, segment
        self.hists = tuple(new_histogram() for _ in HISTOGRAMS)
        self.encoded: tuple[str, ...] = ()
        self.scheduled = self.sent = self.completed = self.errors = self.waits = self.in_flight = 0
        self.passed = False  # no request will be added: the schedule (or the clock) is past it

    def pass_by(self) -> None:
        """The schedule has moved on: no request will be added; sealed once its last one has finished."""
        self.passed = True
        if not self.in_flight:
            self.seal()

    def finish_one(self) -> None:
        """One of its requests has finished: sealed if it was the last and the schedule has moved on."""
        self.in_flight -= 1
        if self.passed and not self.in_flight:
            self.seal()

    def seal(self) -> None:
        if not self.encoded:
            self.encoded = tuple(encode(h) for h in self.hists)
            self.hists = ()

    def histogram(self, index: int) -> HdrHistogram:
        return self.hists[index] if self.hists else decode(self.encoded[index])


def _merge_buckets(buckets: list[_Bucket], index: int) -> str:
    total = new_histogram()
    for b in buckets:
        total.add(b.histogram(index))
    return encode(total)


def _close_after_each_response(session: FastHttpSession, url: str) -> None:
    """Make the session's pool close every connection after its response instead of keeping it.

    geventhttpclient 2.6.1 (`connectionpool.py`) hands a finished socket to `return_socket` (kept for the
    next request) or, when the response says the connection must close, to `release_socket` (closed, its
    slot freed): routing the first to the second gives one TCP connection per request whatever the server
    answers. The client is the one `LocustUserAgent._urlopen` (locust 2.47.0, `contrib/fasthttp.py`)
    looks up by host and port, created here ahead of the first request.
    """
    pool = session.client.clientpool.get_client(URL(url))._connection_pool
    pool.return_socket = pool.release_socket  # type: ignore[method-assign]


def run_share(
    environment: Environment, config: LoadConfig, share: int, shares: int, t0_wall: float
) -> ShareResult:
    """Send this share's part of the load (open or closed loop) and return what it measured."""
    return _Share(environment, config, share, shares, t0_wall).run()


class _Share:
    """The state of one share's trial: the session, the buckets of measured requests and the counters."""

    def __init__(
        self, environment: Environment, config: LoadConfig, share: int, shares: int, t0_wall: float
    ) -> None:
        self.environment, self.config, self.share, self.shares = environment, config, share, shares
        self.users = users_of_share(config.users, share, shares) if config.loop == "closed" else 0
        # Closed loop: one connection per user. Open: ceil, so that every share gets its part.
        self.connections = self.users or max(1, -(-config.connections // shares))
        self.session = FastHttpSession(
            base_url=config.base_url,
            request_event=environment.events.request,
            user=None,
            concurrency=self.connections,
            network_timeout=config.timeout_s,
            connection_timeout=config.timeout_s,
            max_retries=0,
        )
        # A benchmark client keeps no cookies: the jar costs about 40 us per request in Python and would
        # make the load depend on what the server sets.
        self.session.client.cookiejar = None
        if config.new_connection:
            _close_after_each_response(self.session, config.url)
        self.slots = gevent.lock.BoundedSemaphore(self.connections)
        self.closed = False
        self.body = "x" * config.body_bytes if config.body_bytes else None
        self.headers = dict(config.headers)
        if config.new_connection:
            # RFC 9112 section 9.6: a client that does not keep connections sends `close` in every request.
            self.headers["Connection"] = "close"
        self.error_kinds: Counter[str] = Counter()
        self.connection_waits = 0
        # perf_counter for the schedule; the common start comes as wall-clock time so that it also holds
        # across machines (Locust's distributed mode in a cluster).
        self.t0 = time.perf_counter() + (t0_wall - time.time())
        self.window_start_unix = t0_wall + config.warmup_s
        self.measure_start = self.t0 + config.warmup_s
        self.end = self.measure_start + config.duration_s
        # After the window, the tail (`LoadConfig.tail_s`): the same schedule goes on, sent and not recorded.
        self.tail_end = self.end + config.tail_s
        # Where a measured request goes: the series' intervals and the profile's segments (closed loop:
        # one), in seconds into the window; the last segment ends exactly where the window does.
        self.shape = config.shape
        self.grid = intervals(config.duration_s, SERIES_INTERVAL_S)
        bounds = self.shape.bounds() if self.shape is not None else [(0.0, config.duration_s)]
        self.segment_starts = [start for start, _ in bounds]
        self.buckets: dict[tuple[int, int], _Bucket] = {}
        self.bucket: _Bucket | None = None
        self.next_edge = -math.inf  # where the current bucket ends, in seconds into the window
        self.process = psutil.Process()
        self.cpu_mark: tuple[float, float] | None = None
        #: (wall, CPU) at each segment's start (the first is `cpu_mark`).
        self.segment_marks: list[tuple[float, float] | None] = [None] * len(bounds)

    def _cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def _mark_cpu(self) -> None:
        self.cpu_mark = self.segment_marks[0] = (time.perf_counter(), self._cpu_seconds())

    def _mark_segment(self, index: int) -> None:
        self.segment_marks[index] = (time.perf_counter(), self._cpu_seconds())

    def _bucket_at(self, w: float) -> _Bucket:
        """The bucket of a request `w` seconds into the window (called with `w` never decreasing)."""
        if w < self.next_edge and self.bucket is not None:
            return self.bucket
        grid, starts = self.grid, self.segment_starts
        k = min(max(int(w // SERIES_INTERVAL_S), 0), len(grid) - 1)
        while k + 1 < len(grid) and w >= grid[k + 1][0]:  # the grid's own edges decide, not the division
            k += 1
        while k > 0 and w < grid[k][0]:
            k -= 1
        j = max(bisect.bisect_right(starts, w) - 1, 0)
        edges = [grid[k + 1][0]] if k + 1 < len(grid) else []
        edges += [starts[j + 1]] if j + 1 < len(starts) else []
        self.next_edge = min(edges, default=math.inf)
        previous = self.bucket
        bucket = self.buckets.get((k, j))
        if bucket is None:
            bucket = self.buckets[(k, j)] = _Bucket(k, j)
        if previous is not None and previous is not bucket:
            previous.pass_by()
        self.bucket = bucket
        return bucket

    def send(self, intended: float, bucket: _Bucket | None) -> None:
        try:
            self._send(intended, bucket)
        finally:
            if bucket is not None:
                bucket.finish_one()
            self.slots.release()

    def _send(self, intended: float | None, bucket: _Bucket | None) -> None:
        """One request, recorded into `bucket` (None: not measured); `intended` is None in closed loop,
        where there is no schedule to be late on."""
        _wire.sent = _wire.received = _wire.connecting = None
        actual = time.perf_counter()
        try:
            response = self.session.request(
                self.config.method, self.config.path, data=self.body, headers=self.headers
            )
            done = time.perf_counter()
            status = response.status_code or 0
            error = getattr(response, "error", None)  # set by Locust only when the request failed
            kind = None
            if error is not None or not 200 <= status < 400:
                kind = f"HTTP {status}" if status else error_kind(error)
        except Exception as e:  # a bug here must show as errors, never as a quietly short histogram
            done, kind = time.perf_counter(), f"internal error: {type(e).__name__}: {e}"
        if bucket is None or self.closed:  # a send that outlived the drain was already counted as an error
            return
        # A fresh connection's handshake is part of the request (as for a client without keep-alive).
        sent = _wire.connecting if self.config.new_connection and _wire.connecting else _wire.sent
        if sent is not None and _wire.received is not None and _wire.received >= sent:
            actual, done = sent, _wire.received
        bucket.completed += 1
        hists = bucket.hists
        if kind is not None:
            bucket.errors += 1
            self.error_kinds[kind] += 1
        else:
            record(hists[SERVICE], done - actual)
            if intended is not None:
                record(hists[INTENDED], done - intended)
        if intended is not None:
            record(hists[LATENESS], actual - intended)

    def _drain(self, timeout_s: float) -> bool:
        """Wait until every send has finished (all slots free again), up to a deadline."""
        deadline = time.perf_counter() + timeout_s
        while self.slots.counter < self.connections:
            if time.perf_counter() > deadline:
                return False
            gevent.sleep(0.01)
        return True

    def _give_up_on_unfinished(self) -> None:
        """The drain gave up: the measured sends still out count as errors (a tail's send does not)."""
        self.closed = True
        for b in self.buckets.values():
            b.completed += b.in_flight
            b.errors += b.in_flight
            self.error_kinds["unfinished at the end of the trial"] += b.in_flight

    def run(self) -> ShareResult:
        config = self.config
        gevent.spawn_later(max(0.0, self.measure_start - time.perf_counter()), self._mark_cpu)
        for index, start in enumerate(self.segment_starts[1:], 1):
            at = self.measure_start + start
            gevent.spawn_later(max(0.0, at - time.perf_counter()), self._mark_segment, index)
        if config.loop == "closed":
            window_end, drained, clock_name = self._run_closed()
        else:
            window_end, clock_name = self._run_open()
            drained = self._drain(config.timeout_s + 2)
        wall_end, cpu_end = window_end or (time.perf_counter(), self._cpu_seconds())
        if not drained:
            self._give_up_on_unfinished()
        window, cpu_percent = config.duration_s, 0.0
        if self.cpu_mark is not None:
            window = wall_end - self.cpu_mark[0]
            cpu_percent = 100.0 * (cpu_end - self.cpu_mark[1]) / window if window > 0 else 0.0
        buckets = sorted(self.buckets.values(), key=lambda b: (b.interval, b.segment))
        by_interval: dict[int, list[_Bucket]] = {}
        for b in buckets:
            b.seal()
            by_interval.setdefault(b.interval, []).append(b)
        total = self.environment.stats.total
        reported = _reported_to_master
        return ShareResult(
            share=self.share,
            scheduled=sum(b.scheduled for b in buckets),
            sent=sum(b.sent for b in buckets),
            completed=sum(b.completed for b in buckets),
            errors=sum(b.errors for b in buckets),
            error_kinds=dict(self.error_kinds),
            hdr={name: _merge_buckets(buckets, i) for i, name in enumerate(HISTOGRAMS)},
            cpu_percent=round(cpu_percent, 2),
            window_s=round(window, 4),
            window_start_unix=self.window_start_unix,
            locust_requests=total.num_requests + reported["num_requests"],
            locust_failures=total.num_failures + reported["num_failures"],
            connection_waits=self.connection_waits,
            schedule_clock=clock_name,
            users=self.users,
            series=[_part(by_interval.get(k, []), SERIES_HISTOGRAMS) for k in range(len(self.grid))],
            segments=self._segments(buckets, (wall_end, cpu_end)),
        )

    def _segments(self, buckets: list[_Bucket], end: tuple[float, float]) -> list[dict[str, Any]]:
        """Each profile segment's part (open loop, several segments: one is the whole window)."""
        if self.shape is None or len(self.segment_starts) == 1:
            return []
        out = []
        marks = [*self.segment_marks, end]
        by_segment: dict[int, list[_Bucket]] = {}
        for b in buckets:
            by_segment.setdefault(b.segment, []).append(b)
        for j in range(len(self.segment_starts)):
            part = _part(by_segment.get(j, []), HISTOGRAMS)
            start, stop = marks[j], marks[j + 1]
            cpu = 0.0
            if start is not None and stop is not None and stop[0] > start[0]:
                cpu = 100.0 * (stop[1] - start[1]) / (stop[0] - start[0])
            out.append(part | {"cpu_percent": round(cpu, 2)})
        return out

    def _user(self) -> None:
        """A closed-loop user: the next request as soon as the previous answer is in, until the end."""
        gevent.sleep(max(0.0, self.t0 - time.perf_counter()))  # all users start together
        while (now := time.perf_counter()) < self.tail_end:
            # Measured by the request's start, as open loop's by its intended time; no yield between
            # the clock and the bucket, so the buckets are reached in time order.
            bucket = (
                self._bucket_at(now - self.measure_start) if self.measure_start <= now < self.end else None
            )
            if bucket is not None:
                bucket.sent += 1
                bucket.in_flight += 1
            try:
                self._send(None, bucket)
            finally:
                if bucket is not None:
                    bucket.finish_one()

    def _run_closed(self) -> tuple[tuple[float, float] | None, bool, str]:
        """Run this share's users; (wall, CPU) at the window's end, whether all finished, the clock."""
        marks_end: list[tuple[float, float]] = []
        gevent.spawn_later(
            max(0.0, self.end - time.perf_counter()),
            lambda: marks_end.append((time.perf_counter(), self._cpu_seconds())),
        )
        gc.collect()  # as in `_run_open`
        gc.freeze()
        users = [gevent.spawn(self._user) for _ in range(self.users)]
        try:
            gevent.joinall(users, timeout=self.tail_end - time.perf_counter() + self.config.timeout_s + 2)
        finally:
            gc.unfreeze()
        drained = all(user.dead for user in users)
        if not drained:  # count the unfinished before the kill unwinds them
            self._give_up_on_unfinished()
            gevent.killall(users)
            drained = True  # counted above, nothing left to count
        return (marks_end[0] if marks_end else None), drained, "none: closed loop"

    def _run_open(self) -> tuple[tuple[float, float] | None, str]:
        """Walk the schedule; (wall, CPU) when the window ended, and the clock that woke the sends."""
        config, shape = self.config, self.shape
        assert shape is not None  # open loop
        warmup_s = config.warmup_s
        offsets = profile_offsets(
            shape,
            warmup_s=warmup_s,
            total_s=warmup_s + config.duration_s + config.tail_s,
            arrival=config.arrival,
            share=self.share,
            shares=self.shares,
            seed=config.seed,
        )
        # Everything alive now (Locust, gevent, the session) lives for the whole trial: moved out of the
        # collector's reach, a full collection inside the window scans only the trial's own objects (a
        # full collection of everything took about 28 ms here: a stall of every send due meanwhile).
        gc.collect()
        gc.freeze()
        clock = ScheduleClock()  # a timerfd: gevent's own timers wake on whole milliseconds only
        clock_name = "timerfd" if clock.precise else "gevent"
        window_end: tuple[float, float] | None = None  # (wall, CPU) when the tail's first send comes
        try:
            for offset in offsets:
                intended = self.t0 + offset
                part = phase(offset, warmup_s=warmup_s, duration_s=config.duration_s)
                tail = part == "tail"
                if tail and window_end is None:
                    window_end = time.perf_counter(), self._cpu_seconds()
                # Attributed by the intended send time: the interval and segment the schedule meant.
                bucket = self._bucket_at(offset - warmup_s) if part == "window" else None
                if bucket is not None:
                    bucket.scheduled += 1
                now = time.perf_counter()
                if now >= (self.tail_end if tail else self.end) + LATE_GRACE_S:
                    continue  # far behind when the window closed: counted as not sent (the rate shows it)
                if intended > now:
                    clock.wait_until(intended)
                # A raw greenlet (a tenth of the cost of a pooled Greenlet) per send; the semaphore bounds
                # them to the connections, and waiting for a free one shows as lateness.
                if bucket is not None:
                    if self.slots.locked():
                        self.connection_waits += 1
                        bucket.waits += 1
                    bucket.in_flight += 1
                    bucket.sent += 1
                self.slots.acquire()
                gevent.spawn_raw(self.send, intended, bucket)
        finally:
            clock.close()
            gc.unfreeze()
        return window_end, clock_name


def _part(buckets: list[_Bucket], names: tuple[str, ...]) -> dict[str, Any]:
    """The counts and merged histograms of some buckets (one interval, or one segment)."""
    return {
        "scheduled": sum(b.scheduled for b in buckets),
        "sent": sum(b.sent for b in buckets),
        "completed": sum(b.completed for b in buckets),
        "errors": sum(b.errors for b in buckets),
        "connection_waits": sum(b.waits for b in buckets),
        "hdr": {name: _merge_buckets(buckets, HISTOGRAMS.index(name)) for name in names},
    }


class OpenLoopUser(User):
    """Locust's unit of work: runs one share of the open-loop schedule, reports it, then idles."""

    # Locust requires a host or it refuses to start the user; the real target comes with the go message.
    host = "http://127.0.0.1"

    @task
    def open_loop(self) -> None:
        config, share, shares, t0 = _go.get()
        runner = self.environment.runner
        try:
            result: dict[str, Any] = run_share(self.environment, config, share, shares, t0).to_dict()
        except Exception:
            result = {"share": share, "error": traceback.format_exc()}
        runner.send_message(RESULT, result)
        gevent.event.Event().wait()  # until the runner quits


def _environment() -> Environment:
    return Environment(user_classes=[OpenLoopUser], events=events)


def _collector(expected: int) -> tuple[Callable[..., None], list[dict[str, Any]], gevent.event.Event]:
    results: list[dict[str, Any]] = []
    done = gevent.event.Event()

    def on_result(environment: Environment, msg: Any, **_: Any) -> None:
        results.append(msg.data)
        if len(results) >= expected:
            done.set()

    return on_result, results, done


def _shares(results: list[dict[str, Any]]) -> list[ShareResult]:
    failed = [r for r in results if "error" in r]
    if failed:
        raise TestbedError("a load generator process failed:\n" + failed[0]["error"])
    return [ShareResult.from_dict(r) for r in sorted(results, key=lambda r: int(r["share"]))]


def _deadline(config: LoadConfig) -> float:
    return config.warmup_s + config.duration_s + config.tail_s + config.timeout_s + 30.0


@contextlib.contextmanager
def _interrupts_to_main_greenlet() -> Iterator[None]:
    """Deliver SIGINT and SIGTERM as KeyboardInterrupt to the main greenlet only.

    Python runs a signal handler in whichever greenlet happens to be running; when that is one of the
    send greenlets, gevent's hub prints the KeyboardInterrupt with a traceback before passing it on.
    gevent's own signal watcher runs in the hub instead, which throws into the main greenlet (as the hub
    itself does with system errors), so Ctrl-C ends with the one-line message and nothing else.
    """
    main = gevent.getcurrent()
    hub = gevent.get_hub()

    def interrupt() -> None:
        hub.loop.run_callback(main.throw, KeyboardInterrupt)

    watchers = [gevent.signal_handler(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)]
    try:
        yield
    finally:
        for watcher in watchers:
            watcher.cancel()


def run_local(config: LoadConfig, *, start_delay_s: float = 0.2) -> list[ShareResult]:
    """One process: Locust's LocalRunner with one open-loop user."""
    env = _environment()
    runner = env.create_local_runner()
    on_result, results, done = _collector(1)
    runner.register_message(GO, _on_go)
    runner.register_message(RESULT, on_result)
    announcements: list[gevent.Greenlet] = []
    with _interrupts_to_main_greenlet():
        try:
            runner.start(1, spawn_rate=1)
            t0 = time.time() + start_delay_s
            runner.send_message(GO, _go_data(config, 0, 1, t0))
            announcements += _announce_window(config, t0)
            if not done.wait(timeout=_deadline(config)):
                raise TestbedError("the load generator did not report within its deadline")
            shares = _shares(results)
            # The last send is due before the window's end, and its answer may come before it too.
            gevent.joinall(announcements)
            return shares
        finally:
            gevent.killall(announcements)
            runner.quit()


def _announce_window(config: LoadConfig, t0_wall: float) -> list[gevent.Greenlet]:
    """A line on stderr when the measured window starts and one when it ends (`testbed.loadgen.marks`).

    The shares start their schedules at `t0_wall` and measure from `t0_wall + warmup_s` for `duration_s`
    (`_Share`): the coordinating process knows both edges, and whoever runs it (kind: the platform, over
    `kubectl exec`) reads its own counters when the lines come.
    """
    start = t0_wall + config.warmup_s
    end = start + config.duration_s
    return [
        gevent.spawn_later(max(0.0, at - time.time()), _print_mark, edge, at)
        for edge, at in ((marks.START, start), (marks.END, end))
    ]


def _print_mark(edge: str, at: float) -> None:
    # libev times `spawn_later` from its cached loop time, which lags while the loop is busy (Locust's
    # start-up): the timer can fire early, so the rest of the wait is slept here. Never before the edge.
    while (left := at - time.time()) > 0:
        gevent.sleep(left)
    print(marks.line(edge, at), file=sys.stderr, flush=True)


def _go_data(config: LoadConfig, share: int, shares: int, t0: float) -> dict[str, Any]:
    return {"config": config.to_json(), "share": share, "shares": shares, "t0": t0}


def run_master(
    config: LoadConfig,
    *,
    workers: int,
    bind_host: str = "127.0.0.1",
    bind_port: int,
    on_listening: Callable[[], None] = lambda: None,
    connect_timeout_s: float = 60.0,
    start_delay_s: float = 1.0,
) -> list[ShareResult]:
    """Locust's distributed mode: wait for `workers` workers, give each a share, merge what they send back."""
    env = _environment()
    runner = env.create_master_runner(master_bind_host=bind_host, master_bind_port=bind_port)
    on_result, results, done = _collector(workers)
    runner.register_message(RESULT, on_result)
    announcements: list[gevent.Greenlet] = []
    with _interrupts_to_main_greenlet():
        try:
            on_listening()
            deadline = time.monotonic() + connect_timeout_s
            while len(runner.clients.ready) < workers:
                if time.monotonic() > deadline:
                    raise TestbedError(
                        f"only {len(runner.clients.ready)} of {workers} load generator workers connected "
                        f"within {connect_timeout_s:g} s "
                        f"(check that the workers can reach {bind_host}:{bind_port})"
                    )
                gevent.sleep(0.05)
            client_ids = [c.id for c in runner.clients.ready][:workers]
            runner.start(workers, spawn_rate=workers * 10)
            t0 = time.time() + start_delay_s
            for share, client_id in enumerate(client_ids):
                runner.send_message(GO, _go_data(config, share, workers, t0), client_id=client_id)
            announcements += _announce_window(config, t0)
            if not done.wait(timeout=_deadline(config) + start_delay_s):
                raise TestbedError(
                    f"only {len(results)} of {workers} load generator workers reported in time"
                )
            shares = _shares(results)
            gevent.joinall(announcements)  # as in `run_local`: the end mark is never left out
            return shares
        finally:
            gevent.killall(announcements)
            runner.quit()


def run_worker(master_host: str, master_port: int, *, parent_pid: int | None = None) -> None:
    """A Locust worker: runs the shares the master sends until the master says quit."""
    env = _environment()
    runner = env.create_worker_runner(master_host=master_host, master_port=master_port)
    runner.register_message(GO, _on_go)
    env.events.report_to_master.add_listener(_on_report_to_master)  # type: ignore[no-untyped-call]
    if parent_pid is not None:
        gevent.spawn(_exit_with_parent, parent_pid)
    with _interrupts_to_main_greenlet():
        runner.greenlet.join()


def _exit_with_parent(parent_pid: int) -> None:
    """A worker started by a local master must not outlive it, even if the master was killed."""
    while psutil.pid_exists(parent_pid):
        gevent.sleep(1.0)
    sys.exit(3)
