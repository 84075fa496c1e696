"""`testbed load` as a user runs it: bad input, output contract, clean interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from testbed.loadgen.result import decode
from testbed.ports import free_port
from tests.conftest import NullServer, cli_argv, engine_processes, load_result, run_testbed


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("testbed: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["not a url", "--rate", "10", "--duration", "1"], ["not an http://"]),
        (["http://127.0.0.1:1/", "--rate", "0", "--duration", "1"], ["--rate must be positive"]),
        (["http://127.0.0.1:1/", "--rate", "10", "--duration", "-1"], ["--duration must be positive"]),
        (["http://127.0.0.1:1/", "--rate", "10", "--duration", "1", "--header", "X"], ["--header 'X'"]),
        (["http://127.0.0.1:1/", "--rate", "abc", "--duration", "1"], ["--rate", "invalid float"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    assert_one_line_error(run_testbed("load", *args, "--out", str(tmp_path)), *fragments)


def test_unreachable_target(tmp_path: Path) -> None:
    port = free_port()
    proc = run_testbed(
        "load", f"http://127.0.0.1:{port}/", "--rate", "10", "--duration", "1", "--out", str(tmp_path)
    )
    assert_one_line_error(proc, "cannot reach", "Connection refused")
    proc = run_testbed(
        "load", "http://no-such-host.invalid/", "--rate", "10", "--duration", "1", "--out", "-"
    )
    assert_one_line_error(proc, "cannot resolve")


def test_unwritable_output_directory(tmp_path: Path, null_server: Callable[..., NullServer]) -> None:
    server = null_server()
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_testbed("load", server.url, "--rate", "10", "--duration", "1", "--out", str(blocker / "sub"))
    assert_one_line_error(proc, "cannot write to the output directory")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_testbed(
        "--debug", "load", "http://127.0.0.1:1/", "--rate", "0", "--duration", "1", "--out", "-"
    )
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_stdout_contract_and_exit_code_for_an_invalid_trial(null_server: Callable[..., NullServer]) -> None:
    server = null_server("--status", "503")
    proc = run_testbed(
        "load", server.url, "--rate", "200", "--duration", "1", "--warmup", "0.5", "--out", "-"
    )
    assert proc.returncode == 0, proc.stderr  # the trial ran and its result was written
    result = json.loads(proc.stdout)
    expected_keys = {"schema", "target", "rate", "duration_s", "warmup_s", "arrival", "connections"}
    expected_keys |= {"requests", "errors", "error_kinds", "achieved_rate", "valid", "invalid_reasons"}
    expected_keys |= {"latency_us", "hdr", "loadgen", "started_at"}
    assert expected_keys <= result.keys()
    assert result["schema"] == "testbed.load/2"
    assert result["requests"] == 200
    assert result["errors"] == 200 and result["error_kinds"] == {"HTTP 503": 200}
    assert result["valid"] is False
    assert any("errors 100.00%" in r for r in result["invalid_reasons"])
    for name in ("service", "intended", "lateness"):
        assert set(result["latency_us"][name]) == {"p50", "p90", "p99", "p999", "max", "mean", "count"}
        decode(result["hdr"][name])  # the encoded histograms decode with the hdrhistogram package
    assert set(result["loadgen"]) >= {"cpu_percent", "processes", "locust_version", "python"}
    # Locust's own count covers the warm-up too: 300 requests in all, all failed.
    assert result["loadgen"]["locust_requests"] == 300
    assert result["loadgen"]["locust_failures"] == 300


def test_post_with_body_and_headers(tmp_path: Path, null_server: Callable[..., NullServer]) -> None:
    server = null_server()
    proc = run_testbed(
        "load", server.url + "echo?x=1", "--rate", "100", "--duration", "1", "--warmup", "0",
        "--method", "post", "--body-bytes", "4096", "--header", "X-Trace: 1", "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = load_result(tmp_path)
    assert result["requests"] == 100 and result["errors"] == 0
    assert result["method"] == "POST" and result["body_bytes"] == 4096


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_ctrl_c_stops_everything(
    processes: int, tmp_path: Path, null_server: Callable[..., NullServer]
) -> None:
    server = null_server()
    argv = cli_argv(
        "load", server.url, "--rate", "200", "--duration", "60", "--warmup", "0",
        "--processes", str(processes), "--out", str(tmp_path),
    )  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    # Wait until load is flowing (the server has established connections from the engine).
    server_proc = psutil.Process(server.process.pid)
    while time.monotonic() < deadline and not [
        c for c in server_proc.net_connections() if c.status == "ESTABLISHED"
    ]:
        time.sleep(0.2)
    started = {p.pid for p in psutil.Process(child.pid).children(recursive=True)}
    assert len(started) == (processes if processes > 1 else 0)
    os.kill(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    assert not (tmp_path / "result.json").exists()
    for pid in started:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert [p for p in engine_processes() if p.pid in started] == []


@pytest.mark.parametrize("processes", [1, 2])
def test_a_tail_is_sent_after_the_window_and_not_recorded(
    processes: int, tmp_path: Path, null_server: Callable[..., NullServer]
) -> None:
    """--tail 1: the load goes on for a second after the window (Locust counts it), the result does not."""
    server = null_server()
    args = ["load", server.url, "--rate", "200", "--duration", "1", "--warmup", "0"]
    # Lateness is not what this is about: on a busy 2-core machine it is judged loosely.
    args += ["--max-lateness-ms", "1000", "--processes", str(processes), "--out"]
    started = time.monotonic()
    proc = run_testbed(*args, str(tmp_path / "tail"), "--tail", "1")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    tail = load_result(tmp_path / "tail")
    assert run_testbed(*args, str(tmp_path / "none")).returncode == 0
    none = load_result(tmp_path / "none")
    for result in (tail, none):
        assert result["requests"] == result["scheduled"] == 200 and result["errors"] == 0
        assert result["latency_us"]["service"]["count"] == 200 and result["valid"], result["invalid_reasons"]
    assert tail["tail_s"] == 1 and none["tail_s"] == 0
    assert none["loadgen"]["locust_requests"] == 200
    # Locust's own count sees every request made, the tail's too: a second more at 200 rps.
    assert 390 <= tail["loadgen"]["locust_requests"] <= 400
    assert elapsed > 2.0
    # The end mark is still the window's end, a second before the tail's.
    ends = [line for line in proc.stderr.splitlines() if line.startswith("testbed: measured window end")]
    assert ends == [f"testbed: measured window end {tail['window_unix'][1]:.3f}"]
