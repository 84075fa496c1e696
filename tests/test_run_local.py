"""`testbed run` on the local platform, for real: services, Envoy sidecars, the engine, the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import cli_argv, run_testbed

pytestmark = pytest.mark.slow


def test_meshes_without_a_local_build_are_refused() -> None:
    for mesh in ("istio", "istio-ambient", "linkerd", "cilium"):
        proc = run_testbed("run", "--mesh", f"none,{mesh}", "--scenario", "smoke")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]  # one line
        assert f"mesh {mesh!r} is not available on the local platform" in proc.stderr
        assert "use --platform kind" in proc.stderr


def test_smoke_run_writes_the_layout_and_evidence(tmp_path: Path) -> None:
    proc = run_testbed("run", "--scenario", "smoke", "--out", str(tmp_path), "--run-id", "r1", timeout=240)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "r1"
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["schema"] == "testbed.run/1"
    assert meta["status"] == "complete" and meta["finished_trials"] == 2
    assert meta["versions"]["envoy"].startswith("1.40")
    assert {"cpu_model", "cpu_count", "kernel"} <= meta["host"].keys()
    for mesh in ("none", "envoy"):
        result = json.loads((run_dir / mesh / "100" / "trial-1" / "result.json").read_text())
        assert result["schema"] == "testbed.load/2"
        assert result["mesh"] == mesh
        assert result["requests"] == 200 and result["errors"] == 0
        components = result["resources"]["components"]
        assert components["app"]["processes"] == 4 and components["app"]["cpu_seconds"] > 0
        assert components["loadgen"]["cpu_seconds"] > 0
        host = result["resources"]["host"]  # the whole VM over the window, steal included
        assert host["cores"] == psutil.cpu_count() and host["busy_vcpu"] > 0
        assert 0 <= host["steal_percent"] <= 100
    evidence = json.loads((run_dir / "envoy" / "100" / "trial-1" / "result.json").read_text())[
        "mesh_evidence"
    ]
    assert evidence["mtls_verified"] is True
    assert all(evidence["plaintext_refused"].values())
    assert evidence["tls"]["sidecar-frontend"]["inbound"]["handshake"] > 0
    envoy_resources = json.loads((run_dir / "envoy" / "100" / "trial-1" / "result.json").read_text())[
        "resources"
    ]
    assert envoy_resources["components"]["sidecar"]["processes"] == 5
    assert envoy_resources["components"]["sidecar"]["cpu_seconds"] > 0
    assert (run_dir / "report.md").is_file()
    assert "| envoy | 100 |" in (run_dir / "report.md").read_text()


def _listening_ports_of(pids: set[int]) -> list[int]:
    ports = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            ports.append(c.laddr.port)
    return ports


def test_interrupted_run_leaves_nothing_and_keeps_finished_trials(tmp_path: Path) -> None:
    scenario = tmp_path / "long.toml"
    scenario.write_text("rates = [50]\nduration_s = 3\nwarmup_s = 0.5\ntrials = 5\ncooldown_s = 0\n")
    argv = cli_argv("run", "--scenario", str(scenario), "--out", str(tmp_path), "--run-id", "r2")
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    run_dir = tmp_path / "r2"
    # Interrupt while the envoy trial of the second round is running, with every process up.
    while time.monotonic() < deadline:
        for p in psutil.Process(child.pid).children(recursive=True):
            seen.add(p.pid)
        meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
        if meta.get("finished_trials", 0) >= 1 and any(
            "envoy" in " ".join(p.cmdline()) for p in psutil.Process(child.pid).children(recursive=True)
        ):
            time.sleep(1.5)
            seen |= {p.pid for p in psutil.Process(child.pid).children(recursive=True)}
            break
        time.sleep(0.2)
    assert len(seen) >= 10  # 4 services, 5 sidecars, the engine
    os.kill(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "finished trial(s) kept" in stderr
    assert f"report them with: testbed report {run_dir}" in stderr
    # What was measured before the interruption can be reported.
    report = run_testbed("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert "the run is interrupted" in (run_dir / "report.md").read_text()
    time.sleep(0.5)
    alive = [
        pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    assert _listening_ports_of(seen) == []
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted"
    assert (run_dir / "none" / "50" / "trial-1" / "result.json").is_file()
