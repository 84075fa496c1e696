"""The SMP export: documents valid against the schema derived from SMP's protos, and the numbers right."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from testbed.reporting.smp import (
    MESH_TYPES,
    SERVICE_MESH_TYPES,
    SMP_COMMIT,
    SMP_VERSION,
    SMPExportError,
    mesh_type,
    timestamp,
    to_smp,
    write_smp,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "smp"
SCHEMA_PATH = FIXTURES / "smp-v0.6.1.schema.json"


def _cell(mesh: str, rate: float, *, p99_us: float, sidecar: bool, overhead: bool) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "app": {"vcpu": 0.2125, "vcpu_per_krps": 2.125, "mb": 61.4, "mb_per_krps": 614.0, "processes": 3},
        "loadgen": {"vcpu": 0.31, "vcpu_per_krps": 3.1, "mb": 48.25, "mb_per_krps": 482.5, "processes": 1},
    }
    if sidecar:
        resources["sidecar"] = {
            "vcpu": 0.1234,
            "vcpu_per_krps": 1.234,
            "mb": 37.6,
            "mb_per_krps": 376.0,
            "processes": 4,
        }
    return {
        "mesh": mesh,
        "rate": rate,
        "trials": 3,
        "valid_trials": 3,
        "requests": int(rate * 90),
        "errors": 2,
        "achieved_rate": rate * 0.9987,
        "duration_s": 90.12,
        "latency_us": {
            "p50": 1234,
            "p90": 2345,
            "p99": p99_us,
            "p999": 23456,
            "max": 45678,
            "mean": 1500.5,
            "count": int(rate * 90) - 2,
        },
        "resources": resources,
        "overhead": (
            {
                "p50": {"us": 456.0, "pct": 58.6, "ci_us": [401.5, 512.0], "ci_pct": [51.0, 66.2]},
                "p99": {"us": 2345.0, "pct": 23.4, "ci_us": [2001.0, 2700.5], "ci_pct": [19.9, 27.1]},
            }
            if overhead
            else {}
        ),
    }


@pytest.fixture
def summary() -> dict[str, Any]:
    """A realistic `testbed.summary/1`: local platform, baseline and Envoy at two rates, one failed cell."""
    failed = _cell("envoy", 2000.0, p99_us=0, sidecar=True, overhead=False)
    failed |= {"valid_trials": 0, "latency_us": {}, "overhead": {}}
    return {
        "schema": "testbed.summary/1",
        "generated_at": "2026-04-21T09:30:00+00:00",
        "testbed_version": "0.1.0",
        "run": {
            "run_id": "20260421T090000Z-local-quick",
            "platform": "local",
            "meshes": ["none", "envoy"],
            "baseline": "none",
            "scenario": {
                "name": "quick",
                "description": "a short check",
                "rates": [100.0, 1000.0, 2000.0],
                "duration_s": 30.0,
                "warmup_s": 5.0,
                "trials": 3,
                "connections": 16,
                "arrival": "poisson",
                "processes": 1,
                "cooldown_s": 1.0,
                "max_lateness_ms": 2.0,
            },
            "topology": {"name": "chain3", "entry": "frontend", "services": ["frontend", "cart", "db"]},
            "host": {
                "cpu_model": "AMD EPYC 7B13",
                "cpu_count": 8,
                "kernel": "6.1.0-30-amd64",
                "system": "Linux",
                "hostname": "bench-1",
            },
            "versions": {"testbed": "0.1.0", "locust": "2.47.0", "envoy": "1.40.0", "python": "3.11.7"},
            "started_at": "2026-04-21T09:00:00+00:00",
            "ended_at": "2026-04-21T11:00:00.250000+02:00",
            "status": "complete",
        },
        "cells": [
            _cell("none", 100.0, p99_us=10000, sidecar=False, overhead=False),
            _cell("envoy", 100.0, p99_us=12345, sidecar=True, overhead=True),
            _cell("none", 1000.0, p99_us=11000, sidecar=False, overhead=False),
            _cell("envoy", 1000.0, p99_us=13345, sidecar=True, overhead=True),
            failed,
        ],
        "invalid_trials": [],
        "warnings": [],
    }


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _by_cell(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (d["mesh"]["labels"]["testbed.mesh"], d["result"]["labels"]["testbed.rate_rps"]): d for d in documents
    }


def test_export_validates_against_the_smp_schema(
    summary: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    documents = to_smp(summary)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(documents)]
    assert errors == []
    assert len(documents) == 4  # the cell without a valid trial is left out
    # JSON as written: no NaN, and stable through a round trip.
    assert json.loads(json.dumps(documents, allow_nan=False)) == documents


def test_schema_rejects_what_smp_does_not_allow(
    summary: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    """The schema has teeth: a wrong type, an unknown field and an unknown enum value all fail."""
    good = _by_cell(to_smp(summary))[("envoy", "100")]
    assert validator.is_valid([good])
    for path, value in (
        (("result", "latencies_ms", "p99"), "12.3"),
        (("result", "latencies_ms", "p999"), 20.0),  # SMP's Latency has no p99.9
        (("mesh", "type"), "ENVOY"),
        (("test", "clients"), {"load_generator": "locust"}),
        (("result", "start_time"), "21/04/2026 09:00"),
        (("mesh_config", "sidecar", "cpu_mcores"), 2**31),
    ):
        bad = copy.deepcopy(good)
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert not validator.is_valid([bad]), path


def test_latencies_are_converted_from_microseconds_to_milliseconds(summary: dict[str, Any]) -> None:
    envoy = _by_cell(to_smp(summary))[("envoy", "100")]
    latencies = envoy["result"]["latencies_ms"]
    assert latencies["p99"] == 12.345
    assert latencies == {"average": 1.5005, "p50": 1.234, "p90": 2.345, "p99": 12.345, "max": 45.678}
    assert "min" not in latencies  # not measured: left absent rather than written as 0
    labels = envoy["result"]["labels"]
    assert labels["testbed.latency_ms.p999"] == "23.456"
    assert labels["testbed.overhead_ms.p99"] == "2.345"
    assert labels["testbed.overhead_ms.p99.ci"] == "[2.001, 2.7005]"
    assert labels["testbed.overhead_pct.p50.ci"] == "[51, 66.2]"
    assert envoy["result"]["actual_qps"] == pytest.approx(99.87)
    # A summary that recorded the minimum exports it.
    summary["cells"][1]["latency_us"]["min"] = 987
    assert _by_cell(to_smp(summary))[("envoy", "100")]["result"]["latencies_ms"]["min"] == 0.987


def test_resources_times_and_links(summary: dict[str, Any]) -> None:
    documents = to_smp(summary)
    envoy = _by_cell(documents)[("envoy", "1000")]
    result = envoy["result"]
    assert result["smp_version"] == SMP_VERSION
    assert result["test_id"] == envoy["test"]["id"]
    assert result["mesh_config_id"] == envoy["mesh_config"]["id"]
    assert result["env_id"] == envoy["env"]["id"]
    assert len({d["result"]["id"] for d in documents}) == len(documents)
    assert to_smp(summary)[0]["result"]["id"] == documents[0]["result"]["id"]  # deterministic
    assert result["start_time"] == "2026-04-21T09:00:00Z"
    assert result["end_time"] == "2026-04-21T09:00:00.250000Z"  # +02:00 normalized to UTC
    assert envoy["mesh_config"]["sidecar"] == {"count": 4, "cpu_mcores": 123, "mem_mb": 38}
    assert envoy["mesh_config"]["mtls_enabled"] is True
    assert envoy["mesh_config"]["proxy_build"] == "envoy 1.40.0"
    assert envoy["mesh_config"]["labels"]["testbed.resources.sidecar.vcpu"] == "0.1234"
    assert envoy["env"]["nodes"] == [{"type": "AMD EPYC 7B13", "cores": 8}]
    assert envoy["env"]["individual_workloads"] == [
        {"name": "app", "count": 3, "cpu_mcores": 212, "mem_mb": 61},
        {"name": "loadgen", "count": 1, "cpu_mcores": 310, "mem_mb": 48},
    ]
    test = envoy["test"]
    assert test["duration"] == "30s"
    assert test["clients"] == [{"load_generator": "locust", "protocol": 1, "rps": 1000, "connections": 16}]
    baseline = _by_cell(documents)[("none", "1000")]
    assert "sidecar" not in baseline["mesh_config"]
    assert "mtls_enabled" not in baseline["mesh_config"]


def test_mesh_names_map_to_the_smp_enum(summary: dict[str, Any]) -> None:
    cells = _by_cell(to_smp(summary))
    none, envoy = cells[("none", "100")]["mesh"], cells[("envoy", "100")]["mesh"]
    assert none["type"] == SERVICE_MESH_TYPES["INVALID_MESH"] == 0
    assert envoy["type"] == 0  # no Envoy value in SMP; the name is kept in the labels
    assert envoy["labels"] == {"testbed.mesh": "envoy"}
    assert envoy["annotations"]["testbed.smp_type"].startswith("INVALID_MESH: Envoy sidecars")
    assert envoy["version"] == "1.40.0"
    assert "version" not in none
    assert mesh_type("istio")[0] == SERVICE_MESH_TYPES["ISTIO"] == 3
    assert mesh_type("linkerd")[0] == 5
    assert mesh_type("cilium")[0] == 12
    assert all(name in SERVICE_MESH_TYPES for name, _ in MESH_TYPES.values())
    # Every mesh a run can have exports (cilium-plain included), without unknown_mesh="unspecified".
    from testbed.meshes import ALL_MESHES

    assert set(ALL_MESHES) <= set(MESH_TYPES)


def test_an_unknown_mesh_is_an_error_unless_asked_for(summary: dict[str, Any]) -> None:
    summary["cells"][1]["mesh"] = "kuma-ish"
    with pytest.raises(SMPExportError, match=r"mesh 'kuma-ish' has no SMP ServiceMesh.Type mapping"):
        to_smp(summary)
    unknown = _by_cell(to_smp(summary, unknown_mesh="unspecified"))[("kuma-ish", "100")]
    assert unknown["mesh"]["type"] == 0
    assert unknown["mesh"]["labels"] == {"testbed.mesh": "kuma-ish"}
    assert "no SMP mapping" in unknown["mesh"]["annotations"]["testbed.smp_type"]


def test_a_cell_without_valid_trials_is_left_out_and_logged(
    summary: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="testbed.reporting.smp"):
        documents = to_smp(summary)
    assert ("envoy", "2000") not in _by_cell(documents)
    assert "envoy at 2000.0 rps has no valid trial" in caplog.text


def test_not_a_summary_is_refused(summary: dict[str, Any]) -> None:
    with pytest.raises(SMPExportError, match=r"not a testbed\.summary/1 summary"):
        to_smp({**summary, "schema": "testbed.run/1"})
    with pytest.raises(SMPExportError, match="no 'cells' list"):
        to_smp({k: v for k, v in summary.items() if k != "cells"})


def test_write_smp(
    summary: dict[str, Any], tmp_path: Path, validator: jsonschema.protocols.Validator
) -> None:
    path = write_smp(summary, tmp_path / "out" / "smp.json", details_uri="report.html")
    written = json.loads(path.read_text())
    assert written == to_smp(summary, details_uri="report.html")
    assert validator.is_valid(written)
    assert written[0]["result"]["details_uri"] == "report.html"
    assert not list(path.parent.glob("*.tmp"))


def test_timestamps() -> None:
    assert timestamp("2026-04-21T09:00:00+00:00") == "2026-04-21T09:00:00Z"
    assert timestamp("2026-04-21T09:00:00") == "2026-04-21T09:00:00Z"  # no offset: UTC
    assert timestamp("2026-04-21T00:30:00.5-01:00") == "2026-04-21T01:30:00.500000Z"
    with pytest.raises(SMPExportError):
        timestamp("yesterday")


def _proto_fields() -> dict[str, set[str]]:
    """Message (dotted, nested) -> its field names, read from the protos copied from the spec."""
    fields: dict[str, set[str]] = {}
    for proto in sorted((FIXTURES / "protos").glob("*.proto")):
        stack: list[tuple[str, str]] = []
        for raw in proto.read_text().splitlines():
            line = raw.split("//", 1)[0].strip()
            if opened := re.match(r"(message|enum)\s+(\w+)\s*\{", line):
                stack.append((opened[1], opened[2]))
                if opened[1] == "message":
                    fields[".".join(n for _, n in stack)] = set()
            elif line == "}":
                stack.pop()
            elif stack and stack[-1][0] == "message" and (field := re.search(r"(\w+)\s*=\s*\d+;", line)):
                fields[".".join(n for _, n in stack)].add(field[1])
    return fields


def test_the_schema_covers_exactly_the_proto_messages() -> None:
    """Guards the hand-derived schema against the spec's protos (copied from SMP_COMMIT)."""
    schema = json.loads(SCHEMA_PATH.read_text())
    assert SMP_COMMIT in schema["$comment"]
    proto = _proto_fields()
    assert "PerformanceTestResult.Latency" in proto
    derived = {
        name.removeprefix("smp."): set(definition.get("properties", {}))
        for name, definition in schema["$defs"].items()
        if name.startswith("smp.") and definition.get("type") == "object"
    }
    assert derived == proto
    enum = schema["$defs"]["smp.ServiceMesh.Type"]["enum"]
    assert [v for v in enum if isinstance(v, str)] == list(SERVICE_MESH_TYPES)
    assert [v for v in enum if isinstance(v, int)] == list(SERVICE_MESH_TYPES.values())
