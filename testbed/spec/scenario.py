"""Scenarios: the load profile of a run (rates, durations, trials), read from `scenarios/NAME.toml`."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from testbed import paths
from testbed.errors import ConfigError, UsageError
from testbed.loadgen.config import ARRIVALS, LOOPS, Arrival, Loop
from testbed.loadgen.profile import Profile
from testbed.paths import ROOT

SCENARIOS_DIR = ROOT / "scenarios"


#: `profile` values: the load shapes of `testbed.loadgen.profile`, and `capacity` (a search per mesh).
PROFILES = ("constant", "steps", "ramp", "spike", "capacity")


@dataclass(frozen=True, kw_only=True)
class CapacitySpec:
    """`profile = "capacity"`: per mesh, the highest open-loop rate whose service p99 meets `slo_p99_ms`
    (the search of `testbed capacity`, each probe a trial of `duration_s` after `warmup_s`)."""

    slo_p99_ms: float
    max_error_rate: float = 0.01
    start_rps: float = 100.0
    max_rps: float = 100_000.0
    resolution: float = 0.05
    repeats: int = 3


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
    #: A non-constant load shape (steps, ramp, spike) over each trial's window; None: constant at each rate.
    #: Such a scenario has one rate slot, the profile's peak (`rates`), and its window is the profile's.
    profile: Profile | None = None
    #: `profile = "capacity"`: the search per mesh; `rates` is then empty (the search chooses them).
    capacity: CapacitySpec | None = None
    source: Path | None = None

    @property
    def profile_kind(self) -> str:
        """`constant`, `steps`, `ramp`, `spike` or `capacity`."""
        if self.capacity is not None:
            return "capacity"
        return self.profile.kind if self.profile is not None else "constant"


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
    "profile": str,
    "steps": list,
    "ramp": dict,
    "spike": dict,
    "slo_p99_ms": (int, float),
    "capacity": dict,
}
_REQUIRED = ("rates", "duration_s", "warmup_s", "trials")
#: The plan's rate slot of a closed-loop scenario (the result's `rate` is null: no schedule).
CLOSED_LOOP_RATE = 0.0
#: Keys of the open loop's schedule and pool, refused in a closed-loop scenario (as `testbed load` does).
_OPEN_LOOP_KEYS = ("rates", "connections", "arrival")
#: The keys of each profile's own table (TOML), with what they mean for the error messages; they are the
#: parameters of `Profile.ramp` and `Profile.spike`.
_PROFILE_TABLES: dict[str, dict[str, str]] = {
    "ramp": {"from_rps": "starting rate", "to_rps": "final rate", "duration_s": "seconds"},
    "spike": {
        "base_rps": "base rate",
        "multiple": "burst rate / base rate",
        "at_s": "seconds into the window the burst starts",
        "burst_s": "seconds the burst lasts",
        "duration_s": "seconds of the whole window",
    },
}
_CAPACITY_KEYS: dict[str, type | tuple[type, ...]] = {
    "max_error_rate": (int, float),
    "start_rps": (int, float),
    "max_rps": (int, float),
    "resolution": (int, float),
    "repeats": int,
}


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


def _numbers(
    table: Mapping[str, Any], keys: Mapping[str, str], field: str, fail: Callable[[str, str], ConfigError]
) -> dict[str, float]:
    for key, value in table.items():
        if key not in keys:
            raise fail(f"{field}.{key}", f"unknown key (expected: {', '.join(keys)})")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise fail(f"{field}.{key}", f"must be a number ({keys[key]}), got {value!r}")
    missing = [k for k in keys if k not in table]
    if missing:
        raise fail(field, "missing " + ", ".join(f"{k} ({keys[k]})" for k in missing))
    return {k: float(v) for k, v in table.items()}


def _profile(data: Mapping[str, Any], fail: Callable[[str, str], ConfigError]) -> Profile | None:
    """The `steps`, `ramp` or `spike` profile of a scenario, None for a constant one."""
    kind = data.get("profile", "constant")
    for key in ("steps", "ramp", "spike"):
        if key in data and kind != key:
            raise fail(key, f'applies to profile = "{key}" only (this scenario\'s profile is {kind!r})')
    if kind in ("constant", "capacity"):
        return None
    if data.get("loop", "open") == "closed":
        raise fail("profile", f'{kind!r} is an open-loop rate over time: not with loop = "closed"')
    for key in ("rates", "duration_s"):
        if key in data:
            raise fail(
                key, f'does not apply to profile = "{kind}": the profile sets the rates and the window'
            )
    if kind not in data:
        raise fail(kind, f'missing: profile = "{kind}" needs its table (see scenarios/{kind}.toml)')
    try:
        if kind == "steps":
            steps = data["steps"]
            if not steps or not all(isinstance(x, dict) for x in steps):
                raise fail("steps", "must be a non-empty list of {rate = RPS, duration_s = SECONDS} tables")
            pairs = [_numbers(x, {"rate": "rps", "duration_s": "seconds held"}, "steps", fail) for x in steps]
            return Profile.steps([(x["rate"], x["duration_s"]) for x in pairs])
        table = _numbers(data[kind], _PROFILE_TABLES[kind], kind, fail)
        return Profile.ramp(**table) if kind == "ramp" else Profile.spike(**table)
    except UsageError as e:
        raise fail(kind, e.message.removeprefix(f"profile {kind}: ")) from None


def _capacity(data: Mapping[str, Any], fail: Callable[[str, str], ConfigError]) -> CapacitySpec | None:
    """The search of a `profile = "capacity"` scenario."""
    capacity = data.get("profile") == "capacity"
    for key in ("slo_p99_ms", "capacity"):
        if key in data and not capacity:
            raise fail(key, 'applies to profile = "capacity" only')
    if not capacity:
        return None
    if data.get("loop", "open") == "closed":
        raise fail("profile", 'capacity searches open-loop rates: not with loop = "closed"')
    if "rates" in data:
        raise fail("rates", 'does not apply to profile = "capacity": the search chooses the rates')
    if "slo_p99_ms" not in data or data["slo_p99_ms"] <= 0:
        raise fail("slo_p99_ms", 'must be a positive number of milliseconds with profile = "capacity"')
    table = data.get("capacity", {})
    for key, value in table.items():
        if key not in _CAPACITY_KEYS:
            raise fail(f"capacity.{key}", f"unknown key (expected one of: {', '.join(_CAPACITY_KEYS)})")
        if not isinstance(value, _CAPACITY_KEYS[key]) or isinstance(value, bool):
            raise fail(f"capacity.{key}", f"has the wrong type {type(value).__name__}")
    numbers: dict[str, Any] = {k: v if k == "repeats" else float(v) for k, v in table.items()}
    spec = CapacitySpec(slo_p99_ms=float(data["slo_p99_ms"]), **numbers)
    checks = [
        (spec.start_rps > 0, "start_rps", "must be positive"),
        (spec.max_rps >= spec.start_rps, "max_rps", f"must be at least start_rps ({spec.start_rps:g})"),
        (0 < spec.resolution < 1, "resolution", "must be a fraction in (0, 1)"),
        (spec.repeats >= 1, "repeats", "must be at least 1"),
        (0 <= spec.max_error_rate <= 1, "max_error_rate", "must be a fraction between 0 and 1"),
    ]
    for ok, key, problem in checks:
        if not ok:
            raise fail(f"capacity.{key}", problem)
    return spec


def _shape(
    data: Mapping[str, Any],
    closed: bool,
    profile: Profile | None,
    capacity: CapacitySpec | None,
    fail: Callable[[str, str], ConfigError],
) -> tuple[list[float], float, int]:
    """The rate slots, the window and the trials: stated, or set by the loop, the profile or the search."""
    for key in _REQUIRED:
        exempt = {"rates"} if closed or capacity else {"rates", "duration_s"} if profile else set()
        exempt |= {"trials"} if capacity else set()
        if key not in data and key not in exempt:
            raise fail(key, "missing")
    if capacity is not None and "trials" in data:
        raise fail(
            "trials", 'does not apply to profile = "capacity" (capacity.repeats: trials at the answer)'
        )
    if closed:
        rates = [CLOSED_LOOP_RATE]
    elif profile or capacity:
        rates = [profile.peak_rps] if profile else []
    else:
        rates = data["rates"]
        if not rates or not all(
            isinstance(r, int | float) and not isinstance(r, bool) and r > 0 for r in rates
        ):
            raise fail("rates", "must be a non-empty list of positive numbers (requests per second)")
    duration = profile.duration_s if profile else data["duration_s"]
    return rates, duration, capacity.repeats if capacity else data["trials"]


def parse_scenario(data: Mapping[str, Any], *, path: Path) -> Scenario:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: {field}: {problem}")

    for key, value in data.items():
        if key not in _KEYS:
            raise fail(key, f"unknown key (expected one of: {', '.join(_KEYS)})")
        if not isinstance(value, _KEYS[key]) or (isinstance(value, bool) and _KEYS[key] is not bool):
            raise fail(key, f"has the wrong type {type(value).__name__}")
    if data.get("profile", "constant") not in PROFILES:
        raise fail("profile", f"must be one of {', '.join(PROFILES)}, got {data['profile']!r}")
    loop = _loop(data, fail)
    closed = loop == "closed"
    profile, capacity = _profile(data, fail), _capacity(data, fail)
    rates, duration, trials = _shape(data, closed, profile, capacity, fail)
    positive = {"duration_s": duration, "trials": trials}
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
        duration_s=float(duration),
        warmup_s=float(data["warmup_s"]),
        trials=int(trials),
        connections=int(data.get("connections", 16)),
        arrival=cast(Arrival, arrival),
        processes=int(data.get("processes", 1)),
        cooldown_s=float(data.get("cooldown_s", 1.0)),
        max_lateness_ms=float(data.get("max_lateness_ms", 2.0)),
        loop=loop,
        users=int(data.get("users", 0)),
        new_connection=bool(data.get("new_connection", False)),
        profile=profile,
        capacity=capacity,
        source=path,
    )
