"""The one place where external programs are run.

`run()` is for commands that finish: it prints `+ cmd`, finds the program with `shutil.which`,
always has a timeout and raises `CommandError` with the output; `stream()` does the same and shows
each line of the command's stderr to a callback as it comes. `spawn()` starts a long-running child in
its own process group, and `stop()` ends it in stages (interrupt, terminate, kill), like nox's
`popen.shutdown_process` and pyperf's `popen_killer`.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from testbed.errors import CommandError, UsageError

#: Every command gets a timeout; this one is used when the caller gives none.
DEFAULT_TIMEOUT_S = 120.0

#: Set by `--quiet`; the `+ cmd` echo goes to stderr so that `--out -` keeps stdout clean.
ECHO = True


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
        raise CommandError(
            f"{shlex.join(argv)} did not finish within {timeout:g} s",
            argv=list(argv),
            exit_code=None,
            stdout=_text(e.stdout),
            stderr=_text(e.stderr),
        ) from None
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
        raise CommandError(
            f"{shlex.join(argv)} did not finish within {timeout:g} s",
            argv=list(argv),
            exit_code=None,
            stdout=result.stdout,
            stderr=result.stderr,
        )
    if check:
        _raise_on_failure(argv, result)
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
    resolved = _resolve(argv)
    return subprocess.Popen(
        resolved,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def stop(
    process: subprocess.Popen[bytes],
    *,
    interrupt_timeout: float = 3.0,
    terminate_timeout: float = 3.0,
) -> int:
    """Stop a child and its whole process group: SIGINT, then SIGTERM, then SIGKILL."""
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
    return process.returncode


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
