"""Faults: processes killed outright, a tracking server that stops, a store that is full, artifacts that
cannot be written, many workers on one store. Nothing logged is lost, nothing is left hanging."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from commands import runs_of
from mlflow.tracking import MlflowClient
from sweeping import experiment_runs, finished_per_digest, split, write_study

from actopt.cli import main
from actopt.core.config import config_digest
from actopt.sweeps.study import configurations, load_study
from actopt.tracking import records
from actopt.tracking.queries import SUMMARY_METRICS

# Long enough to be caught in the middle (each epoch logs once), short enough to run again in seconds.
LONG = {"epochs": 40, "max_batches": 0, "hidden_sizes": [64]}
THREE = {"activation": ["relu", "tanh", "sigmoid"]}


def sweep_command(path: Path, data_dir: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "actopt", "sweep", str(path), "--data-dir", str(data_dir), "--workers", str(workers)]


def train_command(data_dir: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "actopt", "train", "--dataset", "mnist", "--data-dir", str(data_dir), "--download",
            "false", "--hidden-sizes", "64", "--epochs", str(epochs), "--gradient-statistics", "false",
            "--log-model", "false", "--experiment-name", "tiny"]


@contextlib.contextmanager
def started(command: list[str], folder: Path):
    """The command in its own process group, its output in files (a pipe nobody reads can fill up)."""
    with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def output(folder: Path) -> tuple[str, str]:
    return (folder / "stdout.txt").read_text(), (folder / "stderr.txt").read_text()


def wait_for_training(uri: str, count: int, timeout: float = 120) -> list:
    """The training runs once ``count`` of them are RUNNING with at least one epoch logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [run for run in runs_of(uri) if run.info.status == "RUNNING" and "val_accuracy" in run.data.metrics]
        if len(busy) >= count:
            return busy
        time.sleep(0.1)
    raise AssertionError(f"{count} runs never trained at once")


def points_per_key(client: MlflowClient, run) -> dict[str, int]:
    """Points of every metric the run's training logged; MLflow's own system metrics (system/...) are
    sampled by a monitor thread on a timer, not per step, and history.csv does not hold them."""
    return {key: len(client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics
            if not key.startswith("system/")}


def logged_points(client: MlflowClient, run_id: str) -> int:
    """How many values the run logged per step, from its own table of them (history.csv)."""
    with tempfile.TemporaryDirectory() as folder:
        text = Path(client.download_artifacts(run_id, "history.csv", folder)).read_text()
    return sum(value != "" for row in csv.DictReader(io.StringIO(text)) for key, value in row.items() if key != "step")


def assert_every_point_stored(client: MlflowClient, children: list, epochs: int) -> None:
    for run in children:
        assert run.info.status == "FINISHED", run.info.run_name
        counts = points_per_key(client, run)
        assert sum(counts.values()) == logged_points(client, run.info.run_id) + len(SUMMARY_METRICS)
        assert counts["train_loss"] == counts["val_accuracy"] == epochs
        assert all(counts[key] == 1 for key in SUMMARY_METRICS)


# --- a process killed outright ---------------------------------------------------------------------------


@pytest.mark.slow
# Two workers: the driver and its worker processes die together; finding and failing their RUNNING runs is
# the same code whether the driver trained them itself or its workers did.
@pytest.mark.parametrize("workers", [2])
def test_sigkill_leaves_runs_running_and_the_next_sweep_fails_them_and_runs_again(tmp_path, data_dir, tracking_store,
                                                                                 workers):
    path = write_study(tmp_path, THREE, **LONG)
    with started(sweep_command(path, data_dir, workers), tmp_path) as driver:
        caught = wait_for_training(tracking_store, workers)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers: no handler runs
        driver.wait(timeout=30)
    client = MlflowClient(tracking_store)
    # MLflow cannot know: the runs stay RUNNING, with what they logged so far.
    assert split(experiment_runs())[0][0].info.status == "RUNNING"
    for run in caught:
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) >= 1

    resumed = subprocess.run(sweep_command(path, data_dir, workers), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for run in caught:
        after = client.get_run(run.info.run_id)
        assert after.info.status == "FAILED"
        owner = run.data.tags[records.PID_TAG]
        assert after.data.tags[records.ERROR_TAG].startswith(f"left RUNNING by process {owner}")
        assert f"run {run.info.run_id} ({run.info.run_name}) left RUNNING" in resumed.stderr
    parents, children = split(experiment_runs())
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    configs = configurations(load_study(str(path)))
    assert finished_per_digest(children) == {config_digest(config): 1 for config in configs}
    assert "RUNNING" not in {run.info.status for run in children}


@pytest.mark.slow
def test_sigkill_during_train_and_the_next_train_of_that_configuration_fails_the_run(tmp_path, data_dir,
                                                                                    tracking_store):
    command = train_command(data_dir, epochs=LONG["epochs"])
    with started(command, tmp_path) as process:
        [caught] = wait_for_training(tracking_store, 1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    client = MlflowClient(tracking_store)
    assert client.get_run(caught.info.run_id).info.status == "RUNNING"
    # Another configuration leaves it alone; the same one marks it FAILED, then trains.
    other = subprocess.run(train_command(data_dir, epochs=1), capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert client.get_run(caught.info.run_id).info.status == "RUNNING"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    failed = client.get_run(caught.info.run_id)
    assert failed.info.status == "FAILED" and "no longer runs it" in failed.data.tags[records.ERROR_TAG]
    assert f"run {caught.info.run_id} (relu-adam-lr0.001-seed0) left RUNNING" in again.stderr
    statuses = sorted(run.info.status for run in runs_of(tracking_store))
    assert statuses == ["FAILED", "FINISHED", "FINISHED"]


# --- the tracking server stops ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_server_restart_within_the_retry_window_loses_no_metric_point(tmp_path, data_dir, restartable_server,
                                                                        monkeypatch):
    uri = restartable_server.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    epochs = 8
    path = write_study(tmp_path, THREE, hidden_sizes=[32, 16], epochs=epochs, max_batches=0, gradient_statistics=True)
    with started(sweep_command(path, data_dir, 2), tmp_path) as driver:
        wait_for_training(uri, 2)
        stopped = time.monotonic()
        restartable_server.stop()
        restartable_server.start()  # same port, same database, same artifacts
        outage = time.monotonic() - stopped
        assert driver.poll() is None, output(tmp_path)  # still waiting on the server: the outage hit the sweep
        code = driver.wait(timeout=300)
    assert code == 0, f"server down {outage:.1f} s; {output(tmp_path)[1][-3000:]}"
    client = MlflowClient(uri)
    parents, children = split(runs_of(uri))
    assert len(children) == 3 and parents[0].info.status == "FINISHED"  # no attempt failed, none doubled
    assert_every_point_stored(client, children, epochs)


@pytest.mark.slow
def test_a_server_that_stays_down_stops_the_sweep_with_one_line_and_the_next_sweep_continues(
    tmp_path, data_dir, restartable_server, monkeypatch
):
    uri = restartable_server.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = write_study(tmp_path, THREE, **LONG)
    with started(sweep_command(path, data_dir, 2), tmp_path) as driver:
        caught = wait_for_training(uri, 2)
        restartable_server.stop()
        stopped = time.monotonic()
        code = driver.wait(timeout=300)
        seconds = time.monotonic() - stopped
    stdout, stderr = output(tmp_path)
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        f"Error: no answer from the tracking server {uri} after 5 retries over 30 s, each try waiting up to 30 s "
        "for an answer: is it running and reachable? "
        "(MLFLOW_TRACKING_URI chooses the store); the sweep stopped: start it again once the server is back, "
        "and it continues")
    assert "Traceback" not in stderr
    assert seconds < 120, f"{seconds:.0f} s to the error"
    print(f"sweep: {seconds:.1f} s from the server's stop to the error")

    # The analysis says so at once.
    started_analysis = time.monotonic()
    analysis = CliRunner().invoke(main, ["analyze", "--experiment", "tiny", "--output-dir", str(tmp_path / "report")])
    assert analysis.exit_code == 1
    assert analysis.output.strip().splitlines() == [
        f"Error: cannot read the tracking store {uri}: no answer from the server (is it running and reachable? "
        "MLFLOW_TRACKING_URI chooses the store)"]
    assert time.monotonic() - started_analysis < 30

    # Back up, the same sweep fails what the dead workers left RUNNING and finishes the study.
    restartable_server.start()
    client = MlflowClient(uri)
    assert {client.get_run(run.info.run_id).info.status for run in caught} == {"RUNNING"}
    resumed = subprocess.run(sweep_command(path, data_dir, 1), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert {client.get_run(run.info.run_id).info.status for run in caught} == {"FAILED"}
    parents, children = split(runs_of(uri))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    configs = configurations(load_study(str(path)))
    assert finished_per_digest(children) == {config_digest(config): 1 for config in configs}


@pytest.mark.slow
def test_a_server_that_stays_down_ends_train_with_one_line(tmp_path, data_dir, restartable_server, monkeypatch):
    uri = restartable_server.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with started(train_command(data_dir, epochs=1000), tmp_path) as process:
        wait_for_training(uri, 1)
        restartable_server.stop()
        stopped = time.monotonic()
        code = process.wait(timeout=300)
        seconds = time.monotonic() - stopped
    stdout, stderr = output(tmp_path)
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        f"Error: no answer from the tracking server {uri} after 5 retries over 30 s, each try waiting up to 30 s "
        "for an answer: is it running and reachable? "
        "(MLFLOW_TRACKING_URI chooses the store)")
    assert "Traceback" not in stderr
    assert seconds < 120, f"{seconds:.0f} s to the error"
    print(f"train: {seconds:.1f} s from the server's stop to the error")


# --- many workers on one store -----------------------------------------------------------------------------


@pytest.mark.slow
# Four workers on one store (sqlite's file lock, the server's connection pool) include what two would show.
@pytest.mark.parametrize(("workers", "store"), [(4, "sqlite"), (4, "server")])
def test_workers_on_one_store_lose_no_metric_point(tmp_path, data_dir, tracking_store, request, workers, store,
                                                   monkeypatch):
    uri = tracking_store if store == "sqlite" else request.getfixturevalue("mlflow_server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    experiment = f"workers-{tmp_path.name}"  # the session's server is shared
    grid = {"activation": ["relu", "tanh", "sigmoid", "gelu"], "optimizer": {"sgd": {"learning_rate": [0.1]},
                                                                           "adam": {"learning_rate": [0.001]}}}
    epochs = 3
    path = write_study(tmp_path, grid, hidden_sizes=[32, 16], epochs=epochs, max_batches=0, gradient_statistics=True)
    completed = subprocess.run([*sweep_command(path, data_dir, workers), "--experiment-name", experiment],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "database is locked" not in completed.stdout + completed.stderr
    client = MlflowClient(uri)
    children = split(runs_of(uri, experiment))[1]
    assert len(children) == 8
    assert len({run.data.tags[records.PID_TAG] for run in children}) == workers  # each worker trained
    assert_every_point_stored(client, children, epochs)


# --- a store that is full, artifacts that cannot be written ------------------------------------------------


def sqlite_pages(uri: str) -> int:
    with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as connection:
        return connection.execute("pragma page_count").fetchone()[0]


@pytest.fixture
def full_store(tracking_store):
    """The store grows by a few pages, then is full: sqlite's own "database or disk is full"."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    limit = sqlite_pages(tracking_store) + 6  # room for the experiment and the run, not for 30 epochs

    def cap(connection, record) -> None:
        connection.execute(f"pragma max_page_count = {limit}")

    event.listen(Engine, "connect", cap)
    yield tracking_store
    event.remove(Engine, "connect", cap)


def small_train(data_dir: Path, epochs: int = 2) -> list[str]:
    return ["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--download", "false", "--hidden-sizes", "16",
            "--epochs", str(epochs), "--max-batches", "2", "--log-model", "false", "--experiment-name", "tiny"]


def test_a_full_store_ends_the_run_failed_with_one_line(data_dir, full_store):
    result = CliRunner().invoke(main, small_train(data_dir, epochs=30))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: the tracking store {full_store} failed: OperationalError: database or disk is full")
    [run] = runs_of(full_store)
    assert run.info.status == "FAILED"


def test_an_unwritable_artifact_location_ends_the_run_failed_with_one_line(data_dir, tracking_store, tmp_path):
    (tmp_path / "mlruns").write_text("")  # where the artifacts should go (a folder) is a file
    result = CliRunner().invoke(main, small_train(data_dir))
    assert result.exit_code == 1
    [run] = runs_of(tracking_store)
    assert run.info.status == "FAILED"
    assert result.output.strip().splitlines()[-1] == (  # after MLflow's note that it created the experiment
        "Error: cannot write the run's artifacts: NotADirectoryError: [Errno 20] Not a directory: "
        f"'{tmp_path / 'mlruns' / run.info.experiment_id}'")


def test_mlflow_is_required_at_a_version_without_the_default_admin_password():
    """CVE-2026-2635: MLflow's basic authentication shipped a default admin password before 3.16.1."""
    from importlib.metadata import version

    from packaging.version import Version

    requirements = (Path(__file__).resolve().parents[1] / "setup.cfg").read_text()
    assert "    mlflow>=3.16.1\n" in requirements
    assert Version(version("mlflow")) >= Version("3.16.1")
