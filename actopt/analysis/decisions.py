"""Decisions between configurations, and the rules on whether runs learned.

Each contrast the questions need (``questions.comparisons_needed``) is tested seed by seed: runs of different
configurations with the same seed share the data split and the batch order, so the difference taken seed by seed
removes the part of the spread that comes from the data (``statistics.paired_difference``), and its Student-t
p-value is adjusted over the report's family of comparisons (``multiplicity``: Holm by default, Benjamini–Hochberg
where the study file asks). A pair is decided when its adjusted p-value is at most 5%; a difference with no spread
(every seed the same) has no p-value and decides nothing. A "cannot decide" comes with the smallest effect the test
could find at 80% power with these seeds and this spread, and the seeds the observed difference would need. With
one seed there is no test: the fixed margins below stand in, and the report opens by calling itself a smoke test.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from actopt.analysis import multiplicity
from actopt.analysis.frames import (
    Finding,
    describe,
    label,
    label_columns,
    listed,
    order_key,
    points,
    references,
    run_name,
    science_columns,
    text,
)
from actopt.analysis.questions import Contrast, Question, groups
from actopt.analysis.statistics import (
    CONFIDENCE,
    POWER,
    SEEDS_LIMIT,
    Interval,
    bounded,
    detectable_effect,
    paired_difference,
    seeds_needed,
)
from actopt.analysis.tables import CHANCE_MARGIN, COLLAPSE_MARGIN, LOSS_GROWTH, tuned_runs
from actopt.core.metric_names import BEST_VAL_ACCURACY, LEARNING_RATE, TEST_ACCURACY

# One seed only: accuracy differences below half a point count as noise (seed-to-seed standard
# deviations of these MLPs are typically 0.1 to 0.3 points). Not a test: the report calls itself a smoke test then.
ACCURACY_NOISE = 0.005
# The deciding-parameter rule names a parameter when its levels alone predict whether a run learned
# for at least this share of the runs (majority status per level), and better than any other parameter.
DECIDING_SHARE = 0.75
LEVEL = f"{CONFIDENCE:.0%}"


@dataclass(frozen=True)
class Measure:
    """A per-run column compared between configurations, and how to speak of it."""

    column: str
    name: str
    higher_is_better: bool
    scale: float  # to the unit below
    unit: str
    single_seed_margin: float  # in the column's own units
    verb: str  # how the better level is said to win: "beats {other} on test accuracy"
    adjective: str  # the verdict column's word for the better level: "higher"
    span: float = 1.0  # the largest |first − second| the measure can take, in the column's own units

    def amount(self, value: float) -> str:
        return f"{value * self.scale:.1f} {self.unit}"

    def interval(self, interval: Interval) -> str:
        return f"[{interval.low * self.scale:.1f}, {interval.high * self.scale:.1f}]"


def magnitude(interval: Interval) -> Interval:
    """The difference turned so that its mean is positive: the winner's lead, with its interval."""
    if interval.mean >= 0:
        return interval
    return Interval(-interval.mean, -interval.high, -interval.low, interval.count, interval.spread, interval.p_value)


# Every compared measure reads a column of the run table in which a failed seed scores what it reached (chance where
# it logged nothing): test and best validation accuracy (``test_score``, ``val_score``), the mean validation accuracy
# over the epochs, which rewards getting good sooner and is continuous, so seeds that tie on a whole epoch still
# differ (``val_area``); and the train − validation gap after the last epoch (a diverged seed has none: left out,
# and counted).
MEASURES = {
    TEST_ACCURACY: Measure("test_score", "test accuracy", True, 100.0, "points", ACCURACY_NOISE,
                             "beats {other} on test accuracy", "higher"),
    BEST_VAL_ACCURACY: Measure("val_score", "best validation accuracy", True, 100.0, "points", ACCURACY_NOISE,
                                 "beats {other} on best validation accuracy", "higher"),
    "val_area": Measure("val_area", "mean validation accuracy over the epochs (area under the validation curve)",
                        True, 100.0, "points", ACCURACY_NOISE,
                        "beats {other} on mean validation accuracy over the epochs", "higher"),
    "gap": Measure("final_gap", "train/validation gap", False, 100.0, "points", ACCURACY_NOISE,
                   "has a narrower train/validation gap than {other}", "narrower gap", span=2.0),
}


@dataclass(frozen=True)
class Decision:
    """One contrast tested and judged within its family."""

    contrast: Contrast
    difference: Interval  # first − second on the measure, raw 95% interval, paired by seed
    simultaneous: Interval  # the same difference at the family's Bonferroni level
    adjusted_p: float
    decided: bool
    strict_alpha: float  # the family's strictest level α/m, at which the power below is computed
    unpaired: int  # seeds of either level without a value on both sides

    @functools.cached_property
    def detectable(self) -> float:
        """The smallest |difference| the test finds with POWER at ``strict_alpha``, with these seeds and spread."""
        return detectable_effect(self.difference.spread, self.difference.count, self.strict_alpha)

    @functools.cached_property
    def seeds_needed(self) -> int | None:
        """Seeds the observed difference would need at ``strict_alpha``; None beyond SEEDS_LIMIT."""
        return seeds_needed(self.difference.mean, self.difference.spread, self.strict_alpha)

    @property
    def measure(self) -> Measure:
        return MEASURES[self.contrast.measure]

    def winner(self) -> tuple[str, str]:
        """(better, worse) level names by the sign of the difference and the measure's direction."""
        first, second = (describe_level(self.contrast.factor, level)
                         for level in (self.contrast.first, self.contrast.second))
        better_first = (self.difference.mean > 0) == self.measure.higher_is_better
        return (first, second) if better_first else (second, first)


def seed_values(rows: pd.DataFrame, column: str) -> pd.Series:
    """One value per seed (the mean where a configuration has several runs of a seed)."""
    return rows.dropna(subset=[column]).groupby("seed")[column].mean()


def seed_tables(tuned: pd.DataFrame) -> dict[tuple[str, ...], pd.DataFrame]:
    """Per configuration (its label columns' values as text), the measures' values by seed (the mean where a
    configuration has several runs of a seed): computed once, read by every contrast."""
    columns = label_columns(tuned, science_columns(tuned))
    measured = [item.column for item in MEASURES.values() if item.column in tuned]
    keyed = tuned.assign(**{name: tuned[name].map(text) for name in columns})
    means = keyed.groupby([*columns, "seed"], sort=False, dropna=False)[measured].mean()
    return {key if isinstance(key, tuple) else (key,): rows.droplevel(list(range(len(columns))))
            for key, rows in means.groupby(level=list(range(len(columns))), sort=False)}


def configuration_key(contrast: Contrast, level: object, columns: list[str]) -> tuple[str, ...]:
    values = {**{name: text(value) for name, value in contrast.where}, contrast.factor: text(level)}
    return tuple(values.get(name, "") for name in columns)


def paired_values(contrast: Contrast, tables_by_seed: dict[tuple[str, ...], pd.DataFrame], columns: list[str]
                  ) -> tuple[pd.Series, pd.Series, int]:
    """The two levels' values by seed, and how many seeds of either could not be paired."""
    column = MEASURES[contrast.measure].column
    empty = pd.Series(dtype="float64")
    first, second = (tables_by_seed[key][column].dropna() if key in tables_by_seed else empty
                     for key in (configuration_key(contrast, level, columns)
                                 for level in (contrast.first, contrast.second)))
    paired = len(first.index.intersection(second.index))
    return first, second, len(first.index.union(second.index)) - paired


def decide(contrasts: list[Contrast], table: pd.DataFrame, method: str = multiplicity.DEFAULT_METHOD,
           confidence: float = CONFIDENCE, tuned: pd.DataFrame | None = None) -> list[Decision]:
    """Every contrast tested seed by seed and judged over the family they form together (one family per report);
    ``tuned`` is ``tuned_runs(table, keep_failed=True)`` where the caller has it already."""
    tuned = tuned_runs(table, keep_failed=True) if tuned is None else tuned
    columns = label_columns(tuned, science_columns(tuned))
    by_seed = seed_tables(tuned) if contrasts else {}
    values = [paired_values(contrast, by_seed, columns) for contrast in contrasts]
    spans = [MEASURES[contrast.measure].span for contrast in contrasts]
    differences = [bounded(paired_difference(first, second, confidence), span)
                   for (first, second, _), span in zip(values, spans)]
    adjusted = multiplicity.adjust([difference.p_value for difference in differences], method)
    size = sum(1 for difference in differences if math.isfinite(difference.p_value))
    alpha = 1 - confidence
    wide = multiplicity.simultaneous_confidence(confidence, size)
    # The fixed margin stands in for a test only in a study of one seed (a smoke test, and the report says so); in a
    # study of several seeds a pair that shares one seed is not decided.
    single_seed = table["seed"].nunique() < 2
    decisions = []
    for contrast, (first, second, unpaired), difference, p_value, span in zip(contrasts, values, differences, adjusted,
                                                                               spans):
        if difference.count == 1:
            decided = single_seed and abs(difference.mean) > MEASURES[contrast.measure].single_seed_margin
        else:
            decided = bool(math.isfinite(p_value) and p_value <= alpha)
        decisions.append(Decision(contrast, difference, bounded(paired_difference(first, second, wide), span),
                                  float(p_value),
                                  decided, alpha / max(size, 1), unpaired))
    return decisions


def verdict(decision: Decision, method: str) -> str:
    """The decision in words: who wins by how much, or why it cannot be decided and what could have been."""
    measure, difference = decision.measure, decision.difference
    better, worse = decision.winner()
    first, second = (describe_level(decision.contrast.factor, level)
                     for level in (decision.contrast.first, decision.contrast.second))
    if difference.count == 0:
        return f"cannot compare {first} with {second}: no seed has a value for both"
    if difference.count == 1:
        if decision.decided:
            return (f"{better} {measure.verb.format(other=worse)} by {measure.amount(abs(difference.mean))} (1 seed: "
                    f"a lead of more than {measure.amount(measure.single_seed_margin)}, not a test)")
        return (f"cannot decide between {first} and {second}: they differ by {measure.amount(difference.mean)}, not "
                f"more than {measure.amount(measure.single_seed_margin)} (1 seed, no interval)")
    raw = f"{LEVEL} CI {measure.interval(magnitude(difference))}, {difference.count} seeds"
    if difference.degenerate:
        return (f"cannot decide between {first} and {second}: every seed differs by exactly "
                f"{measure.amount(difference.mean)}, an interval of zero width that says nothing about the spread")
    adjusted = f"{multiplicity.SHORT_NAMES[method]}-adjusted p {decision.adjusted_p:.2g}"
    if decision.decided:
        lead = measure.amount(abs(difference.mean))
        return f"{better} {measure.verb.format(other=worse)} by {lead} ({raw}; {adjusted})"
    raw = f"{LEVEL} CI {measure.interval(difference)}, {difference.count} seeds"
    return (f"cannot decide between {first} and {second}: {first} − {second} = {measure.amount(difference.mean)} "
            f"({raw}; {adjusted}); {power_text(decision)}")


def power_text(decision: Decision) -> str:
    """What the study could have found, and what the observed difference would need."""
    measure, difference = decision.measure, decision.difference
    if not math.isfinite(decision.detectable):
        return "no spread to compute the power from"
    needed = (f"the observed {measure.amount(abs(difference.mean))} would need {decision.seeds_needed} seeds"
              if decision.seeds_needed else
              f"the observed {measure.amount(abs(difference.mean))} would need more than {SEEDS_LIMIT:,} seeds")
    return (f"detectable at {POWER:.0%} power with {difference.count} seeds: {measure.amount(decision.detectable)}; "
            f"{needed}")


def describe_level(factor: str, value: object) -> str:
    return str(value) if factor in ("activation", "optimizer") else f"{factor} {text(value)}"


def unlearned_groups(questions: list[Question], table: pd.DataFrame, tuned: pd.DataFrame | None = None
                     ) -> list[Finding]:
    """The groups a question compares in which no run learned: nothing to compare, said once per group. ``tuned`` is
    ``tuned_runs(table, keep_failed=True)`` where the caller has it already."""
    tuned = tuned_runs(table, keep_failed=True) if tuned is None else tuned
    found, seen = [], set()
    for question in questions:
        if not any(name in MEASURES for name in question.measures):
            continue
        for factor in question.factors:
            if factor not in tuned or tuned[factor].astype(str).nunique() < 2:
                continue
            for where, rows in groups(tuned, factor):
                if rows["learned"].any() or (factor, where) in seen:
                    continue
                seen.add((factor, where))
                place = " · ".join(describe(name, value) for name, value in where)
                statement = (f"{place + ': ' if place else ''}no {factor} level learned (every run within "
                             f"{points(CHANCE_MARGIN)} of chance): nothing to compare (see 'Runs that did not learn').")
                found.append(Finding(f"Comparing {factor} levels", statement, "no level of the group learned", "",
                                     listed(references(rows)), "undecided"))
    return found


def failed_seeds(table: pd.DataFrame) -> list[Finding]:
    """Per configuration and learning rate, the seeds that failed and how; every one is counted here."""
    topic = "Failed seeds"
    rule = (f"diverged (the training loss became NaN or infinite); did not learn (best validation accuracy at most "
            f"{points(CHANCE_MARGIN)} above chance); collapsed (learned, but best validation accuracy more than "
            f"{points(COLLAPSE_MARGIN)} below its configuration's median seed, or a final training loss above "
            f"{LOSS_GROWTH:g} × its first epoch's). A failed seed keeps the accuracy it reached (chance where it "
            f"logged none) in the learning-rate choice and in every comparison")
    failed = table[table["failed"]]
    if failed.empty:
        return [Finding(topic, f"No seed failed ({len(table)} runs).", rule, kind="absent")]
    columns = [*label_columns(table, science_columns(table)), LEARNING_RATE]
    found = []
    for _, group in table.groupby(columns, sort=False, dropna=False):
        bad = group[group["failed"]]
        if bad.empty:
            continue
        kinds = ", ".join(f"{count} {kind}" for kind, count in bad["failure"].value_counts().items())
        statement = f"{label(group.iloc[0], columns)}: {len(bad)} of {len(group)} seeds failed ({kinds})."
        numbers = "; ".join(f"{run_name(row)}: {row['failure']}, best val {row['val_score']:.4f}"
                            for _, row in bad.iterrows())
        found.append(Finding(topic, statement, rule, numbers, listed(references(bad))))
    return found


def chance_runs(table: pd.DataFrame) -> list[Finding]:
    """The runs whose best validation accuracy stayed within CHANCE_MARGIN of the majority-class rate."""
    topic = "Runs that did not learn"
    rule = (f"best validation accuracy at most {points(CHANCE_MARGIN)} above the validation split's majority-class "
            f"rate (chance_accuracy, logged by each run); a diverged run without a finished epoch counts too")
    stuck = table[~table["learned"]]
    if stuck.empty:
        lowest = table.loc[table[BEST_VAL_ACCURACY].idxmin()]
        return [Finding(topic, f"Every run learned (lowest best validation accuracy {lowest[BEST_VAL_ACCURACY]:.4f} "
                               f"against chance {lowest['chance']:.4f}).", rule, kind="absent")]
    columns = label_columns(table, science_columns(table))
    found = []
    for _, group in table.groupby(columns, sort=False, dropna=False):
        low = group[~group["learned"]]
        if low.empty:
            continue
        statement = (f"{label(group.iloc[0], columns)}: {len(low)} of {len(group)} runs did not learn (chance "
                     f"{low['chance'].iloc[0]:.4f}).")
        numbers = "; ".join(f"{run_name(row)}: best val {row[BEST_VAL_ACCURACY]:.4f}" for _, row in low.iterrows())
        found.append(Finding(topic, statement, rule, numbers, listed(references(low))))
    return found


def deciding_factor(table: pd.DataFrame) -> list[Finding]:
    """In a study that varies several parameters, the one whose levels alone tell which runs learned:
    over the whole study and, where depth varies, at each depth."""
    topic = "What decides whether runs learn"
    factors = [name for name in label_columns(table, science_columns(table)) if table[name].astype(str).nunique() > 1]
    rule = (f"runs that learned (best validation accuracy more than {points(CHANCE_MARGIN)} above chance) against "
            f"those that did not; a parameter decides when the majority status of each of its levels is right for "
            f"at least {DECIDING_SHARE:.0%} of the runs and for more runs than any other parameter")
    if len(factors) < 2 or table["learned"].all() or not table["learned"].any():
        return []
    subsets = [("", table)]
    if "depth" in factors:
        subsets += [(f"depth {text(depth)}", rows) for depth, rows in table.groupby("depth", sort=True)]
    found = []
    for where, rows in subsets:
        if rows["learned"].all() or not rows["learned"].any():
            continue
        candidates = [name for name in factors if rows[name].astype(str).nunique() > 1]
        scores = {name: explained(rows, name) for name in candidates}
        if not scores:
            continue
        ranked = sorted(scores, key=scores.get, reverse=True)
        best, share = ranked[0], scores[ranked[0]]
        prefix = f"at {where}, " if where else ""
        numbers = "; ".join(f"{name} explains {scores[name]:.0%}" for name in ranked)
        if share < DECIDING_SHARE or (len(ranked) > 1 and scores[ranked[1]] == share):
            statement = sentence(f"{prefix}no single parameter decides which runs learned "
                                 f"(best: {best}, {share:.0%} of the runs).")
            found.append(Finding(topic, statement, rule, numbers, (), "undecided"))
            continue
        levels = "; ".join(f"{describe_level(best, level)}: {int(group['learned'].sum())} of {len(group)} learned"
                           f" (mean best val {group[BEST_VAL_ACCURACY].mean():.3f})"
                           for level, group in sort_levels(rows, best))
        exceptions = exception_runs(rows, best)
        statement = sentence(f"{prefix}{best} decides whether runs learned: {levels}"
                             + (f"; exceptions: {exceptions}." if exceptions else "."))
        found.append(Finding(topic, statement, rule, numbers, listed(references(rows))))
    return found


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def sort_levels(rows: pd.DataFrame, factor: str) -> list[tuple[object, pd.DataFrame]]:
    groups = list(rows.groupby(factor, sort=False))
    keys = order_key(factor)(pd.Series([level for level, _ in groups]))
    return [groups[index] for index in keys.argsort(kind="stable")]


def explained(rows: pd.DataFrame, factor: str) -> float:
    """The share of runs whose learned status equals their level's majority status."""
    counts = rows.groupby(factor)["learned"].agg(["sum", "count"])
    return float(np.maximum(counts["sum"], counts["count"] - counts["sum"]).sum() / len(rows))


def exception_runs(rows: pd.DataFrame, factor: str) -> str:
    """The runs against their level's majority, grouped by the other varying parameters."""
    majority = rows.groupby(factor)["learned"].transform(lambda values: values.mean() >= 0.5)
    against = rows[rows["learned"] != majority]
    if against.empty:
        return ""
    columns = [name for name in label_columns(rows, science_columns(rows)) if name != factor]
    named = [name for name in label_columns(rows, science_columns(rows))]
    parts = []
    for _, group in against.groupby([factor, *columns], sort=False, dropna=False):
        state = "learned" if group["learned"].iloc[0] else "did not learn"
        parts.append(f"{label(group.iloc[0], named)} {state} ({len(group)} runs)")
    return ", ".join(parts)
