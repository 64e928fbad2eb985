"""Decisions between configurations: which level of a scientific parameter wins, compared seed by
seed with a Student-t interval; which runs did not learn; which parameter decides whether runs
learn at all; and what dropout does to the train/validation gap.

Runs of different configurations with the same seed share the data split and the batch order, so a
comparison takes their difference seed by seed (``statistics.paired_difference``) and decides only
when the 95% interval of that difference excludes zero. With one seed there is no interval: the
fixed margins below stand in for it, and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from actopt.analysis.frames import (
    Finding,
    epochs,
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
from actopt.analysis.statistics import CONFIDENCE, Interval, mean_interval, paired_difference
from actopt.analysis.tables import CHANCE_MARGIN, CONVERGENCE_LEVEL, tuned_runs

# One seed only: accuracy differences below half a point count as noise (seed-to-seed standard
# deviations of these MLPs are typically 0.1 to 0.3 points).
ACCURACY_NOISE = 0.005
# One seed only: epochs are the resolution of convergence speed; a lead of less than one is not a lead.
CONVERGENCE_MARGIN_EPOCHS = 1.0
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
    margin_name: str
    verb: str  # how the winner is said to win: "beats {other} on test accuracy"
    inclusive: bool = False  # with one seed, whether a lead equal to the margin counts

    def clears_margin(self, lead: float) -> bool:
        return lead >= self.single_seed_margin if self.inclusive else lead > self.single_seed_margin

    def margin_text(self) -> str:
        return f"{'at least' if self.inclusive else 'more than'} {self.amount(self.single_seed_margin)}"

    def amount(self, value: float) -> str:
        return epochs(value) if self.unit == "epochs" else f"{value * self.scale:.1f} {self.unit}"


TEST_ACCURACY = Measure("test_accuracy", "test accuracy", True, 100.0, "points", ACCURACY_NOISE, "ACCURACY_NOISE",
                        "beats {other} on test accuracy")
CONVERGENCE = Measure("epochs_to_95", f"epochs to {CONVERGENCE_LEVEL:.0%} of the best validation accuracy", False,
                      1.0, "epochs", CONVERGENCE_MARGIN_EPOCHS, "CONVERGENCE_MARGIN_EPOCHS",
                      f"reaches {CONVERGENCE_LEVEL:.0%} of its best validation accuracy sooner than {{other}}",
                      inclusive=True)


def seed_values(rows: pd.DataFrame, column: str) -> pd.Series:
    """One value per seed (the mean where a configuration has several runs of a seed)."""
    return rows.dropna(subset=[column]).groupby("seed")[column].mean()


def interval_text(interval: Interval, measure: Measure) -> str:
    if interval.defined:
        return (f"{LEVEL} CI [{interval.low * measure.scale:.1f}, {interval.high * measure.scale:.1f}], "
                f"{interval.count} seeds")
    return "1 seed, no interval"


def compare(leader: str, other: str, scores: dict[str, pd.Series], measure: Measure) -> tuple[bool, str]:
    """Whether ``leader`` beats ``other`` on ``measure``, and the sentence that says so or why not."""
    first, second = scores[leader], scores[other]
    win = f"{leader} {measure.verb.format(other=other)}"
    gain = paired_difference(first, second) if measure.higher_is_better else paired_difference(second, first)
    if gain.count == 0:
        return False, f"cannot compare {leader} with {other}: no seed was run for both"
    if gain.count == 1:
        if measure.clears_margin(gain.mean):
            return True, f"{win} by {measure.amount(gain.mean)} (1 seed: a lead of {measure.margin_text()})"
        return False, (f"cannot decide between {leader} and {other}: they differ by {measure.amount(gain.mean)}, "
                       f"not {measure.margin_text()} (1 seed, no interval)")
    if gain.excludes_zero() and gain.mean > 0:
        return True, f"{win} by {measure.amount(gain.mean)} ({interval_text(gain, measure)})"
    if gain.excludes_zero():  # fewer shared seeds than each has: the pairs say the other way round
        return False, (f"cannot decide between {leader} and {other}: {leader} leads on the mean of all its seeds "
                       f"but trails by {measure.amount(-gain.mean)} on the seeds both have "
                       f"({interval_text(gain, measure)})")
    difference = f"{leader} − {other}" if measure.higher_is_better else f"{other} − {leader}"
    return False, (f"cannot decide between {leader} and {other}: {difference} = {measure.amount(gain.mean)} "
                   f"({interval_text(gain, measure)}), an interval that includes zero")


def level_summary(name: str, values: pd.Series, measure: Measure) -> str:
    interval = mean_interval(values)
    return f"{name} {interval.describe(measure.scale, 1)}" + ("" if interval.defined else " (1 seed)")


def factor_decisions(table: pd.DataFrame, factor: str, topic: str, measure: Measure,
                     keep: Callable[[pd.DataFrame], pd.DataFrame] = lambda rows: rows) -> list[Finding]:
    """Per group of the other varying parameters: the best level of ``factor`` (each configuration at
    its best learning rate) against every other level, paired by seed."""
    if factor not in table or table[factor].astype(str).nunique() < 2:
        return []
    tuned = keep(tuned_runs(table))
    columns = [name for name in label_columns(table, science_columns(table)) if name != factor]
    direction = "higher" if measure.higher_is_better else "lower"
    rule = (f"{measure.name} ({direction} is better), each configuration at its own best learning rate (chosen on "
            f"validation accuracy); the best level against each other one, the difference taken seed by seed, "
            f"decided when its {LEVEL} Student-t interval excludes zero (one interval per comparison, not corrected "
            f"for multiple comparisons); with one seed, a lead of {measure.margin_text()} ({measure.margin_name})")
    groups = tuned.groupby(columns, sort=False, dropna=False) if columns else [((), tuned)]
    found = []
    for _, group in groups:
        levels = group[factor].drop_duplicates()
        levels = list(levels.iloc[order_key(factor)(levels).argsort(kind="stable")])
        scores = {describe_level(factor, level): seed_values(group[group[factor] == level], measure.column)
                  for level in levels}
        scores = {name: values for name, values in scores.items() if len(values)}
        if len(scores) < 2:
            continue
        where = f"{label(group.iloc[0], columns)}: " if columns else ""
        if "learned" in group and not group["learned"].any():
            # Runs that stayed at chance differ only by the chance rates of their splits: no decision to state.
            statement = (f"{where}no {factor} level learned (every run within {points(CHANCE_MARGIN)} of chance): "
                         f"nothing to compare (see 'Runs that did not learn').")
            found.append(Finding(topic, statement, rule, "", listed(references(group)), "undecided"))
            continue
        sign = 1 if measure.higher_is_better else -1
        ranked = sorted(scores, key=lambda name: sign * scores[name].mean(), reverse=True)
        verdicts = [compare(ranked[0], other, scores, measure) for other in ranked[1:]]
        statement = where + "; ".join(sentence for _, sentence in verdicts) + "."
        numbers = "; ".join(level_summary(name, scores[name], measure) for name in ranked) + f" ({measure.unit})"
        kind = "holds" if all(decided for decided, _ in verdicts) else "undecided"
        found.append(Finding(topic, statement, rule, numbers, listed(references(group)), kind))
    return found


def describe_level(factor: str, value: object) -> str:
    return str(value) if factor in ("activation", "optimizer") else f"{factor} {text(value)}"


def comparisons(table: pd.DataFrame) -> list[Finding]:
    """Paired decisions for every scientific parameter that varies (the optimizer and activation first)."""
    factors = [name for name in label_columns(table, science_columns(table))
               if table[name].astype(str).nunique() > 1]
    titles = {"optimizer": "Optimizers at their best learning rates",
              "activation": "Activations at their best learning rates"}
    found = []
    for factor in factors:
        found += factor_decisions(table, factor, titles.get(factor, f"Comparing {factor} levels"), TEST_ACCURACY)
    return found


def chance_runs(table: pd.DataFrame) -> list[Finding]:
    """The runs whose best validation accuracy stayed within CHANCE_MARGIN of the majority-class rate."""
    topic = "Runs that did not learn"
    rule = (f"best validation accuracy at most {points(CHANCE_MARGIN)} above the validation split's majority-class "
            f"rate (chance_accuracy, logged by each run); a diverged run without a finished epoch counts too")
    stuck = table[~table["learned"]]
    if stuck.empty:
        lowest = table.loc[table["best_val_accuracy"].idxmin()]
        return [Finding(topic, f"Every run learned (lowest best validation accuracy {lowest['best_val_accuracy']:.4f} "
                               f"against chance {lowest['chance']:.4f}).", rule, kind="absent")]
    columns = label_columns(table, science_columns(table))
    found = []
    for _, group in table.groupby(columns, sort=False, dropna=False):
        low = group[~group["learned"]]
        if low.empty:
            continue
        statement = (f"{label(group.iloc[0], columns)}: {len(low)} of {len(group)} runs did not learn (chance "
                     f"{low['chance'].iloc[0]:.4f}).")
        numbers = "; ".join(f"{run_name(row)}: best val {row['best_val_accuracy']:.4f}" for _, row in low.iterrows())
        found.append(Finding(topic, statement, rule, numbers, listed(references(low))))
    return found


def convergence(table: pd.DataFrame) -> list[Finding]:
    """Which activation reaches 95% of its best validation accuracy first, among runs that learned."""
    topic = "Convergence speed"
    stuck = tuned_runs(table)
    stuck = stuck[~stuck["learned"]]
    found = factor_decisions(table, "activation", topic, CONVERGENCE, keep=lambda rows: rows[rows["learned"]])
    if not stuck.empty:
        counted = ", ".join(f"{name}: {count}" for name, count in stuck["activation"].value_counts().items())
        found.append(Finding(topic, f"Left out of convergence speed, as runs that did not learn: {counted}.",
                             "runs within the chance margin have no convergence to compare", "",
                             listed(references(stuck)), "absent"))
    return found


def dropout_effect(table: pd.DataFrame) -> list[Finding]:
    """Per configuration, how each dropout level changed the train/validation gap and the best
    validation accuracy against dropout 0, seed by seed, whether or not the gap crossed a threshold."""
    topic = "Dropout and the gap"
    rule = (f"per seed, (gap at dropout p) − (gap at dropout 0) and the same for best validation accuracy, each "
            f"configuration at its best learning rate; the gap is train − validation accuracy after the last epoch, "
            f"train measured in eval mode on a fixed training subset; decided when the {LEVEL} interval of the "
            f"gap's change excludes zero (one seed: a change above {points(ACCURACY_NOISE)})")
    if "dropout" not in table or table["dropout"].nunique() < 2 or not (table["dropout"] == 0).any():
        return [Finding(topic, "Cannot decide whether dropout narrows the gap: no runs compare dropout > 0 with "
                               "dropout 0 for the same configuration.", rule, kind="undecided")]
    tuned = tuned_runs(table)
    columns = [name for name in label_columns(table, science_columns(table)) if name != "dropout"]
    gap = Measure("final_gap", "gap", False, 100.0, "points", ACCURACY_NOISE, "ACCURACY_NOISE", "narrows the gap more")
    found = []
    for _, group in tuned.groupby(columns, sort=False, dropna=False) if columns else [((), tuned)]:
        base = group[group["dropout"] == 0]
        if base.empty:
            continue
        where = label(group.iloc[0], columns) + ": " if columns else ""
        for rate in sorted(value for value in group["dropout"].unique() if value != 0):
            rows = group[group["dropout"] == rate]
            change = paired_difference(seed_values(rows, "final_gap"), seed_values(base, "final_gap"))
            accuracy = paired_difference(seed_values(rows, "best_val_accuracy"), seed_values(base, "best_val_accuracy"))
            if change.count == 0:
                continue
            decided = change.excludes_zero() if change.count >= 2 else abs(change.mean) > ACCURACY_NOISE
            verb = "narrowed" if change.mean < 0 else "widened"
            before, after = base["final_gap"].mean(), rows["final_gap"].mean()
            numbers = (f"gap {points(before)} at dropout 0, {points(after)} at dropout {rate:g}; change "
                       f"{gap.amount(change.mean)} ({interval_text(change, gap)}); best validation accuracy change "
                       f"{gap.amount(accuracy.mean)} ({interval_text(accuracy, gap)})")
            if decided:
                statement = (f"{where}dropout {rate:g} {verb} the train/validation gap by "
                             f"{gap.amount(abs(change.mean))} ({interval_text(change, gap)}; from {100 * before:.1f} "
                             f"to {points(after)}) and changed best validation accuracy by {accuracy.mean * 100:+.1f} "
                             f"points ({interval_text(accuracy, gap)}).")
                kind = "holds"
            else:
                statement = (f"{where}cannot decide whether dropout {rate:g} changes the train/validation gap: "
                             f"{gap.amount(change.mean)} ({interval_text(change, gap)}).")
                kind = "undecided"
            selected = group[group["dropout"].isin([0.0, rate])]
            found.append(Finding(topic, statement, rule, numbers, listed(references(selected)), kind))
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
                           f" (mean best val {group['best_val_accuracy'].mean():.3f})"
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
