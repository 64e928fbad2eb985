"""Sweep bookkeeping in the store: the parent run of a study, its child runs, their tags, and runs left RUNNING by a
process that died."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from actopt.core import diagnosis, metric_names
from actopt.core.config import TrainConfig
from actopt.errors import UserError, describe_error
from actopt.tracking import notes
from actopt.tracking.schema import unwritable_folder
from actopt.tracking.store import RUN_ID_VARIABLE, configure, tracking_uri

# actopt.kind = sweep on a parent run (and on an `mlflow run` launcher run): not a training run.
KIND_TAG = "actopt.kind"
STUDY_DIGEST_TAG = "actopt.study_digest"
QUICK_TAG = "actopt.quick"
CONFIG_DIGEST_TAG = "actopt.config_digest"
# Shared by the member runs of one group (configurations trained as one stacked program).
GROUP_TAG = "actopt.group"
# The process that owns a RUNNING run: a later start marks the run FAILED once that process is gone.
HOST_TAG = "actopt.host"
PID_TAG = "actopt.pid"
ERROR_TAG = "actopt.error"
# On an `mlflow run` launcher run whose sweep continued an existing parent run.
CONTINUED_IN_TAG = "actopt.continued_in"
PARENT_RUN_TAG = "mlflow.parentRunId"
STUDY_ARTIFACT = "study.json"
SUMMARY_ARTIFACT = "sweep_summary.csv"
LOOKS_ARTIFACT = "sweep_looks.csv"
LOOKS_TAG = "actopt.looks"
STOPPED_TAG = "actopt.stopped_because"
ERROR_ARTIFACT = "error.txt"
# Where MLflow puts a new experiment's artifacts when the store is a local file and no root is given.
DEFAULT_ARTIFACT_ROOT = "./mlruns"


@dataclass(frozen=True)
class SweepRun:
    """What a sweep reads back of a parent or child run."""

    run_id: str
    run_name: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    start_time: int  # milliseconds since the epoch
    end_time: int | None
    digest: str | None
    host: str | None
    pid: int | None
    diverged: bool
    best_val_accuracy: float | None
    diagnoses: tuple[str, ...] = ()  # the rules whose diagnosis.<rule> tag is true
    experiment_id: str = ""
    test_accuracy: float | None = None
    train_seconds: float | None = None  # the run's own training time (metric train_seconds), not its wall time


def run_name(config: TrainConfig) -> str:
    """The name of a training run in the UI's table: its configuration and its seed, e.g.
    ``relu-adam-lr0.001-seed1``, so that the three seeds of a configuration read apart."""
    return f"{config.run_name}-seed{config.seed}"


def sweep_run(run: Any) -> SweepRun:
    tags = run.data.tags
    pid = tags.get(PID_TAG, "")
    diagnoses = tuple(rule for rule in diagnosis.RULES if tags.get(notes.DIAGNOSIS_PREFIX + rule) == "true")
    return SweepRun(
        run_id=run.info.run_id, run_name=run.info.run_name or "", status=run.info.status,
        start_time=run.info.start_time or 0, end_time=run.info.end_time, digest=tags.get(CONFIG_DIGEST_TAG),
        host=tags.get(HOST_TAG), pid=int(pid) if pid.isdigit() else None, diverged=tags.get("diverged") == "true",
        best_val_accuracy=run.data.metrics.get(metric_names.BEST_VAL_ACCURACY), diagnoses=diagnoses,
        experiment_id=run.info.experiment_id, test_accuracy=run.data.metrics.get(metric_names.TEST_ACCURACY),
        train_seconds=run.data.metrics.get(metric_names.TRAIN_SECONDS),
    )


def process_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def take_launcher_run() -> tuple[str, str] | None:
    """The run ``mlflow run`` made for this process (id, experiment name), taken out of the
    environment so that no child run resumes it as its own."""
    run_id = os.environ.pop(RUN_ID_VARIABLE, None)
    if not run_id:
        return None
    client = configure()
    return run_id, client.get_experiment(client.get_run(run_id).info.experiment_id).name


def record_refusal(run_id: str, message: str) -> None:
    """Under ``mlflow run``, the reason a command refused its input, on the run MLflow made for it (MLflow ends
    that run FAILED and would say no more). Best effort, with the short retry window: the line on the terminal
    is what counts, and a store that does not answer must not delay it."""
    from actopt.tracking.store import quick_http

    with contextlib.suppress(Exception), quick_http():
        configure("check").set_tag(run_id, ERROR_TAG, message)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of the active experiment ``name``, created when missing; two processes creating it at once
    both get the one that was stored."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise UserError(deleted_experiment(name, experiment.experiment_id))
    return experiment.experiment_id


def deleted_experiment(name: str, experiment_id: str) -> str:
    return (f"experiment {name!r} is deleted; restore it (mlflow experiments restore --experiment-id "
            f"{experiment_id}) or choose another --experiment-name")


def local_folder(location: str) -> Path | None:
    """The folder of a local artifact location (a path or a ``file:`` URI), None for a remote one."""
    if location.startswith("file:"):
        return Path(urllib.parse.urlparse(location).path)
    return None if ":" in location.split("/", 1)[0] else Path(location)


def check_experiment(experiment_name: str) -> None:
    """Before any run: the experiment is not deleted, and a local artifact folder can be written, so that
    neither fails a run that has already started (or sends MLflow into minutes of retries)."""
    client = configure()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None and experiment.lifecycle_stage != "active":
        raise UserError(deleted_experiment(experiment_name, experiment.experiment_id))
    # A new experiment's artifacts go to ./mlruns/<id> with a local store, as MLflow's default.
    location = experiment.artifact_location if experiment is not None else DEFAULT_ARTIFACT_ROOT
    folder = local_folder(location) if tracking_uri().startswith("sqlite:") or experiment is not None else None
    blocked = unwritable_folder(folder) if folder is not None else None
    if blocked is not None:
        raise UserError(f"cannot write the runs' artifacts to {location}: the folder {blocked} is not writable; run "
                        "actopt in a folder you can write to, or use a tracking server (MLFLOW_TRACKING_URI)")


# The order sweeps read runs in: oldest first, so that "the earliest parent" and "the latest attempt" are plain.
OLDEST_FIRST = ("attributes.start_time ASC",)


def search_all(client: MlflowClient, experiment_id: str, filter_string: str,
               order_by: Sequence[str] = OLDEST_FIRST) -> list[Any]:
    """Every run that matches, through all of MLflow's pages (at most 1000 runs each); ``order_by=()`` keeps
    MLflow's own order (newest first)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token,
                                  order_by=list(order_by) or None)
        runs += page
        token = page.token
        if not token:
            return runs


def find_sweep_parent(experiment_name: str, study_digest: str, quick: bool) -> SweepRun | None:
    """The earliest parent run of this study file (and mode) in the experiment, if any; reads only."""
    client = configure()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    if experiment.lifecycle_stage != "active":
        raise UserError(deleted_experiment(experiment_name, experiment.experiment_id))
    found = search_all(client, experiment.experiment_id,
                       f"tags.`{STUDY_DIGEST_TAG}` = '{study_digest}' and tags.`{QUICK_TAG}` = '{str(quick).lower()}'")
    return sweep_run(found[0]) if found else None


@dataclass(frozen=True)
class StudyParent:
    """What a sweep's parent run records of its study: where, which study (its digest and file), in which mode,
    and what the experiment shows of it."""

    experiment_name: str
    study: str
    study_digest: str
    quick: bool
    study_text: str
    description: str = ""
    varying: tuple[str, ...] = ()  # the params that differ between configurations: the study view's columns


def open_sweep_parent(parent: StudyParent, existing: SweepRun | None, launcher_run_id: str | None = None) -> str:
    """Reopen ``existing`` (RUNNING again), else adopt the ``mlflow run`` launcher run, else create a
    parent run; tag it with the study and this process. The experiment is marked as model training,
    gets the study's description unless it has one, and the runs-table view of this parent's children
    with the varying params as columns (``notes.study_page_url``). Returns the parent run's id."""
    study = parent.study
    client = configure()
    tags = {"study": study, KIND_TAG: "sweep", STUDY_DIGEST_TAG: parent.study_digest,
            QUICK_TAG: str(parent.quick).lower(), **process_tags()}
    if existing is not None:
        run_id = existing.run_id
        client.update_run(run_id, status="RUNNING")
    elif launcher_run_id:
        run_id = launcher_run_id
        tags["mlflow.runName"] = study
    else:
        experiment_id = ensure_experiment(client, parent.experiment_name)
        run_id = client.create_run(experiment_id, tags=tags, run_name=study).info.run_id
    try:
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
        experiment_id = client.get_run(run_id).info.experiment_id
        notes.mark_experiment(client, experiment_id, parent.description)
        notes.share_study_view(client, experiment_id, run_id, parent.varying)
        client.log_text(run_id, parent.study_text, STUDY_ARTIFACT)
    except Exception as error:  # an artifact location that cannot be written: the parent must not stay RUNNING
        with contextlib.suppress(Exception):
            terminate_run(run_id, "FAILED", describe_error(error))
        raise
    if launcher_run_id and launcher_run_id != run_id:
        client.log_batch(launcher_run_id, tags=[RunTag(CONTINUED_IN_TAG, run_id), RunTag(KIND_TAG, "sweep"),
                                                RunTag("mlflow.runName", f"{study} (continued in {run_id[:8]})")])
    return run_id


def sweep_children(parent_run_id: str) -> list[SweepRun]:
    """Every child run of a sweep's parent, oldest first."""
    client = configure()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return [sweep_run(run) for run in search_all(client, experiment_id, f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'")]


def running_runs(experiment_name: str, digest: str) -> list[SweepRun]:
    """The runs of this configuration (by digest) that the store holds as RUNNING; reads only."""
    client = configure()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    found = search_all(client, experiment.experiment_id,
                       f"attributes.status = 'RUNNING' and tags.`{CONFIG_DIGEST_TAG}` = '{digest}'")
    return [sweep_run(run) for run in found]


def terminate_run(run_id: str, status: str, reason: str) -> None:
    """End a run that its own process can no longer end, saying why."""
    client = configure()
    client.set_tag(run_id, ERROR_TAG, reason)
    client.set_terminated(run_id, status)


def running_attempts(parent_run_id: str, digest: str) -> list[str]:
    """The ids of a configuration's child runs that are RUNNING under a sweep's parent."""
    client = configure()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    found = search_all(client, experiment_id, f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}' and "
                                              f"tags.`{CONFIG_DIGEST_TAG}` = '{digest}' and attributes.status = "
                                              "'RUNNING'")
    return [run.info.run_id for run in found]


def record_failure(config: TrainConfig, parent_run_id: str, tags: dict[str, str], since: float,
                   error: str, details: str) -> str:
    """End this attempt's run FAILED with the error (a tag and an artifact); an attempt that failed
    before its run existed (data, device) gets a FAILED run here, so every attempt shows."""
    client = configure()
    attempts = [run for run in sweep_children(parent_run_id)
                if run.digest == tags[CONFIG_DIGEST_TAG] and run.pid == os.getpid()
                and run.start_time >= int(since * 1000)]
    if attempts:
        run_id = attempts[-1].run_id
    else:
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        names = {"dataset": config.dataset, "activation": config.activation, "optimizer": config.optimizer,
                 "study": config.study, PARENT_RUN_TAG: parent_run_id}
        run_id = client.create_run(experiment_id, tags={**names, **tags}, run_name=run_name(config)).info.run_id
        client.log_batch(run_id, params=[Param(key, value) for key, value in config.to_params().items()])
    client.set_tag(run_id, ERROR_TAG, error)
    client.log_text(run_id, details, ERROR_ARTIFACT)
    if client.get_run(run_id).info.status not in ("FAILED", "KILLED"):
        client.set_terminated(run_id, "FAILED")
    return run_id


def close_sweep_parent(run_id: str, status: str, metrics: dict[str, float], tags: dict[str, str],
                       summary_csv: str, description: str = "") -> None:
    """Record the sweep's counts, best child and description on its parent run, then end it with ``status``."""
    client = configure()
    timestamp = int(time.time() * 1000)
    if description:
        tags = {**tags, notes.DESCRIPTION_TAG: notes.fit(description, f"the whole table is {SUMMARY_ARTIFACT}")}
    client.log_batch(run_id, metrics=[Metric(key, float(value), timestamp, 0) for key, value in metrics.items()],
                     tags=[RunTag(key, value) for key, value in tags.items()])
    client.log_text(run_id, summary_csv, SUMMARY_ARTIFACT)
    client.set_terminated(run_id, status)


def process_alive(pid: int) -> bool:
    """Whether a process of this host has this id (``owner_gone`` is what the rest of actopt asks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def owner_gone(host: str | None, pid: int | None) -> bool:
    """Whether the process that a run or claim names as its owner is known to be gone: on this host, and no
    process has its id. Another host's processes cannot be checked, and count as alive; the one place where
    actopt asks whether a process lives (stale runs, dead claims, a sweep already running)."""
    return pid is not None and host == socket.gethostname() and not process_alive(pid)


def is_stale(run: SweepRun) -> bool:
    """A RUNNING run whose process, on this host, no longer runs it: gone, or this very process
    (which is between runs whenever it asks). Runs of other hosts cannot be checked."""
    if run.status != "RUNNING":
        return False
    return (run.pid == os.getpid() and run.host == socket.gethostname()) or owner_gone(run.host, run.pid)


def reap_stale(children: list[SweepRun], report: Callable[[str], None], status: str = "FAILED") -> list[SweepRun]:
    """Mark ``status`` the RUNNING children whose process is gone, so that they run again: FAILED, or KILLED
    where a signal stopped the sweep and its workers were ended before they could end their runs."""
    reaped = []
    for run in children:
        if is_stale(run):
            reason = f"left RUNNING by process {run.pid} on {run.host}, which no longer runs it"
            terminate_run(run.run_id, status, reason)
            report(f"run {run.run_id} ({run.run_name}) {reason}: marked {status}")
            run = dataclasses.replace(run, status=status)
        reaped.append(run)
    return reaped


def record_looks(run_id: str, table_csv: str, looks: int, stopped: str, summary: str) -> None:
    """An adaptive sweep's looks on its parent: the table artifact, their count, why it stopped (empty while it
    goes on) and their summary appended to the description that closing the parent wrote."""
    client = configure()
    description = client.get_run(run_id).data.tags.get(notes.DESCRIPTION_TAG, "")
    tags = {LOOKS_TAG: str(looks), STOPPED_TAG: stopped,
            notes.DESCRIPTION_TAG: notes.fit(f"{description}\n\n{summary}".strip(), f"the looks are {LOOKS_ARTIFACT}")}
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
    client.log_text(run_id, table_csv, LOOKS_ARTIFACT)


def sweep_looks(parent_run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The looks an adaptive sweep recorded on each of these parents (their count, why it stopped, the
    description), for the parents that have any."""
    client = configure()
    found = {}
    for run_id in parent_run_ids:
        tags = client.get_run(run_id).data.tags
        if LOOKS_TAG in tags:
            found[run_id] = {"looks": tags[LOOKS_TAG], "stopped": tags.get(STOPPED_TAG, ""),
                             "description": tags.get(notes.DESCRIPTION_TAG, "")}
    return found
