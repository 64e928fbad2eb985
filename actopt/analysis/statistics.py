"""Intervals over seeds: the mean of a configuration's seeds, and the paired difference of two
configurations run with the same seeds, each with a Student-t confidence interval and p-value; intervals
of accuracies that stay inside [0, 1]; and the power of the paired test (what effect n seeds can detect,
how many seeds an effect needs).

Runs of different configurations with the same seed share the data split and the batch order, so
their difference seed by seed removes the part of the spread that comes from the data: the paired
interval is narrower than two separate ones whenever the seeds' luck is shared.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

# The confidence level of every interval in the report.
CONFIDENCE = 0.95
# The power at which the report states the smallest detectable effect (the usual 80%).
POWER = 0.8
# Accuracies are clipped this far inside (0, 1) before the logit, so that a seed at exactly 0 or 1 has a finite
# logit; below the resolution of any split here (1 example of 6,000 is 1.7e-4).
PROPORTION_EPSILON = 1e-5
# Seeds-needed searches stop here: an effect that needs more is, for these studies, no effect.
SEEDS_LIMIT = 10_000


@dataclass(frozen=True)
class Interval:
    """A mean over ``count`` values with its confidence interval; ``low``/``high`` are NaN when
    ``count`` < 2 (one value has no spread to estimate)."""

    mean: float
    low: float
    high: float
    count: int
    spread: float = math.nan  # the values' standard deviation (ddof 1)
    p_value: float = math.nan  # two-sided Student-t p-value of "the mean is 0"; NaN without spread

    @property
    def defined(self) -> bool:
        return self.count >= 2 and math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def degenerate(self) -> bool:
        """Every value equal: a zero-width interval that says nothing about the seeds' spread."""
        return self.count >= 2 and self.spread == 0

    def excludes_zero(self) -> bool:
        return self.defined and not self.degenerate and (self.low > 0 or self.high < 0)

    def describe(self, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        """``0.6 [0.2, 1.0]`` (values × ``scale``); the mean alone when no interval is defined."""
        mean = f"{self.mean * scale:.{digits}f}{unit}"
        if not self.defined:
            return mean
        return f"{mean} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"


def mean_interval(values: pd.Series | np.ndarray | list[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of the finite ``values`` ± t(1 − α/2, n − 1) · s / √n (Student t on the seed means)."""
    array = np.asarray(values, dtype="float64")
    array = array[np.isfinite(array)]
    count = len(array)
    if count == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(array.mean())
    if count < 2:
        return Interval(mean, math.nan, math.nan, count)
    spread = float(array.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, count - 1) * spread / math.sqrt(count))
    p_value = float(2 * stats.t.sf(abs(mean) / (spread / math.sqrt(count)), count - 1)) if spread > 0 else math.nan
    return Interval(mean, mean - half, mean + half, count, spread, p_value)


def proportion_interval(values: pd.Series | np.ndarray | list[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of accuracies (proportions) with an interval inside [0, 1]: the Student-t interval of their logits,
    mapped back. Near a bound the accuracies' spread is lopsided (a seed can fall far below 0.98 but not far above);
    the logit scale makes it symmetric, and its back-transform can never leave (0, 1). The mean shown is the plain
    mean of the accuracies."""
    array = np.asarray(values, dtype="float64")
    array = array[np.isfinite(array)]
    if len(array) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    clipped = np.clip(array, PROPORTION_EPSILON, 1 - PROPORTION_EPSILON)
    logits = mean_interval(np.log(clipped / (1 - clipped)), confidence)
    mean = float(array.mean())
    if not logits.defined:
        return Interval(mean, math.nan, math.nan, logits.count)
    low, high = (float(1 / (1 + math.exp(-value))) for value in (logits.low, logits.high))
    return Interval(mean, min(low, mean), max(high, mean), logits.count, float(array.std(ddof=1)))


def bounded(interval: Interval, span: float) -> Interval:
    """The interval intersected with [−span, span], the differences the measure can take (two accuracies differ by at
    most 1): the true difference lies there, so the intersection covers it whenever the interval did."""
    if not interval.defined:
        return interval
    return dataclasses.replace(interval, low=max(interval.low, -span), high=min(interval.high, span))


def paired_difference(first: pd.Series, second: pd.Series, confidence: float = CONFIDENCE) -> Interval:
    """``first − second`` seed by seed (both indexed by seed; seeds missing from either, or with a
    non-finite value, are left out), as a mean with its interval."""
    common = first.index.intersection(second.index)
    differences = (first.reindex(common).to_numpy(dtype="float64")
                   - second.reindex(common).to_numpy(dtype="float64"))
    return mean_interval(differences[np.isfinite(differences)], confidence)


def paired_power(effect: float, spread: float, count: int, alpha: float) -> float:
    """Power of the two-sided paired t test at level ``alpha`` with ``count`` seeds, for a true mean difference
    ``effect`` whose seed-to-seed standard deviation is ``spread``.

    T = (Z + δ) / √(V / ν) with δ = effect·√n / spread, Z standard normal and V χ²(ν), ν = n − 1, so
    P(|T| > c) = E_V[Φ(δ − c√(V/ν)) + Φ(−δ − c√(V/ν))]: the mean over V's quantiles (the noncentral t, computed
    in a way that stays finite where scipy's nct returns NaN, at the tiny levels α/m of a large family)."""
    if count < 2 or not spread > 0:
        return math.nan
    freedom = count - 1
    critical = stats.t.ppf(1 - alpha / 2, freedom)
    shift = abs(effect) * math.sqrt(count) / spread
    scale = critical * np.sqrt(chi_square_quantiles(freedom) / freedom)
    return float(np.mean(stats.norm.cdf(shift - scale) + stats.norm.cdf(-shift - scale)))


@functools.lru_cache(maxsize=256)
def chi_square_quantiles(freedom: int, points: int = 4000) -> np.ndarray:
    """χ²(freedom) at the midpoints of ``points`` equal slices of probability: an expectation over V is their mean."""
    return stats.chi2.ppf((np.arange(points) + 0.5) / points, freedom)


def detectable_effect(spread: float, count: int, alpha: float, power: float = POWER) -> float:
    """The smallest true difference the paired t test finds with probability ``power`` (NaN without spread)."""
    if count < 2 or not spread > 0:
        return math.nan
    high = spread
    while paired_power(high, spread, count, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda effect: paired_power(effect, spread, count, alpha) - power, 0.0, high,
                                 xtol=spread * 1e-9))


def seeds_needed(effect: float, spread: float, alpha: float, power: float = POWER) -> int | None:
    """The fewest seeds with which the paired t test finds ``effect`` with probability ``power``; None beyond
    SEEDS_LIMIT (or without spread)."""
    if not spread > 0 or not math.isfinite(effect) or effect == 0:
        return None
    # The normal approximation (z_{1−α/2} + z_power)² · (spread / effect)² never overestimates: start there.
    normal = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) ** 2 * (spread / effect) ** 2
    count = max(2, math.floor(normal))
    while count <= SEEDS_LIMIT:
        if paired_power(effect, spread, count, alpha) >= power:
            return count
        count += max(1, count // 50)  # steps of 2% past a few hundred: seeds needed is a rough figure there
    return None


def smallest_sign_flip_p_value(count: int) -> float:
    """The smallest two-sided p-value an exact paired sign-flip test can reach with ``count`` seeds: 2 / 2^n
    (0.25 with 3 seeds, so no such test decides at 5% below 6 seeds)."""
    return min(1.0, 2.0 / 2**count)
