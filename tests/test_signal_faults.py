"""Signals that were lost or left a run behind (issue 27): one raised where Python swallows exceptions, and
Ctrl-C in analyze."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import pytest
from click.testing import CliRunner
from fake_runs import history, log_run
from mlflow.tracking import MlflowClient

from actopt.cli import main
from actopt.tracking import signals


@pytest.fixture
def restore_handlers():
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
    sys.unraisablehook = hook


class SlowFinalizer:
    """Python ignores (prints "Exception ignored in") an exception raised in ``__del__``, as in a weakref callback."""

    def __del__(self) -> None:
        time.sleep(0.3)


def test_a_signal_that_lands_where_exceptions_are_ignored_is_raised_again(restore_handlers):
    signals.interrupt_outside_store(signal.SIGTERM)
    doomed = SlowFinalizer()
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
    after: list[str] = []
    with pytest.raises(signals.Terminated):
        del doomed  # the signal lands in __del__, which swallows it
        after.append("finalizer done")
        time.sleep(5)
    assert after == ["finalizer done"]


def logging_lock_is_free() -> bool:
    """Whether another thread can take logging's module lock (a setLevel needs it) within two seconds."""
    probe = threading.Thread(target=logging.getLogger("actopt.test.probe").setLevel, args=(logging.INFO,),
                             daemon=True)
    probe.start()
    probe.join(timeout=2)
    return not probe.is_alive()


def test_a_signal_inside_logging_leaves_its_lock_free_for_other_threads(restore_handlers):
    # Seen in CI: SIGTERM raised inside setLevel's cache clearing left the lock held; MLflow's
    # system-metrics thread waited for it, and the run's end, which joins that thread, never came.
    signals.interrupt_outside_store(signal.SIGTERM)
    logger = logging.getLogger("actopt.test.levels")
    for attempt in range(8):
        threading.Timer(0.02 * (attempt + 1), os.kill, (os.getpid(), signal.SIGTERM)).start()
        with pytest.raises(signals.Terminated):
            while True:
                started = time.perf_counter()
                logger.setLevel(logging.WARNING)
                inside = time.perf_counter() - started
                # As long outside logging as inside: a signal lands in it about every other time, and a
                # deferred one lands outside soon after.
                while time.perf_counter() - started < 2 * inside:
                    pass
        free = logging_lock_is_free()
        if not free:
            logging._releaseLock()  # this thread holds it: release it, or the rest of the suite would hang
        assert free, f"logging's lock held after signal {attempt + 1}"


def test_ctrl_c_in_analyze_ends_its_run_killed_with_130(tracking_store, tmp_path, monkeypatch, restore_handlers):
    client = MlflowClient(tracking_store)
    log_run(client, "study", {"activation": "relu"}, history("relu"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mlflow.tracking.MlflowClient.log_artifacts", interrupted)
    result = CliRunner().invoke(main, ["analyze", "--experiment", "study", "--output-dir", str(tmp_path)])
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == "interrupted: analysis run ended KILLED"
    [analysis] = [run for run in client.search_runs([client.get_experiment_by_name("study").experiment_id])
                  if run.info.run_name == "analysis"]
    assert analysis.info.status == "KILLED"


def test_a_claim_whose_reply_was_lost_is_still_this_sweeps_own(tracking_store, monkeypatch):
    from actopt.tracking import claims

    original = MlflowClient.create_run

    def retried(self, *args, **kwargs):
        # A proxy answered 504 after the server had stored the run: the client's retry stores it again.
        original(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_run", retried)
    own = claims.claim_sweep("study", "tiny", "digest", quick=False)
    client = MlflowClient(tracking_store)
    experiment = client.get_experiment_by_name("study").experiment_id
    running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert [run.info.run_id for run in running] == [own]
    claims.release(own)
    assert client.search_runs([experiment], "attributes.status = 'RUNNING'") == []


def test_releasing_a_claim_waits_only_the_short_retry_window(tracking_store, monkeypatch):
    from actopt.tracking import claims, store

    own = claims.claim_sweep("study", "tiny", "digest", quick=False)
    seen: list[str | None] = []
    ending = claims.end_claim
    monkeypatch.setattr(claims, "end_claim", lambda *args: (seen.append(os.environ.get(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES")), ending(*args)))
    claims.release(own)
    assert seen == [store.HTTP_LIMITS["check"]["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]]


def test_the_no_answer_line_says_how_long_a_hung_server_can_take(monkeypatch):
    from actopt.tracking import store

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "45")
    assert store.retry_window() == "5 retries over 30 s, each try waiting up to 45 s for an answer"


def test_an_unwritable_artifact_folder_is_named_not_blamed_on_the_store(tracking_store, tmp_path, monkeypatch):
    client = MlflowClient(tracking_store)
    log_run(client, "study", {"activation": "relu"}, history("relu"))

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/artifacts/1")

    monkeypatch.setattr("mlflow.tracking.MlflowClient.log_artifacts", refused)
    result = CliRunner().invoke(main, ["analyze", "--experiment", "study", "--output-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: cannot write the analysis run's artifacts: PermissionError: [Errno 13] "
                                     "Permission denied: '/artifacts/1'")
    [analysis] = [run for run in client.search_runs([client.get_experiment_by_name("study").experiment_id])
                  if run.info.run_name == "analysis"]
    assert analysis.info.status == "FAILED"


def test_under_mlflow_run_a_refused_value_leaves_its_reason_on_the_run(tracking_store, monkeypatch):
    client = MlflowClient(tracking_store)
    launcher = client.create_run(client.create_experiment("launched")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher)
    result = CliRunner().invoke(main, ["train", "--epochs", "0"])
    # click's range check refuses it while parsing (exit 2); the reason still reaches mlflow run's run.
    assert result.exit_code == 2, result.output
    assert result.output.strip() == ("Error: Invalid value for '--epochs': 0 is not in the range 1<=x<=2147483647 "
                                     "(try 'actopt train --help')")
    assert client.get_run(launcher).data.tags["actopt.error"] == ("Invalid value for '--epochs': 0 is not in the "
                                                                    "range 1<=x<=2147483647.")


def test_no_hidden_layer_trains_with_gradient_statistics_on(small_config, tracking_store):
    import dataclasses

    from actopt.tracking import runlog

    config = dataclasses.replace(small_config, hidden_sizes=(), gradient_statistics=True)
    run_id, result = runlog.run_training(config)
    assert MlflowClient(tracking_store).get_run(run_id).info.status == "FINISHED"
    assert result.best_epoch is not None


def test_a_signal_just_after_the_parent_exists_ends_it_killed(tmp_path, data_dir, tracking_store, monkeypatch):
    from sweeping import experiment_runs, split, sweep, write_study

    from actopt.tracking import records

    path = write_study(tmp_path, {"activation": ["relu", "tanh"]})

    def terminated(*args, **kwargs):
        raise signals.Terminated("signal 15")

    monkeypatch.setattr(records, "sweep_children", terminated)  # the first thing done under the new parent
    with pytest.raises(signals.Terminated):
        sweep(path, data_dir)
    parents, _ = split([run for run in experiment_runs() if run.data.tags.get(records.KIND_TAG) == "sweep"])
    assert [parent.info.status for parent in parents] == ["KILLED"]


# Moments drawn at random (seeded, so that a failure can be replayed): from the imports, through the first
# groups, to the sweep's end. Each try costs a process that imports torch and MLflow.
RACE_SEED = 27
RACE_TRIES = 4


@pytest.mark.slow
def test_signals_at_random_moments_never_leave_a_run_running_and_a_resume_trains_each_once(tmp_path, data_dir):
    import random
    import subprocess

    from mlflow.entities import ViewType
    from sweeping import FOUR, finished_per_digest, split, write_study

    from actopt.core.config import config_digest
    from actopt.sweeps.study import configurations, load_study

    path = write_study(tmp_path, FOUR, epochs=8, max_batches=10)  # about 10 s from start to end here
    command = [sys.executable, "-m", "actopt", "sweep", str(path), "--data-dir", str(data_dir)]
    draw = random.Random(RACE_SEED)
    client = MlflowClient()
    for attempt in range(RACE_TRIES):
        number = (signal.SIGINT, signal.SIGTERM)[attempt % 2]
        moment = draw.uniform(0.2, 10.0)
        driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(moment)
        driver.send_signal(number)
        try:
            _, stderr = driver.communicate(timeout=120)
        finally:
            driver.kill()
        where = f"{number.name} at {moment:.2f} s"
        # 0: it came too late to stop anything; 128 + n: actopt ended what ran and said so; -n: it came while the
        # interpreter was finishing after the sweep's end, where Python has given the signal back its default action
        # (a shell reports 128 + n either way), and the store must already be complete.
        assert driver.returncode in (0, 128 + number, -number), (where, driver.returncode, stderr)
        assert "Traceback" not in stderr, (where, stderr)
        if driver.returncode == -number:
            # After the end: the last run's line, or a sweep that found nothing left to run.
            assert "all done" in stderr or ", 0 to run;" in stderr, (where, stderr)
        experiments = [item.experiment_id for item in client.search_experiments(view_type=ViewType.ALL)]
        running = [run.info.run_name for run in client.search_runs(experiments, run_view_type=ViewType.ALL)
                   if run.info.status == "RUNNING"]
        assert running == [], (where, running)

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    experiment = client.get_experiment_by_name("tiny")
    children = split(client.search_runs([experiment.experiment_id], max_results=1000))[1]
    study = load_study(str(path))
    assert finished_per_digest(children) == {config_digest(config): 1 for config in configurations(study)}
