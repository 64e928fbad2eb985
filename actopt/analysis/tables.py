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


def epochs_to_level(curve: pd.Series, level: float = CONVERGENCE_LEVEL) -> float:
    """First step at which ``curve`` (indexed by step) reaches ``level`` × its best finite value."""
    finite = curve[np.isfinite(curve)]
    if finite.empty:
        return math.nan
    reached = finite[finite >= level * finite.max()]
    return float(reached.index.min())


def run_table(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its configuration and outcomes, with the per-epoch derived columns.

    ``epochs_to_95``: first epoch reaching 95% of the run's best validation accuracy;
    ``time_per_epoch``: mean ``epoch_time``; ``final_gap``: train − validation accuracy at the last
    epoch, the train side measured in eval mode on a fixed training subset (``train_eval_accuracy``)
    where the run logged it, else the accuracy accumulated during the epoch (``gap_source`` says
    which); ``learned``: best validation accuracy more than CHANCE_MARGIN above ``chance``.
    """
    val = metric(histories, "val_accuracy").pivot_table(index="step", columns="run_id", values="value", dropna=False)
    to_level = {run_id: epochs_to_level(val[run_id].dropna()) for run_id in val.columns}
    seconds = metric(histories, "epoch_time").groupby("run_id")["value"].mean()
    last = {key: last_step_values(metric(histories, key)).set_index("run_id")["value"]
            for key in ("train_accuracy", "train_eval_accuracy", "val_accuracy", "train_loss", "val_loss")}
    table = runs.assign(
        epochs_to_95=runs["run_id"].map(to_level).astype("float64"),
        time_per_epoch=runs["run_id"].map(seconds).astype("float64"),
        last_train_accuracy=runs["run_id"].map(last["train_accuracy"]).astype("float64"),
        last_train_eval_accuracy=runs["run_id"].map(last["train_eval_accuracy"]).astype("float64"),
        last_val_accuracy=runs["run_id"].map(last["val_accuracy"]).astype("float64"),
        last_train_loss=runs["run_id"].map(last["train_loss"]).astype("float64"),
        diverged=is_diverged(runs),
    )
    evaluated = table["last_train_eval_accuracy"].notna()
    train_side = table["last_train_eval_accuracy"].where(evaluated, table["last_train_accuracy"])
    table["final_gap"] = train_side - table["last_val_accuracy"]
    table["gap_source"] = np.where(evaluated, "eval", "during epoch")
    chance = runs["chance_accuracy"] if "chance_accuracy" in runs else pd.Series(np.nan, index=runs.index)
    table["chance"] = chance.astype("float64").fillna(DEFAULT_CHANCE)
    table["learned"] = table["best_val_accuracy"].astype("float64").fillna(-1.0) > table["chance"] + CHANCE_MARGIN
    return sort_runs(table, [*science_columns(runs), "learning_rate", "seed"]).reset_index(drop=True)


def learning_rate_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (science columns): mean ± std best validation accuracy at each learning rate."""
    columns = science_columns(runs)
    feasible = runs[~is_diverged(runs) & runs["best_val_accuracy"].notna()]
    grouped = feasible.groupby([*columns, "learning_rate"], dropna=False)["best_val_accuracy"]
    table = grouped.agg(mean="mean", std="std", seeds="count").reset_index()
    diverged = runs[is_diverged(runs)].groupby([*columns, "learning_rate"], dropna=False).size().rename("diverged")
    table = table.merge(diverged.reset_index(), on=[*columns, "learning_rate"], how="outer")
    table["diverged"] = table["diverged"].fillna(0).astype(int)
    table["seeds"] = table["seeds"].fillna(0).astype(int)
    return sort_runs(table, [*columns, "learning_rate"]).reset_index(drop=True)


def best_learning_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the best learning rate, the grid it was chosen from, and whether it is on the edge."""
    columns = science_columns(runs)
    table = learning_rate_table(runs)
    rows = []
    for key, group in table.groupby(columns, dropna=False, sort=False):
        grid = sorted(group["learning_rate"].unique())
        feasible = group[group["seeds"] > 0]
        row = dict(zip(columns, key if isinstance(key, tuple) else (key,)))
        row.update(grid=tuple(grid), diverged=int(group["diverged"].sum()))
        if feasible.empty:
            row.update(best_learning_rate=math.nan, mean=math.nan, std=math.nan, seeds=0, edge="")
        else:
            best = feasible.loc[feasible["mean"].idxmax()]
            edge = "" if len(grid) < 2 else "smallest" if best["learning_rate"] == grid[0] else (
                "largest" if best["learning_rate"] == grid[-1] else "")
            row.update(best_learning_rate=best["learning_rate"], mean=best["mean"], std=best["std"],
                       seeds=int(best["seeds"]), edge=edge)
        rows.append(row)
    return sort_runs(pd.DataFrame(rows), columns).reset_index(drop=True)


def tuned_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of each configuration at its best learning rate (all their seeds, none diverged)."""
    best = best_learning_rates(runs).dropna(subset=["best_learning_rate"])
    columns = science_columns(runs)
    keys = best[[*columns, "best_learning_rate"]].rename(columns={"best_learning_rate": "learning_rate"})
    chosen = runs.merge(keys, on=[*columns, "learning_rate"], how="inner")
    return chosen[~is_diverged(chosen)].reset_index(drop=True)


def histogram_runs(runs: pd.DataFrame) -> list[str]:
    """The best and the worst run of each activation (by best validation accuracy; diverged runs are worst)."""
    chosen: list[str] = []
    for _, group in runs.groupby("activation", sort=False):
        ranked = group.assign(score=group["best_val_accuracy"].fillna(-1.0).where(~is_diverged(group), -1.0))
        ranked = ranked.sort_values("score", kind="stable")
        for run_id in (ranked["run_id"].iloc[-1], ranked["run_id"].iloc[0]):
            if run_id not in chosen:
                chosen.append(run_id)
    return chosen
