"""The measured window's edges as `testbed load` announces them: one line on stderr at each edge.

The window's start and end are known only inside the load generator (after the warm-up, and until the
schedule ends), so it prints one line when the window starts and one when it ends, each with the edge's
planned wall-clock time:

    testbed: measured window start 1764763212.250
    testbed: measured window end 1764763222.250

A platform that cannot sample the system under test itself (kind: the cgroups inside the node
containers) reads its counters when it sees these lines, and records how far each read was from the edge.
This module is light on purpose: the platforms import it, never the engine (which patches the process).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

START = "start"
END = "end"
PREFIX = "testbed: measured window "
_LINE = re.compile(rf"^{re.escape(PREFIX)}(?P<edge>{START}|{END}) (?P<at>[0-9]+(?:\.[0-9]*)?)$")


@dataclass(frozen=True)
class Mark:
    """One edge of the measured window, `start` or `end`, at `at_unix` (seconds since the epoch)."""

    edge: str
    at_unix: float


def line(edge: str, at_unix: float) -> str:
    """The line printed at `edge` (without its newline)."""
    if edge not in (START, END):
        raise ValueError(f"a window edge is {START!r} or {END!r}, not {edge!r}")
    return f"{PREFIX}{edge} {at_unix:.3f}"


def parse(text: str) -> Mark | None:
    """The mark on one line of the load generator's stderr; None for any other line."""
    match = _LINE.match(text.strip())
    if match is None:
        return None
    return Mark(edge=match["edge"], at_unix=float(match["at"]))
