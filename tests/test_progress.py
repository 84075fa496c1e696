"""The run's progress display (`testbed.progress`): plain lines off a terminal, the live line on one."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import pytest

from testbed.progress import REFRESH_PER_S, Progress, _duration


class Clock:
    """A clock the test moves by hand, so that no test sleeps for the trials' durations."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_trials(progress: Progress, clock: Clock, trials: int, seconds: float) -> None:
    for number in range(1, trials + 1):
        progress.start_trial(number, "istio", 100.0, number)
        clock.now += seconds
        progress.finish_trial(f"[{number}/4] result of trial {number}")


def test_the_time_left_is_the_mean_trial_duration_times_the_trials_left() -> None:
    clock = Clock()
    with Progress(4, live=False, stream=io.StringIO(), clock=clock) as progress:
        assert progress.eta() is None
        assert "estimating time left" in progress.line()
        run_trials(progress, clock, 2, 1.0)
        assert progress.done == 2
        assert progress.eta() == pytest.approx(2.0)
        assert progress.line() == "2/4 done | elapsed 2s | about 2s left"
        # The third trial is under way: what it has taken already comes off.
        progress.start_trial(3, "linkerd", 200.0, 1)
        clock.now += 0.5
        assert progress.eta() == pytest.approx(1.5)
        line = progress.line()
        assert line == "2/4 done | elapsed 2s | about 2s left | now linkerd at 200 rps, trial 1"
        clock.now += 5  # slower than the mean: never a negative time left
        assert progress.eta() == 0.0


def test_plain_output_has_every_line_and_no_control_characters() -> None:
    clock = Clock()
    out = io.StringIO()
    with Progress(4, live=False, stream=out, clock=clock) as progress:
        progress.note("cluster testbed-istio is up")
        run_trials(progress, clock, 4, 1.0)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert text.splitlines() == [
        "cluster testbed-istio is up",
        "0/4 done | elapsed 0s | estimating time left | now istio at 100 rps, trial 1",
        "[1/4] result of trial 1",
        "1/4 done | elapsed 1s | about 3s left | now istio at 100 rps, trial 2",
        "[2/4] result of trial 2",
        "2/4 done | elapsed 2s | about 2s left | now istio at 100 rps, trial 3",
        "[3/4] result of trial 3",
        "3/4 done | elapsed 3s | about 1s left | now istio at 100 rps, trial 4",
        "[4/4] result of trial 4",
        "4/4 trials done in 4s",
    ]


def test_a_pipe_gets_plain_lines_by_default() -> None:
    """`live=None` off a terminal (here a real pipe to a child) is plain, as in CI."""
    code = (
        "from testbed.progress import Progress\n"
        "with Progress(2) as p:\n"
        "    p.start_trial(1, 'none', 50, 1)\n"
        "    p.finish_trial('[1/2] done')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "TERM": "xterm-256color"}  # a colour terminal type, yet a pipe
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("0/2 done | elapsed ")
    assert lines[0].endswith(" | estimating time left | now none at 50 rps, trial 1")
    assert lines[1:] == ["[1/2] done", "1/2 trials done in 0s"]


def test_the_live_line_on_a_terminal_keeps_the_results_above_it() -> None:
    clock = Clock()
    out = io.StringIO()
    threads_before = threading.active_count()
    with Progress(4, live=True, stream=out, clock=clock) as progress:
        assert threading.active_count() == threads_before + 1  # rich's refresh thread, which sleeps
        run_trials(progress, clock, 2, 1.0)
        progress.start_trial(3, "istio", 100.0, 3)
    # rich stops its thread without joining it: it ends at its next wake-up, a quarter second at most.
    deadline = time.monotonic() + 5
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == threads_before
    text = out.getvalue()
    assert "\x1b[" in text  # cursor control: the live line is redrawn in place
    for number in (1, 2):
        assert f"[{number}/4] result of trial {number}" in text
    assert "2/4 done | elapsed 2s | about 2s left | now istio at 100 rps, trial 3" in text
    assert text.rstrip().endswith("2/4 trials done in 2s")  # the live line is gone, the summary stays
    assert REFRESH_PER_S <= 4


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (59.4, "59s"), (65, "1m05s"), (3599, "59m59s"), (3720, "1h02m")]
)
def test_durations_read_as_a_countdown(seconds: float, text: str) -> None:
    assert _duration(seconds) == text
