"""One run in a real (temporary) MLflow store: params, metrics, tags, inputs, artifacts, statuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from actopt.core import member, run_end
from actopt.core.config import config_digest
from actopt.tracking import records, runlog, store


def only_run(client: MlflowClient, experiment: str = "tests"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_a_run_holds_params_metrics_tags_input_and_artifacts(small_config, tracking_store):
    run_id, result = runlog.run_training(small_config.replace(study="unit"))
    client = MlflowClient(tracking_store)
    run = only_run(client)
    assert run.info.run_id == run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "relu-adam-lr0.001-seed0"
    assert run.data.params == small_config.replace(study="unit").to_params()
    assert run.data.tags["best_epoch"] == str(result.best_epoch)
    assert run.data.tags["diverged"] == "false"
    assert run.data.tags["study"] == "unit" and run.data.tags["dataset"] == "mnist"
    assert [point.step for point in client.get_metric_history(run_id, "val_accuracy")] == [1, 2, 3]
    assert [point.step for point in client.get_metric_history(run_id, "probe_grad_max_abs/layer_01")] == [0, 1, 2, 3]
    assert run.data.metrics["test_accuracy"] == result.test_accuracy
    assert run.data.metrics["best_val_accuracy"] == result.best_val_accuracy
    assert [dataset.dataset.name for dataset in run.inputs.dataset_inputs] == ["mnist"]
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert {run_end.HISTORY_ARTIFACT, run_end.HISTOGRAM_ARTIFACT, "images"} <= artifacts
    with open(client.download_artifacts(run_id, run_end.HISTOGRAM_ARTIFACT)) as stream:
        histograms = json.load(stream)
    assert histograms["steps"] == [0, 1, 2, 3]
    images = [item.path for item in client.list_artifacts(run_id, "images") if item.path.endswith(".png")]
    assert len(images) == 4


def test_a_diverging_run_ends_finished_and_tagged(small_config, tracking_store):
    run_id, result = runlog.run_training(small_config.replace(optimizer="sgd", learning_rate=1e6, epochs=4))
    run = MlflowClient(tracking_store).get_run(run_id)
    assert result.diverged
    assert run.info.status == "FINISHED"
    assert run.data.tags["diverged"] == "true"
    assert run.data.tags["diverged_epoch"] == str(result.diverged_epoch)


def test_a_failing_run_ends_failed(small_config, tracking_store, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(runlog, "train_group", broken)
    with pytest.raises(RuntimeError):
        runlog.run_training(small_config)
    assert only_run(MlflowClient(tracking_store)).info.status == "FAILED"


def test_an_interrupted_run_ends_killed(small_config, tracking_store, monkeypatch):
    def interrupted(configs, datas, loggers, *args):
        loggers[0].log_metrics({"train_loss": 1.0}, step=1)
        raise KeyboardInterrupt

    monkeypatch.setattr(runlog, "train_group", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runlog.run_training(small_config)
    run = only_run(MlflowClient(tracking_store))
    assert run.info.status == "KILLED"
    assert run.data.metrics["train_loss"] == 1.0


def logged_models(client: MlflowClient, run_id: str) -> list:
    """The run's logged models, each checked to be where the UI looks: the run's own experiment (its Models
    page) and the run's outputs (its page's "Logged models")."""
    run = client.get_run(run_id)
    everywhere = [experiment.experiment_id for experiment in client.search_experiments()]
    models = mlflow.search_logged_models(everywhere, filter_string=f"source_run_id = '{run_id}'", output_format="list")
    assert {model.experiment_id for model in models} == {run.info.experiment_id}
    assert [output.model_id for output in run.outputs.model_outputs] == [model.model_id for model in models]
    assert all(model.status == LoggedModelStatus.READY for model in models)
    return models


def test_the_model_is_logged_with_a_signature(small_config, tracking_store):
    run_id, _ = runlog.run_training(small_config.replace(log_model=True, epochs=1))
    models = logged_models(MlflowClient(tracking_store), run_id)
    assert len(models) == 1
    loaded = mlflow.pytorch.load_model(models[0].model_uri)
    assert loaded(__import__("torch").zeros(2, 784)).shape == (2, 10)
    assert mlflow.models.get_model_info(models[0].model_uri).signature is not None


def test_params_already_logged_by_mlflow_run_are_kept(small_config, tracking_store, monkeypatch):
    """`mlflow run` logs the entry point's parameters in the user's spelling before we start."""
    client = MlflowClient(tracking_store)
    experiment = client.create_experiment("tests")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "learning_rate", "1e-3")
    monkeypatch.setenv(store.RUN_ID_VARIABLE, run.info.run_id)
    run_id, _ = runlog.run_training(small_config)
    assert run_id == run.info.run_id
    params = client.get_run(run_id).data.params
    assert params["learning_rate"] == "1e-3"
    assert params["activation"] == "relu"


@pytest.mark.slow
@pytest.mark.parametrize(("signal_number", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_training_ends_the_run_killed(data_dir, tracking_store, signal_number, exit_code):
    command = [sys.executable, "-m", "actopt", "train", "--dataset", "mnist", "--data-dir", str(data_dir),
               "--download", "false", "--epochs", "1000", "--hidden-sizes", "32", "--log-model", "false",
               "--experiment-name", "tests"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    client = MlflowClient(tracking_store)
    deadline = time.time() + 60
    while time.time() < deadline:
        experiment = client.get_experiment_by_name("tests")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and "val_accuracy" in runs[0].data.metrics:
            break
        time.sleep(0.3)
    process.send_signal(signal_number)
    _, error = process.communicate(timeout=60)
    assert process.returncode == exit_code, error
    run = only_run(client)
    assert run.info.status == "KILLED"
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) >= 1


def test_http_limits_follow_the_request_and_the_user_wins(monkeypatch):
    for name in [*store.HTTP_LIMITS["run"], store.APPLIED_LIMITS_VARIABLE]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own
    with store.http_limits("run"):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
        with store.http_limits("read"):  # actopt's own value gives way to the row in use
            assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
            with store.quick_http():
                assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
            assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # nothing outlasts the block


def test_a_limits_marker_without_its_values_does_not_leave_mlflow_at_its_defaults(monkeypatch):
    # MLflow's defaults retry a dead server for about four minutes; a stale marker once left a read there.
    for name in store.HTTP_LIMITS["run"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(store.APPLIED_LIMITS_VARIABLE, "run")
    with store.http_limits("read", replace=False):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_each_member_of_a_group_is_its_own_run_with_its_own_model(small_config, tracking_store):
    configs = [small_config.replace(epochs=1, log_model=True, seed=seed, learning_rate=rate)
               for seed, rate in ((0, 1e-3), (1, 1e-2))]
    outcomes = runlog.run_group(configs)
    client = MlflowClient(tracking_store)
    runs = [client.get_run(run_id) for run_id, _ in outcomes]
    assert len({run.info.run_id for run in runs}) == 2
    assert len({run.data.tags[records.GROUP_TAG] for run in runs}) == 1
    for run, config, (_, result) in zip(runs, configs, outcomes):
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"{config.run_name}-seed{config.seed}"
        assert run.data.params == config.to_params()
        assert run.data.tags[records.CONFIG_DIGEST_TAG] == config_digest(config)
        assert run.data.metrics["test_accuracy"] == result.test_accuracy
        models = logged_models(client, run.info.run_id)
        loaded = mlflow.pytorch.load_model(models[0].model_uri)
        assert isinstance(result.model, torch.nn.Sequential)  # what was handed to log_model
        inputs = torch.randn(5, 784)
        with torch.no_grad():
            torch.testing.assert_close(loaded(inputs), result.model.eval()(inputs))
    first, second = (run.data.metrics["best_val_accuracy"] for run in runs)
    assert first != second  # each run holds its own member's numbers


def test_a_group_that_fails_ends_every_unfinished_member_failed(small_config, tracking_store, monkeypatch):
    def broken(configs, datas, loggers, device, report, finished):
        finished(0, member.TrainResult())
        raise RuntimeError("out of memory")

    monkeypatch.setattr(runlog, "train_group", broken)
    configs = [small_config.replace(seed=seed) for seed in (0, 1, 2)]
    with pytest.raises(RuntimeError):
        runlog.run_group(configs)
    runs = MlflowClient(tracking_store).search_runs([mlflow.get_experiment_by_name("tests").experiment_id])
    assert sorted(run.info.status for run in runs) == ["FAILED", "FAILED", "FINISHED"]
