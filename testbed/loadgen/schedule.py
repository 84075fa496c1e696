"""Intended send times: pure functions, so that the open-loop schedule can be tested without a clock.

A profile (`testbed.loadgen.profile`) is a rate over time; its integral, the count of sends due by a given
time, maps send k to its time: the k-th send of the trial (from 0) goes out when the count reaches k.
The warm-up runs at the profile's first rate, the window follows its segments, the tail its last rate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from testbed.loadgen.config import Arrival
from testbed.loadgen.profile import Profile, Segment

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


@dataclass(frozen=True)
class _Piece:
    """A stretch of the whole schedule (warm-up, window, tail) where the rate is one segment's."""

    start_s: float  # seconds after the common start
    start_count: float  # sends due before it (all shares)
    segment: Segment


def _pieces(profile: Profile, warmup_s: float) -> list[_Piece]:
    """The warm-up, the profile's segments and an open-ended rest at the last rate, as pieces.

    Neighbours at one same constant rate are merged: a constant profile is then one piece from 0, and its
    schedule is exactly the one before profiles existed (`k / rate`, not a sum of rounded parts).
    """
    parts: list[Segment] = []
    first, last = profile.first_rps, profile.last_rps
    if warmup_s > 0:
        parts.append(Segment(label="warm-up", duration_s=warmup_s, start_rps=first, end_rps=first))
    parts += profile.segments
    # The tail and anything after it (the schedule ends at `total_s`, wherever that falls).
    parts.append(Segment(label="tail", duration_s=math.inf, start_rps=last, end_rps=last))
    merged: list[Segment] = []
    for part in parts:
        prev = merged[-1] if merged else None
        held = part.start_rps == part.end_rps
        if prev is not None and held and prev.start_rps == prev.end_rps == part.start_rps:
            merged[-1] = Segment(
                label=prev.label,
                duration_s=prev.duration_s + part.duration_s,
                start_rps=prev.start_rps,
                end_rps=prev.end_rps,
            )
        else:
            merged.append(part)
    pieces, t, n = [], 0.0, 0.0
    for part in merged:
        pieces.append(_Piece(start_s=t, start_count=n, segment=part))
        if math.isfinite(part.duration_s):
            t, n = t + part.duration_s, n + part.total
    return pieces


def profile_offsets(
    profile: Profile,
    *,
    warmup_s: float,
    total_s: float,
    arrival: Arrival,
    share: int = 0,
    shares: int = 1,
    seed: int = 1,
) -> Iterator[float]:
    """Seconds after the common start at which this share sends, up to `total_s`, following `profile`.

    Uniform: the k-th send of all shares is due when the count of sends due reaches k; share j of n
    takes k = j, j+n, j+2n, ... (as `intended_offsets`). Poisson: each share is a non-homogeneous Poisson
    process of rate(t) / n (their sum has rate(t)): unit exponential steps on the share's count scale,
    mapped back to time, seeded per share. A constant profile gives exactly `intended_offsets`'s times.
    """
    pieces = _pieces(profile, warmup_s)
    if arrival == "poisson" and len(pieces) == 1:  # one rate throughout: the same stream as before
        yield from intended_offsets(
            rate=pieces[0].segment.start_rps,
            total_s=total_s,
            arrival=arrival,
            share=share,
            shares=shares,
            seed=seed,
        )
        return
    rng = random.Random(seed * 1_000_003 + share)
    index, piece = 0, pieces[0]
    k = share  # the global count of the next send (uniform)
    m = 0.0  # the share's own count (Poisson, unit rate)
    while True:
        count: float
        if arrival == "uniform":
            count = k
            k += shares
        else:
            m += rng.expovariate(1.0)
            count = m * shares
        while index + 1 < len(pieces) and count >= pieces[index + 1].start_count:
            index += 1
            piece = pieces[index]
        offset = piece.start_s + piece.segment.time_of(count - piece.start_count)
        if offset >= total_s:
            return
        yield offset


def due(profile: Profile, start_s: float, end_s: float) -> float:
    """Sends due (all shares) between `start_s` and `end_s` seconds into the window: the rate's integral."""
    return _due_by(profile, end_s) - _due_by(profile, start_s)


def _due_by(profile: Profile, t: float) -> float:
    total = 0.0
    for (start, end), segment in zip(profile.bounds(), profile.segments, strict=True):
        if t <= start:
            break
        total += segment.count(min(t, end) - start)
    return total


def intervals(duration_s: float, interval_s: float) -> list[tuple[float, float]]:
    """The window cut into `interval_s` pieces from its start; the last may be shorter."""
    n = max(1, math.ceil(duration_s / interval_s - 1e-9))
    return [(k * interval_s, min((k + 1) * interval_s, duration_s)) for k in range(n)]
