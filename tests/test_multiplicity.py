"""Adjusted p-values, bounded accuracy intervals and the paired test's power, each against a hand computation or an
independent oracle (a brute-force loop, scipy's noncentral t, a Monte Carlo)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import special, stats

from actopt.analysis import multiplicity, statistics


def test_holm_and_benjamini_hochberg_match_a_hand_computation():
    p_values = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, then running max.
    assert multiplicity.holm(p_values) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted times 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04, then running min from the top.
    assert multiplicity.benjamini_hochberg(p_values) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert np.isnan(multiplicity.holm([0.01, math.nan])[1]) and multiplicity.holm([0.01, math.nan])[0] == 0.01


def brute_holm(p_values: list[float]) -> list[float]:
    """Holm by its definition, one hypothesis at a time: the largest (m − rank + 1)·p over those not above it."""
    ranked = sorted(p_values)
    count = len(p_values)
    return [min(1.0, max((count - rank) * value for rank, value in enumerate(ranked) if value <= p))
            for p in p_values]


def brute_bh_rejected(p_values: list[float], alpha: float) -> set[int]:
    """BH's step-up rule itself: reject the k smallest, k the largest with p_(k) ≤ k·α/m."""
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    passing = [rank for rank in range(1, len(order) + 1) if p_values[order[rank - 1]] <= rank * alpha / len(order)]
    return set(order[:max(passing)]) if passing else set()


def test_adjusted_p_values_agree_with_brute_force_on_random_families():
    rng = np.random.default_rng(1)
    for _ in range(200):
        count = int(rng.integers(1, 12))
        p_values = list(rng.uniform(0, 0.2, count) ** rng.uniform(0.5, 2))
        assert multiplicity.holm(p_values) == pytest.approx(brute_holm(p_values))
        for alpha in (0.01, 0.05, 0.1):
            assert set(np.flatnonzero(multiplicity.benjamini_hochberg(p_values) <= alpha)) == (
                brute_bh_rejected(p_values, alpha))
        assert np.all(multiplicity.benjamini_hochberg(p_values) <= multiplicity.holm(p_values) + 1e-12)
    with pytest.raises(ValueError, match="unknown multiplicity"):
        multiplicity.adjust([0.1], "bonferroni")


def test_accuracy_intervals_stay_inside_zero_one_and_match_student_t_in_the_middle():
    rng = np.random.default_rng(2)
    for _ in range(300):
        values = np.clip(rng.choice([0.0, 0.27, 0.5, 0.9, 0.99, 1.0], 3) + rng.normal(0, 0.02, 3), 0, 1)
        interval = statistics.proportion_interval(values)
        assert 0 <= interval.low <= interval.mean <= interval.high <= 1
    # The case: one seed collapsed to 0.27 while two reached 0.88: Student t gave [−0.09, 1.25]-like bounds.
    assert statistics.mean_interval([0.27, 0.88, 0.88]).low < 0
    collapsed = statistics.proportion_interval([0.27, 0.88, 0.88])
    assert 0 < collapsed.low < 0.27 and 0.88 < collapsed.high < 1
    middle = [0.49, 0.50, 0.52]
    plain, bounded = statistics.mean_interval(middle), statistics.proportion_interval(middle)
    assert (bounded.low, bounded.high) == pytest.approx((plain.low, plain.high), abs=2e-3)


def test_accuracy_intervals_cover_the_mean_near_the_bound_by_monte_carlo():
    """Three seeds near 0.98 with a 0.4-point spread: the interval holds the true mean about 95% of the time."""
    rng = np.random.default_rng(4)
    center, spread = special.logit(0.98), 0.2
    true_mean = float(np.mean(special.expit(rng.normal(center, spread, 1_000_000))))
    draws = special.expit(rng.normal(center, spread, (3000, 3)))
    covered = [statistics.proportion_interval(row) for row in draws]
    rate = np.mean([interval.low <= true_mean <= interval.high for interval in covered])
    assert 0.93 <= rate <= 0.97


@pytest.mark.parametrize("effect, count, alpha", [(1.0, 3, 0.05), (0.5, 10, 0.05), (1.2, 5, 0.01), (2.0, 4, 0.005)])
def test_power_matches_scipys_noncentral_t(effect, count, alpha):
    freedom, shift = count - 1, effect * math.sqrt(count)
    critical = stats.t.ppf(1 - alpha / 2, freedom)
    expected = stats.nct.sf(critical, freedom, shift) + stats.nct.cdf(-critical, freedom, shift)
    assert statistics.paired_power(effect, 1.0, count, alpha) == pytest.approx(expected, abs=2e-4)


def test_power_at_a_large_familys_level_matches_a_monte_carlo():
    """At α/m = 0.05/14 with 3 seeds scipy's nct gives NaN for large effects; simulated t tests are the oracle."""
    rng = np.random.default_rng(5)
    alpha, effect, count = 0.05 / 14, 12.0, 3
    differences = rng.normal(effect, 1.0, (400_000, count))
    t_values = differences.mean(axis=1) / (differences.std(axis=1, ddof=1) / math.sqrt(count))
    simulated = np.mean(np.abs(t_values) > stats.t.ppf(1 - alpha / 2, count - 1))
    assert statistics.paired_power(effect, 1.0, count, alpha) == pytest.approx(simulated, abs=0.005)


def test_detectable_effect_and_seeds_needed_invert_the_power():
    # With 3 seeds at 5%, 80% power needs 3.26 paired standard deviations (the "about 3.3").
    assert statistics.detectable_effect(1.0, 3, 0.05) == pytest.approx(3.264, abs=1e-3)
    assert statistics.paired_power(statistics.detectable_effect(0.4, 5, 0.01), 0.4, 5, 0.01) == pytest.approx(0.8)
    needed = statistics.seeds_needed(0.5, 1.0, 0.05)
    assert statistics.paired_power(0.5, 1.0, needed, 0.05) >= 0.8 > statistics.paired_power(0.5, 1.0, needed - 1, 0.05)
    assert needed == 34  # normal approximation: (1.96 + 0.84)² / 0.25 = 31.4, t adds a few
    assert statistics.seeds_needed(1e-6, 1.0, 0.05) is None and math.isnan(statistics.detectable_effect(0, 3, 0.05))


@pytest.mark.parametrize("count", [3, 4, 6])
def test_smallest_sign_flip_p_value_by_enumeration(count):
    differences = np.arange(1, count + 1, dtype=float)  # all positive: the most extreme sample there is
    observed = abs(differences.mean())
    flips = [abs((differences * np.array(signs)).mean()) >= observed
             for signs in itertools.product((1, -1), repeat=count)]
    assert statistics.smallest_sign_flip_p_value(count) == pytest.approx(np.mean(flips))
    assert statistics.smallest_sign_flip_p_value(3) == 0.25
