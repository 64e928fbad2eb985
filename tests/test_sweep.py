"""Sweeps against a real sqlite store: parent and child runs, resume, isolation, divergence, signals, workers."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sweeping import FOUR, experiment_runs, finished_per_digest, invoke, split, sweep, write_study

from actopt.cli import main as cli_main
from actopt.core.config import config_digest
from actopt.errors import UserError
from actopt.sweeps.study import configurations, label, load_study
from actopt.sweeps.summary import OWN_TIME_NOTE, format_seconds, parent_record, summarize, summary_table
from actopt.tracking import records, signals, store
from actopt.tracking.records import is_stale

PROJECT_ROOT = Path(__file__).resolve().parents[1]
def record(digest, status, start, diverged=False, accuracy=None, pid=None, host=None):
    return records.SweepRun(run_id=f"{digest}-{start}", run_name=digest, status=status, start_time=start,
                             end_time=None, digest=digest, host=host, pid=pid, diverged=diverged,
                             best_val_accuracy=accuracy)


def test_status_rules_and_the_best_child(tmp_path):
    study = load_study(str(write_study(tmp_path, {"learning_rate": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})))
    configs = configurations(study)
    a, b, c, d, e, f = (config_digest(config) for config in configs)
    children = [
        record(a, "FAILED", 1), record(a, "FINISHED", 2, accuracy=0.5), record(a, "FAILED", 3),  # finished wins
        record(b, "FINISHED", 1, diverged=True, accuracy=0.9),  # diverged: done, never the best
        record(c, "KILLED", 1), record(c, "FAILED", 2),  # the latest attempt speaks
        record(d, "FAILED", 1), record(d, "KILLED", 2),
        record(e, "RUNNING", 1),
    ]
    rows = summarize(configs, children)
    assert [row.status for row in rows] == ["finished", "diverged", "failed", "killed", "running", "not run"]
    metrics, tags = parent_record(rows)
    assert metrics == {"children_total": 6, "children_finished": 1, "children_diverged": 1, "children_failed": 1,
                       "children_killed": 1, "children_running": 1, "children_not_run": 1, "best_val_accuracy": 0.5}
    assert tags["best_run_id"] == f"{a}-2"
    host = socket.gethostname()
    assert is_stale(record(a, "RUNNING", 1, pid=dead_pid(), host=host))
    assert is_stale(record(a, "RUNNING", 1, pid=os.getpid(), host=host))  # this process is between runs
    assert not is_stale(record(a, "RUNNING", 1, pid=os.getppid(), host=host))
    assert not is_stale(record(a, "RUNNING", 1, pid=dead_pid(), host="another-host"))
    assert not is_stale(record(a, "FINISHED", 1, pid=dead_pid(), host=host))


def test_one_parent_and_one_child_per_configuration(tmp_path, data_dir):
    study, configs, result = sweep(write_study(tmp_path, FOUR, seeds=(0, 1)), data_dir)
    assert result.exit_code == 0
    parents, children = split(experiment_runs("tiny"))
    assert len(parents) == 1 and len(children) == 8 == len(configs)
    parent = parents[0]
    assert parent.info.run_id == result.parent_run_id and parent.info.status == "FINISHED"
    assert parent.data.tags["study"] == "tiny"
    assert parent.data.tags[records.STUDY_DIGEST_TAG] == study.digest
    assert parent.data.tags[records.QUICK_TAG] == "false"
    assert parent.data.tags[records.KIND_TAG] == "sweep"
    expected = {config_digest(config): config for config in configs}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags[records.PARENT_RUN_TAG] == parent.info.run_id
        assert child.data.tags["study"] == "tiny"
        assert child.data.tags[records.PID_TAG] == str(os.getpid())
        config = expected.pop(child.data.tags[records.CONFIG_DIGEST_TAG])
        assert child.data.params == config.to_params()
        assert child.data.params["data_dir"] == str(data_dir)
    assert expected == {}  # every configuration, once
    metrics = parent.data.metrics
    assert (metrics["children_total"], metrics["children_finished"], metrics["children_failed"],
            metrics["children_diverged"]) == (8, 8, 0, 0)
    best = max(children, key=lambda run: run.data.metrics["best_val_accuracy"])
    assert metrics["best_val_accuracy"] == best.data.metrics["best_val_accuracy"]
    assert parent.data.tags["best_run_id"] in {run.info.run_id for run in children
                                               if run.data.metrics["best_val_accuracy"] == metrics["best_val_accuracy"]}
    table = list(csv.DictReader(io.StringIO(mlflow.artifacts.load_text(
        f"runs:/{parent.info.run_id}/{records.SUMMARY_ARTIFACT}"))))
    assert [row["status"] for row in table] == ["finished"] * 8
    study = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/{records.STUDY_ARTIFACT}")
    assert json.loads(study)["grid"] == FOUR


def test_resume_skips_finished_configurations(tmp_path, data_dir):
    path = write_study(tmp_path, FOUR)
    _, _, first = sweep(path, data_dir)
    before = experiment_runs()
    lines: list[str] = []
    _, _, second = sweep(path, data_dir, report=lines.append)
    after = experiment_runs()
    assert len(before) == len(after) == 5
    assert second.parent_run_id == first.parent_run_id and second.exit_code == 0
    assert "4 configurations, 4 finished before, 0 to run" in lines[0]
    # Prose is not part of the study's digest; the grid is.
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "description": "Reworded.", "//": "a comment"}))
    assert sweep(path, data_dir)[2].parent_run_id == first.parent_run_id
    path.write_text(json.dumps({**document, "grid": {**FOUR, "activation": ["relu"]}}))
    assert sweep(path, data_dir)[2].parent_run_id != first.parent_run_id
    assert len(split(experiment_runs())[0]) == 2


def test_a_failing_configuration_does_not_stop_the_others_and_runs_again(tmp_path, data_dir):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    images = data / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    intact = images.read_bytes()
    # Whole, so the sweep's check of the files passes (a truncated file is refused before any run); labels
    # outside 0..9, which only reading the values finds, so these runs fail.
    images.write_bytes(intact[:8] + b"\xff" * (len(intact) - 8))
    path = write_study(tmp_path, {"dataset": ["fashion-mnist", "mnist"], "activation": ["relu", "tanh"]})
    lines: list[str] = []
    _, configs, result = sweep(path, data, report=lines.append)
    assert result.exit_code == 1
    assert sorted((row.config.dataset, row.status) for row in result.rows) == [
        ("fashion-mnist", "failed"), ("fashion-mnist", "failed"), ("mnist", "finished"), ("mnist", "finished")]
    parents, children = split(experiment_runs())
    assert parents[0].info.status == "FAILED"
    assert (parents[0].data.metrics["children_failed"], parents[0].data.metrics["children_finished"]) == (2, 2)
    failed = [run for run in children if run.info.status == "FAILED"]
    assert len(failed) == 2 and len(children) == 4
    for run in failed:
        assert run.data.tags[records.ERROR_TAG].startswith("DataError: fashion-mnist: train labels in")
        assert run.data.params["dataset"] == "fashion-mnist"
        assert "DataError" in mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{records.ERROR_ARTIFACT}")
    assert sum("failed" in line and "DataError" in line for line in lines) == 2

    images.write_bytes(intact)
    _, _, resumed = sweep(path, data)
    assert resumed.exit_code == 0 and resumed.parent_run_id == result.parent_run_id
    parents, children = split(experiment_runs())
    assert len(children) == 6  # the two failed configurations ran again; the finished ones did not
    assert finished_per_digest(children) == {config_digest(config): 1 for config in configs}
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["children_failed"] == 0


def test_a_diverging_configuration_finishes_tagged_and_is_never_the_best(tmp_path, data_dir):
    grid = {"learning_rate": [0.1, 1e6]}
    path = write_study(tmp_path, grid, hidden_sizes=[32, 16], optimizer="sgd", max_batches=0)
    _, _, result = sweep(path, data_dir)
    assert result.exit_code == 0
    assert sorted(row.status for row in result.rows) == ["diverged", "finished"]
    parents, children = split(experiment_runs())
    diverged = [run for run in children if run.data.params["learning_rate"] == "1000000.0"][0]
    assert diverged.info.status == "FINISHED"
    assert diverged.data.tags["diverged"] == "true" and "diverged_epoch" in diverged.data.tags
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert (parent.data.metrics["children_diverged"], parent.data.metrics["children_finished"]) == (1, 1)
    assert parent.data.tags["best_run_id"] != diverged.info.run_id


def test_the_end_table_shows_each_group_members_own_time(tmp_path, data_dir):
    """One group of two: the diverging member stops after epoch 1, the other trains on alone, so their own times
    differ; each row's time is its run's summed epoch_time in the store, as its finished line printed it."""
    path = write_study(tmp_path, {"learning_rate": [0.1, 1e6]}, hidden_sizes=[32, 16], optimizer="sgd", max_batches=0)
    lines: list[str] = []
    _, configs, result = sweep(path, data_dir, report=lines.append)
    _, children = split(experiment_runs())
    assert len({run.data.tags[records.GROUP_TAG] for run in children}) == 1  # trained as one group
    client = mlflow.tracking.MlflowClient(store.tracking_uri())
    own = {}
    for run in children:
        epochs = client.get_metric_history(run.info.run_id, "epoch_time")
        own[run.info.run_id] = sum(point.value for point in epochs)
        assert run.data.metrics["train_seconds"] == pytest.approx(own[run.info.run_id])
    assert len(set(own.values())) == 2  # the members' own times differ
    table = summary_table(result.rows).splitlines()
    for row in result.rows:
        [printed] = [line for line in table if row.run.run_id in line]
        assert printed.split()[2] == format_seconds(own[row.run.run_id])
        [finished] = [line for line in lines if line.startswith("[") and f"  {label(row.config)}  " in line]
        assert finished.split()[4] == format_seconds(own[row.run.run_id])  # [n/2] status val 0.85 TIME ...


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_runs_left_running_by_a_dead_process_fail_and_run_again(tmp_path, data_dir):
    path = write_study(tmp_path, FOUR)
    _, configs, first = sweep(path, data_dir)
    client = MlflowClient()
    parents, children = split(experiment_runs())
    orphan, watched = children[0], children[1]
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # As a killed worker leaves them: one owner gone, one owner still alive on this host.
        for run, pid in ((orphan, dead_pid()), (watched, sleeper.pid)):
            client.update_run(run.info.run_id, status="RUNNING")
            client.set_tag(run.info.run_id, records.PID_TAG, str(pid))
        lines: list[str] = []
        _, _, second = sweep(path, data_dir, report=lines.append)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert "no longer runs it" in client.get_run(orphan.info.run_id).data.tags[records.ERROR_TAG]
    assert client.get_run(watched.info.run_id).info.status == "RUNNING"  # its owner lives: not touched
    statuses = {row.digest: row.status for row in second.rows}
    assert statuses[orphan.data.tags[records.CONFIG_DIGEST_TAG]] == "finished"  # ran again
    assert statuses[watched.data.tags[records.CONFIG_DIGEST_TAG]] == "running"
    assert second.exit_code == 1
    assert len(split(experiment_runs())[1]) == 5
    assert "which no longer runs it: marked FAILED" in lines[0]
    assert "4 configurations, 2 finished before, 1 to run, 1 running elsewhere" in lines[1]


def test_a_study_already_being_swept_is_refused(tmp_path, data_dir):
    path = write_study(tmp_path, FOUR)
    _, _, first = sweep(path, data_dir)
    client = MlflowClient()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        client.update_run(first.parent_run_id, status="RUNNING")
        client.set_tag(first.parent_run_id, records.PID_TAG, str(sleeper.pid))
        before = len(experiment_runs())
        with pytest.raises(UserError, match=f"already being swept by process {sleeper.pid}"):
            sweep(path, data_dir)
        assert len(experiment_runs()) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its process gone, the parent is simply reopened.
    _, _, again = sweep(path, data_dir)
    assert again.parent_run_id == first.parent_run_id and again.exit_code == 0


def send_when_running(signal_number: int, experiment: str, after: float = 0.3) -> threading.Thread:
    """Signal this process once a child run has been RUNNING for ``after`` seconds."""

    def watch() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            runs = [run for run in experiment_runs(experiment) if records.PARENT_RUN_TAG in run.data.tags
                    and run.info.status == "RUNNING" and time.time() * 1000 - run.info.start_time > after * 1000]
            if runs:
                os.kill(os.getpid(), signal_number)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sigterm_in_process_ends_the_child_killed_and_resumes(tmp_path, data_dir):
    path = write_study(tmp_path, {"activation": ["relu", "tanh", "sigmoid"]}, epochs=40, max_batches=0)
    signals.raise_on_sigterm()
    watcher = send_when_running(signal.SIGTERM, "tiny")
    _, configs, result = sweep(path, data_dir)
    watcher.join()
    assert result.stopped_by == "SIGTERM" and result.exit_code == 143
    parents, children = split(experiment_runs())
    assert parents[0].info.status == "KILLED"
    assert [run.info.status for run in children].count("KILLED") == 1
    assert "RUNNING" not in [run.info.status for run in children]
    assert parents[0].data.metrics["children_killed"] == 1
    _, _, resumed = sweep(path, data_dir)
    assert resumed.exit_code == 0
    assert finished_per_digest(split(experiment_runs())[1]) == {config_digest(config): 1 for config in configs}


def test_a_signal_inside_the_store_is_delivered_when_the_call_returns():
    signals.interrupt_outside_store(signal.SIGTERM)
    finished: list[str] = []
    # A function that belongs to a store module, as sqlalchemy's do: the signal lands in its sleep.
    namespace = {"__name__": "sqlalchemy.standin", "os": os, "signal": signal, "time": time, "finished": finished}
    exec("def store_call():\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(0.3)\n"
         "    finished.append('store call')\n", namespace)
    with pytest.raises(signals.Terminated):
        namespace["store_call"]()
        finished.append("after the call")
        time.sleep(5)
    assert finished == ["store call", "after the call"]


def test_cli_sweep_prints_progress_and_a_summary(tmp_path, data_dir):
    path = write_study(tmp_path, FOUR)
    result = invoke("sweep", str(path), "--data-dir", str(data_dir), "--quick")
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and progress[-1].endswith("all done") and "eta" in progress[0]
    *table, note, next_step = result.stdout.splitlines()
    assert table[0].split()[:3] == ["status", "val_acc", "own_time"] and len(table) == 5
    assert note == OWN_TIME_NOTE
    assert next_step.startswith("next: actopt analyze --experiment tiny-quick")
    quick_id = MlflowClient().get_experiment_by_name("tiny-quick").experiment_id
    assert f"#/experiments/{quick_id}/runs?viewStateShareKey=study" in next_step  # the address to open, not a template
    assert all(line.startswith("finished") for line in table[1:])
    assert experiment_runs("tiny") == []  # --quick keeps its runs apart
    children = split(experiment_runs("tiny-quick"))[1]
    assert {(run.data.params["epochs"], run.data.params["max_batches"]) for run in children} == {("1", "5")}


def test_mlflow_run_launcher_becomes_the_parent_and_is_not_inherited(tmp_path, data_dir, monkeypatch):
    path = write_study(tmp_path, FOUR)
    client = MlflowClient()
    experiment_id = client.create_experiment("launched")
    launcher = client.create_run(experiment_id).info.run_id  # what `mlflow run` makes before our command
    monkeypatch.setenv(store.RUN_ID_VARIABLE, launcher)
    result = invoke("sweep", str(path), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert store.RUN_ID_VARIABLE not in os.environ
    parents, children = split(experiment_runs("launched"))
    assert [run.info.run_id for run in parents] == [launcher]
    assert len(children) == 4 and {run.data.tags[records.PARENT_RUN_TAG] for run in children} == {launcher}
    assert client.get_run(launcher).data.tags["study"] == "tiny"
    # A second `mlflow run` continues under the first parent; its own run says where it went.
    second = client.create_run(experiment_id).info.run_id
    monkeypatch.setenv(store.RUN_ID_VARIABLE, second)
    assert invoke("sweep", str(path), "--data-dir", str(data_dir)).exit_code == 0
    assert client.get_run(second).data.tags[records.CONTINUED_IN_TAG] == launcher
    assert len(split(experiment_runs("launched"))[1]) == 4
    monkeypatch.setenv(store.RUN_ID_VARIABLE, second)
    mismatch = invoke("sweep", str(path), "--data-dir", str(data_dir), "--experiment-name", "other")
    assert mismatch.exit_code == 1 and "give --experiment-name to mlflow run instead" in mismatch.output


def test_mlproject_sweep_parameters_are_the_cli_options():
    entry = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())["entry_points"]["sweep"]
    options = {parameter.name for parameter in cli_main.commands["sweep"].params if parameter.name != "help"}
    # The experiment is mlflow run's own --experiment-name.
    assert set(entry["parameters"]) == options - {"experiment_name"}
    assert entry["command"].startswith("python -m actopt sweep {study} ")
    for name in set(entry["parameters"]) - {"study"}:
        option = f"--{name.replace('_', '-')}"
        assert f"{option} {{{name}}}" in entry["command"] or f"{option}={{{name}}}" in entry["command"]


def wait_for_running_children(experiment: str, count: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = [run for run in experiment_runs(experiment) if records.PARENT_RUN_TAG in run.data.tags]
        if sum(run.info.status == "RUNNING" for run in runs) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} children never ran at once")


@pytest.mark.slow
@pytest.mark.parametrize(("signal_number", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_a_running_sweep_kills_its_children_and_a_restart_resumes(tmp_path, data_dir, signal_number, code):
    grid = {"activation": ["relu", "tanh", "sigmoid"], "optimizer": {"sgd": {"learning_rate": [0.1]},
                                                                     "adam": {"learning_rate": [0.001]}}}
    path = write_study(tmp_path, grid, epochs=100, max_batches=0, hidden_sizes=[64])
    command = [sys.executable, "-m", "actopt", "sweep", str(path), "--data-dir", str(data_dir), "--workers", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_running_children("tiny", 2)
        driver.send_signal(signal_number)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == code, stderr
    assert "runs in flight ended KILLED" in stderr
    parents, children = split(experiment_runs())
    assert [run.info.status for run in children].count("KILLED") == 2
    assert "RUNNING" not in [run.info.status for run in children]
    assert parents[0].info.status == "KILLED" and parents[0].data.metrics["children_killed"] == 2
    # The table's rows, not the advice under it nor the note on its time column (which says "finished" too).
    table = "\n".join(line for line in stdout.splitlines() if not line.startswith("next:") and line != OWN_TIME_NOTE)
    assert table.count("killed") == 2 and table.count("not run") == 6 - 2 - table.count("finished")

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    children = split(experiment_runs())[1]
    study = load_study(str(path))
    assert finished_per_digest(children) == {config_digest(config): 1 for config in configurations(study)}


@pytest.mark.slow
def test_mlflow_run_sweep_entry_point(tmp_path, data_dir):
    path = write_study(tmp_path, FOUR)
    MlflowClient().create_experiment("tiny")
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "-e", "sweep", "--env-manager", "local",
               "--experiment-name", "tiny", "-P", f"study={path}", "-P", "quick=true", "-P", f"data_dir={data_dir}",
               "-P", "workers=2"]
    # The MLproject command calls `python`: the one of this environment, as after `source .venv/bin/activate`.
    environment = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    parents, children = split(experiment_runs())
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.data.tags["mlflow.project.entryPoint"] == "sweep" and parent.info.status == "FINISHED"
    assert parent.data.params["quick"] == "true"
    assert {run.data.tags[records.PARENT_RUN_TAG] for run in children} == {parent.info.run_id}
    assert {run.data.params["epochs"] for run in children} == {"1"}


def test_configurations_alike_train_as_groups_each_member_its_own_run(tmp_path, data_dir):
    grid = {"activation": ["relu", "tanh"], "learning_rate": [0.001, 0.01]}
    path = write_study(tmp_path, grid, seeds=(0, 1))
    _, configs, result = sweep(path, data_dir, group_size=3)
    assert result.exit_code == 0
    _, children = split(experiment_runs())
    assert len(children) == 8 and all(run.info.status == "FINISHED" for run in children)
    groups: dict[str, set[str]] = {}
    for run in children:
        groups.setdefault(run.data.tags[records.GROUP_TAG], set()).add(run.data.params["activation"])
    # Each activation's four configurations (two rates, two seeds) make two groups of 2, not 3 + 1.
    assert sorted(len([run for run in children if run.data.tags[records.GROUP_TAG] == group]) for group in groups) \
        == [2, 2, 2, 2]
    assert all(len(activations) == 1 for activations in groups.values())
    assert {run.data.tags[records.CONFIG_DIGEST_TAG] for run in children} == {config_digest(c) for c in configs}


def test_the_end_summary_lists_the_best_first_and_unfinished_last(tmp_path):
    study = load_study(str(write_study(tmp_path, {"learning_rate": [0.1, 0.2, 0.3]})))
    configs = configurations(study)
    a, b, c = (config_digest(config) for config in configs)
    rows = summarize(configs, [record(a, "FINISHED", 1, accuracy=0.5), record(b, "FAILED", 1),
                               record(c, "FINISHED", 1, accuracy=0.9)])
    lines = summary_table(rows).splitlines()
    assert [line.split()[:2] for line in lines[1:-1]] == [["finished", "0.9000"], ["finished", "0.5000"],
                                                           ["failed", "-"]]
