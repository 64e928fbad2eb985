"""The train path's own faults (issues 21 and 27): pre-run checks in ``runlog.preflight``, no process-wide state
left changed by the tracking code, a second Ctrl-C, SIGTERM while importing, a low ``ulimit -v``, MLflow's
"View run" lines, and errors of training that are not the store's."""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from commands import runs_of, small_train
from mlflow.tracking import MlflowClient

from actopt.cli import main
from actopt.errors import UserError
from actopt.tracking import masking, records, runlog, store

# MLflow's telemetry client notes its session here, and takes it out when it stops: MLflow's state, not actopt's.
MLFLOWS_OWN = {"_MLFLOW_TELEMETRY_SESSION_ID"}


def process_state() -> dict:
    """What library code must not leave changed: the environment, every logger's level and filters (its handlers'
    too), the warnings filters and formatter, and MLflow's own tracking URI."""
    from mlflow.tracking._tracking_service import utils

    loggers = {"": logging.getLogger(), **{name: logging.getLogger(name) for name in logging.root.manager.loggerDict}}
    return {
        "environment": {name: value for name, value in os.environ.items() if name not in MLFLOWS_OWN},
        "levels": {name: logger.level for name, logger in loggers.items()},  # loggers made later: at NOTSET
        "masked_handlers": sorted(name for name, logger in loggers.items() for handler in logger.handlers
                                  if masking._FILTER in handler.filters),
        "warnings": (list(warnings.filters), warnings.formatwarning),
        "tracking_uri": utils._tracking_uri,
    }


def test_tracking_calls_leave_the_environment_logging_and_warnings_as_they_were(small_config, tracking_store):
    import mlflow.pytorch  # noqa: F401  its import calls logging.basicConfig(level=ERROR): MLflow's, not ours

    before = process_state()
    store.check_store()
    store.connect().search_experiments()
    records.check_experiment("tests")
    device, data = runlog.preflight(small_config)
    run_id, _ = runlog.run_training(small_config.replace(epochs=1, log_model=True), prepared=(device, data))
    with store.quick_http():
        store.configure("check").get_run(run_id)
    after = process_state()
    for part, value in before.items():
        if isinstance(value, dict) and part != "environment":  # loggers first made during the calls are new
            assert {name: after[part][name] for name in value} == value, part
        else:
            assert after[part] == value, part
    assert MlflowClient(tracking_store).get_run(run_id).info.status == "FINISHED"


def test_the_limits_and_masking_hold_during_a_call_only(monkeypatch):
    for name in [*store.HTTP_LIMITS["run"], store.APPLIED_LIMITS_VARIABLE, masking.SUPPRESS_URL_VARIABLE]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own
    seen = {}

    def search(self, *args, **options):
        seen.update({name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                                              "MLFLOW_HTTP_REQUEST_TIMEOUT",
                                                              masking.SUPPRESS_URL_VARIABLE)})
        return []

    monkeypatch.setattr(MlflowClient, "search_experiments", search)
    client = store.configure("read")
    client.search_experiments()
    assert seen == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "7",
                    masking.SUPPRESS_URL_VARIABLE: "true"}
    with store.quick_http():  # the innermost scope decides, not the client's own row
        client.search_experiments()
    assert seen["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and masking.SUPPRESS_URL_VARIABLE not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


@pytest.mark.slow
def test_importing_the_tracking_code_changes_no_logging_level():
    script = """
import logging, mlflow, torch
levels = lambda: {name: logging.getLogger(name).level for name in ["", *logging.root.manager.loggerDict]}
before = levels()
import actopt.cli, actopt.tracking.runlog, actopt.tracking.store, actopt.tracking.masking
after = levels()
changed = {name: level for name, level in after.items() if before.get(name, logging.NOTSET) != level}
assert not changed, changed
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_preflight_refuses_before_any_run(small_config, tracking_store):
    client = MlflowClient(tracking_store)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(UserError, match="^experiment 'gone' is deleted"):
        runlog.preflight(small_config.replace(experiment_name="gone"))
    with pytest.raises(UserError, match="not found in"):
        runlog.preflight(small_config.replace(data_dir=str(Path.cwd() / "empty")))
    assert runs_of(tracking_store, "tests") == [] and runs_of(tracking_store, "gone") == []


def test_a_second_ctrl_c_while_the_run_ends_still_ends_it_killed_with_130(data_dir, tracking_store, monkeypatch):
    def first_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    ending = runlog.MlflowRunLogger.end

    def second_ctrl_c(self, status, quick=False):
        os.kill(os.getpid(), signal.SIGINT)  # lands while the run is being ended KILLED
        time.sleep(0.2)
        ending(self, status, quick)

    monkeypatch.setattr(runlog, "train_group", first_ctrl_c)
    monkeypatch.setattr(runlog.MlflowRunLogger, "end", second_ctrl_c)
    result = CliRunner().invoke(main, small_train(data_dir))
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines() == ["interrupted: run ended KILLED"]
    [run] = runs_of(tracking_store)
    assert run.info.status == "KILLED"


def test_an_error_of_training_is_not_blamed_on_the_store(data_dir, tracking_store, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("hidden_sizes is empty")

    monkeypatch.setattr(runlog, "train_group", broken)
    result = CliRunner().invoke(main, small_train(data_dir))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: training failed: ValueError: hidden_sizes is empty"]
    [run] = runs_of(tracking_store)
    assert run.info.status == "FAILED"


def test_errors_of_the_store_are_still_the_stores():
    from sqlalchemy.exc import OperationalError

    error = OperationalError("INSERT", {}, Exception("database or disk is full"))
    assert store.raised_in_store(error)
    assert not store.raised_in_store(ValueError("a shape"))


# A slow import of click: a window, after actopt's handler is set and before the command's own, where SIGTERM lands.
SLOW_CLICK = """
import sys, time
class SlowClick:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            time.sleep(3)
        return None
sys.meta_path.insert(0, SlowClick())
"""


@pytest.mark.slow
def test_sigterm_while_the_command_imports_exits_143_with_one_line(data_dir, tmp_path, tracking_store):
    (tmp_path / "sitecustomize.py").write_text(SLOW_CLICK)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ["PYTHONPATH"]])}
    process = subprocess.Popen([sys.executable, "-m", "actopt", *small_train(data_dir)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment)
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines() == ["terminated: before the run was created"]
    assert runs_of(tracking_store) == []


@pytest.mark.slow
def test_a_low_virtual_memory_limit_is_one_line(data_dir, tracking_store):
    limit = 2 * 2**30

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    completed = subprocess.run([sys.executable, "-m", "actopt", *small_train(data_dir)], capture_output=True,
                               text=True, timeout=120, preexec_fn=limited)
    assert completed.returncode == 1, completed.stderr[-2000:]
    [line] = completed.stderr.strip().splitlines()
    assert line.startswith("Error: cannot load torch: ") and line.endswith(
        "; the virtual memory limit is 2.0 GiB (ulimit -v 2097152): torch needs more"), line
    assert runs_of(tracking_store) == []


@pytest.mark.slow
def test_mlflow_prints_no_view_run_lines_into_train_and_sweep(tmp_path, data_dir, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    study = tmp_path / "tiny.json"
    study.write_text(json.dumps({"description": "A tiny study.", "seeds": [0], "grid": {"activation": ["relu"]},
                                 "fixed": {"dataset": "mnist", "hidden_sizes": [16], "epochs": 1, "max_batches": 2,
                                           "log_model": False, "device": "cpu"}}))
    commands = [[*small_train(data_dir)[:-1], f"train-{tmp_path.name}"],
                ["sweep", str(study), "--data-dir", str(data_dir), "--experiment-name", f"sweep-{tmp_path.name}"]]
    for command in commands:
        completed = subprocess.run([sys.executable, "-m", "actopt", *command], capture_output=True, text=True,
                                   timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert "View run" not in completed.stdout + completed.stderr, command[0]
        assert "View experiment" not in completed.stdout + completed.stderr, command[0]
