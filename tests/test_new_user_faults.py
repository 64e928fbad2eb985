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
from actopt.core import run_end
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


@pytest.mark.parametrize(("text", "problem"), [
    ("", "history.csv is empty"),
    ("cut", "history.csv ends at step 2 of 4"),
    ("step,val_accuracy\nx,y\n",
     "history.csv cannot be read (ValueError: invalid literal for int() with base 10: 'x')"),
])
def test_a_history_csv_that_is_empty_cut_or_garbage_is_not_the_whole_history(client, text, problem):
    table = history("relu", epochs=4)
    run_id = log_run(client, "study", {"activation": "relu", "epochs": 4}, table, with_history_csv=False)
    cut = {step: row for step, row in table.items() if step <= 2}
    client.log_text(run_id, run_end.history_csv(cut) if text == "cut" else text, run_end.HISTORY_ARTIFACT)
    long = queries.load_histories(queries.load_runs("study"))
    assert sorted(long.loc[long["key"] == "val_accuracy", "step"]) == [1, 2, 3, 4]  # from the metric store
    assert long.attrs["history_problems"] == {run_id: f"{problem}; read from the metric store"}
    assert long.attrs["fallback_runs"] == [run_id]


def test_a_run_logged_by_another_tool_is_left_out_with_its_reason(client):
    from fake_runs import experiment_id

    other = client.create_run(experiment_id(client, "study"), run_name="elsewhere").info.run_id
    client.log_metric(other, "val_accuracy", 0.5, step=1)
    client.set_terminated(other, "FINISHED")
    message = one_line_error(["--experiment", "study", "--output-dir", "out"])
    assert message == "Error: experiment 'study' has no finished training runs (1 run: 1 FINISHED)"
    kept = log_run(client, "study", {"activation": "relu"}, history("relu"))
    runs, left_out = selected()
    assert list(runs["run_id"]) == [kept]
    [reason] = left_out.loc[left_out["run_id"] == other, "reason"]
    assert reason == "not logged by actopt train (no activation, optimizer, learning_rate, seed params)"


def test_a_corrupt_gradient_histogram_file_is_left_out_not_a_traceback(client):
    run_id = log_run(client, "study", {"activation": "relu"}, history("relu"))
    client.log_text(run_id, '{"counts": [[1, 2', run_end.HISTOGRAM_ARTIFACT)
    assert queries.load_gradient_histograms(queries.load_runs("study")) == {}


def test_experiment_names_map_to_folders_of_their_own(client, tmp_path):
    from actopt.analysis.analyze import safe_folder_name

    names = ["a/b", "a_b", "..", "x" * 300, "é" * 200, "plain-name_1.0"]
    folders = [safe_folder_name(name) for name in names]
    assert len(set(folders)) == len(names)
    assert folders[1] == "a_b" and folders[-1] == "plain-name_1.0"
    assert all(len(folder.encode()) <= 255 and folder not in ("", ".", "..") and "/" not in folder
               for folder in folders)
    long = "x" * 300
    log_run(client, long, {"activation": "relu"}, history("relu"))
    arguments = ["analyze", "--experiment", long, "--output-dir", str(tmp_path), "--log", "false"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert (tmp_path / safe_folder_name(long) / "report.md").is_file()


def test_a_disk_that_fills_while_figures_are_written_fails_the_command(client, tmp_path, monkeypatch):
    import matplotlib.figure

    log_run(client, "study", {"activation": "relu"}, history("relu"))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    message = one_line_error(["--experiment", "study", "--output-dir", str(tmp_path)])
    assert message.startswith(f"Error: cannot write the analysis to {tmp_path}/study: OSError: [Errno 28] No space")
    assert [run.info.run_name for run in client.search_runs([client.get_experiment_by_name("study").experiment_id])
            if run.info.run_name == "analysis"] == []


def test_a_huge_integer_from_a_study_file_is_shown_short():
    from actopt.core.config import TrainConfig
    from actopt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^epochs must be <= 2147483647, got 1e\+308$"):
        TrainConfig.from_mapping({"epochs": 1e308})
