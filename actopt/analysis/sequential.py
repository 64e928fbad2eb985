"""Anytime-valid decisions for a sweep that adds seeds until its comparisons are decided.

A comparison is the mean of paired differences (configuration A − configuration B, seed by seed).
Looking at a Student-t interval after every added seed and stopping at the first "decided" errs far
more often than 5% (optional stopping). The rule here holds however often it is looked at:

``sequential_t_interval`` — the confidence sequence of the mixture t-test. Under the report's own
model (paired differences normal with unknown spread), the Bayes factor of "mean = μ0" against
"mean = μ0 + δσ, δ ~ N(0, g)", with the right-Haar prior 1/σ on the spread, is

    BF_n = (1 + n g)^(−1/2) · [(1 + t²/ν) / (1 + t²/(ν (1 + n g)))]^(n/2),  t = (x̄ − μ0) √n / s, ν = n − 1,

(Gönen et al. 2005; Rouder et al. 2009, eq. 1 at fixed g). With the right-Haar prior it is a test
martingale in the filtration of the scale-invariant statistics (Pérez-Ortiz, Lardy, de Heide and
Grünwald 2024, Ann. Statist. 52(4), "E-statistics, group invariance and anytime-valid testing";
the normal-mixture confidence sequence goes back to Lai 1976, Ann. Statist. 4(2)), so Ville's
inequality gives P(some n has BF_n ≥ 1/α) ≤ α. BF_n grows with t², so {μ0 : BF_n < 1/α} is
x̄ ± t*_n s/√n with t*_n in closed form (``t_threshold``); the running intersection over the
looks is the confidence sequence, and a comparison is decided once it excludes zero.

``bernstein_interval`` — the predictable plug-in empirical-Bernstein confidence sequence of
Waudby-Smith and Ramdas (2024, JRSS-B 86(1), "Estimating means of bounded random variables by
betting", Theorem 2), which needs nothing but bounded values (paired accuracy differences lie in
[−1, 1]). It is kept as the assumption-free reference: no test valid for every distribution on
[−1, 1] can decide a 0.7-point difference with fewer than log(1/α)/0.007 ≈ 430 seeds (a
distribution that puts mass ε = 0.007 at −1 and the rest at ε/(1−ε) has mean 0 and looks like a
0.7-point lead until −1 turns up), so the sweep stops on the t rule, and docs/analysis.md gives
the seeds each needs, computed by ``seeds_to_decide``.

Multiplicity: a study with m comparisons runs each confidence sequence at α/m (Bonferroni). Each
crosses its threshold at any n with probability at most α/m, whatever the others do and however
the looks were chosen, so the chance of one or more false decisions over the whole adaptive sweep
is at most α; this implies the family-wise guarantee of Holm's procedure that the report applies
to its fixed-sample intervals.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from actopt.analysis.statistics import Interval

# The family's error over the whole adaptive sweep: one or more false decisions with probability ≤ 5%.
FAMILY_ALPHA = 0.05
# Prior variance of the effect in units of the paired spread (δ ~ N(0, g)): the differences the
# studies look for are 1 to 3 paired standard deviations (0.3–0.7 points against 0.3–0.5), and g = 1
# puts the mixture's power there; any g keeps the guarantee, only the seeds needed change.
EFFECT_PRIOR = 1.0
# The empirical-Bernstein bets are truncated at 1/2, Waudby-Smith and Ramdas's default.
BET_TRUNCATION = 0.5
# Seeds are added in growing batches: each look brings a configuration to max(n + 2, 1.5 n) seeds, and
# at least to the fewest at which the rule can decide, so that the seeds of one look train together as
# groups and the looks stay few (with 3 comparisons: 3, 6, 9, 14, 20).
GROWTH = 1.5
MIN_ADDED = 2
# Futility: a comparison stops early when even an optimistic lead (the observed one plus two standard
# errors) would not be decided at the cap. Stopping never adds a false decision, so validity holds.
OPTIMISM_STANDARD_ERRORS = 2.0


def t_threshold(count: int, alpha: float, prior: float = EFFECT_PRIOR) -> float:
    """The |t| at which the mixture t Bayes factor of ``count`` paired differences reaches 1/α (inf when
    it cannot at this count: a few values never carry that much evidence)."""
    if count < 2:
        return math.inf
    spread = 1 + count * prior
    ratio = (math.sqrt(spread) / alpha) ** (2 / count)
    if ratio >= spread:
        return math.inf
    return math.sqrt((count - 1) * (ratio - 1) / (1 - ratio / spread))


def fewest_seeds(alpha: float, prior: float = EFFECT_PRIOR) -> int:
    """The fewest paired seeds at which the rule can decide at all: even an unbounded t leaves the Bayes
    factor at (1 + n g)^((n − 1)/2), which must reach 1/α."""
    count = 2
    while not math.isfinite(t_threshold(count, alpha, prior)):
        count += 1
    return count


def t_bayes_factor(values: Sequence[float] | np.ndarray, null: float = 0.0, prior: float = EFFECT_PRIOR) -> float:
    """BF of mean ≠ ``null`` (δσ, δ ~ N(0, prior)) against mean = ``null``, with the right-Haar prior on σ."""
    array = np.asarray(values, dtype="float64")
    count = len(array)
    if count < 2:
        return 1.0
    spread = float(array.std(ddof=1))
    if spread == 0:
        return math.inf if array.mean() != null else 1.0
    squared = count * (array.mean() - null) ** 2 / spread**2
    dof = count - 1
    return float((1 + count * prior) ** -0.5
                 * ((1 + squared / dof) / (1 + squared / (dof * (1 + count * prior)))) ** (count / 2))


def sequential_t_interval(values: Sequence[float] | np.ndarray, alpha: float, prior: float = EFFECT_PRIOR,
                          start: int = 2) -> Interval:
    """The running intersection, over the prefixes of at least ``start`` values (the looks), of
    x̄ ± t*_n s/√n: a (1 − α) confidence sequence for the mean, valid at every n at once."""
    array = np.asarray(values, dtype="float64")
    count = len(array)
    mean = float(array.mean()) if count else math.nan
    if count < max(start, 2):
        return Interval(mean, -math.inf, math.inf, count)
    counts = np.arange(1, count + 1)
    means = np.cumsum(array) / counts
    # Each prefix's sample variance from running sums, shifted by the first value for accuracy.
    shifted = array - array[0]
    squares = np.cumsum(shifted**2) - np.cumsum(shifted) ** 2 / counts
    spreads = np.sqrt(np.maximum(squares, 0.0) / np.maximum(counts - 1, 1))
    thresholds = np.array([t_threshold(int(n), alpha, prior) for n in counts])
    looks = slice(max(start, 2) - 1, count)
    with np.errstate(invalid="ignore"):  # inf · 0 where a prefix has no spread and no threshold yet
        halves = np.nan_to_num(thresholds[looks] * spreads[looks] / np.sqrt(counts[looks]), nan=math.inf,
                               posinf=math.inf)
    return Interval(mean, float(np.max(means[looks] - halves)), float(np.min(means[looks] + halves)), count)


def bernstein_interval(values: Sequence[float] | np.ndarray, alpha: float, low: float = -1.0,
                       high: float = 1.0) -> Interval:
    """Waudby-Smith and Ramdas's predictable plug-in empirical-Bernstein confidence sequence (running
    intersection) for the mean of values known to lie in [``low``, ``high``]."""
    array = (np.asarray(values, dtype="float64") - low) / (high - low)  # into [0, 1]
    count = len(array)
    if count == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    steps = np.arange(1, count + 1)
    means = (0.5 + np.cumsum(array)) / (steps + 1)
    variances = (0.25 + np.cumsum((array - means) ** 2)) / (steps + 1)
    before_mean = np.append(0.5, means[:-1])
    before_variance = np.append(0.25, variances[:-1])
    bets = np.minimum(np.sqrt(2 * math.log(2 / alpha) / (before_variance * steps * np.log1p(steps))),
                      BET_TRUNCATION)
    penalties = 4 * (array - before_mean) ** 2 * (-np.log1p(-bets) - bets) / 4
    centres = np.cumsum(bets * array) / np.cumsum(bets)
    halves = (math.log(2 / alpha) + np.cumsum(penalties)) / np.cumsum(bets)
    lower, upper = np.max(centres - halves), np.min(centres + halves)
    scale = high - low
    return Interval(float(np.mean(values)), low + scale * max(float(lower), 0.0),
                    low + scale * min(float(upper), 1.0), count)


Rule = Callable[[np.ndarray, float], Interval]
SEQUENTIAL_T: Rule = sequential_t_interval
BOUNDED: Rule = bernstein_interval


def comparison_alpha(comparisons: int, alpha: float = FAMILY_ALPHA) -> float:
    """Each comparison's level: Bonferroni over the study's comparisons."""
    return alpha / max(comparisons, 1)


@dataclass(frozen=True)
class Verdict:
    """Where one comparison stands at a look."""

    state: str  # DECIDED, OPEN (needs more seeds), FUTILE (cannot be decided within the cap), CAPPED
    interval: Interval
    count: int  # paired seeds


DECIDED, OPEN, FUTILE, CAPPED = "decided", "open", "futile", "at the cap"


def judge(differences: np.ndarray, alpha: float, cap: int, rule: Rule = SEQUENTIAL_T,
          seeds: int | None = None) -> Verdict:
    """Decided when the confidence sequence excludes zero; else open, unless the configurations have
    ``seeds`` ≥ the cap or even an optimistic lead could not be decided at the cap (futile)."""
    interval = rule(differences, alpha)
    count = len(differences)
    if interval.excludes_zero():
        return Verdict(DECIDED, interval, count)
    if (count if seeds is None else seeds) >= cap:
        return Verdict(CAPPED, interval, count)
    if rule is SEQUENTIAL_T and count >= 3 and futile(differences, alpha, cap):
        return Verdict(FUTILE, interval, count)
    return Verdict(OPEN, interval, count)


def futile(differences: np.ndarray, alpha: float, cap: int) -> bool:
    """Whether, with the spread seen so far, even the observed lead plus two standard errors would
    stay inside the sequential interval at ``cap`` seeds."""
    spread = float(np.std(differences, ddof=1))
    if spread == 0:
        return False
    lead = abs(float(np.mean(differences))) + OPTIMISM_STANDARD_ERRORS * spread / math.sqrt(len(differences))
    return lead * math.sqrt(cap) / spread < t_threshold(cap, alpha)


def next_count(count: int, cap: int) -> int:
    """How many seeds a configuration an open comparison needs has after the next look."""
    return min(cap, max(count + MIN_ADDED, math.ceil(GROWTH * count)))


def student_t_decided(differences: np.ndarray, alpha: float) -> bool:
    """The naive rule: the fixed-sample Student-t interval at level 1 − α (``mean_interval``'s) excludes zero."""
    count = len(differences)
    if count < 2:
        return False
    spread = float(np.std(differences, ddof=1))
    return abs(float(np.mean(differences))) * math.sqrt(count) > student_quantile(count, alpha) * spread


@functools.lru_cache(maxsize=1024)
def student_quantile(count: int, alpha: float) -> float:
    return float(stats.t.ppf(1 - alpha / 2, count - 1))


@dataclass(frozen=True)
class Simulation:
    """How ``seeds_to_decide`` simulates: sequences of ``limit`` paired seeds, ``simulations`` of them, from
    ``seed``."""

    limit: int = 2000
    simulations: int = 200
    seed: int = 0


def seeds_to_decide(effect: float, spread: float, alpha: float, rule: Rule = SEQUENTIAL_T,
                    simulation: Simulation = Simulation()) -> float:
    """The median number of paired seeds at which ``rule`` first decides a true mean difference of
    ``effect`` with normal paired spread ``spread`` (inf when most simulations need more than the limit)."""
    limit, simulations, seed = simulation.limit, simulation.simulations, simulation.seed
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(simulations):
        values = rng.normal(effect, spread, size=limit)
        found.append(first_decision(values, alpha, rule))
    return float(np.median(found))


def first_decision(values: np.ndarray, alpha: float, rule: Rule) -> float:
    """The first count at which ``rule`` excludes zero (by bisection: once excluded it stays excluded, the
    sequence being a running intersection), inf if it never does within ``values``."""
    if not rule(values, alpha).excludes_zero():
        return math.inf
    low, high = 2, len(values)
    while low < high:
        middle = (low + high) // 2
        if rule(values[:middle], alpha).excludes_zero():
            high = middle
        else:
            low = middle + 1
    return float(low)


@dataclass(frozen=True)
class Pair:
    """Two configurations (by key) compared along one factor: the measure of ``first`` − ``second``.

    A pair with a ``measure`` reads its values at ``(measure, configuration)``, so that one look judges several
    measures of the same configurations; without one, at the configuration alone (one measure)."""

    factor: str
    first: str
    second: str
    name: str
    measure: str = ""
    question: str = ""  # the declared question the comparison answers

    def values_of(self, values: Mapping[Any, Sequence[float]], key: str) -> Sequence[float]:
        return values[(self.measure, key)] if self.measure else values[key]


@dataclass(frozen=True)
class Look:
    """What one look saw and chose: the seeds of each configuration, a verdict per pair, and either the seeds
    the next look needs or why the sweep stops (``stopped`` is empty when it goes on)."""

    counts: dict[str, int]
    verdicts: tuple[Verdict, ...]
    next_counts: dict[str, int]
    stopped: str
    reason: str


def pair_differences(pair: Pair, values: Mapping[Any, Sequence[float]], counts: dict[str, int]) -> np.ndarray:
    """The pair's differences on the seeds both configurations have at this look, in seed order (a seed
    without a finite value on either side, a diverged run, is left out)."""
    shared = min(counts[pair.first], counts[pair.second])
    first = np.asarray(pair.values_of(values, pair.first)[:shared], dtype="float64")
    second = np.asarray(pair.values_of(values, pair.second)[:shared], dtype="float64")
    differences = first - second
    return differences[np.isfinite(differences)]


@dataclass(frozen=True)
class Limits:
    """How far a look may plan: ``cap`` seeds per configuration, ``max_runs`` runs in all (None: no limit), of
    which the sweep has trained ``runs`` so far."""

    cap: int
    max_runs: int | None = None
    runs: int = 0


def look(pairs: Sequence[Pair], values: Mapping[Any, Sequence[float]], counts: dict[str, int], limits: Limits,
         alpha: float, rule: Rule = SEQUENTIAL_T) -> Look:
    """Judge every pair at ``alpha`` each and plan the next look: the configurations of the pairs still open
    get seeds up to ``next_count`` of the pair's shared seeds; the others none, within ``limits``."""
    cap, runs, max_runs = limits.cap, limits.runs, limits.max_runs
    verdicts = tuple(judge(pair_differences(pair, values, counts), alpha, cap, rule, shared_seeds(pair, counts))
                     for pair in pairs)
    wanted = dict(counts)
    # A look before the rule can decide anything would be a look for nothing.
    least = min(cap, fewest_seeds(alpha)) if rule is SEQUENTIAL_T else 0
    for pair, verdict in zip(pairs, verdicts):
        if verdict.state == OPEN:
            target = max(next_count(shared_seeds(pair, counts), cap), least)
            for key in (pair.first, pair.second):
                wanted[key] = max(wanted[key], target)
    added = sum(wanted[key] - counts[key] for key in counts)
    states = [verdict.state for verdict in verdicts]
    if not pairs:
        return Look(counts, verdicts, counts, "stopped", "no comparison to decide")
    if all(state == DECIDED for state in states):
        return Look(counts, verdicts, counts, "stopped", f"all {len(pairs)} comparisons decided")
    if added == 0:
        parts = [f"{states.count(state)} {text}" for state, text in
                 ((DECIDED, "decided"), (FUTILE, f"cannot be decided within the cap of {cap} seeds"),
                  (CAPPED, f"undecided at the cap of {cap} seeds")) if states.count(state)]
        return Look(counts, verdicts, counts, "stopped", "no comparison left open: " + ", ".join(parts))
    if max_runs is not None and runs + added > max_runs:
        return Look(counts, verdicts, counts, "stopped", f"the next look needs {added} more runs: over the budget "
                                                         f"of {max_runs} runs ({runs} used)")
    grown = sum(wanted[key] > counts[key] for key in counts)
    return Look(counts, verdicts, wanted, "", f"{states.count(OPEN)} comparisons open: {added} more runs for "
                                              f"{grown} configurations")


def shared_seeds(pair: Pair, counts: dict[str, int]) -> int:
    return min(counts[pair.first], counts[pair.second])
