"""Faults a new user met in the analysis (issue 27): runs counted twice as seeds, runs on different data pooled,
histories cut short, and output paths and inputs that raised tracebacks."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fake_runs import history, log_run
from mlflow.entities import Dataset, DatasetInput
from mlflow.tracking import MlflowClient

from actopt.analysis import frames, tables
from actopt.cli import main
from actopt.tracking import queries


@pytest.fixture
def client(tracking_store) -> MlflowClient:
    return MlflowClient(tracking_store)


def log_digest(client: MlflowClient, run_id: str, digest: str) -> None:
    dataset = Dataset(name="mnist", digest=digest, source_type="local", source="{}")
    client.log_inputs(run_id, datasets=[DatasetInput(dataset)])


def selected(experiment: str = "study", filter_string: str | None = None):
    return frames.select_runs(queries.load_runs(experiment, filter_string=filter_string, kinds=None), experiment)


def one_line_error(arguments: list[str]) -> str:
    result = CliRunner().invoke(main, ["analyze", *arguments])
    assert result.exit_code != 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return lines[0]


def test_a_configuration_trained_twice_counts_each_seed_once(client):
    first = log_run(client, "study", {"activation": "relu", "seed": 0}, history("relu", best=0.80))
    again = log_run(client, "study", {"activation": "relu", "seed": 0}, history("relu", best=0.90))
    log_run(client, "study", {"activation": "relu", "seed": 1}, history("relu", best=0.82))
    runs, left_out = selected()
    assert len(runs) == 2 and first in set(runs["run_id"]) and again not in set(runs["run_id"])
    [reason] = left_out.loc[left_out["run_id"] == again, "reason"]
    assert reason == f"a second run of the same configuration and seed 0 (run {first[:8]} is kept)"
    best = tables.best_learning_rates(runs).iloc[0]
    assert best["seeds"] == 2 and best["mean"] == pytest.approx(0.81)


def test_runs_on_different_data_are_not_pooled(client):
    for seed, digest in ((0, "aaaa"), (1, "bbbb")):
        log_digest(client, log_run(client, "study", {"activation": "relu", "seed": seed}, history("relu")), digest)
    message = one_line_error(["--experiment", "study", "--output-dir", "out"])
    assert "mixes runs of several data digests (aaaa: 1 run, bbbb: 1 run)" in message
    assert "--filter \"datasets.digest = 'aaaa'\"" in message
    runs, _ = selected(filter_string="datasets.digest = 'aaaa'")
    assert list(runs["seed"]) == [0]
