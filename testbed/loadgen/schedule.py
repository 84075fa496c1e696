"""Intended send times: pure functions, so that the open-loop schedule can be tested without a clock."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Literal

from testbed.loadgen.config import Arrival

#: Where a send falls: the warm-up and the tail (`LoadConfig.tail_s`) are sent and not recorded.
Phase = Literal["warmup", "window", "tail"]


def intended_offsets(
    *, rate: float, total_s: float, arrival: Arrival, share: int = 0, shares: int = 1, seed: int = 1
) -> Iterator[float]:
    """Seconds after the common start at which this share of the load sends, up to `total_s`.

    Uniform: the global slots are i / rate and share k of n takes slots k, k+n, k+2n, ... so that the
    processes interleave exactly. Poisson: each share is a Poisson process of rate / n (their sum is a
    Poisson process of `rate`), seeded per share for reproducibility.
    """
    if arrival == "uniform":
        k = share
        while (offset := k / rate) < total_s:
            yield offset
            k += shares
        return
    rng = random.Random(seed * 1_000_003 + share)
    share_rate = rate / shares
    offset = rng.expovariate(share_rate)
    while offset < total_s:
        yield offset
        offset += rng.expovariate(share_rate)


def phase(offset: float, *, warmup_s: float, duration_s: float) -> Phase:
    """The part of the trial a send at `offset` belongs to, decided on the offset as the schedule ends on it.

    The window is [warmup_s, warmup_s + duration_s), the bound that `intended_offsets` is given without a
    tail: with one, the window holds the same sends whatever the floating-point rounding of the edges.
    """
    if offset < warmup_s:
        return "warmup"
    return "window" if offset < warmup_s + duration_s else "tail"
