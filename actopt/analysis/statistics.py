"""Intervals over seeds: the mean of a configuration's seeds, and the paired difference of two
configurations run with the same seeds, each with a Student-t confidence interval.

Runs of different configurations with the same seed share the data split and the batch order, so
their difference seed by seed removes the part of the spread that comes from the data: the paired
interval is narrower than two separate ones whenever the seeds' luck is shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# The confidence level of every interval in the report.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over ``count`` values with its confidence interval; ``low``/``high`` are NaN when
    ``count`` < 2 (one value has no spread to estimate)."""

    mean: float
    low: float
    high: float
    count: int

    @property
    def defined(self) -> bool:
        return self.count >= 2 and math.isfinite(self.low) and math.isfinite(self.high)

    def excludes_zero(self) -> bool:
        return self.defined and (self.low > 0 or self.high < 0)

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
    half = float(stats.t.ppf(0.5 + confidence / 2, count - 1) * array.std(ddof=1) / math.sqrt(count))
    return Interval(mean, mean - half, mean + half, count)


def paired_difference(first: pd.Series, second: pd.Series, confidence: float = CONFIDENCE) -> Interval:
    """``first − second`` seed by seed (both indexed by seed; seeds missing from either, or with a
    non-finite value, are left out), as a mean with its interval."""
    joined = pd.concat([first.rename("first"), second.rename("second")], axis=1, join="inner").astype("float64")
    joined = joined[np.isfinite(joined).all(axis=1)]
    return mean_interval(joined["first"] - joined["second"], confidence)
