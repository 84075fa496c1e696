"""Scenarios: the load profile of a run (rates, durations, trials), read from `scenarios/NAME.toml`."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from testbed import paths
from testbed.errors import ConfigError
from testbed.loadgen.config import ARRIVALS, LOOPS, Arrival, Loop
from testbed.paths import ROOT

SCENARIOS_DIR = ROOT / "scenarios"


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """What load each trial sends, and how many trials per (mesh, rate)."""

    name: str
    description: str
    rates: tuple[float, ...]
    duration_s: float
    warmup_s: float
    trials: int
    connections: int = 16
    arrival: Arrival = "uniform"
    processes: int = 1
    cooldown_s: float = 1.0
    max_lateness_ms: float = 2.0
    #: `closed`: the publishers' closed loop with `users` users (`LoadConfig.loop`); it has no `rates`, and
    #: its trials are filed under rate 0 (`CLOSED_LOOP_RATE`), the one cell of each mesh.
    loop: Loop = "open"
    users: int = 0
    new_connection: bool = False
    source: Path | None = None


_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "description": str,
    "rates": list,
    "duration_s": (int, float),
    "warmup_s": (int, float),
    "trials": int,
    "connections": int,
    "arrival": str,
    "processes": int,
    "cooldown_s": (int, float),
    "max_lateness_ms": (int, float),
    "loop": str,
    "users": int,
    "new_connection": bool,
}
_REQUIRED = ("rates", "duration_s", "warmup_s", "trials")
#: The plan's rate slot of a closed-loop scenario (the result's `rate` is null: no schedule).
CLOSED_LOOP_RATE = 0.0
#: Keys of the open loop's schedule and pool, refused in a closed-loop scenario (as `testbed load` does).
_OPEN_LOOP_KEYS = ("rates", "connections", "arrival")


def available_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a scenario by bare name (`steady`) or path, validated field by field."""
    text = str(name_or_path)
    path = Path(text) if ("/" in text or text.endswith(".toml")) else SCENARIOS_DIR / f"{text}.toml"
    if not path.is_file():
        known = ", ".join(available_scenarios()) or "none"
        raise ConfigError(
            f"unknown scenario {text!r} (known: {known}; or give a path to a .toml file)" + paths.hint()
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_scenario(data, path=path)


def _loop(data: Mapping[str, Any], fail: Callable[[str, str], ConfigError]) -> Loop:
    """The scenario's `loop`, with the keys that only one loop takes checked against it."""
    loop = data.get("loop", "open")
    if loop not in LOOPS:
        raise fail("loop", f"must be one of {', '.join(LOOPS)}, got {loop!r}")
    if loop == "closed":
        for key in _OPEN_LOOP_KEYS:
            if key in data:
                raise fail(key, 'does not apply to loop = "closed": the users set the load (remove it)')
        if data.get("users", 0) <= 0:
            raise fail("users", f'must be positive with loop = "closed", got {data.get("users", "nothing")}')
        if data.get("processes", 1) > data["users"]:
            raise fail("processes", f"must not exceed users ({data['users']}): each runs a user at least")
    elif "users" in data:
        raise fail("users", 'applies to loop = "closed" only (open loop: rates and connections)')
    return cast(Loop, loop)


def parse_scenario(data: Mapping[str, Any], *, path: Path) -> Scenario:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: {field}: {problem}")

    for key, value in data.items():
        if key not in _KEYS:
            raise fail(key, f"unknown key (expected one of: {', '.join(_KEYS)})")
        if not isinstance(value, _KEYS[key]) or (isinstance(value, bool) and _KEYS[key] is not bool):
            raise fail(key, f"has the wrong type {type(value).__name__}")
    loop = _loop(data, fail)
    closed = loop == "closed"
    for key in _REQUIRED:
        if key not in data and not (closed and key == "rates"):
            raise fail(key, "missing")
    rates = [CLOSED_LOOP_RATE] if closed else data["rates"]
    if not closed and (
        not rates or not all(isinstance(r, int | float) and not isinstance(r, bool) and r > 0 for r in rates)
    ):
        raise fail("rates", "must be a non-empty list of positive numbers (requests per second)")
    positive = {"duration_s": data["duration_s"], "trials": data["trials"]}
    positive |= {k: data[k] for k in ("connections", "processes") if k in data}
    for key, value in positive.items():
        if value <= 0:
            raise fail(key, f"must be positive, got {value}")
    if data.get("max_lateness_ms", 2.0) <= 0:
        raise fail("max_lateness_ms", f"must be positive, got {data['max_lateness_ms']}")
    for key in ("warmup_s", "cooldown_s"):
        if data.get(key, 0) < 0:
            raise fail(key, f"must be zero or positive, got {data[key]}")
    arrival = data.get("arrival", "uniform")
    if arrival not in ARRIVALS:
        raise fail("arrival", f"must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    return Scenario(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        rates=tuple(float(r) for r in rates),
        duration_s=float(data["duration_s"]),
        warmup_s=float(data["warmup_s"]),
        trials=int(data["trials"]),
        connections=int(data.get("connections", 16)),
        arrival=cast(Arrival, arrival),
        processes=int(data.get("processes", 1)),
        cooldown_s=float(data.get("cooldown_s", 1.0)),
        max_lateness_ms=float(data.get("max_lateness_ms", 2.0)),
        loop=loop,
        users=int(data.get("users", 0)),
        new_connection=bool(data.get("new_connection", False)),
        source=path,
    )
