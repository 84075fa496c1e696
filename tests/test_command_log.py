"""The command log (`testbed.proc.log_commands_to`) and `--verbose`, with real commands (`true`, `sleep`)."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from testbed import cli, proc
from testbed.errors import CommandError, UsageError

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def entries(path: Path) -> list[tuple[datetime, str, float | None, str]]:
    """The log's lines as (time, outcome, seconds, command); each must have all four fields."""
    parsed = []
    for line in path.read_text().splitlines():
        when, outcome, took, command = line.split(" | ", 3)
        assert TIME.fullmatch(when), line
        seconds = None if took == "-" else float(took.removesuffix(" s"))
        parsed.append((datetime.fromisoformat(when), outcome, seconds, command))
    return parsed


def test_each_command_is_logged_with_its_time_command_and_exit_code(tmp_path: Path) -> None:
    log = tmp_path / "work" / "commands.log"  # the directory is made
    before = datetime.now(UTC)
    with proc.log_commands_to(log):
        assert proc.run(["true"]).returncode == 0
        assert proc.run(["false"], check=False).returncode == 1
        with pytest.raises(CommandError):
            proc.run(["sh", "-c", "sleep 0.2; exit 3"])
        lines: list[str] = []
        proc.stream(["sh", "-c", "echo mark >&2; exit 2"], on_line=lines.append, check=False)
    after = datetime.now(UTC)
    assert lines == ["mark"]
    logged = entries(log)
    assert [(outcome, command) for _, outcome, _, command in logged] == [
        ("exit 0", "true"),
        ("exit 1", "false"),
        ("exit 3", "sh -c 'sleep 0.2; exit 3'"),
        ("exit 2", "sh -c 'echo mark >&2; exit 2'"),
    ]
    # Stamped in UTC to the millisecond, when each ended, in order; the durations are measured.
    times = [when for when, *_ in logged]
    assert before - timedelta(milliseconds=1) <= times[0] <= times[-1] <= after
    assert times == sorted(times)
    seconds = [took for _, _, took, _ in logged]
    assert all(took is not None and took >= 0 for took in seconds)
    assert seconds[2] is not None and 0.2 <= seconds[2] < 5


def test_timeouts_and_commands_not_found_are_logged(tmp_path: Path) -> None:
    log = tmp_path / "commands.log"
    with proc.log_commands_to(log):
        with pytest.raises(CommandError) as caught:
            proc.run(["sleep", "5"], timeout=0.3)
        assert caught.value.exit_code is None
        with pytest.raises(CommandError):
            proc.stream(["sleep", "5"], on_line=lambda line: None, timeout=0.3)
        with pytest.raises(UsageError):
            proc.run(["testbed-no-such-program", "--flag"])
    logged = entries(log)
    assert [outcome for _, outcome, _, _ in logged[:2]] == ["exit None: timed out after 0.3 s"] * 2
    for _, _, took, command in logged[:2]:
        assert command == "sleep 5"
        assert took is not None and 0.3 <= took < 4
    _, outcome, _, command = logged[2]
    assert outcome.startswith("failed: 'testbed-no-such-program' was not found on PATH")
    assert command == "testbed-no-such-program --flag"
    assert len(logged) == 3


def test_a_spawned_child_is_logged_when_it_starts_and_when_it_is_stopped(tmp_path: Path) -> None:
    log = tmp_path / "commands.log"
    with proc.log_commands_to(log):
        sleeper = proc.spawn(["sleep", "30"])
        time.sleep(0.2)
        assert proc.stop(sleeper) == -2  # `sleep` dies of the SIGINT
        quitter = proc.spawn(["sh", "-c", "exit 4"])
        quitter.wait(timeout=10)
        assert proc.stop(quitter) == 4
    logged = entries(log)
    assert [(outcome, took is None, command) for _, outcome, took, command in logged] == [
        (f"started: pid {sleeper.pid}", True, "sleep 30"),
        (f"stopped: signal SIGINT, pid {sleeper.pid}", False, "sleep 30"),
        (f"started: pid {quitter.pid}", True, "sh -c 'exit 4'"),
        (f"had ended: exit 4, pid {quitter.pid}", False, "sh -c 'exit 4'"),
    ]
    took = logged[1][2]
    assert took is not None and 0.2 <= took < 10  # from its start to its end


def test_nothing_is_logged_outside_the_block_and_each_line_stays_one_line(tmp_path: Path) -> None:
    log = tmp_path / "commands.log"
    proc.run(["true"])
    with proc.log_commands_to(log):
        proc.run(["sh", "-c", "true\ntrue"])
    proc.run(["true"])
    assert log.read_text().count("\n") == 1
    assert entries(log)[0][3] == "sh -c 'true\\ntrue'"


def test_concurrent_commands_write_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "commands.log"

    def some(n: int) -> None:
        for i in range(5):
            proc.run(["sh", "-c", f"exit {n}", f"thread-{n}-{i}"], check=False)

    with proc.log_commands_to(log):
        threads = [threading.Thread(target=some, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    logged = entries(log)
    assert len(logged) == 40
    assert sorted(command for *_, command in logged) == sorted(
        f"sh -c 'exit {n}' thread-{n}-{i}" for n in range(8) for i in range(5)
    )
    for _, outcome, _, command in logged:
        assert outcome == "exit " + command.split("-")[-2]  # each line's outcome is its own command's


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_log_that_cannot_be_written_warns_once_and_fails_no_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # /dev/full: every write fails with ENOSPC, as on a full disk.
    with proc.log_commands_to(Path("/dev/full")):
        assert proc.run(["true"]).returncode == 0
        assert proc.run(["true"]).returncode == 0
    err = capsys.readouterr().err
    assert err.count("testbed: warning: cannot write the command log /dev/full") == 1, err
    # A log whose directory cannot be made (its parent is a file): the same.
    (tmp_path / "file").write_text("")
    with proc.log_commands_to(tmp_path / "file" / "commands.log"):
        assert proc.run(["true"]).returncode == 0
        proc.stop(proc.spawn(["sleep", "30"]))
    assert capsys.readouterr().err.count("cannot write the command log") == 1


def test_commands_are_echoed_only_with_verbose(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # main() sets the flags; put them back as they were after the test.
    monkeypatch.setattr(proc, "ECHO", proc.ECHO)
    monkeypatch.setattr(proc, "QUIET", proc.QUIET)
    for flags, echoed in ((["--verbose"], True), ([], False), (["--verbose", "--quiet"], False)):
        assert cli.main([*flags, "images", "--mesh", "none"]) == 0
        capsys.readouterr()
        proc.run(["true"])
        assert proc.run(["false"], check=False).returncode == 1
        err = capsys.readouterr().err
        assert err == ("+ true\n+ false\n" if echoed else ""), flags
    assert proc.QUIET
