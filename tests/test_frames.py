"""actopt.analysis.frames on hand-made frames: which runs are analysed and why the others are not, how values and runs
are named and sorted, and per-layer values read from a long history."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from actopt.analysis import frames
from actopt.core.metric_names import GRAD_NORM, VAL_ACCURACY, per_layer


def everything(**columns) -> pd.DataFrame:
    """Runs as ``queries.load_runs(kinds=None)`` gives them: one finished training run per row unless told."""
    count = len(next(iter(columns.values()))) if columns else 2
    base = {"run_id": [f"run{index}" for index in range(count)], "run_name": [f"name{index}" for index in range(count)],
            "kind": ["training"] * count, "status": ["FINISHED"] * count, "activation": ["relu"] * count,
            "optimizer": ["sgd"] * count, "learning_rate": [0.1] * count, "seed": list(range(count)),
            "study": [""] * count, "dataset": ["mnist"] * count, "start_time": list(range(count))}
    return pd.DataFrame({**base, **columns})


def test_select_runs_keeps_finished_training_runs_and_says_why_the_others_are_left_out():
    runs = everything(kind=["training", "sweep", "analysis", "sweep-claim", "other", "training", "training"],
                      status=["FINISHED"] * 5 + ["RUNNING", "FINISHED"],
                      optimizer=["sgd"] * 6 + [None])
    kept, left_out = frames.select_runs(runs, "study")
    assert list(kept["run_id"]) == ["run0"]
    reasons = dict(zip(left_out["run_id"], left_out["reason"]))
    assert reasons == {
        "run1": "sweep parent run", "run2": "analysis run", "run3": "a sweep's claim run (that sweep is still going)",
        "run4": "no val_accuracy logged (not a training run, or stopped before epoch 1)", "run5": "status RUNNING",
        "run6": "not logged by actopt train (no activation, optimizer, learning_rate, seed params)"}


def test_select_runs_excludes_the_analysis_run_itself_and_counts_a_repeated_seed_once():
    runs = everything(seed=[0, 0, 1])
    kept, left_out = frames.select_runs(runs, "study", exclude_run_id="run2")
    assert list(kept["run_id"]) == ["run0"]  # run1 repeats run0's configuration and seed; run2 is excluded
    assert list(left_out["run_id"]) == ["run1"] and "run run0 is kept" in left_out["reason"].iloc[0]


def test_select_runs_refuses_no_runs_and_mixed_studies():
    with pytest.raises(frames.AnalysisError, match="has no finished training runs .1 run: 1 RUNNING"):
        frames.select_runs(everything(status=["RUNNING"]), "study", scope=" under parent run p")
    with pytest.raises(frames.AnalysisError, match=r"mixes runs of several study values \(a: 2 runs, b: 1 run\)"):
        frames.select_runs(everything(study=["a", "b", "a"]), "study")
    with pytest.raises(frames.AnalysisError, match="several data digests"):
        frames.select_runs(everything(data_digest=["x", "y"]), "study")


def test_values_and_runs_are_named_as_the_report_prints_them():
    assert [frames.text(value) for value in (0.001, 0.0010, 20, True, np.bool_(False))] == [
        "0.001", "0.001", "20", "true", "false"]
    assert frames.describe("activation", "tanh") == "tanh"
    assert frames.describe("learning_rate", 0.1) == "lr 0.1"
    assert frames.describe("depth", 20) == "depth 20"
    assert frames.label({"activation": "relu", "learning_rate": 0.01}, ["activation", "learning_rate"]) == \
        "relu · lr 0.01"
    row = pd.Series({"run_name": "relu-sgd-lr0.1", "seed": 2, "run_id": "abcdef123456"})
    assert frames.run_name(row) == "relu-sgd-lr0.1 seed 2"  # older runs omit the seed from their name
    assert frames.run_name(row.replace({"relu-sgd-lr0.1": "relu-sgd-lr0.1-seed2"})) == "relu-sgd-lr0.1-seed2"
    assert frames.run_reference(row) == "relu-sgd-lr0.1 seed 2 (abcdef12)"
    assert frames.plural(1, "run") == "1 run" and frames.plural(3, "run") == "3 runs"
    assert frames.epochs(1.0) == "1 epoch" and frames.epochs(1.5) == "1.5 epochs"
    assert frames.points(0.0123) == "1.2 points"
    assert frames.number(math.nan) == "–" and frames.number(0.12345) == "0.1235" and frames.integer(3.0) == "3"
    names = [f"run{index}" for index in range(frames.LISTED_RUNS + 3)]
    assert frames.listed(names)[-1] == "and 3 more" and len(frames.listed(names)) == frames.LISTED_RUNS + 1


def test_configurations_sort_in_registry_order_and_only_varying_columns_name_them():
    runs = pd.DataFrame({"activation": ["tanh", "relu", "sigmoid"], "optimizer": ["adam", "sgd", "sgd"],
                         "depth": [5, 5, 5], "dropout": [0.2, 0.0, 0.2]})
    ordered = frames.sort_runs(runs, ["activation"])
    assert list(ordered["activation"]) == ["sigmoid", "tanh", "relu"]  # actopt.core.models.ACTIVATIONS' order
    assert list(frames.sort_runs(runs, ["optimizer", "dropout"])["optimizer"]) == ["sgd", "sgd", "adam"]
    assert frames.varying(runs, ["activation", "depth", "dropout", "absent"]) == ["activation", "dropout"]
    assert frames.science_columns(runs) == ["activation", "optimizer", "dropout"]
    assert frames.label_columns(runs, ["activation", "depth", "dropout"]) == ["activation", "dropout"]
    assert list(frames.is_diverged(pd.DataFrame({"diverged": [True, None, False]}))) == [True, False, False]


def test_per_layer_values_come_from_the_long_history_in_layer_order():
    histories = pd.DataFrame({
        "run_id": ["a", "a", "a", "a", "b", "b"],
        "step": [1, 1, 2, 2, 1, 1],
        "key": [per_layer(GRAD_NORM, 2), per_layer(GRAD_NORM, 1), per_layer(GRAD_NORM, 1), VAL_ACCURACY,
                per_layer(GRAD_NORM, 10), "grad_norm_other"],
        "value": [0.5, 0.25, 0.125, 0.9, 2.0, 7.0],
    })
    assert frames.layer_keys(histories, GRAD_NORM) == ["grad_norm/layer_01", "grad_norm/layer_02",
                                                       "grad_norm/layer_10"]
    values = frames.layer_values(histories, GRAD_NORM)
    assert list(values.columns) == ["run_id", "step", "layer", "value"]
    assert sorted(zip(values["run_id"], values["step"], values["layer"], values["value"])) == [
        ("a", 1, 1, 0.25), ("a", 1, 2, 0.5), ("a", 2, 1, 0.125), ("b", 1, 10, 2.0)]
    last = frames.last_step_values(values)
    assert sorted(zip(last["run_id"], last["step"], last["value"])) == [("a", 2, 0.125), ("b", 1, 2.0)]
    assert list(frames.metric(histories, VAL_ACCURACY)["value"]) == [0.9]
