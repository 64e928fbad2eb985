"""A tiny `actopt train` command line, and the runs an experiment of a given store holds, for the fault tests."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient


def small_train(data_dir: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--download", "false", "--hidden-sizes", "16",
            "--epochs", "2", "--max-batches", "2", "--log-model", "false", "--experiment-name", "tiny", *extra]


def runs_of(uri: str, experiment: str = "tiny") -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []
