"""Statistics on HdrHistograms as numpy count arrays: exact pooled percentiles and bootstrap intervals.

Every histogram of a run has the same layout (1 us to 60 s, 3 significant digits: `loadgen/result.py`),
so a histogram is just its array of counts. Pooling trials is adding arrays, and a percentile is read
from the cumulative counts exactly as `HdrHistogram.get_value_at_percentile` does (the highest value
equivalent to the bucket where the cumulative count first reaches the target), so the figures here are
identical to the ones the load engine prints, at numpy speed.

Confidence intervals resample *trials*, not requests: requests within a trial are not independent (one
stall delays many), trials are the repeated experiment. The bootstrap is the plain percentile bootstrap
(what `scipy.stats.bootstrap(method="percentile")` computes), written out here because one resample must
yield every percentile at once: a resample becomes per-trial weights, the weighted sum of the trials'
count arrays is its pooled histogram, and one cumulative sum gives p50 to p99.9. That is the difference
between seconds and a fraction of one for a run of 50 trials.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from testbed.loadgen.result import decode, new_histogram

Counts = npt.NDArray[np.float64]

#: Percentiles the reports use, by name; "max" is the highest recorded value.
PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "max": 100.0}

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 20261127  # fixed, so that the same run gives the same report


@functools.cache
def bucket_values() -> npt.NDArray[np.int64]:
    """For each counts index, the highest value equivalent to it (what percentiles report), in us."""
    h = new_histogram()
    return np.array(
        [h.get_highest_equivalent_value(h.get_value_from_index(i)) for i in range(h.counts_len)],
        dtype=np.int64,
    )


def counts(encoded: str) -> Counts:
    """The counts array of an encoded histogram (`HdrHistogram.encode()` string)."""
    h = decode(encoded)
    array = np.ctypeslib.as_array(h.counts).astype(np.float64)
    if array.shape != bucket_values().shape:
        raise ValueError(f"histogram layout differs from the testbed's ({array.shape[0]} buckets)")
    return array


def counts_empty() -> Counts:
    return np.zeros(bucket_values().shape, dtype=np.float64)


def pooled(trials: Sequence[Counts]) -> Counts:
    """The trials' histograms merged: their counts added (never their percentiles averaged)."""
    total = counts_empty()
    for t in trials:
        total = total + t
    return total


def percentile(pooled: Counts, q: float) -> float:
    """The value at percentile q (0-100] of a counts array; 0 when it is empty. `q=100` is the max."""
    return float(percentile_batch(pooled[np.newaxis, :], q, bucket_values())[0])


def percentile_batch(
    rows: npt.NDArray[np.float64], q: float, values: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """`percentile` for each row of a (batch, buckets) array whose columns have these bucket values."""
    cumulative = np.cumsum(rows, axis=-1)
    total = cumulative[..., -1]
    # HdrHistogram: target = max(int(q * total / 100 + 0.5), 1); the first bucket reaching it.
    target = np.maximum(np.floor(q * total / 100.0 + 0.5), 1.0)
    index = np.argmax(cumulative >= target[..., np.newaxis], axis=-1)
    out: npt.NDArray[np.float64] = values[index].astype(np.float64)
    out[total == 0] = 0.0
    return out


def mean(pooled: Counts) -> float:
    total = pooled.sum()
    if total == 0:
        return 0.0
    # HdrHistogram's mean uses each bucket's median equivalent value; the highest equivalent value
    # differs from it by under 0.1% (3 significant digits), well inside any interval shown.
    return float((pooled * bucket_values()).sum() / total)


def spectrum(pooled: Counts, points: int = 200) -> tuple[list[float], list[float]]:
    """The percentile spectrum: (percentile, value) pairs spaced evenly on the 1/(1-q) log axis."""
    total = pooled.sum()
    if total == 0:
        return [], []
    # From the median to the last request: 1/(1-q) from 2 to the count (q = 1 - 1/count).
    x = np.geomspace(1.0, max(float(total), 2.0), points)
    qs = [100.0 * (1.0 - 1.0 / v) for v in x]
    values = [percentile(pooled, q) for q in qs]
    return qs, values


@dataclass(frozen=True, kw_only=True)
class Interval:
    low: float
    high: float

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high


def _used(trials: Sequence[Counts]) -> npt.NDArray[np.bool_]:
    """Buckets that any trial uses: the others never change a percentile, so they are dropped."""
    used = np.zeros(bucket_values().shape, dtype=bool)
    for t in trials:
        used |= t > 0
    if not used.any():
        used[0] = True
    return used


def seed_for(*key: object) -> int:
    """A fixed seed per cell, so that the same run always gives the same intervals."""
    return zlib.crc32(repr((SEED, *key)).encode())


def bootstrap(
    trials: Sequence[Counts],
    qs: Sequence[float],
    *,
    seed: int,
    resamples: int = RESAMPLES,
    batch: int = 250,
) -> npt.NDArray[np.float64]:
    """Bootstrap distribution of pooled percentiles: shape (resamples, len(qs)), in us.

    Each resample draws len(trials) trials with replacement (a trial may come twice), pools them by
    adding their counts (as weights times the trials' count matrix) and reads every percentile in `qs`
    from one cumulative sum. With fewer than 2 trials there is nothing to resample: NaNs.
    """
    k = len(trials)
    if k < 2:
        return np.full((resamples, len(qs)), np.nan)
    used = _used(trials)
    matrix = np.stack([t[used] for t in trials])  # (trials, used buckets)
    values = bucket_values()[used]
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, len(qs)))
    for start in range(0, resamples, batch):
        n = min(batch, resamples - start)
        draws = rng.integers(0, k, size=(n, k))
        weights = np.stack([np.bincount(row, minlength=k) for row in draws]).astype(np.float64)
        pooled = weights @ matrix
        for j, q in enumerate(qs):
            out[start : start + n, j] = percentile_batch(pooled, q, values)
    return out


def interval(distribution: npt.NDArray[np.float64]) -> Interval | None:
    """The percentile-method interval of a bootstrap distribution (None when it is undefined)."""
    finite = distribution[np.isfinite(distribution)]
    if len(finite) < len(distribution) * 0.99 or not len(finite):
        return None
    alpha = (1.0 - CONFIDENCE) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Interval(low=float(low), high=float(high))


def difference(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], *, relative: bool = False
) -> npt.NDArray[np.float64]:
    """Resample-wise a - b, or (a - b) in % of b."""
    if not relative:
        return a - b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, 100.0 * (a - b) / b, np.nan)
