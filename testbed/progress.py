"""What a run shows while it runs: each finished trial's line, and one live line of where it is.

The live line (trials done of all, the current mesh, rate and trial, the time since the start, and the
time left) is drawn by `rich.live.Live` when stdout is a terminal: rich's own refresh thread redraws it
at most `REFRESH_PER_S` times a second and sleeps between (`Event.wait`), and whatever the testbed
prints meanwhile goes above it (Live redirects `sys.stdout` and `sys.stderr`). Anywhere else (CI, a
pipe, a file) or with `live=False`, the same lines are plain text, one at each trial's start: no
cursor movement, no colour, no `\\r`. The time left is the mean duration of the finished trials times
the trials still to run, less what the current one has already taken; until a trial has finished it is
"estimating". It runs in the parent process only: the load engine is a child process and prints
nothing here.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

#: The live line is redrawn at most this often; the elapsed time is shown in whole seconds anyway.
REFRESH_PER_S = 4.0


@dataclass(frozen=True)
class _Current:
    number: int
    mesh: str
    rate: float
    index: int
    started: float


class Progress:
    """The run's progress display, as a context manager: `start_trial`, `finish_trial`, `note`."""

    def __init__(
        self,
        total: int,
        *,
        live: bool | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stdout
        self.clock = clock
        # None: rich's own test of a terminal (isatty, and its FORCE_TERMINAL / TTY_COMPATIBLE overrides).
        self.console = Console(
            file=self.stream, force_terminal=live, highlight=False, markup=False, emoji=False
        )
        self.live = self.console.is_terminal
        self.started = clock()
        self.durations: list[float] = []
        self.current: _Current | None = None
        self.lock = threading.Lock()  # rich's refresh thread reads what the run's thread writes
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        self.started = self.clock()
        if self.live:
            self._live = Live(
                console=self.console,
                get_renderable=lambda: Text(self.line(), no_wrap=True, overflow="ellipsis"),
                refresh_per_second=REFRESH_PER_S,
                transient=True,
            )
            self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        with self.lock:
            done = len(self.durations)
        self._print(f"{done}/{self.total} trials done in {_duration(self.clock() - self.started)}")

    @property
    def done(self) -> int:
        with self.lock:
            return len(self.durations)

    def start_trial(self, number: int, mesh: str, rate: float, index: int) -> None:
        """Trial `number` (1-based, of `total`) begins: `mesh` at `rate` requests/s, its `index`-th trial."""
        with self.lock:
            self.current = _Current(number, mesh, rate, index, self.clock())
        if self._live is None:
            self._print(self.line())
        else:
            self._live.refresh()

    def finish_trial(self, line: str) -> None:
        """The current trial is over: its one-line result stays on screen, above the live line."""
        with self.lock:
            if self.current is not None:
                self.durations.append(self.clock() - self.current.started)
            self.current = None
        self._print(line)

    def note(self, line: str) -> None:
        """A message that stays on screen (a mesh installed, a cluster removed)."""
        self._print(line)

    def eta(self) -> float | None:
        """Seconds left, from the mean of the finished trials' durations; None until one has finished."""
        with self.lock:
            return self._eta(self.clock())

    def line(self) -> str:
        """The live line, as text: done/total, elapsed, the time left, and the current trial."""
        with self.lock:
            now = self.clock()
            eta = self._eta(now)
            parts = [
                f"{len(self.durations)}/{self.total} done",
                f"elapsed {_duration(now - self.started)}",
                "estimating time left" if eta is None else f"about {_duration(eta)} left",
            ]
            # Last: a terminal narrower than the line cuts it at the end (rich's ellipsis).
            current = self.current
            if current is not None:
                # A closed loop's trials are filed under rate 0 (`spec.scenario.CLOSED_LOOP_RATE`): no rate.
                at = "a closed loop" if current.rate == 0 else f"{current.rate:g} rps"
                parts.append(f"now {current.mesh} at {at}, trial {current.index}")
        return " | ".join(parts)

    def _eta(self, now: float) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        remaining = max(self.total - len(self.durations), 0)
        spent = now - self.current.started if self.current is not None else 0.0
        return max(mean * remaining - spent, 0.0)

    def _print(self, line: str) -> None:
        if self._live is not None:
            # Above the live line, which Live redraws below it.
            self.console.print(Text(line), soft_wrap=True)
        else:
            # Plain: the text as given, never rich's rendering (no style, no control codes).
            print(line, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    """`45s`, `3m05s`, `1h02m`: whole seconds, as a person reads a countdown."""
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
