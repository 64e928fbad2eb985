"""Sweeps on Ray: the options and the tracking-URI rule (fast), then real sweeps on a Ray cluster
started with `ray start --head` and on a local Ray instance, logging to an `mlflow server` on
PostgreSQL and to sqlite (slow)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from sweeping import FOUR, experiment_runs, invoke, split, sweep, without_announcement, write_study

from actopt.analysis import analyze
from actopt.core.config import config_digest
from actopt.errors import UserError
from actopt.sweeps.executors import InlineExecutor
from actopt.sweeps.ray_executor import worker_environment, worker_tracking_uri
from actopt.sweeps.study import configurations, load_study
from actopt.tracking import queries, records

REMOTE = "10.0.0.5:6379"


@pytest.mark.parametrize(
    ("uri", "address", "expected"),
    [
        ("sqlite:///mlflow.db", None, "sqlite:///{cwd}/mlflow.db"),
        ("sqlite:////srv/mlflow.db", "127.0.0.1:6379", "sqlite:////srv/mlflow.db"),
        ("sqlite:///runs/mlflow.db", "localhost:6379", "sqlite:///{cwd}/runs/mlflow.db"),
        ("mlruns", None, "{cwd}/mlruns"),
        ("file:mlruns", "local", "file://{cwd}/mlruns"),
        ("http://127.0.0.1:5000", None, "http://127.0.0.1:5000"),
        ("http://mlflow.internal:5000", REMOTE, "http://mlflow.internal:5000"),
        ("https://mlflow.example.org", "ray://head:10001", "https://mlflow.example.org"),
        ("postgresql://mlflow:secret@db.internal:5432/mlflow", "auto", "postgresql://mlflow:secret@db.internal:5432/mlflow"),
        ("databricks", REMOTE, "databricks"),
    ],
)
def test_workers_get_the_tracking_uri_with_absolute_paths(uri, address, expected):
    assert worker_tracking_uri(uri, address) == expected.format(cwd=os.getcwd())


@pytest.mark.parametrize(
    ("uri", "address", "reason"),
    [
        ("sqlite:///mlflow.db", REMOTE, "is a file on this machine"),
        ("sqlite:////srv/mlflow.db", REMOTE, "is a file on this machine"),
        ("/srv/mlruns", REMOTE, "is a file on this machine"),
        ("file:///srv/mlruns", "auto", "is a file on this machine"),
        ("http://127.0.0.1:5000", REMOTE, "reachable from this machine only"),
        ("http://localhost:5000", "ray://127.0.0.1:10001", "reachable from this machine only"),
        ("postgresql://mlflow@127.0.0.1/mlflow", REMOTE, "reachable from this machine only"),
        ("postgresql:///mlflow", REMOTE, "reachable from this machine only"),  # a unix socket
        ("sqlite://", None, "in-memory store"),
    ],
)
def test_a_store_that_workers_cannot_reach_is_refused(uri, address, reason):
    with pytest.raises(UserError, match=reason):
        worker_tracking_uri(uri, address)


def test_workers_get_the_mlflow_settings_but_not_the_drivers_run(monkeypatch):
    for name in [name for name in os.environ if name.startswith(("MLFLOW_TRACKING_", "MLFLOW_HTTP_REQUEST_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_RUN_ID", "0123")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql://mlflow:secret@db/mlflow")  # the server's, not ours
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not ours to pass")
    environment = worker_environment("http://mlflow.internal:5000")
    assert environment == {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000", "MLFLOW_TRACKING_USERNAME": "alice",
                           "MLFLOW_HTTP_REQUEST_TIMEOUT": "7"}


def assert_nothing_created() -> None:
    client = MlflowClient()
    assert [experiment.name for experiment in client.search_experiments()] == ["Default"]
    assert client.search_runs(["0"]) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--executor", "dask"], "Invalid value for '--executor': 'dask' is not one of 'process', 'ray'"),
        (["--ray-address", REMOTE], f"--ray-address {REMOTE} needs --executor ray"),
        (["--executor", "ray", "--workers", "2"], "--workers 2 is for --executor process"),
        (["--executor", "ray", "--ray-address", REMOTE],
         f"is a file on this machine, but Ray may run tasks on other machines of the cluster at {REMOTE}"),
    ],
)
def test_bad_ray_options_are_one_line_and_create_nothing(tmp_path, data_dir, arguments, message):
    result = invoke("sweep", str(write_study(tmp_path, FOUR)), "--data-dir", str(data_dir), *arguments)
    assert result.exit_code == (2 if "Invalid value" in message else 1)  # click's usage errors exit 2
    assert message in result.output
    assert len(without_announcement(result.output)) == 1
    assert_nothing_created()


def test_ray_address_from_the_environment_is_checked_too(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", REMOTE)
    result = invoke("sweep", str(write_study(tmp_path, FOUR)), "--data-dir", str(data_dir), "--executor", "ray")
    assert result.exit_code == 1 and "is a file on this machine" in result.output


def test_asking_for_ray_without_ray_says_how_to_install_it(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` finds where Ray is not installed
    result = invoke("sweep", str(write_study(tmp_path, FOUR)), "--data-dir", str(data_dir), "--executor", "ray")
    assert result.exit_code == 1
    assert without_announcement(result.output) == [
        "Error: --executor ray needs Ray, which is not installed: pip install 'actopt[ray]'"]
    assert_nothing_created()


# --- On a real Ray cluster -------------------------------------------------------------------------


@contextmanager
def one_thread():
    """Train in this process as a Ray task does (one CPU, one thread), so that results compare exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def executor(address=None, **options):
    from actopt.sweeps.ray_executor import RayExecutor

    return RayExecutor(address, **options)


def comparable(experiment: str):
    """What the analysis reads of an experiment, without what differs from store to store (ids, times)."""
    runs = queries.load_runs(experiment).sort_values(["run_name", "seed"]).reset_index(drop=True)
    histories = queries.load_histories(runs)
    histories = histories.merge(runs[["run_id", "run_name", "seed"]])
    histories = histories[~histories["key"].isin(["epoch_time", "group_epoch_time"])].drop(columns="run_id")
    histories = histories.sort_values(["run_name", "seed", "key", "step"]).reset_index(drop=True)
    columns = ["run_name", "seed", "status", "activation", "optimizer", "learning_rate", "best_epoch",
               "best_val_accuracy",
               "test_accuracy", "test_loss", "diverged", "final_train_loss", "final_val_accuracy"]
    return runs, runs[columns], histories


def findings(experiment: str, folder: Path) -> list[str]:
    """The analysis' findings, with the runs' ids (which each store makes its own) left out."""
    outcome = analyze.analyze_experiment(experiment, output_dir=folder, log=False)
    texts = [" | ".join([finding.topic, finding.statement, finding.numbers, *finding.runs])
             for finding in outcome.written.findings]
    return [re.sub(r" \([0-9a-f]{8}\)", "", text) for text in texts]


@pytest.mark.slow
def test_a_sweep_on_a_ray_cluster_through_postgresql_reads_as_from_sqlite(
        tmp_path, data_dir, ray_cluster, postgres_server, monkeypatch):
    path = write_study(tmp_path, FOUR, name="ray-postgres", seeds=(0, 1))
    with one_thread():
        _, _, local = sweep(path, data_dir)
    assert local.exit_code == 0
    sqlite_runs, sqlite_table, sqlite_histories = comparable("ray-postgres")
    sqlite_findings = findings("ray-postgres", tmp_path / "sqlite")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_server)
    _, configs, remote = sweep(path, os.path.relpath(data_dir), executor(ray_cluster))
    assert remote.exit_code == 0 and [row.status for row in remote.rows] == ["finished"] * 8
    server_runs, server_table, server_histories = comparable("ray-postgres")
    assert len(server_runs) == 8
    assert server_table.equals(sqlite_table)
    assert server_histories.equals(sqlite_histories)
    assert findings("ray-postgres", tmp_path / "server") == sqlite_findings
    # Trained in Ray's worker processes, from the data folder as an absolute path.
    children = split(experiment_runs("ray-postgres"))[1]
    assert str(os.getpid()) not in {run.data.tags[records.PID_TAG] for run in children}
    assert {run.data.params["data_dir"] for run in children} == {str(data_dir)}

    lines: list[str] = []
    _, _, again = sweep(path, data_dir, executor(ray_cluster), report=lines.append)
    assert again.parent_run_id == remote.parent_run_id and again.exit_code == 0
    assert "8 configurations, 8 finished before, 0 to run" in lines[0]
    assert len(experiment_runs("ray-postgres")) == 9


@pytest.mark.slow
def test_a_local_ray_instance_logs_to_a_relative_sqlite_path(tmp_path, data_dir, ray_module, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///relative.db")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # else a new instance writes a token into ~/.ray
    path = write_study(tmp_path, FOUR, name="local-ray")
    _, _, result = sweep(path, data_dir, executor(local_cpus=2))
    assert result.exit_code == 0
    assert not ray_module.is_initialized()  # the instance started for the sweep is gone
    children = split(experiment_runs("local-ray"))[1]
    assert len(children) == 4 and (tmp_path / "relative.db").is_file()
    assert str(os.getpid()) not in {run.data.tags[records.PID_TAG] for run in children}


def kill_attempts(experiment: str, digest: str, count: int, killed: list[str]) -> threading.Thread:
    """Kill the worker process of each RUNNING attempt of one configuration, ``count`` times, as a
    node failure would (SIGKILL: no handler runs, the run stays RUNNING)."""

    def watch() -> None:
        client = MlflowClient()
        deadline = time.time() + 300
        while len(killed) < count and time.time() < deadline:
            for run in experiment_runs(experiment):
                tags = run.data.tags
                if (run.info.status == "RUNNING" and tags.get(records.CONFIG_DIGEST_TAG) == digest
                        and run.info.run_id not in killed
                        and "train_loss" in client.get_run(run.info.run_id).data.metrics):
                    os.kill(int(tags[records.PID_TAG]), signal.SIGKILL)
                    killed.append(run.info.run_id)
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_worker_that_dies_is_retried_then_its_configuration_failed(tmp_path, data_dir, ray_cluster):
    path = write_study(tmp_path, {"activation": ["relu"]}, name="dying", epochs=3000, max_batches=0)
    victim = config_digest(configurations(load_study(str(path)))[0])
    killed: list[str] = []
    watcher = kill_attempts("dying", victim, 2, killed)
    lines: list[str] = []
    _, _, result = sweep(path, data_dir, executor(ray_cluster, max_retries=1), report=lines.append)
    watcher.join()
    assert len(killed) == 2  # the first attempt and its one retry
    assert [row.status for row in result.rows] == ["failed"] and result.exit_code == 1
    client = MlflowClient()
    for run_id in killed:
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and "Ray worker died" in run.data.tags[records.ERROR_TAG]
    assert any("failed" in line and "its Ray worker died on each of 2 attempts" in line for line in lines)
    assert "RUNNING" not in {run.info.status for run in experiment_runs("dying")}


@pytest.mark.slow
# SIGTERM (what a scheduler sends): the sweep's driver maps SIGINT and SIGTERM to one stop path, and
# tests/test_sweep.py stops a local sweep with each.
@pytest.mark.parametrize(("signal_number", "code"), [(signal.SIGTERM, 143)])
def test_a_signal_cancels_the_ray_tasks_and_their_runs_end_killed(tmp_path, data_dir, ray_cluster, signal_number, code):
    path = write_study(tmp_path, {"activation": ["relu", "tanh", "sigmoid"]}, name="stopped", epochs=3000,
                       max_batches=0)
    command = [sys.executable, "-m", "actopt", "sweep", str(path), "--data-dir", str(data_dir), "--executor", "ray",
               "--ray-address", ray_cluster]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while sum(run.info.status == "RUNNING" for run in split(experiment_runs("stopped"))[1]) < 2:
            assert time.time() < deadline and driver.poll() is None, \
                driver.stderr.read() if driver.poll() else "timeout"
            time.sleep(0.2)
        driver.send_signal(signal_number)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == code, stderr
    assert "runs in flight ended KILLED" in stderr
    parents, children = split(experiment_runs("stopped"))
    assert sorted(run.info.status for run in children) == ["KILLED", "KILLED"]  # the third never started
    assert not [run for run in children if records.ERROR_TAG in run.data.tags]  # ended by their tasks, not the driver
    assert parents[0].info.status == "KILLED" and parents[0].data.metrics["children_not_run"] == 1
    assert stdout.count("killed") == 2 and stdout.count("not run") == 1


# Two activations at two learning rates each: one comparison, each side at its chosen rate (as tests/test_adaptive.py).
ADAPTIVE_GRID = {"activation": ["relu", "tanh"], "optimizer": {"sgd": {"learning_rate": [0.05, 0.5]}}}


def until_decided(path: Path, data_dir, engine, max_seeds: int = 4):
    from actopt.analysis.adaptive import Budget, configuration_key, sweep_until_decided
    from actopt.sweeps.sweep import ensure_datasets

    lines: list[str] = []
    study = load_study(str(path))
    configs = configurations(study, data_dir=str(data_dir))
    ensure_datasets(configs)
    result = sweep_until_decided(study, configs, engine, Budget(max_seeds), report=lines.append)
    # Each look's planned seeds by what the configuration is (its key also holds the experiment's name).
    labels = {configuration_key(config): (config.activation, config.learning_rate) for config in configs}
    plans = [{labels[key]: count for key, count in look.next_counts.items()} for look in result.looks]
    return result, plans, lines


@pytest.mark.slow
def test_until_decided_on_a_ray_cluster_looks_as_it_does_in_one_process(tmp_path, data_dir, ray_cluster):
    local_path = write_study(tmp_path, ADAPTIVE_GRID, name="adaptive-local", seeds=(0, 1), epochs=1, max_batches=2)
    ray_path = write_study(tmp_path, ADAPTIVE_GRID, name="adaptive-ray", seeds=(0, 1), epochs=1, max_batches=2)
    with one_thread():
        local, local_plans, _ = until_decided(local_path, data_dir, InlineExecutor())
    remote, remote_plans, lines = until_decided(ray_path, data_dir, executor(ray_cluster))
    assert local.exit_code == 0 and remote.exit_code == 0
    # The same looks: the same seeds planned at each, the same decisions, the same reason to stop.
    assert remote_plans == local_plans
    assert len(remote.looks) >= 2 and sum(remote.looks[0].next_counts.values()) > 8  # seeds were added on Ray
    assert remote.stopped == local.stopped
    assert any(line.startswith("look 1") for line in lines)
    children = split(experiment_runs("adaptive-ray"))[1]
    finished = [run for run in children if run.info.status == "FINISHED"]
    pairs = [(run.data.tags[records.CONFIG_DIGEST_TAG], run.data.params["seed"]) for run in finished]
    local_finished = [run for run in split(experiment_runs("adaptive-local"))[1] if run.info.status == "FINISHED"]
    assert len(pairs) == len(set(pairs)) == len(local_finished)  # the same runs, none trained twice
    assert str(os.getpid()) not in {run.data.tags[records.PID_TAG] for run in children}  # trained by Ray's workers
