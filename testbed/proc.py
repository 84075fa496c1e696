"""The one place where external programs are run.

`run()` is for commands that finish: it prints `+ cmd` (with `--verbose`), finds the program with
`shutil.which`, always has a timeout and raises `CommandError` with the output; `stream()` does the same
and shows each line of the command's stderr to a callback as it comes. `spawn()` starts a long-running
child in its own process group, and `stop()` ends it in stages (interrupt, terminate, kill), like nox's
`popen.shutdown_process` and pyperf's `popen_killer`.

The command log: inside `with log_commands_to(path):` (a run sets `RUN_DIR/work/commands.log`), every
command is appended to `path`, one line each, `TIME | OUTCOME | SECONDS | COMMAND`:

    2025-06-01T10:00:00.123Z | exit 0 | 0.012 s | kubectl get pods -A -o json
    2025-06-01T10:00:02.130Z | exit None: timed out after 2 s | 2.003 s | kubectl wait ...
    2025-06-01T10:00:02.131Z | failed: 'kind' was not found on PATH: ... | 0.000 s | kind get clusters
    2025-06-01T10:00:03.000Z | started: pid 4242 | - | envoy -c envoy.yaml
    2025-06-01T10:00:09.456Z | stopped: signal SIGINT, pid 4242 | 6.456 s | envoy -c envoy.yaml

TIME is when the line was written (UTC, ms): the end of a command that finishes, so a line's start is
TIME less SECONDS; COMMAND is `shlex.join(argv)`, last so that `line.split(" | ", 3)` parses it, with
newlines shown as `\\n`. `spawn()` writes a line when the child starts and `stop()` one when it is gone
("had ended" instead of "stopped" when it exited before `stop()`): its exit code, or the signal that
ended it. `Logged` writes the lines of commands run elsewhere (the Docker layer). The lines of
concurrent commands are whole, in the order they ended; a log that cannot be written is warned about
once on stderr and never fails a command.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from testbed.errors import CommandError, UsageError

#: Every command gets a timeout; this one is used when the caller gives none.
DEFAULT_TIMEOUT_S = 120.0

#: Set by `--verbose` (never with `--quiet`); the `+ cmd` echo goes to stderr so that `--out -` keeps
#: stdout clean.
ECHO = False
#: Set by `--quiet`: the testbed's own progress messages (not only the echo) are off.
QUIET = False


def _resolve(argv: Sequence[str]) -> list[str]:
    if not argv:
        raise ValueError("empty command")
    program = argv[0]
    found = program if os.path.sep in program else shutil.which(program)
    if found is None:
        raise UsageError(f"{program!r} was not found on PATH: install it, or put its directory on PATH")
    return [found, *argv[1:]]


def _echo(argv: Sequence[str]) -> None:
    if ECHO:
        print("+ " + shlex.join(argv), file=sys.stderr, flush=True)


class _CommandLog:
    """An append-only file of the commands run: whole lines, one writer at a time, never an error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.file: IO[str] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Line-buffered: each line is in the file as soon as it is written, should the run be killed.
            self.file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (close() closes it)
        except OSError as e:
            self._give_up(e)

    def write(self, line: str) -> None:
        with self.lock:
            if self.file is None:
                return
            try:
                self.file.write(line + "\n")
            except (OSError, ValueError) as e:
                self._give_up(e)

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                with contextlib.suppress(OSError):
                    self.file.close()
                self.file = None

    def _give_up(self, error: Exception) -> None:
        # Once: a full disk must not end a run, nor print a warning for every command after it.
        print(
            f"testbed: warning: cannot write the command log {self.path} ({error}): commands are no "
            "longer logged",
            file=sys.stderr,
            flush=True,
        )
        if self.file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.file.close()
        self.file = None


#: The logs set, innermost last: commands go to the last one.
_LOGS: list[_CommandLog] = []


@contextlib.contextmanager
def log_commands_to(path: Path) -> Iterator[Path]:
    """Append a line to `path` for every command run until the block ends (the module says what)."""
    log = _CommandLog(path)
    _LOGS.append(log)
    try:
        yield path
    finally:
        _LOGS.remove(log)
        log.close()


def log_command(argv: Sequence[str], outcome: str, seconds: float | None) -> None:
    """One line in the command log, if one is set: `TIME | OUTCOME | SECONDS | COMMAND`."""
    log = _LOGS[-1] if _LOGS else None
    if log is None:
        return
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    took = "-" if seconds is None else f"{seconds:.3f} s"
    log.write(" | ".join((now, _one_line(outcome), took, _one_line(shlex.join(argv)))))


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _failure(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"failed: {str(error) or type(error).__name__}"


class Logged:
    """Times one command and logs it when the block ends, however it ends; for commands run elsewhere too.

    The block sets `exit_code` when the command finished, or `timed_out` when its time ran out; an
    exception with neither set is logged as the failure it is (a program not on PATH, Ctrl-C).
    """

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self.exit_code: int | None = None
        self.timed_out = False
        self.started = time.monotonic()

    def __enter__(self) -> Logged:
        self.started = time.monotonic()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.timed_out:
            outcome = f"exit None: timed out after {self.timeout:g} s"
        elif self.exit_code is not None or error is None:
            outcome = f"exit {self.exit_code}"
        else:
            outcome = _failure(error)
        log_command(self.argv, outcome, time.monotonic() - self.started)


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion and capture its output."""
    _echo(argv)
    with Logged(argv, timeout) as logged:
        resolved = _resolve(argv)
        try:
            result = subprocess.run(
                resolved,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                input=input,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            logged.timed_out = True
            raise CommandError(
                f"{shlex.join(argv)} did not finish within {timeout:g} s",
                argv=list(argv),
                exit_code=None,
                stdout=_text(e.stdout),
                stderr=_text(e.stderr),
            ) from None
        logged.exit_code = result.returncode
    if check:
        _raise_on_failure(argv, result)
    return result


def stream(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None],
    timeout: float = DEFAULT_TIMEOUT_S,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`run()`, but `on_line` sees each line of the command's stderr (without its newline) as it comes.

    For a command that says on stderr when something happens (`testbed load`'s window marks) and prints
    its result on stdout. stdout is read whole by a thread, so that neither pipe can fill up while
    `on_line` works; the stderr lines are kept too. When the time is up the command is killed and
    `CommandError` raised, as in `run()`; so it is when `on_line` raises (its exception goes on up).
    """
    _echo(argv)
    with Logged(argv, timeout) as logged:
        result = _stream(argv, on_line=on_line, timeout=timeout, input=input, logged=logged)
    if check:
        _raise_on_failure(argv, result)
    return result


def _stream(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None],
    timeout: float,
    input: str | None,
    logged: Logged,
) -> subprocess.CompletedProcess[str]:
    resolved = _resolve(argv)
    process = subprocess.Popen(
        resolved,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    out: list[str] = []
    err: list[str] = []
    stdout, stderr = process.stdout, process.stderr
    helpers = [threading.Thread(target=lambda: out.append(stdout.read()), daemon=True)]
    if input is not None:
        stdin = process.stdin
        assert stdin is not None

        def feed() -> None:
            with contextlib.suppress(BrokenPipeError):
                stdin.write(input)
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

        helpers.append(threading.Thread(target=feed, daemon=True))
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        process.kill()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    for helper in helpers:
        helper.start()
    timer.start()
    try:
        for line in stderr:
            err.append(line)
            on_line(line.rstrip("\n"))
        process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        timer.cancel()
        for helper in helpers:
            helper.join(timeout=10)
        for pipe in (process.stdin, stdout, stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
    result = subprocess.CompletedProcess(list(argv), process.returncode, "".join(out), "".join(err))
    if expired.is_set():
        logged.timed_out = True
        raise CommandError(
            f"{shlex.join(argv)} did not finish within {timeout:g} s",
            argv=list(argv),
            exit_code=None,
            stdout=result.stdout,
            stderr=result.stderr,
        )
    logged.exit_code = process.returncode
    return result


def _raise_on_failure(argv: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
    """`CommandError` with the last line the command printed, when it exited non-zero."""
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
        raise CommandError(
            f"{shlex.join(argv)} exited with code {result.returncode}: {last[0]}",
            argv=list(argv),
            exit_code=result.returncode,
            stdout=result.stdout,
            stderr=result.stderr,
        )


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    stderr: IO[bytes] | int | None = subprocess.STDOUT,
    nice: int = 0,
) -> subprocess.Popen[bytes]:
    """Start a long-running child in its own process group; end it with `stop()`.

    `nice` lowers the child's CPU priority from its start (coreutils' `nice` execs it, keeping the pid),
    so that every thread it creates inherits it; `preexec_fn` would be unsafe beside threads.
    """
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    _echo(argv)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            _resolve(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    except BaseException as e:
        log_command(argv, _failure(e), time.monotonic() - started)
        raise
    with _SPAWNED_LOCK:
        _SPAWNED[process] = (list(argv), started)
        _LIVE.add(process)
    log_command(argv, f"started: pid {process.pid}", None)
    return process


#: What `spawn()` started and when, for the line `stop()` logs (a child forgotten here is gone with it).
_SPAWNED: weakref.WeakKeyDictionary[subprocess.Popen[bytes], tuple[list[str], float]] = (
    weakref.WeakKeyDictionary()
)
_SPAWNED_LOCK = threading.Lock()
#: Every child `spawn()` started that `stop()` has not ended yet: held strongly, so that a child whose
#: owner was interrupted before it could keep a reference is still found by `stop_all()`.
_LIVE: set[subprocess.Popen[bytes]] = set()


def stop(
    process: subprocess.Popen[bytes],
    *,
    interrupt_timeout: float = 3.0,
    terminate_timeout: float = 3.0,
) -> int:
    """Stop a child and its whole process group: SIGINT, then SIGTERM, then SIGKILL."""
    ended_before = process.poll() is not None
    for sig, wait_s in ((signal.SIGINT, interrupt_timeout), (signal.SIGTERM, terminate_timeout)):
        if process.poll() is not None:
            break
        _signal_group(process, sig)
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    if process.poll() is None:
        _signal_group(process, signal.SIGKILL)
        process.wait(timeout=10)
    # The leader is gone; make sure nothing it started lingers in its group.
    _signal_group(process, signal.SIGKILL)
    with _SPAWNED_LOCK:
        _LIVE.discard(process)
    _log_stop(process, ended_before)
    return process.returncode


def live() -> frozenset[subprocess.Popen[bytes]]:
    """The children `spawn()` started and `stop()` has not ended yet."""
    with _SPAWNED_LOCK:
        return frozenset(_LIVE)


def stop_all(*, keep: frozenset[subprocess.Popen[bytes]] = frozenset(), timeout: float = 15.0) -> list[int]:
    """Stop every child `spawn()` started that is not stopped yet, and wait until each one's whole
    process group is gone; return the pids that had to be stopped here. `keep`: children that were
    running before (a caller that runs `testbed` in its own process keeps its own).

    `testbed`'s last step, after success, failure and Ctrl-C alike: a clean-up interrupted half-way
    (a second Ctrl-C, a SIGTERM during a teardown) leaves its children here, and they are ended now.
    """
    with _SPAWNED_LOCK:
        left = [process for process in _LIVE if process not in keep]
    for process in left:
        stop(process, interrupt_timeout=1.0, terminate_timeout=2.0)
    deadline = time.monotonic() + timeout
    groups = {process.pid for process in left}
    while groups and time.monotonic() < deadline:
        groups = {group for group in groups if _group_alive(group)}
        if groups:
            time.sleep(0.05)
    return [process.pid for process in left]


def _group_alive(group: int) -> bool:
    """Whether any process of the group is alive (zombies, which hold no port and run no code, are not)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for pid in _pids_of_group(group):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            return True
    return False


def _pids_of_group(group: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ProcessLookupError):
                if os.getpgid(int(entry)) == group:
                    pids.append(int(entry))
    return pids


def _log_stop(process: subprocess.Popen[bytes], ended_before: bool) -> None:
    with _SPAWNED_LOCK:
        argv, started = _SPAWNED.pop(process, (None, None))
    if argv is None:  # not started by `spawn()`
        args = process.args
        argv = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
    code = process.returncode
    try:
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
    except ValueError:
        how = f"signal {-code}"
    verb = "had ended" if ended_before else "stopped"
    seconds = None if started is None else time.monotonic() - started
    log_command(argv, f"{verb}: {how}, pid {process.pid}", seconds)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
