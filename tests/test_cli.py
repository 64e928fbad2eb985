"""The command line: a good run prints its summary; bad input is one line, non-zero, and creates no run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from actopt.cli import main

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_count(uri: str) -> int:
    client = MlflowClient(uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return len(client.search_runs(experiments)) if experiments else 0


def small_options(data_dir) -> list[str]:
    return ["--dataset", "mnist", "--data-dir", str(data_dir), "--download", "false", "--hidden-sizes", "16",
            "--epochs", "1", "--log-model", "false", "--experiment-name", "tests"]


def test_train_prints_a_summary_and_creates_one_run(data_dir, tracking_store):
    result = CliRunner().invoke(main, ["train", *small_options(data_dir), "--activation", "tanh"])
    assert result.exit_code == 0, result.output
    assert "(tanh-adam-lr0.001) finished: best epoch 1" in result.output
    assert run_count(tracking_store) == 1


def test_cuda_without_a_cuda_device_is_one_line_and_creates_no_run(data_dir, tracking_store):
    """The other rejected inputs are in docs/bad-input.md (tests/test_bad_input.py); this one depends on the machine."""
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(main, ["train", *small_options(data_dir), "--device", "cuda"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: device cuda requested but torch finds no CUDA device; use --device cpu or auto"]
    assert run_count(tracking_store) == 0


@pytest.mark.slow
def test_mlflow_run_end_to_end(data_dir, tracking_store):
    """`mlflow run . --env-manager local` with parameters: one FINISHED run holding them."""
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local",
               "--experiment-name", "tests", "-P", "dataset=mnist", "-P", f"data_dir={data_dir}",
               "-P", "download=false", "-P", "activation=tanh", "-P", "optimizer=sgd", "-P", "learning_rate=1e-1",
               "-P", "hidden_sizes=16", "-P", "epochs=2", "-P", "log_model=false"]
    # The MLproject command calls `python`: the one of this environment, as after `source .venv/bin/activate`.
    environment = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    client = MlflowClient(tracking_store)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["activation"] == "tanh" and run.data.params["learning_rate"] == "1e-1"
    assert run.data.params["gradient_statistics"] == "true"
    assert run.data.tags["mlflow.runName"] == "tanh-sgd-lr0.1"
    assert [point.step for point in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert "test_accuracy" in run.data.metrics
