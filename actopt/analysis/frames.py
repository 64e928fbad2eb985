"""Helpers shared by tables, findings, the report and the figures: which runs to analyse, how to name them, and per-
layer values from histories."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from actopt.analysis.seeds import distinct_seeds
from actopt.core.config import TrainConfig, format_value
from actopt.core.metric_names import LEARNING_RATE
from actopt.core.models import ACTIVATIONS
from actopt.core.optimizers import OPTIMIZERS
from actopt.errors import UserError

# How many run names a finding lists before it says "and N more".
LISTED_RUNS = 12
# Config fields that say where and how a run was recorded, not what was trained.
BOOKKEEPING = ("dataset", "data_dir", "download", "device", "log_model", "experiment_name", "study",
               "gradient_statistics", "test_every_epoch", "system_metrics")


NUISANCE = (LEARNING_RATE, "seed")
# Params without which a run cannot be placed in any table: a run that lacks one was logged by another tool.
REQUIRED_PARAMS = ("activation", "optimizer", LEARNING_RATE, "seed")
CONFIG_FIELDS = tuple(TrainConfig.__dataclass_fields__)
SCIENCE = tuple(name for name in CONFIG_FIELDS if name not in BOOKKEEPING + NUISANCE)
# What makes two runs the same training (with the data's digest): a second such run is not a second seed.
IDENTITY = tuple(name for name in CONFIG_FIELDS if name not in BOOKKEEPING)


@dataclass(frozen=True)
class Finding:
    """One conclusion, or a rule checked without result (``absent``), or a question left open (``undecided``)."""

    topic: str
    statement: str
    rule: str
    numbers: str = ""
    runs: tuple[str, ...] = ()
    kind: str = "holds"  # holds | absent | undecided


class AnalysisError(UserError):
    """The runs cannot be analysed as one study (none finished, several studies mixed)."""


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
    reasons[others["kind"] == "sweep-claim"] = "a sweep's claim run (that sweep is still going)"
    reasons[others["kind"] == "other"] = "no val_accuracy logged (not a training run, or stopped before epoch 1)"
    training = others["kind"] == "training"
    foreign = training & others[list(REQUIRED_PARAMS)].isna().any(axis=1)
    reasons[foreign] = f"not logged by actopt train (no {', '.join(REQUIRED_PARAMS)} params)"
    unfinished = training & ~foreign & (others["status"] != "FINISHED")
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
    runs, repeated = distinct_seeds(runs, [*IDENTITY, "data_digest"])
    return runs, pd.concat([left_out, repeated], ignore_index=True)


# How a refusal names what the runs mix: a different data digest is a different copy of the data.
MIXED_NAMES = {"data_digest": "data digests"}


def check_one_study(runs: pd.DataFrame, experiment: str) -> None:
    """Refuse runs of several studies or datasets, naming each group and a filter that picks one."""
    for column, tag in (("study", "tags.study"), ("dataset", "params.dataset"), ("data_digest", "datasets.digest")):
        values = runs[column].astype(object).where(runs[column].notna(), "").astype(str) if column in runs \
            else pd.Series(dtype=str)
        # Runs logged without a dataset input (older runs, other tools) have no digest to tell apart.
        counts = (values[values != ""] if column == "data_digest" else values).value_counts().sort_index()
        counts = counts.sort_values(ascending=False, kind="stable")  # largest first, ties by name
        if len(counts) > 1:
            groups = ", ".join(f"{name or '(none)'}: {plural(count, 'run')}" for name, count in counts.items())
            example = next(name for name in counts.index if name)
            raise AnalysisError(
                f"experiment {experiment!r} mixes runs of several {MIXED_NAMES.get(column, column + ' values')} "
                f"({groups}); "
                f"analyse one with --filter \"{tag} = '{example}'\""
            )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def epochs(value: float) -> str:
    """A number of epochs, which may be a mean: ``1 epoch``, ``1.5 epochs``, ``3 epochs``."""
    return f"{value:.2g} epoch{'' if f'{value:.2g}' == '1' else 's'}"


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
    return f"{'lr' if name == LEARNING_RATE else name} {text(value)}"


def label(row: pd.Series | dict[str, Any], columns: Sequence[str]) -> str:
    return " · ".join(describe(name, row[name]) for name in columns)


def run_name(row: pd.Series) -> str:
    """The run's name with its seed: runs name it (``-seed1``) since issue 24; older ones omit it, and then a seed
    other than 0 is added."""
    seed, name = row.get("seed"), str(row["run_name"])
    if pd.isna(seed) or seed == 0 or name.endswith(f"-seed{int(seed)}"):
        return name
    return f"{name} seed {int(seed)}"


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


def listed(items: Sequence[str]) -> tuple[str, ...]:
    items = tuple(items)
    if len(items) <= LISTED_RUNS:
        return items
    return (*items[:LISTED_RUNS], f"and {len(items) - LISTED_RUNS} more")


def points(value: float) -> str:
    return f"{100 * value:.1f} points"


def number(value: Any, digits: int = 4) -> str:
    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def integer(value: Any) -> str:
    return "–" if pd.isna(value) else str(int(value))
