"""Interrupts at random moments of real local runs: `testbed` exits once every process it started is gone.

Each case starts `testbed run --mesh none,envoy` (4 services, 5 Envoy sidecars, the engine, the report), and
at a moment spread over the whole run (start-up, the trials, the teardowns, the report) sends either SIGINT
to its process group (Ctrl-C in a terminal) or SIGTERM to the main process only (a CI job being cancelled).
As soon as `testbed` has exited, no process it started may be alive and no port of the run may listen.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import cli_argv

pytestmark = pytest.mark.slow

#: One trial per mesh, short: a whole run lasts about RUN_S seconds on a 2-core host.
SCENARIO = (
    "rates = [100]\nduration_s = 1\nwarmup_s = 0.5\ntrials = 1\nconnections = 4\ncooldown_s = 0\n"
    "max_lateness_ms = 50\n"
)
RUN_S = 9.0
CASES = 24
SEED = int(os.environ.get("TESTBED_INTERRUPT_SEED", "20261130"))


def _alive(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return out


def _listening(pids: set[int]) -> list[int]:
    return [
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


def _phase(run_dir: Path) -> str:
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        return "start-up"
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return "start-up"
    finished = meta.get("finished_trials", 0)
    return f"after {finished} trial(s)" if meta.get("status") == "running" else "report"


def _one(tmp_path: Path, number: int, delay: float, how: str) -> tuple[str, int]:
    scenario = tmp_path / "tiny.toml"
    if not scenario.exists():
        scenario.write_text(SCENARIO)
    run_id = f"r{number}"
    argv = cli_argv("run", "--scenario", str(scenario), "--out", str(tmp_path), "--run-id", run_id)
    child = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    seen: set[int] = set()
    fire_at = time.monotonic() + delay
    phase = "finished"
    while child.poll() is None:
        try:
            seen |= {p.pid for p in psutil.Process(child.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        if time.monotonic() >= fire_at:
            phase = _phase(tmp_path / run_id)
            if how == "SIGINT to the group":
                os.killpg(child.pid, signal.SIGINT)
            else:
                child.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    _, stderr = child.communicate(timeout=120)
    # Checked at once: the message "every process it started was stopped" must already be true.
    alive = _alive(seen)
    ports = _listening(seen)
    assert alive == [], f"case {number} ({how} at {delay:.2f} s, {phase}): alive after exit: {alive}"
    assert ports == [], f"case {number} ({how} at {delay:.2f} s, {phase}): listening after exit: {ports}"
    if not seen and phase == "start-up":
        # Before `main()` has set its handlers (Python still starting, imports) nothing was started, and
        # Python's own default applies: SIGTERM ends it, SIGINT raises where it is.
        return phase, child.returncode
    expected = (0, 130)
    if phase == "report":
        # After `main()` has returned, while the interpreter shuts down, the signal's default applies.
        expected += (-signal.SIGINT, -signal.SIGTERM)
    assert child.returncode in expected, f"case {number} ({how}, {phase}): exit {child.returncode}: {stderr}"
    assert "Traceback" not in stderr, stderr
    if child.returncode == 130:
        assert stderr.strip(), "an interrupted run says so"
    return phase, child.returncode


def test_random_interrupts_leave_nothing_running(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    # Spread over the run: one moment in each of CASES equal slices of it, in random order.
    delays = [(i + rng.random()) * RUN_S / CASES for i in range(CASES)]
    rng.shuffle(delays)
    phases: dict[str, int] = {}
    for number, delay in enumerate(delays):
        how = "SIGINT to the group" if number % 2 == 0 else "SIGTERM to the main process"
        phase, _ = _one(tmp_path, number, delay, how)
        phases[phase] = phases.get(phase, 0) + 1
    print(f"seed {SEED}: interrupts by phase: {phases}")
    # The moments did reach start-up, the trials and the end (if this fails, RUN_S is off for this host).
    assert phases.get("start-up", 0) >= 1, phases
    assert sum(n for p, n in phases.items() if p.startswith("after")) >= 6, phases
