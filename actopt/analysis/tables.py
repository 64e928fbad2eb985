"""A study as tables: one row per run with its derived columns, and each configuration at its own best learning rate."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from actopt.analysis.frames import (
    is_diverged,
    last_step_values,
    metric,
    science_columns,
    sort_runs,
)
from actopt.core.metric_names import (
    BEST_VAL_ACCURACY,
    CHANCE_ACCURACY,
    EPOCH_TIME,
    LEARNING_RATE,
    TEST_ACCURACY,
    TRAIN_ACCURACY,
    TRAIN_EVAL_ACCURACY,
    TRAIN_LOSS,
    VAL_ACCURACY,
    VAL_LOSS,
)

# Convergence speed: the first epoch at which validation accuracy reaches 95% of the run's best.
CONVERGENCE_LEVEL = 0.95
# Did not learn: best validation accuracy at most 2 points above the majority-class rate of the
# validation split (logged by each run as chance_accuracy; about 0.11 on MNIST and 0.10-0.11 on Fashion-MNIST,
# depending on the seed's split).
# These MLPs reach 0.85-0.98 when they learn at all; a net stuck near chance has learned nothing that
# a comparison of speed could mean, so such runs are named and left out of "who is fastest" rules.
CHANCE_MARGIN = 0.02
# Runs logged before chance_accuracy existed: ten balanced classes.
DEFAULT_CHANCE = 0.1
# Collapsed: a run that learned and did not diverge but whose best validation accuracy is more than 10 points below
# the median of its configuration's seeds (same configuration and learning rate). Seeds of one configuration here
# differ by well under a point when they all train; a 10-point drop is a failed run (tanh + SGD at rate 1 reached
# 0.27 where its other seeds reached 0.80), not seed noise.
COLLAPSE_MARGIN = 0.10
# Collapsed, too: a final training loss above 1.5 × the first epoch's mean. Training that ends worse than its first
# epoch has been thrown off, whatever accuracy it once reached.
LOSS_GROWTH = 1.5
# How a failed seed is scored, in the learning-rate choice and in every comparison: it keeps the accuracy it
# reached; where it logged none (diverged within its first epoch), it scores its split's chance rate. Never dropped.
FAILURES = ("diverged", "did not learn", "collapsed")


def epochs_to_level(curve: pd.Series, level: float = CONVERGENCE_LEVEL) -> float:
    """First step at which ``curve`` (indexed by step) reaches ``level`` × its best finite value."""
    finite = curve[np.isfinite(curve)]
    if finite.empty:
        return math.nan
    reached = finite[finite >= level * finite.max()]
    return float(reached.index.min())


def validation_area(curve: pd.Series, epochs: int, chance: float) -> float:
    """Mean validation accuracy over epochs 1 … ``epochs`` (the area under the validation curve ÷ epochs): higher
    when a run gets good sooner, continuous, so seeds that tie on "first epoch at 95%" still differ. Epochs the run
    did not log (it diverged) score ``chance``, the failed-seed rule."""
    values = [float(curve.get(step, math.nan)) for step in range(1, epochs + 1)]
    values = [value if math.isfinite(value) else chance for value in values]
    return float(np.mean(values)) if values else math.nan


def chance_rates(runs: pd.DataFrame) -> pd.Series:
    """Each run's chance rate (``chance`` of the run table, else the logged ``chance_accuracy``, else 0.1)."""
    for column in ("chance", CHANCE_ACCURACY):
        if column in runs:
            return runs[column].astype("float64").fillna(DEFAULT_CHANCE)
    return pd.Series(DEFAULT_CHANCE, index=runs.index, dtype="float64")


def scored(runs: pd.DataFrame, column: str) -> pd.Series:
    """``column`` with the failed-seed rule: a missing accuracy scores the run's chance rate."""
    return runs[column].astype("float64").fillna(chance_rates(runs))


def learned(best_val_accuracy: pd.Series, chance: pd.Series) -> pd.Series:
    """The one definition of "learned", in every rule: best validation accuracy more than CHANCE_MARGIN above the
    split's chance rate (a run without a finished epoch did not learn)."""
    return best_val_accuracy.astype("float64").fillna(-1.0) > chance + CHANCE_MARGIN


def failures(table: pd.DataFrame) -> pd.Series:
    """Per run: "diverged", "did not learn", "collapsed" (see COLLAPSE_MARGIN and LOSS_GROWTH) or ""."""
    keys = [name for name in (*science_columns(table), LEARNING_RATE) if name in table]
    median = table.groupby(keys, dropna=False)[BEST_VAL_ACCURACY].transform("median") if keys else (
        table[BEST_VAL_ACCURACY].median())
    dropped = table[BEST_VAL_ACCURACY] < median - COLLAPSE_MARGIN
    first_loss = table["first_train_loss"] if "first_train_loss" in table else pd.Series(np.nan, index=table.index)
    thrown = table["last_train_loss"] > LOSS_GROWTH * first_loss
    kind = pd.Series("", index=table.index, dtype=object)
    kind[(dropped | thrown).fillna(False)] = "collapsed"
    kind[~table["learned"]] = "did not learn"
    kind[is_diverged(table)] = "diverged"
    return kind


def run_table(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its configuration and outcomes, with the per-epoch derived columns.

    ``epochs_to_95``: first epoch reaching 95% of the run's best validation accuracy (a whole epoch: described,
    never compared); ``val_area``: ``validation_area``; ``time_per_epoch``: mean ``epoch_time`` (a group's time
    shared equally among its members: one value per group, no seed-to-seed spread); ``final_gap``: train −
    validation accuracy at the last epoch, the train side measured in eval mode on a fixed training subset
    (``train_eval_accuracy``) where the run logged it, else the accuracy accumulated during the epoch (``gap_source``
    says which); ``learned``: ``learned``; ``failure``/``failed``: ``failures``; ``val_score``/``test_score``: best
    validation and test accuracy with the failed-seed rule (``scored``).
    """
    val = metric(histories, VAL_ACCURACY).pivot_table(index="step", columns="run_id", values="value", dropna=False)
    to_level = {run_id: epochs_to_level(val[run_id].dropna()) for run_id in val.columns}
    seconds = metric(histories, EPOCH_TIME).groupby("run_id")["value"].mean()
    last = {key: last_step_values(metric(histories, key)).set_index("run_id")["value"]
            for key in (TRAIN_ACCURACY, TRAIN_EVAL_ACCURACY, VAL_ACCURACY, TRAIN_LOSS, VAL_LOSS)}
    losses = metric(histories, TRAIN_LOSS)
    first_loss = losses[losses["step"] == 1].set_index("run_id")["value"]
    table = runs.assign(
        epochs_to_95=runs["run_id"].map(to_level).astype("float64"),
        time_per_epoch=runs["run_id"].map(seconds).astype("float64"),
        last_train_accuracy=runs["run_id"].map(last[TRAIN_ACCURACY]).astype("float64"),
        last_train_eval_accuracy=runs["run_id"].map(last[TRAIN_EVAL_ACCURACY]).astype("float64"),
        last_val_accuracy=runs["run_id"].map(last[VAL_ACCURACY]).astype("float64"),
        last_train_loss=runs["run_id"].map(last[TRAIN_LOSS]).astype("float64"),
        first_train_loss=runs["run_id"].map(first_loss).astype("float64"),
        diverged=is_diverged(runs),
    )
    evaluated = table["last_train_eval_accuracy"].notna()
    train_side = table["last_train_eval_accuracy"].where(evaluated, table["last_train_accuracy"])
    table["final_gap"] = train_side - table["last_val_accuracy"]
    table["gap_source"] = np.where(evaluated, "eval", "during epoch")
    chance = runs[CHANCE_ACCURACY] if CHANCE_ACCURACY in runs else pd.Series(np.nan, index=runs.index)
    table["chance"] = chance.astype("float64").fillna(DEFAULT_CHANCE)
    table["learned"] = learned(table[BEST_VAL_ACCURACY], table["chance"])
    length = int(pd.to_numeric(runs["epochs"], errors="coerce").max()) if "epochs" in runs else int(val.index.max())
    table["val_area"] = [validation_area(val[run_id] if run_id in val else pd.Series(dtype="float64"), length, rate)
                         for run_id, rate in zip(table["run_id"], table["chance"])]
    table["failure"] = failures(table)
    table["failed"] = table["failure"] != ""
    table["val_score"] = scored(table, BEST_VAL_ACCURACY)
    table["test_score"] = scored(table, TEST_ACCURACY)
    return sort_runs(table, [*science_columns(runs), LEARNING_RATE, "seed"]).reset_index(drop=True)


def learning_rate_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (science columns) and learning rate: mean ± std over every seed of the best validation
    accuracy, a failed seed scoring what it reached (``scored``), and how many seeds diverged."""
    columns = science_columns(runs)
    frame = runs.assign(score=scored(runs, BEST_VAL_ACCURACY), is_diverged=is_diverged(runs).astype(int))
    grouped = frame.groupby([*columns, LEARNING_RATE], dropna=False)
    table = grouped.agg(mean=("score", "mean"), std=("score", "std"), seeds=("score", "count"),
                        diverged=("is_diverged", "sum")).reset_index()
    table["diverged"] = table["diverged"].astype(int)
    return sort_runs(table, [*columns, LEARNING_RATE]).reset_index(drop=True)


def best_learning_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the best learning rate, the grid it was chosen from, and whether it is on the edge."""
    columns = science_columns(runs)
    table = learning_rate_table(runs)
    grouped = table.groupby(columns, dropna=False, sort=False)
    best = table.loc[grouped["mean"].idxmax().dropna()].set_index(columns)
    summary = grouped.agg(grid=(LEARNING_RATE, lambda rates: tuple(sorted(rates))), diverged=("diverged", "sum"))
    summary = summary.join(best[[LEARNING_RATE, "mean", "std", "seeds"]]).reset_index()
    summary = summary.rename(columns={LEARNING_RATE: "best_learning_rate"})
    summary["seeds"] = summary["seeds"].fillna(0).astype(int)
    summary["diverged"] = summary["diverged"].astype(int)
    lowest = summary["grid"].map(lambda grid: grid[0])
    highest = summary["grid"].map(lambda grid: grid[-1])
    several = summary["grid"].map(len) > 1
    summary["edge"] = np.where(several & (summary["best_learning_rate"] == lowest), "smallest",
                               np.where(several & (summary["best_learning_rate"] == highest), "largest", ""))
    return sort_runs(summary, columns).reset_index(drop=True)


def tuned_runs(runs: pd.DataFrame, keep_failed: bool = False) -> pd.DataFrame:
    """The runs of each configuration at its best learning rate, chosen on validation accuracy only. The decisions
    take every seed (``keep_failed=True``: failed ones score what they reached); the figures, which draw curves,
    leave out the diverged seeds."""
    best = best_learning_rates(runs).dropna(subset=["best_learning_rate"])
    columns = science_columns(runs)
    keys = best[[*columns, "best_learning_rate"]].rename(columns={"best_learning_rate": LEARNING_RATE})
    chosen = runs.merge(keys, on=[*columns, LEARNING_RATE], how="inner")
    return (chosen if keep_failed else chosen[~is_diverged(chosen)]).reset_index(drop=True)


def histogram_runs(runs: pd.DataFrame) -> list[str]:
    """The best and the worst run of each activation (by best validation accuracy; diverged runs are worst).

    Ties (every collapsed run scores chance) go by run id, so the loader and the figure, which see the runs
    in different orders, pick the same runs."""
    chosen: list[str] = []
    for _, group in runs.groupby("activation", sort=False):
        ranked = group.assign(score=group[BEST_VAL_ACCURACY].fillna(-1.0).where(~is_diverged(group), -1.0))
        ranked = ranked.sort_values(["score", "run_id"], kind="stable")
        for run_id in (ranked["run_id"].iloc[-1], ranked["run_id"].iloc[0]):
            if run_id not in chosen:
                chosen.append(run_id)
    return chosen
