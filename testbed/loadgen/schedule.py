"""Intended send times: pure functions, so that the open-loop schedule can be tested without a clock."""

from __future__ import annotations

import random
from collections.abc import Iterator

from testbed.loadgen.config import Arrival


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
