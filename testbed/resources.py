"""CPU seconds and peak memory per component (app, sidecar, load generator) over a measured window.

A shared leaf: the component names below are the vocabulary of every `resources` block, which the
platforms write and the reports read.

A background thread samples every process of each component (and their children) with psutil; the
cumulative CPU time is interpolated linearly at the window's edges, so that the figures cover exactly
the measured window and not the start-up or the warm-up. The same `resources` shape is written on kind.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

#: The components a Kubernetes trial's CPU and memory are split into (`testbed.kube.metrics.window()`
#: reports them in this order, whether or not any container fell into them); the local platform reports
#: `app`, `sidecar` and `loadgen`.
COMPONENTS = ("app", "sidecar", "loadgen", "node-proxy", "control-plane", "kubernetes")
#: What `testbed.kube.metrics.cgroup_window()` adds, derived rather than read: a node container's CPU
#: outside its pods' containers (kubelet, containerd and its shims, systemd, the pods' pause sandboxes),
#: and the host's busy CPU outside every node container (kernel threads such as WireGuard's `wg-crypt-*`
#: workers, softirq work billed to whatever it interrupted, and every other process on the host).
NODE_OVERHEAD = "node-overhead"
KERNEL = "kernel-unattributed"


@dataclass
class _Series:
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)


class Sampler:
    """Samples the processes of each component until stopped; `window()` cuts out the measured part."""

    def __init__(
        self,
        components: Mapping[str, Callable[[], Sequence[int]]],
        *,
        interval_s: float = 0.2,
    ) -> None:
        self._components = components
        self._interval = interval_s
        self._series = {name: _Series() for name in components}
        # The whole host: how busy it was, and how much time the hypervisor took from its vCPUs (steal).
        self._host_times: list[float] = []
        self._host_busy: list[float] = []
        self._host_steal: list[float] = []
        self._last_cpu: dict[int, float] = {}  # per pid, so that a process that ended still counts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        now = time.time()
        host = psutil.cpu_times()._asdict()
        self._host_times.append(now)
        self._host_busy.append(busy_seconds(host))
        self._host_steal.append(float(host.get("steal", 0.0)))  # Linux only
        for name, pids_of in self._components.items():
            series = self._series[name]
            rss_total = 0.0
            for pid in _with_children(pids_of()):
                series.pids.add(pid)
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(pid)
                    with p.oneshot():
                        times = p.cpu_times()
                        self._last_cpu[pid] = times.user + times.system
                        rss_total += p.memory_info().rss
            cpu_total = sum(self._last_cpu.get(pid, 0.0) for pid in series.pids)
            series.times.append(now)
            series.cpu.append(cpu_total)
            series.rss.append(rss_total)

    def window(self, start_unix: float, end_unix: float) -> dict[str, Any]:
        """`{"window_s", "components": {name: {cpu_seconds, vcpu, peak_rss_mb, processes}}, "host": {cores,
        busy_vcpu, steal_percent}}`; steal is time the hypervisor gave someone else on this VM's vCPUs."""
        length = end_unix - start_unix
        out: dict[str, Any] = {}
        for name, s in self._series.items():
            cpu = _delta(s.times, s.cpu, start_unix, end_unix)
            inside = [r for t, r in zip(s.times, s.rss, strict=True) if start_unix <= t <= end_unix]
            out[name] = {
                "cpu_seconds": round(cpu, 4),
                "vcpu": round(cpu / length, 4) if length > 0 else 0.0,
                "peak_rss_mb": round(max(inside or s.rss or [0.0]) / 2**20, 1),
                "processes": len(s.pids),
            }
        busy = _delta(self._host_times, self._host_busy, start_unix, end_unix)
        steal = _delta(self._host_times, self._host_steal, start_unix, end_unix)
        host = host_figures(busy, steal, length, psutil.cpu_count() or 1)
        return {"window_s": round(length, 3), "source": "psutil", "components": out, "host": host}


#: The fields of a `cpu` line of /proc/stat, in order (proc(5)); psutil's `cpu_times()` uses these names.
PROC_STAT_FIELDS = (
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
)
#: The fields in which a CPU is busy. guest and guest_nice are already inside user and nice (the kernel
#: adds guest time to both, kernel/sched/cputime.c account_guest_time), so they are not added again.
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")
#: /proc/stat counts in USER_HZ ticks, 100 per second on every architecture kind runs on (the kernel's
#: include/asm-generic/param.h, which x86 and arm64 use; psutil divides by `SC_CLK_TCK`, the same value).
USER_HZ = 100


def busy_seconds(times: Mapping[str, float]) -> float:
    """The host's busy CPU seconds from its cumulative times by field name (psutil's or `proc_stat_cpu`'s)."""
    return sum(float(times.get(name, 0.0)) for name in BUSY_FIELDS)


def proc_stat_cpu(line: str, *, ticks_per_s: float = USER_HZ) -> dict[str, float]:
    """Seconds by field name from a `cpu ...` line of /proc/stat (all CPUs, or one `cpuN`)."""
    name, *values = line.split()
    if not name.startswith("cpu") or not values or not all(v.isdigit() for v in values):
        raise ValueError(f"not a cpu line of /proc/stat: {line.strip()[:120]!r}")
    return {field: int(v) / ticks_per_s for field, v in zip(PROC_STAT_FIELDS, values, strict=False)}


def host_figures(busy_s: float, steal_s: float, length_s: float, cores: int) -> dict[str, Any]:
    """`{cores, busy_vcpu, steal_percent}` from the host's busy and steal CPU seconds over `length_s`."""
    return {
        "cores": cores,
        "busy_vcpu": round(busy_s / length_s, 4) if length_s > 0 else 0.0,
        "steal_percent": round(100 * steal_s / (length_s * cores), 2) if length_s > 0 else 0.0,
    }


def _with_children(pids: Sequence[int]) -> list[int]:
    found: list[int] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(pid)
            found.extend(c.pid for c in psutil.Process(pid).children(recursive=True))
    return found


def _delta(times: Sequence[float], values: Sequence[float], start: float, end: float) -> float:
    """How much a cumulative counter grew between `start` and `end`."""
    return _interpolate(times, values, end) - _interpolate(times, values, start)


def _interpolate(times: Sequence[float], values: Sequence[float], at: float) -> float:
    """The cumulative value at `at`, linear between samples, clamped at the ends."""
    if not times:
        return 0.0
    i = bisect.bisect_left(times, at)
    if i == 0:
        return values[0]
    if i >= len(times):
        return values[-1]
    t0, t1, v0, v1 = times[i - 1], times[i], values[i - 1], values[i]
    return v0 + (v1 - v0) * (at - t0) / (t1 - t0) if t1 > t0 else v1
