"""The read side: typed run tables and long histories from a real (temporary) store, and the analysis run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fake_runs import experiment_id, history, log_run
from mlflow.tracking import MlflowClient

from actopt.analysis import analyze
from actopt.tracking import queries, records, runlog, store


def test_runs_have_typed_params_metrics_and_tags(tracking_store):
    client = MlflowClient(tracking_store)
    table = history("relu", epochs=3, best=0.8)
    run_id = log_run(client, "study", {"activation": "relu", "optimizer": "sgd", "learning_rate": "1e-1",
                                       "dropout": "0.2", "seed": "3"}, table, test_accuracy=0.79)
    diverged_id = log_run(client, "study", {"activation": "tanh", "optimizer": "sgd", "learning_rate": "10"},
                          history("tanh", epochs=3), diverged_epoch=2)
    runs = queries.load_runs("study").set_index("run_id")
    row = runs.loc[run_id]
    assert row["learning_rate"] == 0.1 and row["dropout"] == 0.2 and row["seed"] == 3
    assert row["hidden_sizes"] == (32, 16)
    assert row["download"] is True or row["download"] == True  # noqa: E712 (pandas' boolean scalar)
    assert row["run_name"] == "relu-sgd-lr0.1-dropout0.2-seed3"
    assert row["status"] == "FINISHED" and row["kind"] == "training"
    assert row["best_val_accuracy"] == pytest.approx(0.8) and row["test_accuracy"] == pytest.approx(0.79)
    assert row["best_epoch"] == 3 and not row["diverged"]
    assert row["final_val_accuracy"] == pytest.approx(0.8)
    assert runs.loc[diverged_id, "diverged"] and runs.loc[diverged_id, "diverged_epoch"] == 2
    dtypes = runs.dtypes
    assert dtypes["learning_rate"] == "float64" and dtypes["dropout"] == "float64"
    assert dtypes["seed"] == "Int64" and dtypes["epochs"] == "Int64" and dtypes["best_epoch"] == "Int64"
    assert dtypes["download"] == "boolean" and dtypes["diverged"] == "boolean"
    assert dtypes["best_val_accuracy"] == "float64" and dtypes["final_grad_norm/layer_01"] == "float64"
    assert str(dtypes["start_time"]).startswith("datetime64")


def test_sweep_parents_and_analysis_runs_are_told_apart(tracking_store):
    client = MlflowClient(tracking_store)
    parent = client.create_run(experiment_id(client, "study"), run_name="sweep").info.run_id
    child = log_run(client, "study", {"activation": "relu"}, history("relu"), tags={"mlflow.parentRunId": parent})
    other = log_run(client, "study", {"activation": "tanh"}, history("tanh"))
    analysis = client.create_run(experiment_id(client, "study"), run_name="analysis",
                                 tags={records.KIND_TAG: "analysis"})
    kinds = queries.load_runs("study", kinds=None).set_index("run_id")["kind"]
    assert kinds.to_dict() == {parent: "sweep", child: "training", other: "training", analysis.info.run_id: "analysis"}
    assert list(queries.load_runs("study")["run_id"].sort_values()) == sorted([child, other])
    assert list(queries.load_runs("study", parent_run_id=parent)["run_id"]) == [child]
    assert list(queries.load_runs("study", filter_string="params.activation = 'tanh'")["run_id"]) == [other]


def test_histories_come_from_history_csv_with_nan_kept(tracking_store):
    client = MlflowClient(tracking_store)
    table = history("relu", epochs=3)
    table[3]["train_loss"] = math.nan
    run_id = log_run(client, "study", {"activation": "relu"}, table)
    long = queries.load_histories(queries.load_runs("study"))
    assert long.attrs["fallback_runs"] == []
    assert list(long.columns) == ["run_id", "step", "key", "value"]
    assert long.dtypes.to_dict() == {"run_id": np.dtype(object), "step": np.dtype("int64"), "key": np.dtype(object),
                                     "value": np.dtype("float64")}
    loss = long[long["key"] == "train_loss"]
    assert list(loss["step"]) == [1, 2, 3] and loss["value"].iloc[:2].tolist() == [1.0, 0.5]
    assert math.isnan(loss["value"].iloc[2])
    probe = long[long["key"] == "probe_grad_max_abs/layer_02"]
    assert list(probe["step"]) == [0, 1, 2, 3]
    assert set(long["key"]) == {key for row in table.values() for key in row}
    assert set(long["run_id"]) == {run_id}


def test_runs_without_history_csv_fall_back_to_the_metric_history(tracking_store):
    client = MlflowClient(tracking_store)
    table = history("sigmoid", epochs=3)
    with_csv = log_run(client, "study", {"activation": "sigmoid"}, table)
    without = log_run(client, "study", {"activation": "sigmoid", "seed": 1}, table, with_history_csv=False)
    long = queries.load_histories(queries.load_runs("study"), keys=["val_accuracy", "grad_norm/*"])
    assert long.attrs["fallback_runs"] == [without]
    assert set(long["key"]) == {"val_accuracy", "grad_norm/layer_01", "grad_norm/layer_02", "grad_norm/layer_03"}
    fast = long[long["run_id"] == with_csv].drop(columns="run_id").reset_index(drop=True)
    slow = long[long["run_id"] == without].drop(columns="run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(fast, slow)


def test_a_real_run_reads_the_same_from_its_artifact_and_its_metrics(small_config, tracking_store):
    run_id, result = runlog.run_training(small_config)
    client = store.connect()
    # What the system-metrics monitor logs on its own clock once a run lasts past its first sample.
    client.log_metric(run_id, "system/cpu_utilization_percentage", 50.0, step=0)
    from_csv = queries.load_histories([run_id])
    columns = ["run_id", "step", "key", "value"]
    from_metrics = pd.DataFrame(queries.history_from_metrics(client, run_id, None), columns=columns)
    key_order = ["run_id", "key", "step"]
    from_metrics = from_metrics.sort_values(key_order).reset_index(drop=True).astype({"step": "int64"})
    pd.testing.assert_frame_equal(from_csv.sort_values(key_order).reset_index(drop=True), from_metrics,
                                  check_dtype=False)
    assert from_csv.loc[from_csv["key"] == "val_accuracy", "value"].tolist() == [
        result.history[epoch]["val_accuracy"] for epoch in (1, 2, 3)]


def test_unknown_experiment_names_the_known_ones(tracking_store):
    MlflowClient(tracking_store).create_experiment("fashion")
    with pytest.raises(store.StoreError, match="unknown experiment 'fashon'.*known: Default, fashion"):
        queries.load_runs("fashon")


def test_a_bad_filter_is_a_store_error():
    MlflowClient().create_experiment("study")
    with pytest.raises(store.StoreError, match="refused the query"):
        queries.load_runs("study", filter_string="params.activation ==== 'x'")


def test_the_analysis_run_holds_the_folder(tracking_store, tmp_path):
    client = MlflowClient(tracking_store)
    log_run(client, "study", {"activation": "relu"}, history("relu"))
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.md").write_text("# report\n")
    (folder / "figure.png").write_bytes(b"png")
    run_id = analyze.log_analysis_run("study", folder, {"experiment": "study"}, {"runs_analyzed": 1.0})
    run = client.get_run(run_id)
    assert run.info.run_name == "analysis" and run.info.status == "FINISHED"
    assert run.data.tags[records.KIND_TAG] == "analysis" and run.data.params["experiment"] == "study"
    assert run.info.experiment_id == client.get_experiment_by_name("study").experiment_id
    assert {item.path for item in client.list_artifacts(run_id)} == {"report.md", "figure.png"}


def test_under_mlflow_run_the_analysis_goes_to_its_run(tracking_store, tmp_path, monkeypatch):
    client = MlflowClient(tracking_store)
    launcher = client.create_run(experiment_id(client, "elsewhere")).info.run_id
    client.log_param(launcher, "experiment", "study")
    monkeypatch.setenv(store.RUN_ID_VARIABLE, launcher)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.md").write_text("# report\n")
    assert analyze.log_analysis_run("study", folder, {"experiment": "study"}, {}) == launcher
    run = client.get_run(launcher)
    assert run.info.status == "RUNNING"  # mlflow run ends it when the command exits
    assert run.data.tags[records.KIND_TAG] == "analysis"
    assert [item.path for item in client.list_artifacts(launcher)] == ["report.md"]


def test_a_run_with_many_metrics_gives_a_table_the_analysis_can_extend_without_warnings(tracking_store):
    """A 40-layer run logs hundreds of per-layer keys; the table's casts must not leave pandas warning
    "highly fragmented" at each column the analysis adds (as it did on the real mnist-depth study)."""
    import warnings

    client = MlflowClient(tracking_store)
    table = history("relu", epochs=2, best=0.8)
    for row in table.values():
        row.update({f"grad_norm/layer_{index:02d}": 0.1 for index in range(1, 160)})
    log_run(client, "deep", {"activation": "relu"}, table)
    runs = queries.load_runs("deep")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        for index in range(5):  # the analysis adds a few columns (order keys, groups, scores)
            runs = runs.assign(**{f"added_{index}": index})



def test_a_run_from_before_an_option_existed_reads_as_its_default():
    # Runs logged before input_scaling and train_examples existed trained on [-1, 1] inputs and the whole split.
    old = queries.typed_params({"activation": "relu", "seed": "1"})
    assert old["input_scaling"] == "symmetric" and old["train_examples"] == 0
    assert queries.typed_params({"activation": "relu", "input_scaling": "unit"})["input_scaling"] == "unit"
    assert "input_scaling" not in queries.typed_params({"optimizer": "sgd"})  # another tool's run stays without it
