"""Topologies: which demo services exist, what each one does per request and whom it calls.

A topology is a TOML file (see `scenarios/topologies/shop.toml`). `load_topology()` validates it
completely before anything is started, so that a typo fails in a second with a message naming the
file and the field, not minutes later as a service that never gets healthy.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from testbed import paths
from testbed.errors import ConfigError
from testbed.paths import ROOT

#: Where a bare topology name is looked up: the repository's `scenarios/topologies/`.
TOPOLOGIES_DIR = ROOT / "scenarios" / "topologies"

WorkKind = Literal["busy", "sleep"]
CallMode = Literal["parallel", "sequential"]

# Service names become file names, command-line `NAME=URL` pairs and later Kubernetes object names,
# so they follow the DNS-label rule that all of these accept.
_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")

_TOP_KEYS = frozenset({"name", "entry", "services"})

_Fail = Callable[[str, str], ConfigError]


@dataclass(frozen=True, kw_only=True)
class Service:
    """One demo service: the work it does and the downstreams it calls on every request."""

    name: str
    payload_bytes: int = 1024
    work_us: int = 0
    work: WorkKind = "busy"
    calls: tuple[str, ...] = ()
    call_mode: CallMode = "parallel"
    call_timeout_ms: int = 2000


@dataclass(frozen=True, kw_only=True)
class Topology:
    """A validated topology: acyclic, every call resolves, every service reachable from the entry."""

    name: str
    entry: str
    services: tuple[Service, ...]
    source: Path

    def service(self, name: str) -> Service:
        """The service called `name`; `KeyError` if there is none."""
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        """The service names, in file order."""
        return tuple(s.name for s in self.services)

    def startup_order(self) -> tuple[Service, ...]:
        """The services leaves first, so that each one starts after everything it calls."""
        order: list[Service] = []
        seen: set[str] = set()

        def visit(service: Service) -> None:
            if service.name in seen:
                return
            seen.add(service.name)
            for callee in service.calls:
                visit(self.service(callee))
            order.append(service)

        for service in self.services:
            visit(service)
        return tuple(order)

    @property
    def calls_per_request(self) -> int:
        """Meshed connections one load-generator request causes: its own call plus every downstream call."""
        return 1 + sum(len(s.calls) for s in self.services)

    @property
    def critical_hops(self) -> int:
        """Calls one after another on the longest path, counting the load generator's own call.

        Parallel calls overlap, sequential ones add up: this is how many times a mesh's per-hop latency
        lands on a request's latency. Published figures are mostly for one hop (client -> server).
        """

        def depth(name: str) -> int:
            service = self.service(name)
            below = [1 + depth(c) for c in service.calls]
            if not below:
                return 0
            return sum(below) if service.call_mode == "sequential" else max(below)

        return 1 + depth(self.entry)


def call_depths(topology: Topology) -> dict[str, int]:
    """Each service's depth: how many calls it is from the entry (the entry's is 0), by the shortest path.

    Kubernetes places a service by the parity of its depth (testbed/kube/manifests.py), so that every
    call crosses nodes; a service reached at an even and at an odd depth could not be placed that way,
    so it is refused with a ConfigError naming it and both paths.
    """
    # Per service, the shortest path from the entry of each depth parity (0 even, 1 odd), callers first.
    paths: dict[str, dict[int, tuple[str, ...]]] = {topology.entry: {0: (topology.entry,)}}
    for service in reversed(topology.startup_order()):  # callers before callees
        for parity, path in sorted(paths.get(service.name, {}).items()):
            for callee in service.calls:
                found = paths.setdefault(callee, {})
                longer = (*path, callee)
                kept = found.get(1 - parity)
                if kept is None or len(longer) < len(kept):
                    found[1 - parity] = longer
    depths: dict[str, int] = {}
    for service in topology.startup_order():
        found = paths[service.name]
        if len(found) > 1:
            short, long = sorted(found.values(), key=len)
            raise ConfigError(
                f"{_display(topology.source)}: services.{service.name}: reached at depth {len(short) - 1} "
                f"({' -> '.join(short)}) and at depth {len(long) - 1} ({' -> '.join(long)}): on Kubernetes "
                "a service runs on one of two app workers by the parity of its depth, so that every call "
                "crosses nodes; call it from callers of one parity only"
            )
        (path,) = found.values()
        depths[service.name] = len(path) - 1
    return depths


# The keys a [services.NAME] table may have; the defaults live on `Service`.
_SERVICE_KEYS = ("payload_bytes", "work_us", "work", "calls", "call_mode", "call_timeout_ms")


def load_topology(name_or_path: str | Path) -> Topology:
    """Load and validate a topology given by bare name (`shop`) or by path to a TOML file."""
    path = _locate(name_or_path)
    shown = _display(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{shown}: not valid TOML: {e}") from None
    return _parse(data, path=path, shown=shown)


def available_topologies() -> list[str]:
    """The bare names that `load_topology()` finds in the repository."""
    return sorted(p.stem for p in TOPOLOGIES_DIR.glob("*.toml"))


def _locate(name_or_path: str | Path) -> Path:
    if isinstance(name_or_path, Path) or "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"{name_or_path}: topology file not found")
        return path
    if not _NAME_RE.match(name_or_path):
        raise ConfigError(f"{name_or_path!r}: not a topology name or a path to a .toml file")
    path = TOPOLOGIES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(available_topologies()) or "none"
        raise ConfigError(
            f"unknown topology {name_or_path!r} (known: {known}; or give a path to a .toml file)"
            + paths.hint()
        )
    return path


def _display(path: Path) -> str:
    # Relative to the working directory when possible: that is how users type it and how CI logs read.
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _parse(data: Mapping[str, Any], *, path: Path, shown: str) -> Topology:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{shown}: {field}: {problem}")

    for key in data:
        if key not in _TOP_KEYS:
            raise fail(key, f"unknown key (expected one of: {', '.join(sorted(_TOP_KEYS))})")

    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise fail("name", "must be a non-empty string")

    if "services" not in data:
        raise fail("services", "missing: define at least one [services.NAME] table")
    raw_services = data["services"]
    if not isinstance(raw_services, dict) or not raw_services:
        raise fail("services", "must be a table with at least one [services.NAME] table")

    services: dict[str, Service] = {}
    for service_name, raw in raw_services.items():
        services[service_name] = _parse_service(service_name, raw, fail)

    if "entry" not in data:
        raise fail("entry", "missing: name the service the load generator calls")
    entry = data["entry"]
    if not isinstance(entry, str):
        raise fail("entry", f"must be a string, not {_type_name(entry)}")
    if entry not in services:
        raise fail("entry", f"unknown service {entry!r} (defined: {', '.join(services)})")

    _check_graph(services, entry, fail)
    return Topology(name=name, entry=entry, services=tuple(services.values()), source=path)


def _parse_service(name: str, raw: object, fail: _Fail) -> Service:
    where = f"services.{name}"
    if not _NAME_RE.match(name):
        raise fail(where, "service names are lowercase letters, digits and '-', starting with a letter")
    if not isinstance(raw, dict):
        raise fail(where, f"must be a table, not {_type_name(raw)}")
    for key in raw:
        if key not in _SERVICE_KEYS:
            raise fail(f"{where}.{key}", f"unknown key (expected one of: {', '.join(_SERVICE_KEYS)})")

    def integer(key: str, default: int, *, minimum: int) -> int:
        value = raw.get(key, default)
        # bool is an int in Python, but `work_us = true` is a mistake, not 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(f"{where}.{key}", f"must be an integer, not {_type_name(value)}")
        if value < minimum:
            raise fail(f"{where}.{key}", f"must be >= {minimum}, got {value}")
        return value

    def choice(key: str, default: str, options: tuple[str, ...]) -> str:
        value = raw.get(key, default)
        if value not in options:
            raise fail(f"{where}.{key}", f"must be one of {', '.join(map(repr, options))}, got {value!r}")
        return cast(str, value)

    calls = raw.get("calls", [])
    if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
        raise fail(f"{where}.calls", "must be a list of service names")
    duplicates = sorted({c for c in calls if calls.count(c) > 1})
    if duplicates:
        raise fail(f"{where}.calls", f"{duplicates[0]!r} is listed twice")

    work_us = integer("work_us", Service.work_us, minimum=0)
    work = cast(WorkKind, choice("work", Service.work, ("busy", "sleep")))
    if work == "sleep" and work_us % 1000:
        # Event-loop timers count whole milliseconds: uvloop would turn 300 us into 0 and 700 us into
        # 1 ms, silently. Sub-millisecond work must spin.
        raise fail(
            f"{where}.work_us", f'work = "sleep" needs whole milliseconds (a multiple of 1000), got {work_us}'
        )
    return Service(
        name=name,
        payload_bytes=integer("payload_bytes", Service.payload_bytes, minimum=0),
        work_us=work_us,
        work=work,
        calls=tuple(calls),
        call_mode=cast(CallMode, choice("call_mode", Service.call_mode, ("parallel", "sequential"))),
        call_timeout_ms=integer("call_timeout_ms", Service.call_timeout_ms, minimum=1),
    )


def _check_graph(services: Mapping[str, Service], entry: str, fail: _Fail) -> None:
    for service in services.values():
        for callee in service.calls:
            if callee not in services:
                raise fail(f"services.{service.name}.calls", f"unknown service {callee!r}")

    _check_acyclic(services, fail)

    reachable = _reachable(services, entry)
    for name in services:
        if name not in reachable:
            # An unreachable service would be started and measured but never called: almost surely a typo.
            raise fail(f"services.{name}", f"not reachable from entry {entry!r}")


def _check_acyclic(services: Mapping[str, Service], fail: _Fail) -> None:
    # A depth-first search that keeps the current path, so the message can show the whole cycle.
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for callee in services[name].calls:
            if state.get(callee) == 1:
                cycle = [*path[path.index(callee) :], callee]
                raise fail(f"services.{name}.calls", f"cycle {' -> '.join(cycle)}")
            if callee not in state:
                visit(callee)
        path.pop()
        state[name] = 2

    for name in services:
        if name not in state:
            visit(name)


def _reachable(services: Mapping[str, Service], entry: str) -> set[str]:
    seen = {entry}
    todo = [entry]
    while todo:
        for callee in services[todo.pop()].calls:
            if callee not in seen:
                seen.add(callee)
                todo.append(callee)
    return seen


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
