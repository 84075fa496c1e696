"""A fault in the system under test spoils one trial, not the run: real processes killed mid-window."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import cli_argv

pytestmark = pytest.mark.slow

#: Two trials per mesh at 100 rps, judged with a lateness limit a busy CI host meets (the trials that
#: are not spoiled must be valid), with a window long enough to kill something inside it.
SCENARIO = (
    "rates = [100]\nduration_s = 3\nwarmup_s = 1\ntrials = 2\nconnections = 4\ncooldown_s = 0\n"
    "max_lateness_ms = 50\n"
)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _listening(pids: set[int]) -> list[int]:
    return [
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


def _run_and_kill(tmp_path: Path, victim: str) -> tuple[subprocess.CompletedProcess[str], Path, set[int]]:
    """Run none,envoy; SIGKILL the first process whose command line has `victim` once the first envoy
    trial's measured window has started."""
    scenario = tmp_path / "faults.toml"
    scenario.write_text(SCENARIO)
    argv = cli_argv("run", "--scenario", str(scenario), "--out", str(tmp_path), "--run-id", "r")
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "r"
    window_log = run_dir / "envoy" / "100" / "trial-1" / "loadgen.log"
    seen: set[int] = set()
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and time.monotonic() < deadline and child.poll() is None:
        processes = _descendants(child.pid)
        seen |= {p.pid for p in processes}
        if window_log.is_file() and "measured window start" in window_log.read_text(errors="replace"):
            time.sleep(0.5)  # inside the 3 s window
            for p in _descendants(child.pid):
                if victim in _cmdline(p):
                    p.send_signal(signal.SIGKILL)
                    killed = p.pid
                    break
        time.sleep(0.05)
    assert killed is not None, f"no {victim!r} process found during the first envoy trial"
    stdout, stderr = child.communicate(timeout=240)
    done = subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
    return done, run_dir, seen


@pytest.mark.parametrize(
    ("victim", "name"),
    [("sidecar-catalog", "sidecar catalog"), ("--service catalog", "service catalog")],
)
def test_a_process_killed_mid_window_fails_that_trial_and_the_run_goes_on(
    tmp_path: Path, victim: str, name: str
) -> None:
    done, run_dir, seen = _run_and_kill(tmp_path, victim)
    assert done.returncode == 3, done.stderr  # complete with failures
    assert "Traceback" not in done.stderr
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "complete-with-failures"
    assert meta["finished_trials"] == 4
    [failure] = meta["failures"]
    assert failure["path"] == "envoy/100/trial-1" and failure["status"] == "failed"
    assert failure["cause"].startswith(f"{name} killed by SIGKILL ")
    assert "s into the measured window" in failure["cause"]
    # The spoiled trial keeps its cause and what was measured before it, never as a result.
    spoiled = run_dir / "envoy" / "100" / "trial-1"
    assert not (spoiled / "result.json").exists()
    record = json.loads((spoiled / "failed.json").read_text())
    assert record["schema"] == "testbed.failed-trial/1"
    assert record["signal"] == "SIGKILL" and record["process"] == name
    assert 0 <= record["seconds_into_window"] < 3
    assert record["resources_until_failure"]["components"]["app"]["cpu_seconds"] > 0
    # The other trials ran on fresh processes and are valid.
    for path in ("none/100/trial-1", "none/100/trial-2", "envoy/100/trial-2"):
        result = json.loads((run_dir / path / "result.json").read_text())
        assert result["valid"] is True, (path, result.get("invalid_reasons"))
    # The report lists the failed trial with its cause.
    report = (run_dir / "report.md").read_text()
    assert "envoy/100/trial-1" in report and failure["cause"] in report
    # Nothing is left running or listening.
    time.sleep(0.5)
    alive = [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert _listening(seen) == []


def test_consecutive_failures_skip_the_rest_of_that_mesh(tmp_path: Path) -> None:
    """With --max-failures 1, the first failed envoy trial skips the second; none still runs both."""
    scenario = tmp_path / "faults.toml"
    scenario.write_text(SCENARIO)
    argv = [*cli_argv("run", "--scenario", str(scenario), "--out", str(tmp_path), "--run-id", "r")]
    argv += ["--max-failures", "1"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    window_log = tmp_path / "r" / "envoy" / "100" / "trial-1" / "loadgen.log"
    deadline = time.monotonic() + 180
    killed = False
    while not killed and time.monotonic() < deadline and child.poll() is None:
        if window_log.is_file() and "measured window start" in window_log.read_text(errors="replace"):
            for p in _descendants(child.pid):
                if "sidecar-frontend" in _cmdline(p):
                    p.send_signal(signal.SIGKILL)
                    killed = True
                    break
        time.sleep(0.05)
    assert killed
    _, stderr = child.communicate(timeout=240)
    assert child.returncode == 3, stderr
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert [(f["path"], f["status"]) for f in meta["failures"]] == [
        ("envoy/100/trial-1", "failed"),
        ("envoy/100/trial-2", "skipped"),
    ]
    assert "1 consecutive failed trials of envoy (--max-failures 1)" in meta["failures"][1]["cause"]
    assert (tmp_path / "r" / "none" / "100" / "trial-2" / "result.json").is_file()
    assert not (tmp_path / "r" / "envoy" / "100" / "trial-2").exists()
