"""Adjusted p-values for a family of comparisons: Holm (family-wise error) and Benjamini–Hochberg (false-discovery
rate).

A report states many comparisons at once. Each at 5% alone, a study where nothing differs still shows at least one
"difference" in a third of its reports; so every decision of a report belongs to one family, and its p-value is
adjusted over that family before it decides. Holm's step-down bounds the chance of one or more false decisions in
the family at alpha, whatever the dependence between the tests; Benjamini–Hochberg's step-up bounds the expected
share of false decisions among those made (valid for independent or positively dependent tests), and decides more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The study file's "multiplicity" values: the method that adjusts, and how the report names it.
METHODS = {"holm": "Holm (family-wise error rate)", "fdr": "Benjamini–Hochberg (false-discovery rate)"}
SHORT_NAMES = {"holm": "Holm", "fdr": "BH"}
DEFAULT_METHOD = "holm"


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's adjusted p-values: sorted ascending, the i-th (from 0) is max over j ≤ i of (m − j) · p_(j), at most 1.

    A hypothesis is rejected at level alpha exactly when its adjusted value is ≤ alpha. NaN (a comparison without a
    p-value) stays NaN and does not count in m.
    """
    values = np.asarray(p_values, dtype="float64")
    adjusted = np.full(values.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(values))
    count = len(finite)
    if count == 0:
        return adjusted
    order = finite[np.argsort(values[finite], kind="stable")]
    scaled = (count - np.arange(count)) * values[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg's adjusted p-values: sorted ascending, the i-th (from 1) is min over j ≥ i of m · p_(j) / j.

    NaN stays NaN and does not count in m.
    """
    values = np.asarray(p_values, dtype="float64")
    adjusted = np.full(values.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(values))
    count = len(finite)
    if count == 0:
        return adjusted
    order = finite[np.argsort(values[finite], kind="stable")]
    scaled = count * values[order] / np.arange(1, count + 1)
    adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return adjusted


def adjust(p_values: Sequence[float], method: str = DEFAULT_METHOD) -> np.ndarray:
    """The adjusted p-values of a family by ``method`` ("holm" or "fdr")."""
    if method == "holm":
        return holm(p_values)
    if method == "fdr":
        return benjamini_hochberg(p_values)
    raise ValueError(f"unknown multiplicity method {method!r}; known: {', '.join(METHODS)}")


def simultaneous_confidence(confidence: float, count: int) -> float:
    """Bonferroni's level for ``count`` intervals that all hold together with probability ≥ ``confidence``.

    Holm rejects every hypothesis these intervals exclude (and sometimes more), so they are the width shown beside
    Holm's verdicts.
    """
    return 1 - (1 - confidence) / max(count, 1)
