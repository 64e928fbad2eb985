"""Answer a study's questions from what its runs logged: tables, findings with their rules, the report.

Everything here is a pure function of the DataFrames that ``queries`` loads (``load_runs`` and
``load_histories``), so tests build those frames by hand or from a throwaway store. A finding is
written only when its rule holds on the numbers; each states the rule, the numbers and the runs
it rests on, and where the data cannot decide, the report says so instead.

Learning rate and seed are nuisance parameters: a configuration is compared with the others at
its own best learning rate (by mean best validation accuracy over seeds, diverged runs counted
as infeasible), as the tuning playbook advises.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from actopt.config import TrainConfig, format_value
from actopt.errors import UserError
from actopt.models import ACTIVATIONS
from actopt.optimizers import OPTIMIZERS

# Vanishing gradients: in epoch 1 the first layer's weight-gradient norm is below 1% of the output
# layer's. Under SGD a layer's step is proportional to its gradient, so the first layer then moves
# two orders of magnitude more slowly than the last and barely learns in a study's few epochs.
VANISHING_RATIO = 0.01
# Dead units: more than half of a hidden layer's units never active on the probe examples after
# the last epoch; such a unit passes no gradient and cannot recover, so the layer lost half its width.
DEAD_FRACTION = 0.5
# Saturation: more than half of a layer's outputs within 2.5% of a bound (gradstats.SATURATION_MARGIN),
# where the derivative is below about a tenth of its peak: most of the layer passes back little gradient.
SATURATED_FRACTION = 0.5
# Convergence speed: the first epoch at which validation accuracy reaches 95% of the run's best.
CONVERGENCE_LEVEL = 0.95
# Epochs are the resolution of that count; a lead of less than one epoch is not a lead.
CONVERGENCE_MARGIN_EPOCHS = 1.0
# Overfitting: train accuracy above validation accuracy by more than 2 points at the last epoch.
GAP_THRESHOLD = 0.02
# Accuracy differences below half a point count as noise unless repeated seeds show a larger spread
# (seed-to-seed standard deviations of these MLPs are typically 0.1 to 0.3 points).
ACCURACY_NOISE = 0.005
# How many run names a finding lists before it says "and N more".
LISTED_RUNS = 12

# Config fields that say where and how a run was recorded, not what was trained.
BOOKKEEPING = ("dataset", "data_dir", "download", "device", "log_model", "experiment_name", "study",
               "gradient_statistics", "test_every_epoch")
NUISANCE = ("learning_rate", "seed")
CONFIG_FIELDS = tuple(TrainConfig.__dataclass_fields__)
SCIENCE = tuple(name for name in CONFIG_FIELDS if name not in BOOKKEEPING + NUISANCE)


class AnalysisError(UserError):
    """The runs cannot be analysed as one study (none finished, several studies mixed)."""


@dataclass(frozen=True)
class Finding:
    """One conclusion, or a rule checked without result (``absent``), or a question left open (``undecided``)."""

    topic: str
    statement: str
    rule: str
    numbers: str = ""
    runs: tuple[str, ...] = ()
    kind: str = "holds"  # holds | absent | undecided


@dataclass
class AnalysisResult:
    report: Path
    figures: list[Path]
    skipped: dict[str, str]
    findings: list[Finding] = field(default_factory=list)


# --- choosing the runs ---------------------------------------------------------------------------------


def select_runs(
    everything: pd.DataFrame, experiment: str, exclude_run_id: str | None = None, scope: str = ""
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The finished training runs, and a table of the others with the reason each is left out.

    Raises ``AnalysisError`` when no finished training run remains, or when the runs belong to
    more than one study or dataset (their accuracies would not be comparable). ``scope`` describes
    how the runs were selected (a filter, a parent run) for the message.
    """
    others = everything[everything["run_id"] != exclude_run_id] if exclude_run_id else everything
    reasons = pd.Series("", index=others.index, dtype=object)
    reasons[others["kind"] == "sweep"] = "sweep parent run"
    reasons[others["kind"] == "analysis"] = "analysis run"
    reasons[others["kind"] == "other"] = "no val_accuracy logged (not a training run, or stopped before epoch 1)"
    training = others["kind"] == "training"
    unfinished = training & (others["status"] != "FINISHED")
    reasons[unfinished] = "status " + others.loc[unfinished, "status"].astype(str)
    runs = others[reasons == ""].reset_index(drop=True)
    left_out = others.loc[reasons != "", ["run_name", "run_id", "status"]].assign(reason=reasons[reasons != ""])
    if runs.empty:
        statuses = ", ".join(f"{count} {status}" for status, count in others["status"].value_counts().items())
        raise AnalysisError(
            f"experiment {experiment!r}{scope} has no finished training runs"
            + (f" ({plural(len(others), 'run')}: {statuses})" if len(others) else " (no runs at all)")
        )
    check_one_study(runs, experiment)
    return runs, left_out.reset_index(drop=True)


def check_one_study(runs: pd.DataFrame, experiment: str) -> None:
    """Refuse runs of several studies or datasets, naming each group and a filter that picks one."""
    for column, tag in (("study", "tags.study"), ("dataset", "params.dataset")):
        counts = runs[column].fillna("").astype(str).value_counts().sort_index()
        counts = counts.sort_values(ascending=False, kind="stable")  # largest first, ties by name
        if len(counts) > 1:
            groups = ", ".join(f"{name or '(none)'}: {plural(count, 'run')}" for name, count in counts.items())
            example = next(name for name in counts.index if name)
            raise AnalysisError(
                f"experiment {experiment!r} mixes runs of several {column} values ({groups}); "
                f"analyse one with --filter \"{tag} = '{example}'\""
            )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- describing runs -----------------------------------------------------------------------------------


def varying(runs: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    return [name for name in columns if name in runs and runs[name].astype(str).nunique() > 1]


def science_columns(runs: pd.DataFrame) -> list[str]:
    """What defines a configuration apart from the nuisance parameters: activation, optimizer, then what varies."""
    others = [name for name in varying(runs, SCIENCE) if name not in ("activation", "optimizer")]
    return ["activation", "optimizer", *others]


def label_columns(runs: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Of ``columns``, those worth naming in a label: activation always, the others when they vary."""
    return [name for name in columns if name == "activation" or name in varying(runs, [name])]


def text(value: Any) -> str:
    """A config value as the report prints it: 0.001 (not 0.0010), 256,128, true."""
    if isinstance(value, (bool, np.bool_)):
        return format_value(bool(value))
    return f"{value:g}" if isinstance(value, float) else format_value(value)


def describe(name: str, value: Any) -> str:
    """A config value with its name, as in labels: ``relu``, ``lr 0.1``, ``depth 20``."""
    if name in ("activation", "optimizer"):
        return str(value)
    return f"{'lr' if name == 'learning_rate' else name} {text(value)}"


def label(row: pd.Series | dict[str, Any], columns: Sequence[str]) -> str:
    return " · ".join(describe(name, row[name]) for name in columns)


def run_name(row: pd.Series) -> str:
    """The run's name, which omits the seed like every default; so a seed other than 0 is added."""
    seed = row.get("seed")
    return f"{row['run_name']} seed {seed}" if pd.notna(seed) and seed != 0 else str(row["run_name"])


def run_reference(row: pd.Series) -> str:
    return f"{run_name(row)} ({row['run_id'][:8]})"


def references(rows: pd.DataFrame) -> tuple[str, ...]:
    return tuple(run_reference(row) for _, row in rows.iterrows())


def order_key(name: str) -> Callable[[pd.Series], pd.Series]:
    """Sort activations and optimizers in registry order, everything else naturally."""
    registry = {"activation": list(ACTIVATIONS), "optimizer": list(OPTIMIZERS)}.get(name)
    if registry is None:
        return lambda values: values
    return lambda values: values.map(lambda value: registry.index(value) if value in registry else len(registry))


def sort_runs(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    if not columns:
        return runs
    keyed = runs.assign(**{f"_order_{name}": order_key(name)(runs[name]) for name in columns})
    return keyed.sort_values([f"_order_{name}" for name in columns], kind="stable").drop(
        columns=[f"_order_{name}" for name in columns]
    )


def is_diverged(runs: pd.DataFrame) -> pd.Series:
    return runs["diverged"].fillna(False).astype(bool)


# --- histories -----------------------------------------------------------------------------------------


def metric(histories: pd.DataFrame, key: str) -> pd.DataFrame:
    """``run_id, step, value`` of one key."""
    return histories.loc[histories["key"] == key, ["run_id", "step", "value"]]


def layer_keys(histories: pd.DataFrame, prefix: str) -> list[str]:
    """``prefix/layer_NN`` keys present, in layer order."""
    keys = histories.loc[histories["key"].str.startswith(prefix + "/"), "key"].unique()
    return sorted(keys)


def layer_values(histories: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """``run_id, step, layer (int), value`` of every ``prefix/layer_NN`` key."""
    rows = histories[histories["key"].str.startswith(prefix + "/layer_")]
    layer = rows["key"].str.rsplit("_", n=1).str[-1].astype(int)
    return rows.assign(layer=layer)[["run_id", "step", "layer", "value"]]


def last_step_values(values: pd.DataFrame) -> pd.DataFrame:
    """The rows at each run's last step (of that frame)."""
    last = values.groupby("run_id")["step"].transform("max")
    return values[values["step"] == last]


def epochs_to_level(curve: pd.Series, level: float = CONVERGENCE_LEVEL) -> float:
    """First step at which ``curve`` (indexed by step) reaches ``level`` × its best finite value."""
    finite = curve[np.isfinite(curve)]
    if finite.empty:
        return math.nan
    reached = finite[finite >= level * finite.max()]
    return float(reached.index.min())


# --- tables --------------------------------------------------------------------------------------------


def run_table(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its configuration and outcomes, with the per-epoch derived columns.

    ``epochs_to_95``: first epoch reaching 95% of the run's best validation accuracy;
    ``time_per_epoch``: mean ``epoch_time``; ``final_gap``: train − validation accuracy at the last epoch.
    """
    val = metric(histories, "val_accuracy").pivot_table(index="step", columns="run_id", values="value", dropna=False)
    to_level = {run_id: epochs_to_level(val[run_id].dropna()) for run_id in val.columns}
    seconds = metric(histories, "epoch_time").groupby("run_id")["value"].mean()
    last = {key: last_step_values(metric(histories, key)).set_index("run_id")["value"]
            for key in ("train_accuracy", "val_accuracy", "train_loss", "val_loss")}
    table = runs.assign(
        epochs_to_95=runs["run_id"].map(to_level).astype("float64"),
        time_per_epoch=runs["run_id"].map(seconds).astype("float64"),
        last_train_accuracy=runs["run_id"].map(last["train_accuracy"]).astype("float64"),
        last_val_accuracy=runs["run_id"].map(last["val_accuracy"]).astype("float64"),
        last_train_loss=runs["run_id"].map(last["train_loss"]).astype("float64"),
        diverged=is_diverged(runs),
    )
    table["final_gap"] = table["last_train_accuracy"] - table["last_val_accuracy"]
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


# --- findings ------------------------------------------------------------------------------------------


def listed(items: Sequence[str]) -> tuple[str, ...]:
    items = tuple(items)
    if len(items) <= LISTED_RUNS:
        return items
    return (*items[:LISTED_RUNS], f"and {len(items) - LISTED_RUNS} more")


def points(value: float) -> str:
    return f"{100 * value:.1f} points"


def first_to_last(values: pd.DataFrame) -> pd.Series:
    """Per run: layer 1's value over the run's last layer's (runs with a single layer have none)."""
    if values.empty:
        return pd.Series(dtype="float64")
    first = values[values["layer"] == 1].set_index("run_id")["value"]
    last = values.loc[values.groupby("run_id")["layer"].idxmax()].set_index("run_id")
    return (first / last["value"]).where(last["layer"] > 1).dropna()


def vanishing_gradients(runs: pd.DataFrame, histories: pd.DataFrame) -> list[Finding]:
    topic = "Vanishing gradients"
    rule = (f"grad_norm/layer_01 ÷ grad_norm of the output layer, both the mean over epoch 1's steps, "
            f"below {VANISHING_RATIO:g}")
    norms, probes = layer_values(histories, "grad_norm"), layer_values(histories, "probe_grad_max_abs")
    ratios = first_to_last(norms[norms["step"] == 1])
    at_init = first_to_last(probes[probes["step"] == 0])
    table = runs.assign(ratio=runs["run_id"].map(ratios), probe_ratio=runs["run_id"].map(at_init))
    table = table.dropna(subset=["ratio"])
    if table.empty:
        return [Finding(topic, "Cannot decide: no run logged per-layer gradient norms of two or more layers.", rule,
                        kind="undecided")]
    columns = label_columns(runs, ["activation", "depth", "width", "hidden_sizes", "init"])
    findings = []
    for _, group in table.groupby(columns, sort=False, dropna=False):
        low = group[group["ratio"] < VANISHING_RATIO]
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


def unit_fraction_findings(runs: pd.DataFrame, histories: pd.DataFrame, prefix: str, threshold: float,
                           topic: str, what: str) -> list[Finding]:
    rule = f"{prefix}/layer_NN after the last epoch above {threshold:g} in at least one hidden layer"
    values = last_step_values(layer_values(histories, prefix))
    if values.empty:
        return []
    worst = values.loc[values.groupby("run_id")["value"].idxmax()].set_index("run_id")
    table = runs.assign(fraction=runs["run_id"].map(worst["value"]), layer=runs["run_id"].map(worst["layer"]))
    table = table.dropna(subset=["fraction"])
    columns = label_columns(runs, ["activation", "optimizer", "depth", "init", "dropout"])
    findings = []
    for _, group in table.groupby(columns, sort=False, dropna=False):
        high = sort_runs(group[group["fraction"] > threshold], ["learning_rate"])
        if high.empty:
            continue
        rates = ", ".join(f"{rate:g}" for rate in sorted(high["learning_rate"].unique()))
        statement = (f"{label(group.iloc[0], columns)}: {what} in {len(high)} of {len(group)} runs "
                     f"(learning rates {rates}).")
        numbers = "; ".join(f"{run_name(row)}: layer_{int(row['layer']):02d} {row['fraction']:.2f}"
                            for _, row in high.head(LISTED_RUNS).iterrows())
        findings.append(Finding(topic, statement, rule, numbers, listed(references(high))))
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
                            runs.groupby("optimizer", sort=False)["learning_rate"].max().items())
        return [Finding(topic, f"No run diverged (largest learning rate tried: {largest}).", rule, kind="absent")]
    findings = []
    for optimizer, group in sort_runs(runs, ["optimizer"]).groupby("optimizer", sort=False):
        flags = is_diverged(group)
        if not flags.any():
            continue
        lowest = group.loc[flags, "learning_rate"].min()
        above = group[group["learning_rate"] >= lowest]
        below = group[group["learning_rate"] < lowest]
        counts = "; ".join(f"lr {rate:g}: {int(is_diverged(rows).sum())} of {len(rows)}"
                           for rate, rows in group.groupby("learning_rate"))
        activations = ", ".join(sorted(group.loc[flags, "activation"].unique(), key=list(ACTIVATIONS).index))
        if is_diverged(above).all():
            statement = (f"{optimizer} diverged in every run at learning rate ≥ {lowest:g} ({len(above)} runs: "
                         f"{activations}) and in none below" + (f" ({len(below)} runs)." if len(below) else "."))
        else:
            statement = (f"{optimizer} diverged in {int(flags.sum())} of {len(above)} runs at learning rate ≥ "
                         f"{lowest:g} ({activations}); not every run at those rates diverged.")
        findings.append(Finding(topic, statement, rule, counts, listed(references(group[flags]))))
    return findings


def learning_rate_edges(runs: pd.DataFrame) -> list[Finding]:
    topic = "Learning-rate grid"
    rule = ("the best learning rate (mean best validation accuracy over seeds, diverged runs excluded) is the "
            "smallest or largest tried")
    best = best_learning_rates(runs)
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
        same = (runs[columns] == row[columns]).all(axis=1) & (runs["learning_rate"] == row["best_learning_rate"])
        numbers = f"mean best val accuracy {row['mean']:.4f}"
        findings.append(Finding(topic, statement, rule, numbers, listed(references(runs[same]))))
    if not findings:
        statement = "Every configuration's best learning rate lies inside its grid."
        findings.append(Finding(topic, statement, rule, kind="absent"))
    return findings


def noise(groups: Iterable[pd.Series]) -> tuple[float, str]:
    """The margin below which accuracy differences are noise, and where it comes from."""
    spreads = [values.std() for values in groups if len(values) > 1]
    spread = max(spreads) if spreads else math.nan
    if spreads and spread > ACCURACY_NOISE:
        return float(spread), f"the largest seed standard deviation, {points(spread)}"
    return ACCURACY_NOISE, f"{points(ACCURACY_NOISE)} (ACCURACY_NOISE{'' if spreads else ', no repeated seeds'})"


def factor_comparison(runs: pd.DataFrame, factor: str, topic: str) -> list[Finding]:
    """Which value of ``factor`` reaches the best validation accuracy, each configuration at its best learning rate."""
    if runs[factor].nunique() < 2:
        return []
    tuned = tuned_runs(runs)
    columns = [name for name in label_columns(runs, science_columns(runs)) if name != factor]
    rule = (f"mean best validation accuracy over seeds, each {factor} at its own best learning rate; the leader must "
            f"beat the runner-up by more than the noise margin")
    findings = []
    groups = tuned.groupby(columns, sort=False, dropna=False) if columns else [((), tuned)]
    for _, group in groups:
        scores = {name: rows["best_val_accuracy"] for name, rows in group.groupby(factor, sort=False)}
        if len(scores) < 2:
            continue
        ranked = sorted(scores, key=lambda name: scores[name].mean(), reverse=True)
        margin, source = noise(scores.values())
        lead = scores[ranked[0]].mean() - scores[ranked[1]].mean()
        where = f"{label(group.iloc[0], columns)}: " if columns else ""
        numbers = "; ".join(
            f"{name} {scores[name].mean():.4f}" + (f" ± {scores[name].std():.4f}" if len(scores[name]) > 1 else "")
            + f" (test {group.loc[group[factor] == name, 'test_accuracy'].mean():.4f})"
            for name in ranked
        ) + f"; noise margin {source}"
        if lead > margin:
            statement = (f"{where}{ranked[0]} reached the best validation accuracy, "
                         f"{points(lead)} ahead of {ranked[1]}.")
            kind = "holds"
        else:
            statement = (f"{where}cannot decide between {ranked[0]} and {ranked[1]}: they differ by "
                         f"{points(lead)}, within the noise margin.")
            kind = "undecided"
        findings.append(Finding(topic, statement, rule, numbers, listed(references(group)), kind))
    return findings


def fastest_convergence(table: pd.DataFrame) -> list[Finding]:
    topic = "Convergence speed"
    rule = (f"epochs until validation accuracy first reaches {CONVERGENCE_LEVEL:.0%} of the run's best, mean over "
            f"each activation's runs at their best learning rates; the leader must be ahead by ≥ "
            f"{CONVERGENCE_MARGIN_EPOCHS:g} epoch")
    tuned = tuned_runs(table)
    means = tuned.groupby("activation")["epochs_to_95"].mean().dropna().sort_values()
    if len(means) < 2:
        return [Finding(topic, "Cannot decide which activation converges fastest: fewer than two activations "
                               "have a feasible run.", rule, kind="undecided")]
    numbers = "; ".join(f"{name} {value:.2g} epochs" for name, value in means.items())
    lead = means.iloc[1] - means.iloc[0]
    if lead >= CONVERGENCE_MARGIN_EPOCHS:
        statement = (f"{means.index[0]} converged fastest: {CONVERGENCE_LEVEL:.0%} of its best validation accuracy "
                     f"after {means.iloc[0]:.2g} epochs on average, {lead:.2g} epochs before {means.index[1]}.")
        leader = tuned[tuned["activation"] == means.index[0]]
        return [Finding(topic, statement, rule, numbers, listed(references(leader)))]
    statement = (f"Cannot decide which activation converges fastest: {means.index[0]} and {means.index[1]} differ by "
                 f"{lead:.2g} epochs, less than the {CONVERGENCE_MARGIN_EPOCHS:g}-epoch resolution.")
    return [Finding(topic, statement, rule, numbers, listed(references(tuned)), "undecided")]


def overfitting(table: pd.DataFrame) -> list[Finding]:
    topic = "Overfitting"
    rule = (f"train accuracy − validation accuracy after the last epoch above {points(GAP_THRESHOLD)}, at each "
            f"configuration's best learning rate (train accuracy is measured during the epoch, with dropout active, "
            f"so dropout runs understate their gap)")
    tuned = tuned_runs(table).dropna(subset=["final_gap"])
    if tuned.empty:
        return []
    columns = label_columns(table, science_columns(table))
    findings = []
    for _, group in tuned.groupby(columns, sort=False, dropna=False):
        gap = group["final_gap"].mean()
        if gap > GAP_THRESHOLD:
            statement = (f"{label(group.iloc[0], columns)}: train accuracy exceeded validation accuracy by "
                         f"{points(gap)} after the last epoch.")
            numbers = "; ".join(f"{run_name(row)}: train {row['last_train_accuracy']:.4f}, "
                                f"val {row['last_val_accuracy']:.4f}" for _, row in group.iterrows())
            findings.append(Finding(topic, statement, rule, numbers, listed(references(group))))
    if not findings:
        largest = tuned.loc[tuned["final_gap"].idxmax()]
        statement = (f"No configuration's gap exceeded {points(GAP_THRESHOLD)} (largest "
                     f"{points(largest['final_gap'])}, {run_reference(largest)}).")
        return [Finding(topic, statement, rule, kind="absent")]
    return findings + dropout_effect(table, tuned)


def dropout_effect(table: pd.DataFrame, tuned: pd.DataFrame) -> list[Finding]:
    topic = "Dropout and the gap"
    rule = ("mean final train − validation accuracy gap with dropout > 0 below the same configuration's gap with "
            "dropout 0 by more than the noise margin")
    if table["dropout"].nunique() < 2 or not (table["dropout"] == 0).any():
        statement = ("Cannot decide whether dropout narrows the gap: no runs compare dropout > 0 with dropout 0 "
                     "for the same configuration.")
        return [Finding(topic, statement, rule, kind="undecided")]
    columns = [name for name in label_columns(table, science_columns(table)) if name != "dropout"]
    findings = []
    groups = tuned.groupby(columns, sort=False, dropna=False) if columns else [((), tuned)]
    for _, group in groups:
        gaps = {rate: rows["final_gap"] for rate, rows in group.groupby("dropout")}
        if 0.0 not in gaps or len(gaps) < 2:
            continue
        margin, source = noise(gaps.values())
        base = gaps[0.0].mean()
        where = label(group.iloc[0], columns) + ": " if columns else ""
        for rate, values in sorted(gaps.items()):
            if rate == 0.0:
                continue
            change = base - values.mean()
            numbers = (f"gap {points(base)} at dropout 0, {points(values.mean())} at dropout {rate:g}; "
                       f"noise margin {source}")
            rows = group[group["dropout"].isin([0.0, rate])]
            if change > margin:
                statement = (f"{where}dropout {rate:g} narrowed the train/validation gap from {100 * base:.1f} to "
                             f"{points(values.mean())}.")
                findings.append(Finding(topic, statement, rule, numbers, listed(references(rows))))
            else:
                statement = f"{where}dropout {rate:g} did not narrow the gap by more than the noise margin."
                findings.append(Finding(topic, statement, rule, numbers, listed(references(rows)), "absent"))
    return findings


def findings(table: pd.DataFrame, histories: pd.DataFrame) -> list[Finding]:
    """Every rule applied to ``run_table``'s runs: what holds, what was checked without result, what is undecided."""
    dead = f"more than {DEAD_FRACTION:.0%} of a hidden layer's units were dead after the last epoch"
    saturated = f"more than {SATURATED_FRACTION:.0%} of a hidden layer's outputs were saturated after the last epoch"
    return [
        *vanishing_gradients(table, histories),
        *unit_fraction_findings(table, histories, "dead_fraction", DEAD_FRACTION, "Dead units", dead),
        *unit_fraction_findings(table, histories, "saturated_fraction", SATURATED_FRACTION, "Saturation", saturated),
        *divergence(table),
        *learning_rate_edges(table),
        *factor_comparison(table, "optimizer", "Optimizers at their best learning rates"),
        *factor_comparison(table, "activation", "Activations at their best learning rates"),
        *fastest_convergence(table),
        *overfitting(table),
    ]


# --- the report ----------------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: Any, digits: int = 4) -> str:
    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def integer(value: Any) -> str:
    return "–" if pd.isna(value) else str(int(value))


def mean_std(values: pd.Series) -> str:
    return f"{number(values.mean())} ± {number(values.std())}"


def settings_section(runs: pd.DataFrame) -> str:
    varied = varying(runs, [*SCIENCE, *NUISANCE])
    shared = [name for name in ("dataset", *SCIENCE) if name not in varied]
    lines = ["## Configurations", ""]
    for name in varied:
        values = sort_runs(runs[[name]].drop_duplicates(), [name])[name]
        lines.append(f"- varies: **{name}** — " + ", ".join(text(value) for value in values))
    lines.append("- shared: " + ", ".join(f"{name} {text(runs[name].iloc[0])}" for name in shared if name in runs))
    return "\n".join(lines)


def run_table_section(table: pd.DataFrame) -> str:
    always = ("activation", "optimizer", "learning_rate")
    columns = [name for name in [*science_columns(table), *NUISANCE] if name in always or varying(table, [name])]
    header = ["run", *columns, "best val acc", "best epoch", "test acc", "epochs to 95%", "s / epoch", "diverged"]
    rows = []
    for _, row in table.iterrows():
        diverged = f"yes (epoch {integer(row['diverged_epoch'])})" if row["diverged"] else "no"
        rows.append([f"{run_name(row)} `{row['run_id'][:8]}`", *(text(row[name]) for name in columns),
                     number(row["best_val_accuracy"]), integer(row["best_epoch"]), number(row["test_accuracy"]),
                     integer(row["epochs_to_95"]), number(row["time_per_epoch"], 2), diverged])
    return "\n".join(["## Results per run", "",
                      f"Best validation accuracy and its epoch; test accuracy on the weights of that epoch; the first "
                      f"epoch reaching {CONVERGENCE_LEVEL:.0%} of the run's best validation accuracy; mean seconds of "
                      f"training per epoch.", "", markdown_table(header, rows)])


def seed_section(table: pd.DataFrame) -> str:
    if table["seed"].nunique() < 2:
        return ""
    columns = [*label_columns(table, science_columns(table)), "learning_rate"]
    header = [*columns, "seeds", "best val acc (mean ± std)", "test acc (mean ± std)", "diverged"]
    rows = []
    for key, group in table.groupby(columns, sort=False, dropna=False):
        values = dict(zip(columns, key))
        rows.append([*(text(values[name]) for name in columns), len(group), mean_std(group["best_val_accuracy"]),
                     mean_std(group["test_accuracy"]), int(group["diverged"].sum())])
    return "\n".join(["## Mean ± std over seeds", "", markdown_table(header, rows)])


def best_rate_section(runs: pd.DataFrame) -> str:
    best = best_learning_rates(runs)
    if (best["grid"].map(len) < 2).all():
        return ""
    columns = label_columns(runs, science_columns(runs))
    header = [*columns, "best lr", "grid", "edge of grid", "best val acc", "seeds", "diverged runs"]
    rows = [[*(text(row[name]) for name in columns),
             "–" if math.isnan(row["best_learning_rate"]) else text(row["best_learning_rate"]),
             ", ".join(text(rate) for rate in row["grid"]), f"**{row['edge']}**" if row["edge"] else "no",
             number(row["mean"]) + (f" ± {number(row['std'])}" if row["seeds"] > 1 else ""), row["seeds"],
             row["diverged"]]
            for _, row in best.iterrows()]
    return "\n".join(["## Each configuration at its own best learning rate", "",
                      "Learning rate is a nuisance parameter, conditional on the optimizer: configurations are compared "
                      "at their own best rate (diverged runs are infeasible, not dropped from the counts). A best rate "
                      "on the edge of the grid means the grid should be extended.", "", markdown_table(header, rows)])


def findings_section(found: Sequence[Finding]) -> str:
    lines = ["## Findings", "",
             "Each finding is computed from the logged numbers by the rule stated with it (thresholds are constants in "
             "`actopt/analysis.py`)."]
    sections = (("holds", None), ("undecided", "### Cannot decide"), ("absent", "### Rules checked, nothing found"))
    for kind, title in sections:
        chosen = [item for item in found if item.kind == kind]
        if not chosen:
            if kind == "holds":
                lines += ["", "No rule held on these runs."]
            continue
        if title:
            lines += ["", title]
        topic = None
        for item in chosen:
            if kind == "holds" and item.topic != topic:
                lines += ["", f"### {item.topic}"]
                topic = item.topic
            prefix = "" if kind == "holds" else f"{item.topic}: "
            lines += ["", f"- **{prefix}{item.statement}**", f"  - rule: {item.rule}"]
            if item.numbers:
                lines.append(f"  - numbers: {item.numbers}")
            if item.runs:
                lines.append(f"  - runs: {', '.join(item.runs)}")
    return "\n".join(lines)


BACKPROP = """For an MLP with pre-activations z^l = W^l a^(l−1) + b^l and activations a^l = f(z^l), the error
signal δ^l = ∂L/∂z^l obeys the recurrence

    δ^L = ∂L/∂z^L  (softmax cross-entropy: softmax(z^L) − onehot(y))
    δ^l = ((W^(l+1))ᵀ δ^(l+1)) ⊙ f′(z^l)
    ∂L/∂W^l = δ^l (a^(l−1))ᵀ,   ∂L/∂b^l = δ^l

so the first layer's gradient carries the product of every f′ on the way down: with |f′| ≤ 0.25
(sigmoid) it shrinks by at least 4× per layer unless the weights make up for it. The derivatives
below are each activation's closed form; the ranges are measured by autograd on a grid over [−{limit:g}, {limit:g}]
(step {step:g}), through the same modules training uses. The derivation is in docs/backprop.md of the
repository."""


def derivative_section(figure: Path | None) -> str:
    from actopt import derivatives

    rows = [[item.name, item.closed_form, item.describe()] for item in derivatives.derivative_ranges()]
    lines = ["## Activation functions, their derivatives and backpropagation", "",
             BACKPROP.format(limit=derivatives.GRID_LIMIT, step=derivatives.GRID_STEP), "",
             markdown_table(["activation", "f′(x)", "measured on the grid"], rows)]
    if figure is not None:
        lines += ["", f"![Activation functions and their derivatives]({figure.name})"]
    return "\n".join(lines)


def left_out_section(left_out: pd.DataFrame) -> str:
    if left_out.empty:
        return ""
    rows = [[row["run_name"], f"`{row['run_id'][:8]}`", row["status"], row["reason"]] for _, row in left_out.iterrows()]
    return "\n".join(["## Runs left out", "", markdown_table(["run", "id", "status", "reason"], rows)])


def figures_section(drawn: Sequence[tuple[Path, str, str]], skipped: dict[str, str]) -> str:
    lines = ["## Figures"]
    for path, title, caption in drawn:
        lines += ["", f"### {title}", "", f"![{title}]({path.name})", "", caption]
    if skipped:
        lines += ["", "### Not drawn", ""]
        lines += [f"- {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines)


def render_report(
    runs: pd.DataFrame,
    left_out: pd.DataFrame,
    table: pd.DataFrame,
    found: Sequence[Finding],
    drawn: Sequence[tuple[Path, str, str]],
    skipped: dict[str, str],
    source: dict[str, str],
    gallery: Path | None,
) -> str:
    scope = [f"tracking store `{source.get('tracking_uri', '')}`"]
    if source.get("parent_run_id"):
        scope.append(f"children of run `{source['parent_run_id']}`")
    if source.get("filter"):
        scope.append(f"filter `{source['filter']}`")
    study = runs["study"].fillna("").iloc[0]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [f"# Analysis of experiment `{source.get('experiment', '')}`", "",
              f"{plural(len(runs), 'finished training run')} on {runs['dataset'].iloc[0]}"
              + (f", study `{study}`" if study else "") + f"; {', '.join(scope)}. Written {stamp} by `actopt analyze`."]
    sections = [
        "\n".join(header),
        settings_section(runs),
        left_out_section(left_out),
        run_table_section(table),
        seed_section(table),
        best_rate_section(runs),
        findings_section(found),
        figures_section(drawn, skipped),
        derivative_section(gallery),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def write_analysis(
    runs: pd.DataFrame,
    left_out: pd.DataFrame,
    histories: pd.DataFrame,
    histograms: dict[str, dict[str, Any]],
    folder: Path,
    source: dict[str, str],
) -> AnalysisResult:
    """Write the figures and ``report.md`` into ``folder`` (replacing earlier PNGs there)."""
    from actopt import plots

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    table = run_table(runs, histories)
    found = findings(table, histories)
    drawn, skipped = plots.draw_all(table, histories, histograms, folder)
    gallery = next((path for path, *_ in drawn if path.name == plots.GALLERY_FILE), None)
    study_figures = [item for item in drawn if item[0] != gallery]
    report = folder / "report.md"
    report.write_text(render_report(runs, left_out, table, found, study_figures, skipped, source, gallery))
    holding = [item for item in found if item.kind == "holds"]
    return AnalysisResult(report, [path for path, *_ in drawn], skipped, holding)
