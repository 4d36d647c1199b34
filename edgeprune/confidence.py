"""How sure a measurement is: an interval for a median, and the verdict a target gets from it.

The interval is the exact order-statistic (sign test) interval on the median: between the k-th smallest and the
k-th largest of n samples, with k the largest for which a Binomial(n, 1/2) puts at most (1 - level) / 2 below
k. It needs no seed and no assumption on the distribution's shape, and its coverage is at least `level` for
any continuous distribution, which matters here: latency samples are skewed (a run is never faster than the
hardware allows, often slower when the machine is busy) and a bootstrap's coverage is only approximate at the
10-40 samples a verify takes. A relative target is judged on the median of the paired ratios (pruned sample
over the unpruned sample taken beside it): load that hits both alike cancels in each pair.

A leaf module: pure Python, no torch or TVM, so the CLI and the loop import it freely.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

LEVEL = 0.95  # the confidence of every interval edgeprune reports
MEETS, MISSES, TOO_CLOSE = "MEETS", "MISSES", "TOO CLOSE TO CALL"


@dataclass(frozen=True)
class Interval:
    """A median (`estimate`) and the interval [low, high] that holds the true median with at least `level`."""

    estimate: float
    low: float
    high: float
    level: float
    samples: int

    @property
    def half_width(self) -> float:
        """Half the interval's width relative to the estimate (0.01: +-1%)."""
        return (self.high - self.low) / 2 / self.estimate

    @property
    def upper_margin(self) -> float:
        """How far above the estimate the interval reaches, relative to it: what an aim below a target must
        leave so that the interval's top still meets it."""
        return (self.high - self.estimate) / self.estimate

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def _binomial_cdf(k: int, n: int) -> float:
    """P(Binomial(n, 1/2) <= k)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def rank(n: int, level: float = LEVEL) -> int | None:
    """The 1-based rank k of the interval's ends (k-th smallest, k-th largest), or None when n samples are too
    few for `level` (fewer than 6 at 95%: even the extremes cover less)."""
    alpha = (1 - level) / 2
    best = None
    for k in range(1, n // 2 + 1):
        if _binomial_cdf(k - 1, n) > alpha:
            break
        best = k
    return best


def coverage(n: int, level: float = LEVEL) -> float:
    """The exact coverage of the interval `median_interval` gives for n samples (at least `level`)."""
    k = rank(n, level)
    return 0.0 if k is None else 1 - 2 * _binomial_cdf(k - 1, n)


def median_interval(samples: Sequence[float], level: float = LEVEL) -> Interval:
    """The median of `samples` and its order-statistic interval; with too few samples for `level`, the interval
    is the whole range (and says so by its `level`: the exact coverage of min..max)."""
    if not samples:
        raise ValueError("an interval needs at least one sample")
    ordered = sorted(float(s) for s in samples)
    n = len(ordered)
    k = rank(n, level)
    if k is None:
        return Interval(statistics.median(ordered), ordered[0], ordered[-1], 1 - 2 * 0.5**n, n)
    return Interval(statistics.median(ordered), ordered[k - 1], ordered[n - k], level, n)


def ratio_interval(pruned: Sequence[float], baseline: Sequence[float], level: float = LEVEL) -> Interval:
    """The median of the paired ratios pruned[i] / baseline[i] (sample i of each taken one after the other) and
    its interval."""
    if len(pruned) != len(baseline):
        raise ValueError(f"paired samples differ in number: {len(pruned)} and {len(baseline)}")
    return median_interval([p / b for p, b in zip(pruned, baseline, strict=True)], level)


def verdict(interval: Interval, target: float) -> str:
    """MEETS when the whole interval is at or below the target, MISSES when all of it is above, else TOO CLOSE
    TO CALL: the measurement cannot tell which side of the target the true median lies."""
    if interval.high <= target:
        return MEETS
    if interval.low > target:
        return MISSES
    return TOO_CLOSE


def samples_for(spread: float, precision: float, level: float = LEVEL) -> int:
    """About how many samples a median interval of +-`precision` (relative) needs when single samples scatter
    by `spread` (relative half interquartile range): the median's standard error is about 1.253 sigma / sqrt(n)
    for a normal core, and sigma is about 1.483 times the half interquartile range."""
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    sigma = 1.4826 * spread
    return max(6, math.ceil((z * 1.2533 * sigma / precision) ** 2))
