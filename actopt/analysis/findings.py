"""The rules: each finding is computed from the logged numbers and states its rule, numbers and runs, or says it cannot
decide."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from actopt.analysis import decisions
from actopt.analysis.checks import Checks, check_values
from actopt.analysis.derive import Frames
from actopt.analysis.frames import (
    LISTED_RUNS,
    Finding,
    is_diverged,
    label,
    label_columns,
    layer_values,
    listed,
    plural,
    points,
    references,
    run_name,
    run_reference,
    science_columns,
    sort_runs,
)
from actopt.core import metric_names
from actopt.core.diagnosis import (  # the per-run rules' thresholds, shared with each run's diagnosis tags
    DEAD_FRACTION,
    EXPLODING_GROWTH,
    EXPLODING_RATIO,
    GAP_THRESHOLD,
    INACTIVE_FRACTION,
    SATURATED_FRACTION,
    VANISHING_RATIO,
)
from actopt.core.metric_names import GRAD_GLOBAL_NORM_PEAK, GRAD_NORM, LEARNING_RATE, PROBE_GRAD_MAX_ABS, per_layer
from actopt.core.models import ACTIVATIONS


def first_to_last(values: pd.DataFrame) -> pd.Series:
    """Per run: layer 1's value over the run's last layer's (runs with a single layer have none)."""
    if values.empty:
        return pd.Series(dtype="float64")
    first = values[values["layer"] == 1].set_index("run_id")["value"]
    last = values.loc[values.groupby("run_id")["layer"].idxmax()].set_index("run_id")
    return (first / last["value"]).where(last["layer"] > 1).dropna()


def vanishing_gradients(runs: pd.DataFrame, histories: pd.DataFrame, checks: Checks) -> list[Finding]:
    topic = "Vanishing gradients"
    rule = (f"{per_layer(GRAD_NORM, 1)} ÷ {GRAD_NORM} of the output layer, both the mean over epoch 1's steps, "
            f"below {VANISHING_RATIO:g}")
    probes = layer_values(histories, PROBE_GRAD_MAX_ABS)
    at_init = first_to_last(probes[probes["step"] == 0])
    table = check_values(runs, checks, "vanishing_gradients").rename(columns={"value": "ratio"})
    table = table.assign(probe_ratio=table["run_id"].map(at_init))
    if table.empty:
        return [Finding(topic, "Cannot decide: no run logged per-layer gradient norms of two or more layers.", rule,
                        kind="undecided")]
    columns = label_columns(runs, ["activation", "depth", "width", "hidden_sizes", "init"])
    findings = []
    for _, group in table.groupby(columns, sort=False, dropna=False):
        low = group[group["holds"]]
        if low.empty:
            continue
        numbers = "; ".join(
            f"{run_name(row)}: {row['ratio']:.2g}"
            + (f" (probe max|g| ratio at init {row['probe_ratio']:.2g})" if pd.notna(row["probe_ratio"]) else "")
            for _, row in low.head(LISTED_RUNS).iterrows()
        )
        statement = (f"{label(group.iloc[0], columns)}: the first layer's gradient norm was below "
                     f"{VANISHING_RATIO:g} × the output layer's in epoch 1 in {len(low)} of {len(group)} runs "
                     f"(median ratio {low['ratio'].median():.2g}).")
        findings.append(Finding(topic, statement, rule, numbers, listed(references(low))))
    if not findings:
        smallest = table.loc[table["ratio"].idxmin()]
        statement = (f"No run's first/output-layer gradient-norm ratio fell below {VANISHING_RATIO:g} "
                     f"(smallest: {smallest['ratio']:.2g}, {run_reference(smallest)}).")
        findings.append(Finding(topic, statement, rule, kind="absent"))
    return findings


def exploding_gradients(runs: pd.DataFrame, checks: Checks) -> list[Finding]:
    topic = "Exploding gradients"
    rule = (f"{per_layer(GRAD_NORM, 1)} ÷ {GRAD_NORM} of the output layer in epoch 1 above {EXPLODING_RATIO:g}, "
            f"or an epoch's largest step global gradient norm ({GRAD_GLOBAL_NORM_PEAK}) above "
            f"{EXPLODING_GROWTH:g} × epoch 1's mean step norm or not finite")
    table = check_values(runs, checks, "exploding_gradients")
    if table.empty:
        return []
    columns = label_columns(runs, ["activation", "optimizer", "depth", "init"])
    findings = findings_per_group(table, columns, topic, rule, "gradients exploded", lambda row: row["evidence"])
    if not findings:
        findings.append(Finding(topic, f"No run's gradients exploded ({plural(len(table), 'run')} checked).", rule,
                                kind="absent"))
    return findings


def findings_per_group(table: pd.DataFrame, columns: list[str], topic: str, rule: str, what: str,
                       evidence: Callable[[pd.Series], str]) -> list[Finding]:
    """One finding per configuration group (``columns``) in which some run's check ``holds``: how many of its
    runs, at which learning rates, and each listed run's ``evidence``."""
    findings = []
    for _, group in table.groupby(columns, sort=False, dropna=False):
        high = sort_runs(group[group["holds"]], [LEARNING_RATE])
        if high.empty:
            continue
        rates = ", ".join(f"{rate:g}" for rate in sorted(high[LEARNING_RATE].unique()))
        statement = (f"{label(group.iloc[0], columns)}: {what} in {len(high)} of {len(group)} runs "
                     f"(learning rates {rates}).")
        numbers = "; ".join(f"{run_name(row)}: {evidence(row)}" for _, row in high.head(LISTED_RUNS).iterrows())
        findings.append(Finding(topic, statement, rule, numbers, listed(references(high))))
    return findings


@dataclass(frozen=True)
class UnitRule:
    """A per-run rule on a per-layer unit fraction: its diagnosis rule, metric family, threshold and words."""

    rule_name: str
    family: str
    threshold: float
    topic: str
    what: str


UNIT_RULES = (
    UnitRule("dead_units", metric_names.DEAD_FRACTION, DEAD_FRACTION, "Dead units",
             f"more than {DEAD_FRACTION:.0%} of a hidden layer's units were dead after the last epoch"),
    UnitRule("inactive_units", metric_names.INACTIVE_FRACTION, INACTIVE_FRACTION, "Inactive units",
             f"more than {INACTIVE_FRACTION:.0%} of a hidden layer's units were inactive (|f′| below a tenth of "
             f"its peak on every probe example) after the last epoch"),
    UnitRule("saturation", metric_names.SATURATED_FRACTION, SATURATED_FRACTION, "Saturation",
             f"more than {SATURATED_FRACTION:.0%} of a hidden layer's outputs were saturated after the last epoch"),
)


def unit_fraction_findings(runs: pd.DataFrame, checks: Checks, unit: UnitRule) -> list[Finding]:
    rule_name, threshold, topic, what = unit.rule_name, unit.threshold, unit.topic, unit.what
    rule = (f"{metric_names.family_pattern(unit.family)} after the last epoch above {threshold:g} in at least one "
            f"hidden layer")
    table = check_values(runs, checks, rule_name).rename(columns={"value": "fraction"})
    if table.empty:
        return []
    columns = label_columns(runs, ["activation", "optimizer", "depth", "init", "dropout"])
    findings = findings_per_group(table, columns, topic, rule, what,
                                  lambda row: f"layer_{int(row['layer']):02d} {row['fraction']:.2f}")
    if not findings:
        top = table.loc[table["fraction"].idxmax()]
        findings.append(Finding(topic, f"No run exceeded {threshold:g} (largest: {top['fraction']:.2f} in "
                                       f"layer_{int(top['layer']):02d} of {run_reference(top)}).", rule, kind="absent"))
    return findings


def divergence(runs: pd.DataFrame) -> list[Finding]:
    topic = "Divergence"
    rule = "tag diverged = true (the training loss became NaN or infinite), counted per optimizer and learning rate"
    diverged = is_diverged(runs)
    if not diverged.any():
        largest = ", ".join(f"{name} {rate:g}" for name, rate in
                            runs.groupby("optimizer", sort=False)[LEARNING_RATE].max().items())
        return [Finding(topic, f"No run diverged (largest learning rate tried: {largest}).", rule, kind="absent")]
    findings = []
    for optimizer, group in sort_runs(runs, ["optimizer"]).groupby("optimizer", sort=False):
        flags = is_diverged(group)
        if not flags.any():
            continue
        lowest = group.loc[flags, LEARNING_RATE].min()
        above = group[group[LEARNING_RATE] >= lowest]
        below = group[group[LEARNING_RATE] < lowest]
        counts = "; ".join(f"lr {rate:g}: {int(is_diverged(rows).sum())} of {len(rows)}"
                           for rate, rows in group.groupby(LEARNING_RATE))
        activations = ", ".join(sorted(group.loc[flags, "activation"].unique(), key=list(ACTIVATIONS).index))
        if is_diverged(above).all():
            statement = (f"{optimizer} diverged in every run at learning rate ≥ {lowest:g} ({len(above)} runs: "
                         f"{activations}) and in none below" + (f" ({len(below)} runs)." if len(below) else "."))
        else:
            statement = (f"{optimizer} diverged in {int(flags.sum())} of {len(above)} runs at learning rate ≥ "
                         f"{lowest:g} ({activations}); not every run at those rates diverged.")
        findings.append(Finding(topic, statement, rule, counts, listed(references(group[flags]))))
    return findings


def learning_rate_edges(runs: pd.DataFrame, best: pd.DataFrame) -> list[Finding]:
    """``best``: ``tables.best_learning_rates(runs)``."""
    topic = "Learning-rate grid"
    rule = ("the best learning rate (mean best validation accuracy over every seed, a failed seed scoring what it "
            "reached) is the smallest or largest tried")
    if (best["grid"].map(len) < 2).all():
        return []
    best = best.dropna(subset=["best_learning_rate"])
    if best.empty:
        return [Finding(topic, "Cannot judge the grid: every run diverged, so no learning rate is feasible.", rule,
                        kind="undecided")]
    columns = label_columns(runs, science_columns(runs))
    findings = []
    for _, row in best[best["edge"] != ""].iterrows():
        grid = ", ".join(f"{rate:g}" for rate in row["grid"])
        statement = (f"{label(row, columns)}: the best learning rate {row['best_learning_rate']:g} is the "
                     f"{row['edge']} tried ({grid}); the optimum may lie beyond the grid.")
        same = (runs[columns] == row[columns]).all(axis=1) & (runs[LEARNING_RATE] == row["best_learning_rate"])
        numbers = f"mean best val accuracy {row['mean']:.4f}"
        findings.append(Finding(topic, statement, rule, numbers, listed(references(runs[same]))))
    if not findings:
        statement = "Every configuration's best learning rate lies inside its grid."
        findings.append(Finding(topic, statement, rule, kind="absent"))
    return findings



def overfitting(table: pd.DataFrame, curves: pd.DataFrame) -> list[Finding]:
    """``curves``: ``tables.tuned_runs(table)``, each configuration at its best rate without the diverged seeds."""
    topic = "Overfitting"
    rule = (f"mean over seeds of train − validation accuracy after the last epoch above {points(GAP_THRESHOLD)}, at "
            f"each configuration's best learning rate; train accuracy in eval mode on a fixed training subset "
            f"(train_eval_accuracy) where logged, else accumulated during the epoch with dropout active, which "
            f"understates the gap")
    tuned = curves.dropna(subset=["final_gap"])
    if tuned.empty:
        return []
    columns = label_columns(table, science_columns(table))
    findings = []
    for _, group in tuned.groupby(columns, sort=False, dropna=False):
        gap = group["final_gap"].mean()
        if gap > GAP_THRESHOLD:
            statement = (f"{label(group.iloc[0], columns)}: train accuracy exceeded validation accuracy by "
                         f"{points(gap)} after the last epoch.")
            evaluated = group["last_train_eval_accuracy"].notna().all()
            train = "last_train_eval_accuracy" if evaluated else "last_train_accuracy"
            numbers = "; ".join(f"{run_name(row)}: train {row[train]:.4f}, "
                                f"val {row['last_val_accuracy']:.4f}" for _, row in group.iterrows())
            findings.append(Finding(topic, statement, rule, numbers, listed(references(group))))
    if not findings:
        largest = tuned.loc[tuned["final_gap"].idxmax()]
        statement = (f"No configuration's gap exceeded {points(GAP_THRESHOLD)} (largest "
                     f"{points(largest['final_gap'])}, {run_reference(largest)}).")
        return [Finding(topic, statement, rule, kind="absent")]
    return findings


def findings(frames: Frames) -> list[Finding]:
    """Every per-run and per-configuration rule applied to the study's run table: what holds, what was checked without
    result, what is undecided. The paired comparisons between levels are ``decisions.decide``'s."""
    table, checks = frames.table, frames.checks
    return [
        *vanishing_gradients(table, frames.histories, checks),
        *exploding_gradients(table, checks),
        *(found for unit in UNIT_RULES for found in unit_fraction_findings(table, checks, unit)),
        *divergence(table),
        *learning_rate_edges(table, frames.best_rates),
        *decisions.failed_seeds(table),
        *decisions.chance_runs(table),
        *decisions.deciding_factor(table),
        *overfitting(table, frames.curves),
    ]
