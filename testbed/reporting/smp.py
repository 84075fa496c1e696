"""A run's summary in the Service Mesh Performance (SMP) format, for Meshery and other SMP readers.

The spec is github.com/service-mesh-performance/service-mesh-performance at commit
6ecbce7985dddb5577509f25a1ab67959da8ca68: `protos/service_mesh_performance.proto` (PerformanceTestConfig,
PerformanceTestResult, ServiceMeshConfig, EnvironmentConfig), `protos/service_mesh.proto` (ServiceMesh and
its Type enum) and `protos/metadata.proto`. The protos have not changed since tag v0.6.1, hence
`smp_version` "v0.6.1". SMP defines messages only, no JSON schema and no file layout, so:

* the messages are written in the proto3 JSON mapping with the proto field names (snake_case), which is
  what Meshery's SMP files and the spec's sample result use; protojson reads them too. Enums are written
  as numbers, which every reader accepts (protojson, and Go's encoding/json on the generated structs,
  which is how Meshery's legacy SMP endpoint reads a test file); timestamps as RFC 3339 in UTC.
* one document per (mesh, rate) cell, because a PerformanceTestResult is one load level against one mesh
  configuration. A document is `{"test", "mesh", "mesh_config", "env", "result"}`: `test` and `mesh` are
  the keys of Meshery's legacy SMP test file, the rest are the other messages of the same test, linked by
  the ids the result carries (`test_id`, `mesh_config_id`, `env_id`).

What SMP has no field for (p99.9, errors, trial counts, overhead over the baseline and its confidence
intervals, the run's unreadable trial results) goes into the `labels` maps (strings) under `testbed.`;
nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from testbed.errors import TestbedError

log = logging.getLogger("testbed.reporting.smp")

SUMMARY_SCHEMA = "testbed.summary/1"

#: Where the format comes from (the protos are unchanged since this tag).
SMP_VERSION = "v0.6.1"
SMP_REPO = "github.com/service-mesh-performance/service-mesh-performance"
SMP_COMMIT = "6ecbce7985dddb5577509f25a1ab67959da8ca68"

#: `smp.ServiceMesh.Type` (protos/service_mesh.proto).
SERVICE_MESH_TYPES: dict[str, int] = {
    "INVALID_MESH": 0,
    "APP_MESH": 1,
    "CONSUL": 2,
    "ISTIO": 3,
    "KUMA": 4,
    "LINKERD": 5,
    "TRAEFIK_MESH": 6,
    "OCTARINE": 7,
    "NETWORK_SERVICE_MESH": 8,
    "TANZU": 9,
    "OPEN_SERVICE_MESH": 10,
    "NGINX_SERVICE_MESH": 11,
    "CILIUM_SERVICE_MESH": 12,
}

#: `smp.PerformanceTestConfig.Client.Protocol`: the load generator speaks HTTP/1.1.
PROTOCOL_HTTP = 1

#: testbed mesh -> (SMP ServiceMesh.Type name, why). INVALID_MESH is the enum's zero value, proto3's
#: "unspecified": SMP has no value for "no mesh", nor for Envoy sidecars without a control plane.
MESH_TYPES: dict[str, tuple[str, str]] = {
    "none": (
        "INVALID_MESH",
        "no mesh (the baseline); SMP has no 'no mesh' value, 0 is its unspecified value",
    ),
    "envoy": (
        "INVALID_MESH",
        "Envoy sidecars with SPIFFE mTLS and no control plane, modelled on Istio's sidecar mode; SMP has no "
        "Envoy value, and ISTIO would claim istiod and an Istio release that were not there",
    ),
    "istio": ("ISTIO", "Istio, sidecar mode"),
    "istio-ambient": ("ISTIO", "Istio, ambient mode (ztunnel); SMP's Type does not tell the modes apart"),
    "linkerd": ("LINKERD", "Linkerd"),
    "cilium-plain": ("CILIUM_SERVICE_MESH", "Cilium as the CNI without encryption: the baseline of `cilium`"),
    "cilium": ("CILIUM_SERVICE_MESH", "Cilium service mesh"),
}

#: Meshes whose data plane in the testbed is mTLS on every hop by construction (testbed/meshes/local.py).
MTLS_MESHES = frozenset({"envoy"})

#: Resource components that are the mesh's (ServiceMeshConfig.sidecar); the others are workloads.
SIDECAR = "sidecar"

_INT32_MAX = 2**31 - 1


class SMPExportError(TestbedError):
    """The summary cannot be exported to SMP as asked; the message says which field and why."""


def to_smp(
    summary: Mapping[str, Any],
    *,
    unknown_mesh: Literal["error", "unspecified"] = "error",
    details_uri: str | None = None,
) -> list[dict[str, Any]]:
    """One SMP document per (mesh, rate) cell of a `testbed.summary/1` summary, in the summary's order.

    A mesh not in `MESH_TYPES` raises `SMPExportError`, unless `unknown_mesh="unspecified"`: then it is
    exported as INVALID_MESH with its name in the labels. A cell without a valid trial has no measurement
    and is left out (logged), since proto3 would read its missing latencies as 0 ms.
    """
    if summary.get("schema") != SUMMARY_SCHEMA:
        raise SMPExportError(f"not a {SUMMARY_SCHEMA} summary (schema is {summary.get('schema')!r})")
    run = summary.get("run")
    if not isinstance(run, Mapping):
        raise SMPExportError("summary has no 'run' object")
    cells = summary.get("cells")
    if not isinstance(cells, list):
        raise SMPExportError("summary has no 'cells' list")
    documents = []
    for cell in cells:
        if not cell.get("valid_trials") or not (cell.get("latency_us") or {}).get("count"):
            log.warning(
                "SMP export: %s at %s rps has no valid trial; left out", cell.get("mesh"), cell.get("rate")
            )
            continue
        documents.append(_document(summary, run, cell, unknown_mesh=unknown_mesh, details_uri=details_uri))
    return documents


def write_smp(
    summary: Mapping[str, Any],
    path: Path | str,
    *,
    unknown_mesh: Literal["error", "unspecified"] = "error",
    details_uri: str | None = None,
) -> Path:
    """`to_smp(summary)` as a JSON file (a list of documents); written whole or not at all."""
    target = Path(path)
    documents = to_smp(summary, unknown_mesh=unknown_mesh, details_uri=details_uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(documents, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    os.replace(tmp, target)
    return target


def mesh_type(mesh: str, *, unknown_mesh: Literal["error", "unspecified"] = "error") -> tuple[int, str]:
    """The SMP ServiceMesh.Type number of a testbed mesh, and why."""
    if mesh in MESH_TYPES:
        name, why = MESH_TYPES[mesh]
        return SERVICE_MESH_TYPES[name], why
    if unknown_mesh == "unspecified":
        return SERVICE_MESH_TYPES["INVALID_MESH"], f"{mesh!r} has no SMP mapping in testbed; exported as 0"
    raise SMPExportError(
        f"mesh {mesh!r} has no SMP ServiceMesh.Type mapping (known: {', '.join(MESH_TYPES)}); "
        "pass unknown_mesh='unspecified' to export it as INVALID_MESH (0) with its name in the labels"
    )


def us_to_ms(us: float) -> float:
    """Microseconds to the milliseconds of SMP's `latencies_ms`."""
    return float(us) / 1000.0


def timestamp(value: str) -> str:
    """An ISO 8601 time as a proto3 JSON Timestamp: RFC 3339 in UTC ('Z'); a time without offset is UTC."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise SMPExportError(f"not an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    moment = moment.astimezone(dt.UTC)
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


@dataclass(frozen=True, kw_only=True)
class _Cell:
    """One (mesh, rate) cell with what every message of its document needs."""

    summary: Mapping[str, Any]
    run: Mapping[str, Any]
    cell: Mapping[str, Any]
    mesh: str
    rate: float
    versions: Mapping[str, Any]
    scenario: Mapping[str, Any]
    ids: Mapping[str, str]  # message kind -> id

    def labels(self) -> dict[str, str]:
        """The labels every message of the cell starts with."""
        return {
            "testbed.run_id": str(self.run.get("run_id", "")),
            "testbed.mesh": self.mesh,
            "testbed.rate_rps": _num(self.rate),
        }


_KINDS = ("test", "mesh_config", "env", "result")


def _document(
    summary: Mapping[str, Any],
    run: Mapping[str, Any],
    cell: Mapping[str, Any],
    *,
    unknown_mesh: Literal["error", "unspecified"],
    details_uri: str | None,
) -> dict[str, Any]:
    mesh, rate = str(cell["mesh"]), float(cell["rate"])
    type_number, why = mesh_type(mesh, unknown_mesh=unknown_mesh)
    key = f"testbed:{run.get('run_id', '')}:{mesh}:{_num(rate)}"
    ctx = _Cell(
        summary=summary,
        run=run,
        cell=cell,
        mesh=mesh,
        rate=rate,
        versions=run.get("versions") or {},
        scenario=run.get("scenario") or {},
        ids={kind: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key}:{kind}")) for kind in _KINDS},
    )
    service_mesh: dict[str, Any] = {
        "type": type_number,
        "labels": {"testbed.mesh": mesh},
        "annotations": {"testbed.smp_type": f"{_type_name(type_number)}: {why}"},
    }
    if ctx.versions.get(mesh):
        service_mesh["version"] = str(ctx.versions[mesh])
    return {
        "test": _test_config(ctx),
        "mesh": service_mesh,
        "mesh_config": _mesh_config(ctx, service_mesh),
        "env": _environment(ctx),
        "result": _result(ctx, details_uri),
    }


def _test_config(ctx: _Cell) -> dict[str, Any]:
    scenario = ctx.scenario
    labels = ctx.labels()
    labels["testbed.scenario"] = str(scenario.get("name", ""))
    for key in ("arrival", "warmup_s", "trials", "processes", "cooldown_s", "max_lateness_ms"):
        if scenario.get(key) is not None:
            labels[f"testbed.scenario.{key}"] = _num(scenario[key])
    topology: Mapping[str, Any] = ctx.run.get("topology") or {}
    if topology:
        labels["testbed.topology"] = str(topology.get("name", ""))
        labels["testbed.topology.entry"] = str(topology.get("entry", ""))
        labels["testbed.topology.services"] = ",".join(str(s) for s in topology.get("services", []))
    if ctx.rate != round(ctx.rate):
        labels["testbed.rate_rps_exact"] = _num(ctx.rate)  # SMP's rps is an int64
    if ctx.versions.get("locust"):
        labels["testbed.load_generator"] = f"locust {ctx.versions['locust']}"
    client: dict[str, Any] = {
        # A free string in SMP (no enum); Meshery runs only fortio, wrk2 and nighthawk, and would
        # substitute fortio if it re-ran this test.
        "load_generator": "locust",
        "protocol": PROTOCOL_HTTP,
        "rps": round(ctx.rate),
    }
    if ctx.run.get("platform") == "kind":
        client["internal"] = True  # the load generator runs inside the cluster
    if scenario.get("connections") is not None:
        client["connections"] = _int32(scenario["connections"], "scenario.connections")
    config: dict[str, Any] = {
        "smp_version": SMP_VERSION,
        "id": ctx.ids["test"],
        "name": f"{ctx.run.get('run_id', '')} {ctx.mesh} {_num(ctx.rate)} rps",
        "labels": labels,
        "clients": [client],
    }
    if scenario.get("duration_s") is not None:
        config["duration"] = _go_duration(float(scenario["duration_s"]))  # of one trial
    return config


def _mesh_config(ctx: _Cell, service_mesh: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "smp_version": SMP_VERSION,
        "id": ctx.ids["mesh_config"],
        "labels": ctx.labels(),
        "mesh_type": dict(service_mesh),
    }
    sidecar = (ctx.cell.get("resources") or {}).get(SIDECAR)
    if sidecar:
        # SMP's Sidecar and IndividualWorkload have the same count / cpu_mcores / mem_mb figures.
        figures = _workload(SIDECAR, sidecar)
        del figures["name"]
        config["sidecar"] = figures
        config["labels"] |= _resource_labels(SIDECAR, sidecar)
    if ctx.mesh in MTLS_MESHES:
        config["mtls_enabled"] = True
    if ctx.mesh == "envoy" and ctx.versions.get("envoy"):
        config["proxy_build"] = f"envoy {ctx.versions['envoy']}"
    elif ctx.versions.get(ctx.mesh):
        config["mesh_build"] = str(ctx.versions[ctx.mesh])
    return config


def _environment(ctx: _Cell) -> dict[str, Any]:
    host: Mapping[str, Any] = ctx.run.get("host") or {}
    labels = ctx.labels()
    labels["testbed.platform"] = str(ctx.run.get("platform", ""))
    labels |= {
        f"testbed.host.{k}": str(host[k])
        for k in ("hostname", "system", "kernel", "cpu_model")
        if host.get(k)
    }
    labels |= {f"testbed.version.{k}": str(v) for k, v in sorted(ctx.versions.items())}
    node: dict[str, Any] = {"type": str(host.get("cpu_model") or host.get("system") or "host")}
    if host.get("cpu_count") is not None:
        node["cores"] = _int32(host["cpu_count"], "run.host.cpu_count")
    memory = host.get("mem_mb", host.get("memory_mb"))
    if memory is not None:
        node["mem_mb"] = round(float(memory))
    workloads = []
    for name, figures in sorted((ctx.cell.get("resources") or {}).items()):
        if name != SIDECAR and figures:
            workloads.append(_workload(name, figures))
            labels |= _resource_labels(name, figures)
    env: dict[str, Any] = {
        "smp_version": SMP_VERSION,
        "id": ctx.ids["env"],
        "labels": labels,
        "nodes": [node],
    }
    if workloads:
        env["individual_workloads"] = workloads
    if ctx.versions.get("kubernetes"):
        env["kubernetes_version"] = str(ctx.versions["kubernetes"])
    return env


def _workload(name: str, figures: Mapping[str, Any]) -> dict[str, Any]:
    """A component's mean resources as SMP figures: processes, vCPU in mCores (int32), MB (int32)."""
    workload: dict[str, Any] = {"name": name}
    if figures.get("processes") is not None:
        workload["count"] = _int32(figures["processes"], f"resources.{name}.processes")
    if figures.get("vcpu") is not None:
        workload["cpu_mcores"] = _int32(float(figures["vcpu"]) * 1000, f"resources.{name}.vcpu")
    if figures.get("mb") is not None:
        workload["mem_mb"] = _int32(figures["mb"], f"resources.{name}.mb")
    return workload


#: SMP `latencies_ms` key -> testbed `latency_us` key.
_LATENCIES = {"min": "min", "average": "mean", "p50": "p50", "p90": "p90", "p99": "p99", "max": "max"}


def _result(ctx: _Cell, details_uri: str | None) -> dict[str, Any]:
    latency: Mapping[str, Any] = ctx.cell["latency_us"]
    result: dict[str, Any] = {
        "smp_version": SMP_VERSION,
        "id": ctx.ids["result"],
        "labels": _result_labels(ctx),
        "latencies_ms": {
            smp: _finite(us_to_ms(latency[ours]), f"latency_us.{ours}")
            for smp, ours in _LATENCIES.items()
            if latency.get(ours) is not None
        },
        "test_id": ctx.ids["test"],
        "mesh_config_id": ctx.ids["mesh_config"],
        "env_id": ctx.ids["env"],
    }
    if ctx.run.get("started_at"):
        result["start_time"] = timestamp(str(ctx.run["started_at"]))
    if ctx.run.get("ended_at"):
        result["end_time"] = timestamp(str(ctx.run["ended_at"]))
    if ctx.cell.get("achieved_rate") is not None:
        result["actual_qps"] = _finite(float(ctx.cell["achieved_rate"]), "achieved_rate")
    if details_uri:
        result["details_uri"] = details_uri
    return result


def _result_labels(ctx: _Cell) -> dict[str, str]:
    """What SMP's PerformanceTestResult has no field for."""
    cell, latency = ctx.cell, ctx.cell["latency_us"]
    labels = ctx.labels() | {
        "testbed.baseline": str(ctx.run.get("baseline", "")),
        "testbed.latency": "service time timed on the wire, pooled HdrHistogram over the valid trials",
        "testbed.time_span": "start_time and end_time are the whole run's",
        "testbed.load_generator": f"locust {ctx.versions.get('locust', '')}".strip(),
        "testbed.testbed_version": str(ctx.summary.get("testbed_version", "")),
    }
    if latency.get("p999") is not None:
        labels["testbed.latency_ms.p999"] = _num(us_to_ms(latency["p999"]))
    if latency.get("count") is not None:
        labels["testbed.latency.count"] = _num(latency["count"])
    if "min" not in latency:
        labels["testbed.latency_ms.min"] = "not recorded (min absent, reads as 0)"
    labels |= {f"testbed.{k}": _num(cell[k]) for k in _CELL_COUNTS if cell.get(k) is not None}
    skipped = ctx.summary.get("skipped_results") or []
    if skipped:  # of the whole run: a damaged file may be this cell's lost trial (listed in summary.json)
        labels["testbed.run_skipped_results"] = _num(len(skipped))
    if cell.get("requests"):
        labels["testbed.error_ratio"] = _num(float(cell.get("errors") or 0) / float(cell["requests"]))
    for percentile, figures in sorted((cell.get("overhead") or {}).items()):
        labels |= _overhead_labels(percentile, figures)
    return labels


_CELL_COUNTS = ("trials", "valid_trials", "requests", "errors", "duration_s")


def _overhead_labels(percentile: str, figures: Mapping[str, Any]) -> dict[str, str]:
    """The overhead over the baseline at one percentile: ms, %, and their confidence intervals."""
    labels = {}
    if figures.get("us") is not None:
        labels[f"testbed.overhead_ms.{percentile}"] = _num(us_to_ms(figures["us"]))
    if figures.get("pct") is not None:
        labels[f"testbed.overhead_pct.{percentile}"] = _num(figures["pct"])
    if figures.get("ci_us"):
        low, high = (_num(us_to_ms(v)) for v in figures["ci_us"])
        labels[f"testbed.overhead_ms.{percentile}.ci"] = f"[{low}, {high}]"
    if figures.get("ci_pct"):
        low, high = (_num(v) for v in figures["ci_pct"])
        labels[f"testbed.overhead_pct.{percentile}.ci"] = f"[{low}, {high}]"
    return labels


def _resource_labels(component: str, figures: Mapping[str, Any]) -> dict[str, str]:
    """The exact figures, which SMP's int32 mCores and MB round."""
    return {
        f"testbed.resources.{component}.{key}": _num(value)
        for key, value in sorted(figures.items())
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _type_name(number: int) -> str:
    return next(name for name, value in SERVICE_MESH_TYPES.items() if value == number)


def _int32(value: Any, field: str) -> int:
    """A non-negative figure rounded to SMP's int32."""
    number = round(float(value))
    if not 0 <= number <= _INT32_MAX:
        raise SMPExportError(f"{field} = {value!r} does not fit SMP's int32")
    return number


def _finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise SMPExportError(f"{field} is not a finite number: {value!r}")
    return value


def _num(value: Any) -> str:
    """A label value: integers without a decimal point, other numbers in shortest round-trip form."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _go_duration(seconds: float) -> str:
    """A Go `time.ParseDuration` string, as Meshery parses SMP's `duration`."""
    if seconds.is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"
