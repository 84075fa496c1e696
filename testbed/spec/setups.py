"""How each published figure was measured, as data: one setup per claim source (`testbed/data/setups.toml`).

A setup says what the publisher ran (call graph, payload, rates, connections, open or closed loop, connection
reuse, duration, warm-up, proxy worker threads, protocol, percentiles and how they were computed, meshes,
the page) with every field the source does not state marked "unknown". `load_setups()` validates the file
early: an unknown or missing field or a value of the wrong kind is a `ConfigError` of one line that names the
setup and the field. `scenario_data()` turns a setup into the scenario `testbed reproduce` runs; where the
source is silent the setup's `run_*` fields carry the testbed's choice, explained in its `choices`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, cast

from testbed import paths
from testbed.errors import ConfigError
from testbed.spec.scenario import Scenario, parse_scenario

UNKNOWN = "unknown"
#: A closed-loop source has no rate of its own: its users send back to back until the system saturates.
SATURATION = "saturation"
Loop = Literal["open", "closed", "unknown"]
Reuse = Literal["keep-alive", "new connection per request", "unknown"]
LOOPS: tuple[Loop, ...] = ("open", "closed", "unknown")
REUSES: tuple[Reuse, ...] = ("keep-alive", "new connection per request", "unknown")
PERCENTILE_NAMES = ("p50", "p90", "p99", "p999")

_PACKAGED = "setups.toml"
_CONNECTIONS = re.compile(r"[1-9]\d*(-[1-9]\d*)?\Z")


@dataclass(frozen=True, kw_only=True)
class Setup:
    """What one source ran, as it states it ("unknown" where it does not), and the testbed's choices."""

    source_id: str
    url: str
    call_graph: str
    topology: str  # a topology in scenarios/topologies/, or "unknown"
    payload: str
    rates_rps: tuple[float, ...] | str  # the rates, "unknown" or "saturation" (closed loop)
    connections: str  # "16", a sweep "2-64", or "unknown"
    loop: Loop
    users: int | str  # closed loop: concurrent users, or "unknown"; "n/a" for open loop
    connection_reuse: Reuse
    requests: int | str
    duration_s: float | str
    warmup_s: float | str
    runs: int | str
    proxy_workers: int | str
    protocol: str
    percentiles: tuple[str, ...] | str
    computed: str
    meshes: tuple[str, ...]
    loadgen: str
    platform: str
    # The testbed's choices where the source is silent or gives a sweep (explained in `choices`).
    run_connections: int | None = None
    run_rates_rps: tuple[float, ...] | None = None
    choices: str | None = None

    @property
    def reproducible(self) -> bool:
        """Whether the source states enough to build a run: a call graph and a rate or a closed loop."""
        return self.topology != UNKNOWN and (self.rates_rps != UNKNOWN or self.run_rates_rps is not None)

    @property
    def connections_to_run(self) -> int:
        """The connections (open loop) of a reproduction: the source's when it states one number."""
        if self.run_connections is not None:
            return self.run_connections
        return int(self.connections)

    @property
    def rates_to_run(self) -> tuple[float, ...]:
        """The source's rates, or the testbed's choice where it states none; () for a closed loop."""
        if self.run_rates_rps is not None:
            return self.run_rates_rps
        return self.rates_rps if isinstance(self.rates_rps, tuple) else ()


def default_setups_path() -> Traversable:
    """The dataset shipped inside the package (`testbed/data/setups.toml`)."""
    return paths.packaged(_PACKAGED)


def load_setups(path: str | Path | None = None) -> dict[str, Setup]:
    """Read and validate a setups file (default: the packaged one): source_id -> setup, in file order."""
    source: Traversable | Path = default_setups_path() if path is None else Path(path)
    return parse_setups(paths.read_toml(source, "setups"), where=str(source))


def parse_setups(data: Mapping[str, Any], *, where: str = "setups") -> dict[str, Setup]:
    """Validate the parsed TOML of a setups file: `[setup.SOURCE_ID]` tables and nothing else."""
    for key in data:
        if key != "setup":
            raise ConfigError(
                f"{where}: {key}: unknown top-level key (expected only [setup.SOURCE_ID] tables)"
            )
    tables = data.get("setup")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{where}: setup: no [setup.SOURCE_ID] tables")
    out: dict[str, Setup] = {}
    for source_id, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: setup.{source_id}: not a table")
        out[source_id] = _parse_setup(source_id, cast(dict[str, Any], table), where=where)
    return out


_Check = Callable[[Any], bool]


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _number(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _or_unknown(check: _Check) -> _Check:
    return lambda value: value == UNKNOWN or check(value)


def _rates(value: Any) -> bool:
    return value in (UNKNOWN, SATURATION) or (
        isinstance(value, list) and bool(value) and all(_number(v) and v > 0 for v in value)
    )


def _percentiles(value: Any) -> bool:
    return value == UNKNOWN or (isinstance(value, list) and all(v in PERCENTILE_NAMES for v in value))


#: Every field, whether it is required, what it must be, and how the error says so.
_FIELDS: dict[str, tuple[bool, _Check, str]] = {
    "url": (True, lambda v: _text(v) and re.match(r"https?://\S+\Z", v) is not None, "an http(s) URL"),
    "call_graph": (True, _text, "a non-empty string"),
    "topology": (True, _text, "a topology name or 'unknown'"),
    "payload": (True, _text, "a size such as '1 KB', or 'unknown'"),
    "rates_rps": (True, _rates, "a list of positive numbers, 'unknown' or 'saturation'"),
    "connections": (
        True,
        lambda v: v == UNKNOWN or (isinstance(v, str) and _CONNECTIONS.match(v) is not None),
        "'16', a sweep '2-64', or 'unknown'",
    ),
    "loop": (True, lambda v: v in LOOPS, f"one of {', '.join(LOOPS)}"),
    "users": (True, lambda v: v in (UNKNOWN, "n/a") or _count(v), "a positive integer, 'unknown' or 'n/a'"),
    "connection_reuse": (True, lambda v: v in REUSES, f"one of {', '.join(REUSES)}"),
    "requests": (True, _or_unknown(_count), "a positive integer or 'unknown'"),
    "duration_s": (True, _or_unknown(lambda v: _number(v) and v > 0), "a positive number or 'unknown'"),
    "warmup_s": (True, _or_unknown(_number), "a number of seconds or 'unknown'"),
    "runs": (True, _or_unknown(_count), "a positive integer or 'unknown'"),
    "proxy_workers": (True, _or_unknown(_count), "a positive integer or 'unknown'"),
    "protocol": (True, _text, "a non-empty string"),
    "percentiles": (True, _percentiles, f"a list of {', '.join(PERCENTILE_NAMES)}, or 'unknown'"),
    "computed": (True, _text, "a non-empty string"),
    "meshes": (True, lambda v: isinstance(v, list) and bool(v) and all(map(_text, v)), "a list of meshes"),
    "loadgen": (True, _text, "a non-empty string"),
    "platform": (True, _text, "a non-empty string"),
    "run_connections": (False, _count, "a positive integer"),
    "run_rates_rps": (False, lambda v: _rates(v) and isinstance(v, list), "a list of positive numbers"),
    "choices": (False, _text, "a non-empty string"),
}


def _parse_setup(source_id: str, table: dict[str, Any], *, where: str) -> Setup:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}: setup.{source_id}: {field}: {problem}")

    for key in table:
        if key not in _FIELDS:
            raise fail(key, f"unknown field (expected one of: {', '.join(_FIELDS)})")
    for key, (required, check, expected) in _FIELDS.items():
        if key not in table:
            if required:
                raise fail(key, "missing (write 'unknown' when the source does not say)")
            continue
        if not check(table[key]):
            raise fail(key, f"must be {expected}, not {table[key]!r}")
    _check_rules(table, fail)
    values = dict(table)
    for key in ("rates_rps", "run_rates_rps", "percentiles", "meshes"):
        if isinstance(values.get(key), list):
            values[key] = tuple(float(v) if "rates" in key else v for v in values[key])
    if isinstance(values["duration_s"], int):
        values["duration_s"] = float(values["duration_s"])
    if isinstance(values["warmup_s"], int):
        values["warmup_s"] = float(values["warmup_s"])
    return Setup(source_id=source_id, **values)


def _check_rules(table: dict[str, Any], fail: Callable[[str, str], ConfigError]) -> None:
    """The rules that tie fields together (each field's own kind already checked)."""
    closed = table["loop"] == "closed"
    if closed and table["rates_rps"] != SATURATION:
        raise fail("rates_rps", "a closed loop has no rate of its own: write 'saturation'")
    if not closed and table["rates_rps"] == SATURATION:
        raise fail("rates_rps", "'saturation' is for loop = 'closed'")
    if table["loop"] == "open" and table["users"] != "n/a":
        raise fail("users", "an open loop has no users: write 'n/a'")
    if closed and table["users"] == "n/a":
        raise fail("users", "a closed loop has users: give their number or 'unknown'")
    run_fields = [k for k in ("run_connections", "run_rates_rps") if k in table]
    if run_fields and "choices" not in table:
        raise fail("choices", f"missing: say why the testbed chose {' and '.join(run_fields)}")
    if table["topology"] == UNKNOWN:
        return
    if not closed and "run_connections" not in table and not table["connections"].isdigit():
        raise fail(
            "run_connections",
            f"missing: the source states no single connection count ({table['connections']})",
        )
    if table["rates_rps"] == UNKNOWN and "run_rates_rps" not in table:
        raise fail("run_rates_rps", "missing: the source states no rate: pick one, or topology = 'unknown'")
    if closed and not _count(table["users"]):
        raise fail("users", "a reproducible closed loop needs its number of users")


def scenario_data(
    setup: Setup,
    *,
    rates: tuple[float, ...],
    trials: int,
    duration_s: float,
    warmup_s: float,
    max_lateness_ms: float | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """The scenario (as its TOML keys) that loads the topology as the publisher did.

    An open loop sends at each rate over the setup's connections with keep-alive (the testbed's way, and
    the constant-rate generators' of the sources that say so). A closed loop gets `loop = "closed"` with
    the setup's users, and a new connection per request where the source used no keep-alive.
    """
    if not setup.reproducible:
        raise ConfigError(f"setup {setup.source_id}: the source does not state enough to reproduce it")
    data: dict[str, Any] = {
        "name": f"reproduce-{setup.source_id}",
        "description": f"as published by {setup.source_id}: {setup.call_graph}",
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "trials": trials,
    }
    if setup.loop == "closed":
        data |= {"loop": "closed", "users": int(setup.users)}
        if setup.connection_reuse == "new connection per request":
            data["new_connection"] = True
    else:
        data |= {"rates": list(rates), "connections": setup.connections_to_run}
        if setup.connection_reuse == "new connection per request":
            data["new_connection"] = True
    if max_lateness_ms is not None:
        data["max_lateness_ms"] = max_lateness_ms
    if processes > 1:
        data["processes"] = processes
    return data


def build_scenario(data: Mapping[str, Any], *, source_id: str) -> Scenario:
    """The Scenario of `scenario_data()`, validated as any scenario file is."""
    return parse_scenario(data, path=Path(f"<setup {source_id}>"))
