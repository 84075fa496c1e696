"""Waiting for a send's intended time to within tens of microseconds, inside gevent's loop.

gevent's own timers sit on libev, whose epoll backend rounds every wait *up* to whole milliseconds
(libev 4.33, `ev_epoll.c` `epoll_poll`: `epoll_wait(..., EV_TS_TO_MSEC(timeout))`, with
`#define EV_TS_TO_MSEC(a) a * 1e3 + 0.9999` in `ev.c`). A schedule driven by `gevent.sleep` therefore
sends 0.5-1 ms late as a rule, and that error lands in every latency measured from the intended send time.

A Linux timerfd armed at the absolute intended time (CLOCK_MONOTONIC, the clock behind
`time.perf_counter`) becomes readable when the kernel's high-resolution timer fires, and epoll returns on
readiness at once, whatever its own timeout. Measured on the 2-core development VM (a pure wait loop, 4 s):
send lateness p50 600-730 us with `gevent.sleep`, 60-120 us with the timerfd. Python 3.11 has no
`os.timerfd_*` (3.13 does), so the two calls go through ctypes. Elsewhere (not Linux, or a perf_counter
on another clock) `gevent.sleep` is used and the lateness histogram shows its coarser timing.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

import gevent
import gevent.hub

CLOCK_MONOTONIC = 1
TFD_CLOEXEC = 0o2000000
TFD_NONBLOCK = 0o4000
TFD_TIMER_ABSTIME = 1

#: Closer than this to the intended time, the remaining wait is spent yielding to the other greenlets
#: instead of arming the timer: the kernel's wake-up alone takes longer (about 70 us at p50 here).
SPIN_S = 50e-6


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _precise_available() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    return time.get_clock_info("perf_counter").implementation == "clock_gettime(CLOCK_MONOTONIC)"


class ScheduleClock:
    """`wait_until(t)` returns at perf_counter time `t` or just after; `close()` releases the timer."""

    def __init__(self) -> None:
        self._fd = -1
        if _precise_available():
            libc = ctypes.CDLL(None, use_errno=True)
            create, settime = libc.timerfd_create, libc.timerfd_settime
            create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
            settime.restype = ctypes.c_int
            fd = create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
            if fd >= 0:
                self._fd, self._settime = fd, settime
                self._spec = _Itimerspec()
                self._spec_ref = ctypes.byref(self._spec)
                self._hub = gevent.get_hub()
                self._watcher = self._hub.loop.io(fd, 1)

    @property
    def precise(self) -> bool:
        return self._fd >= 0

    def wait_until(self, deadline: float) -> None:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        if self._fd < 0:
            gevent.sleep(remaining)  # libev's clock may lag: the loop below makes sure it is not early
        elif remaining > SPIN_S:
            seconds, nanoseconds = divmod(int(deadline * 1e9), 1_000_000_000)
            self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = seconds, nanoseconds
            if self._settime(self._fd, TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
            while True:
                self._hub.wait(self._watcher)
                try:
                    os.read(self._fd, 8)
                    break
                except BlockingIOError:  # woken without an expiry: wait again
                    continue
        while time.perf_counter() < deadline:
            gevent.sleep(0)

    def close(self) -> None:
        if self._fd >= 0:
            self._watcher.close()
            os.close(self._fd)
            self._fd = -1
