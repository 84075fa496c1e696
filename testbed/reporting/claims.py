"""Published service-mesh latency and resource figures, as data a report can set beside its own results.

`testbed/data/claims.toml` holds one `[[claim]]` table per published figure (see the comment at its top for
the conventions). `load_claims()` reads and validates it early: an unknown or missing field, an unknown mesh
or metric, a wrong type or a duplicate id is a `ConfigError` that names the claim and the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, cast, get_args

from testbed import paths
from testbed.errors import ConfigError, UsageError

ClaimMesh = Literal["istio", "istio-ambient", "istio-waypoint", "linkerd", "cilium"]
"""Istio sidecar mode; Istio ambient L4 (ztunnel); Istio ambient with a waypoint (L7); Linkerd; Cilium."""

ClaimMetric = Literal[
    "added_p50_ms",
    "added_p90_ms",
    "added_p99_ms",
    "added_latency_pct",
    "added_vcpu_pct",
    "proxy_vcpu_per_krps",
    "proxy_mb",
    "proxy_mb_per_krps",
]

MESHES: tuple[ClaimMesh, ...] = get_args(ClaimMesh)
METRICS: tuple[ClaimMetric, ...] = get_args(ClaimMetric)

METRIC_UNITS: dict[ClaimMetric, str] = {
    "added_p50_ms": "ms",  # mesh minus no-mesh baseline, same publisher, same setup
    "added_p90_ms": "ms",
    "added_p99_ms": "ms",
    "added_latency_pct": "%",  # percent increase over the baseline; percentile in `Claim.percentile`
    "added_vcpu_pct": "%",  # percent more vCPU cores than the baseline
    "proxy_vcpu_per_krps": "vCPU per 1000 rps",  # one proxy
    "proxy_mb": "MB",  # memory of one proxy
    "proxy_mb_per_krps": "MB per 1000 rps",  # one proxy, as published "per 1000 rps"
}

# Testbed mesh name -> the claim mesh its results are compared with. "envoy" is the testbed's local Envoy
# sidecars with mTLS: the data plane of Istio's sidecar mode without istiod (no xDS, no Istio filters or
# telemetry). It is compared with Istio sidecar claims, and a report must say so with that caveat. The
# no-mesh baseline ("none") has no claims of its own.
MESH_EQUIVALENTS: dict[str, ClaimMesh] = {
    "envoy": "istio",
    "istio": "istio",
    "istio-ambient": "istio-ambient",
    "istio-waypoint": "istio-waypoint",
    "linkerd": "linkerd",
    "cilium": "cilium",
}

_PACKAGED = "claims.toml"


@dataclass(frozen=True, kw_only=True)
class Claim:
    """One published figure, with what is known of how it was measured."""

    id: str
    source_id: str
    source: str
    url: str
    url_checked: bool
    published: str
    mesh: ClaimMesh
    mesh_version: str
    metric: ClaimMetric
    value: float
    loadgen: str
    platform: str
    topology: str
    second_hand: bool
    publisher_bias: str | None = None
    percentile: str | None = None
    rate_rps: float | None = None
    connections: str | None = None
    payload: str | None = None
    open_loop: bool | None = None
    proxies_per_request: int | None = None
    notes: str | None = None

    @property
    def unit(self) -> str:
        return METRIC_UNITS[self.metric]


_STR_FIELDS = (
    "id",
    "source_id",
    "source",
    "url",
    "published",
    "mesh",
    "mesh_version",
    "metric",
    "loadgen",
    "platform",
    "topology",
    "publisher_bias",
    "percentile",
    "connections",
    "payload",
    "notes",
)
_BOOL_FIELDS = ("url_checked", "second_hand", "open_loop")
_FLOAT_FIELDS = ("value", "rate_rps")
_INT_FIELDS = ("proxies_per_request",)
_REQUIRED = (
    "id",
    "source_id",
    "source",
    "url",
    "url_checked",
    "published",
    "mesh",
    "mesh_version",
    "metric",
    "value",
    "loadgen",
    "platform",
    "topology",
    "second_hand",
)
_FIELDS = (*_STR_FIELDS, *_BOOL_FIELDS, *_FLOAT_FIELDS, *_INT_FIELDS)
# Within one source_id these describe the source, not the figure, so they must agree.
_PER_SOURCE = ("source", "url", "url_checked", "published", "publisher_bias")

_ID = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_PUBLISHED = re.compile(r"(19|20)\d\d(-(0[1-9]|1[0-2]))?\Z")
_CONNECTIONS = re.compile(r"[1-9]\d*(-[1-9]\d*)?\Z")


def default_claims_path() -> Traversable:
    """The dataset shipped inside the package (`testbed/data/claims.toml`)."""
    return paths.packaged(_PACKAGED)


def load_claims(path: str | Path | None = None) -> tuple[Claim, ...]:
    """Read and validate a claims file (default: the packaged dataset), in file order."""
    source: Traversable | Path = default_claims_path() if path is None else Path(path)
    return parse_claims(paths.read_toml(source, "claims"), where=str(source))


def parse_claims(data: Mapping[str, Any], *, where: str = "claims") -> tuple[Claim, ...]:
    """Validate the parsed TOML of a claims file: `claim = [{...}, ...]` and nothing else."""
    for key in data:
        if key != "claim":
            raise ConfigError(f"{where}: {key}: unknown top-level key (expected only [[claim]] tables)")
    tables = data.get("claim")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{where}: claim: no [[claim]] tables")
    claims: list[Claim] = []
    seen: dict[str, int] = {}
    by_source: dict[str, Claim] = {}
    for index, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: claim #{index}: not a table")
        claim = _parse_claim(cast(dict[str, Any], table), where=where, index=index)
        if claim.id in seen:
            raise ConfigError(f"{where}: claim {claim.id!r}: id: duplicate (also claim #{seen[claim.id]})")
        seen[claim.id] = index
        first = by_source.setdefault(claim.source_id, claim)
        for field in _PER_SOURCE:
            if getattr(claim, field) != getattr(first, field):
                raise ConfigError(
                    f"{where}: claim {claim.id!r}: {field}: differs from claim {first.id!r} "
                    f"of the same source_id {claim.source_id!r}"
                )
        claims.append(claim)
    return tuple(claims)


def _parse_claim(table: dict[str, Any], *, where: str, index: int) -> Claim:
    raw_id = table.get("id")
    name = f"claim {raw_id!r}" if isinstance(raw_id, str) and raw_id else f"claim #{index}"

    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}: {name}: {field}: {problem}")

    _check_fields(table, fail)
    _check_values(table, fail)
    values = dict(table)
    for key in _FLOAT_FIELDS:
        if key in values:
            values[key] = float(values[key])
    return Claim(**values)


def _check_fields(table: dict[str, Any], fail: Callable[[str, str], ConfigError]) -> None:
    """Every field known, every required field present, every value of its field's type."""
    for key in table:
        if key not in _FIELDS:
            raise fail(key, f"unknown field (expected one of: {', '.join(_FIELDS)})")
    for key in _REQUIRED:
        if key not in table:
            raise fail(key, "missing")
    for key, value in table.items():
        if key in _STR_FIELDS:
            ok = isinstance(value, str) and value.strip() != ""
            expected = "a non-empty string"
        elif key in _BOOL_FIELDS:
            ok = isinstance(value, bool)
            expected = "true or false"
        elif key in _FLOAT_FIELDS:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            expected = "a finite number"
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            expected = "a positive integer"
        if not ok:
            raise fail(key, f"must be {expected}, not {value!r}")


_PATTERNS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("id", _ID, "must be a slug of lower-case letters, digits, '.', '_' and '-'"),
    ("source_id", _ID, "must be a slug of lower-case letters, digits, '.', '_' and '-'"),
    ("url", re.compile(r"https?://\S+\Z"), "must be an http(s) URL"),
    ("published", _PUBLISHED, "must be YYYY or YYYY-MM"),
    ("connections", _CONNECTIONS, "must look like '16' or '1-64'"),
)


def _check_values(table: dict[str, Any], fail: Callable[[str, str], ConfigError]) -> None:
    """Vocabularies, formats and the rules that tie fields together (types already checked)."""
    for key, pattern, problem in _PATTERNS:
        if key in table and not pattern.match(table[key]):
            raise fail(key, f"{problem}, not {table[key]!r}")
    if table["mesh"] not in MESHES:
        raise fail("mesh", f"unknown mesh {table['mesh']!r} (expected one of: {', '.join(MESHES)})")
    metric = table["metric"]
    if metric not in METRICS:
        raise fail("metric", f"unknown metric {metric!r} (expected one of: {', '.join(METRICS)})")
    if metric == "added_latency_pct" and "percentile" not in table:
        raise fail("percentile", "missing (required for added_latency_pct; may be 'unknown')")
    if metric != "added_latency_pct" and "percentile" in table:
        raise fail("percentile", f"only for added_latency_pct, not {metric}")
    if metric.startswith("proxy_") and table["value"] <= 0:
        raise fail("value", "must be positive for a resource metric")
    if table.get("rate_rps", 1) <= 0:
        raise fail("rate_rps", "must be positive (omit it for saturation or unknown)")


def claims_for(mesh: str, claims: Iterable[Claim] | None = None) -> list[Claim]:
    """The claims to set beside a testbed mesh's results (see `MESH_EQUIVALENTS`); none for "none"."""
    if mesh == "none":
        return []
    if mesh not in MESH_EQUIVALENTS:
        raise UsageError(f"unknown mesh {mesh!r} (known: none, {', '.join(MESH_EQUIVALENTS)})")
    target = MESH_EQUIVALENTS[mesh]
    return [c for c in (load_claims() if claims is None else claims) if c.mesh == target]
