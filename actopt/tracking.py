"""The only module that talks to MLflow: runs, params, metrics, tags, artifacts and models."""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import mlflow
import numpy as np
import torch
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torch import nn

from actopt.config import TrainConfig
from actopt.data import DatasetSplits, load_splits
from actopt.errors import UserError
from actopt.study import config_digest
from actopt.training import TrainResult, resolve_device, train

# MLflow 3's own default, stated here so that every actopt command agrees on it.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# mlflow run sets this for the process it starts; the run then already exists with our params.
RUN_ID_VARIABLE = "MLFLOW_RUN_ID"


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every ``finally`` runs and the run ends KILLED."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set (a server, another store), else the sqlite file here."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


# MLflow retries a failing HTTP request 7 times with doubling waits and a 120 s timeout: minutes of
# silence when a server is down. actopt's bound: 5 retries, urllib3 waiting 0, 2, 4, 8 and 16 s
# between them (factor × 2^(n-1), plus up to 1 s of jitter each): a server has about 30 s to come
# back, long enough for `mlflow server` to restart (about 11 s on our 2-core machine), short enough
# that a server that is gone is reported within a minute. 30 s per request bounds a server that hangs.
# Values the user set in the environment win.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# For the check before a command starts, and for the last word of a run whose server has gone: a
# server that is not there at the start is a wrong URI or a server not started, not a restart.
QUICK_HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def configure(http_limits: dict[str, str] = HTTP_LIMITS) -> MlflowClient:
    """Point MLflow at the tracking URI, with bounded HTTP retries; returns a client for it.

    The first call in a process sets the limits (workers inherit them); the user's own win."""
    for name, value in http_limits.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient(tracking_uri())


@contextlib.contextmanager
def quick_http() -> Iterator[None]:
    """MLflow requests with one quick retry for a moment (MLflow reads the limits at each request).
    Only actopt's own limits are shortened: a value the user chose (one that differs) stays."""
    changed = {name: value for name, value in QUICK_HTTP_LIMITS.items()
               if os.environ.get(name, HTTP_LIMITS[name]) == HTTP_LIMITS[name]}
    saved = {name: os.environ.get(name) for name in changed}
    os.environ.update(changed)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class StoreUnavailable(UserError):
    """The store cannot be opened, or its server gives no answer even after the retries: one line naming it."""


def no_answer(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it arose from, says that no answer came back from the server
    (refused, reset, timed out, or only 5xx while it restarts), as opposed to an answer saying no."""
    import requests

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                              requests.exceptions.RetryError)):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def retry_window() -> str:
    """The retries in effect and how long they wait in all, in words."""
    settings = {name: os.environ.get(name, default) for name, default in HTTP_LIMITS.items()}
    retries = int(settings["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    factor = float(settings["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    waits = sum(factor * 2 ** number for number in range(1, retries))  # urllib3 does not wait before the first
    return f"{retries} retries over {waits:.0f} s"


def no_answer_message() -> str:
    return (f"no answer from the tracking server {tracking_uri()} after {retry_window()}: is it running and "
            "reachable? (MLFLOW_TRACKING_URI chooses the store)")


def root_cause(error: BaseException) -> BaseException:
    """The first error of a chain: MLflow and SQLAlchemy wrap the one that says what happened
    ("database or disk is full") in errors that say where."""
    seen = {id(error)}
    while (cause := error.__cause__ or error.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        error = cause
    return error


def store_failure(error: BaseException) -> str:
    """One line for an error of the store or of the artifact location, naming the store."""
    if no_answer(error):
        return no_answer_message()
    cause = root_cause(error)
    lines = str(cause).strip().splitlines()
    what = f"{type(cause).__name__}: {(lines[0] if lines else '')[:300]}"
    if isinstance(cause, OSError):
        return f"cannot write the run's artifacts: {what}"
    return f"the tracking store {tracking_uri()} failed: {what}"


def check_store() -> None:
    """Before any run exists: the store answers (quickly) and can be opened, else a one-line error."""
    try:
        with quick_http():
            configure().search_experiments(max_results=1)  # a sqlite store opens (and migrates) here
    except Exception as error:  # MlflowException, requests' and SQLAlchemy's errors, OSError
        if no_answer(error):
            raise StoreUnavailable(f"no answer from the tracking server {tracking_uri()}: is it running and "
                                   "reachable? (MLFLOW_TRACKING_URI chooses the store)") from None
        text = " ".join(str(error).split())[:300]
        raise StoreUnavailable(f"cannot open the tracking store {tracking_uri()}: {type(error).__name__}: {text}") \
            from None


def raise_on_sigterm() -> None:
    """Turn SIGTERM into ``Terminated`` in the main thread (sweeps and schedulers send it)."""
    interrupt_outside_store(signal.SIGTERM)


class MlflowRunLogger:
    """``training.RunLogger`` over one MLflow run; each call is one request to the store."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, str]) -> None:
        # `mlflow run` has already logged the entry point's parameters in the user's spelling;
        # MLflow refuses to change a param, so only the missing ones are added.
        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(key, value) for key, value in params.items() if key not in existing]
        if fresh:
            self.client.log_batch(self.run_id, params=fresh)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), timestamp, step or 0) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self.client.log_image(self.run_id, image, key=key, step=step, synchronous=True)

    def log_model(self, model: nn.Module, input_example: np.ndarray) -> None:
        from mlflow.models import infer_signature

        model.eval()
        with torch.no_grad():
            output = model(torch.as_tensor(input_example)).numpy()
        # Explicit requirements skip MLflow's inference, which re-imports the model in a subprocess.
        mlflow.pytorch.log_model(
            model,
            name="model",
            signature=infer_signature(input_example, output),
            input_example=input_example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )


def dataset_input(data: DatasetSplits) -> MetaDataset:
    return MetaDataset(source=LocalArtifactDatasetSource(os.path.abspath(data.source)), name=data.name, digest=data.digest)


def log_dataset(dataset: MetaDataset) -> None:
    """Runs that start together (a sweep's workers) race to insert the experiment's one row for a new
    dataset; the loser's insert fails, and its second try finds the winner's row."""
    try:
        mlflow.log_input(dataset, context="training")
    except MlflowException:
        mlflow.log_input(dataset, context="training")


def run_tags(config: TrainConfig, device: torch.device) -> dict[str, str]:
    tags = {"dataset": config.dataset, "activation": config.activation, "optimizer": config.optimizer,
            "device": device.type, "mlflow.runName": config.run_name}
    if config.study:
        tags["study"] = config.study
    return tags


@contextlib.contextmanager
def training_run(
    config: TrainConfig, data: DatasetSplits, device: torch.device,
    parent_run_id: str | None = None, tags: dict[str, str] | None = None,
) -> Iterator[MlflowRunLogger]:
    """An active MLflow run for ``config``: FINISHED on success, KILLED on a signal, FAILED on an error."""
    client = configure()
    # The configuration and the process, so that a run left RUNNING by a process that died is found
    # and marked FAILED by the next sweep or `actopt train` of the same configuration.
    tags = {CONFIG_DIGEST_TAG: config_digest(config), **process_tags(), **(tags or {})}
    existing = os.environ.get(RUN_ID_VARIABLE)
    if existing:
        run = mlflow.start_run(run_id=existing)
    else:
        mlflow.set_experiment(config.experiment_name)
        # Tags from the first moment: a sweep finds its child runs (and their owner process) by them.
        run = mlflow.start_run(run_name=config.run_name, parent_run_id=parent_run_id, nested=parent_run_id is not None,
                               tags=tags)
    logger = MlflowRunLogger(client, run.info.run_id)
    try:
        logger.log_params(config.to_params())
        logger.set_tags({**run_tags(config, device), **tags})
        log_dataset(dataset_input(data))
        yield logger
    except (KeyboardInterrupt, Terminated):
        end_active_run("KILLED", quick=True)  # a signal asks to stop now, not after a silent server's retries
        raise
    except BaseException as error:
        end_active_run("FAILED", quick=no_answer(error))
        raise
    else:
        mlflow.end_run(status="FINISHED")


def end_active_run(status: str, quick: bool = False) -> None:
    """End the active run. ``quick``: one short try, and a server that does not answer leaves the run
    RUNNING (the next sweep or `actopt train` of its configuration marks it FAILED) instead of
    waiting out the retries, which after a server has just failed them would only delay the error."""
    if not quick:
        mlflow.end_run(status=status)
        return
    with quick_http():
        try:
            mlflow.end_run(status=status)  # takes the run off MLflow's stack before it asks the store
        except Exception as error:
            if not no_answer(error):
                raise


def prepare(config: TrainConfig) -> tuple[torch.device, DatasetSplits]:
    """Everything that can fail on bad input, done before any run exists."""
    device = resolve_device(config.device)
    data = load_splits(config.dataset, config.data_dir, config.download, config.validation_fraction, config.seed, device)
    return device, data


def run_training(
    config: TrainConfig,
    report: Callable[[str], None] | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    prepared: tuple[torch.device, DatasetSplits] | None = None,
) -> tuple[str, TrainResult]:
    """Load data, then train ``config`` inside one MLflow run; returns the run id and the result."""
    device, data = prepared or prepare(config)
    with training_run(config, data, device, parent_run_id, tags) as logger:
        result = train(config, data, logger, device, report)
    return logger.run_id, result


# --- Sweeps: one parent run per study, one child run per configuration (driven by actopt.sweep) ---

# actopt.kind = sweep on a parent run (and on an `mlflow run` launcher run): not a training run.
KIND_TAG = "actopt.kind"
STUDY_DIGEST_TAG = "actopt.study_digest"
QUICK_TAG = "actopt.quick"
CONFIG_DIGEST_TAG = "actopt.config_digest"
# The process that owns a RUNNING run: a later start marks the run FAILED once that process is gone.
HOST_TAG = "actopt.host"
PID_TAG = "actopt.pid"
ERROR_TAG = "actopt.error"
# On an `mlflow run` launcher run whose sweep continued an existing parent run.
CONTINUED_IN_TAG = "actopt.continued_in"
PARENT_RUN_TAG = "mlflow.parentRunId"
STUDY_ARTIFACT = "study.json"
SUMMARY_ARTIFACT = "sweep_summary.csv"
ERROR_ARTIFACT = "error.txt"


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


def sweep_run(run: Any) -> SweepRun:
    tags = run.data.tags
    pid = tags.get(PID_TAG, "")
    return SweepRun(
        run_id=run.info.run_id, run_name=run.info.run_name or "", status=run.info.status,
        start_time=run.info.start_time or 0, end_time=run.info.end_time, digest=tags.get(CONFIG_DIGEST_TAG),
        host=tags.get(HOST_TAG), pid=int(pid) if pid.isdigit() else None, diverged=tags.get("diverged") == "true",
        best_val_accuracy=run.data.metrics.get("best_val_accuracy"),
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


def search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
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
        raise UserError(f"experiment {experiment_name!r} is deleted; restore it or choose another --experiment-name")
    found = search_all(client, experiment.experiment_id,
                       f"tags.`{STUDY_DIGEST_TAG}` = '{study_digest}' and tags.`{QUICK_TAG}` = '{str(quick).lower()}'")
    return sweep_run(found[0]) if found else None


def open_sweep_parent(
    experiment_name: str, study: str, study_digest: str, quick: bool, study_text: str,
    existing: SweepRun | None, launcher_run_id: str | None = None,
) -> str:
    """Reopen ``existing`` (RUNNING again), else adopt the ``mlflow run`` launcher run, else create a
    parent run; tag it with the study and this process. Returns its id."""
    client = configure()
    tags = {"study": study, KIND_TAG: "sweep", STUDY_DIGEST_TAG: study_digest, QUICK_TAG: str(quick).lower(),
            **process_tags()}
    if existing is not None:
        run_id = existing.run_id
        client.update_run(run_id, status="RUNNING")
    elif launcher_run_id:
        run_id = launcher_run_id
        tags["mlflow.runName"] = study
    else:
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        run_id = client.create_run(experiment_id, tags=tags, run_name=study).info.run_id
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
    client.log_text(run_id, study_text, STUDY_ARTIFACT)
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


def mark_failed(run_id: str, reason: str) -> None:
    terminate_run(run_id, "FAILED", reason)


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
                                              f"tags.`{CONFIG_DIGEST_TAG}` = '{digest}' and attributes.status = 'RUNNING'")
    return [run.info.run_id for run in found]


def record_failure(config: TrainConfig, parent_run_id: str, tags: dict[str, str], since: float,
                   error: str, details: str) -> str:
    """End this attempt's run FAILED with the error (a tag and an artifact); an attempt that failed
    before its run existed (data, device) gets a FAILED run here, so every attempt shows."""
    client = configure()
    attempts = [run for run in sweep_children(parent_run_id)
                if run.digest == tags[CONFIG_DIGEST_TAG] and run.pid == os.getpid() and run.start_time >= int(since * 1000)]
    if attempts:
        run_id = attempts[-1].run_id
    else:
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        names = {"dataset": config.dataset, "activation": config.activation, "optimizer": config.optimizer,
                 "study": config.study, PARENT_RUN_TAG: parent_run_id}
        run_id = client.create_run(experiment_id, tags={**names, **tags}, run_name=config.run_name).info.run_id
        client.log_batch(run_id, params=[Param(key, value) for key, value in config.to_params().items()])
    client.set_tag(run_id, ERROR_TAG, error)
    client.log_text(run_id, details, ERROR_ARTIFACT)
    if client.get_run(run_id).info.status not in ("FAILED", "KILLED"):
        client.set_terminated(run_id, "FAILED")
    return run_id


def close_sweep_parent(run_id: str, status: str, metrics: dict[str, float], tags: dict[str, str], summary_csv: str) -> None:
    """Record the sweep's counts and best child on its parent run, then end it with ``status``."""
    client = configure()
    timestamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), timestamp, 0) for key, value in metrics.items()],
                     tags=[RunTag(key, value) for key, value in tags.items()])
    client.log_text(run_id, summary_csv, SUMMARY_ARTIFACT)
    client.set_terminated(run_id, status)


# Code that holds database transactions. A signal raised in there can leave a sqlite write lock with
# a connection that nobody closes: every later write, the run's own KILLED status included, then fails.
STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3")
# How soon a signal that arrived inside the store is sent again.
SIGNAL_RETRY_SECONDS = 0.05


def in_store(frame: Any) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").split(".")[0] in STORE_MODULES:
            return True
        frame = frame.f_back
    return False


def signal_again(signum: int) -> None:
    """Send this process ``signum`` once more. A real signal also wakes a main thread blocked in a
    system call; where the signal is blocked (Ray's workers block SIGINT in every thread, and
    ``ray.cancel`` simulates it), the handler is called without one."""
    if signum in signal.pthread_sigmask(signal.SIG_BLOCK, []):
        _thread.interrupt_main(signum)
    else:
        os.kill(os.getpid(), signum)


def interrupt_outside_store(*signals: int) -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM ``Terminated`` in the main thread, but never inside
    MLflow or database code: there the signal is sent again a moment later, once the call is over.
    A SIGINT that this process ignores (a background job's) stays ignored."""

    def handler(signum: int, frame: Any) -> None:
        if in_store(frame):
            again = threading.Timer(SIGNAL_RETRY_SECONDS, signal_again, (signum,))
            again.daemon = True  # a process that is leaving anyway does not wait for it
            again.start()
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise Terminated(f"signal {signum}")

    for number in signals:
        if number == signal.SIGINT and signal.getsignal(number) is signal.SIG_IGN:
            continue
        signal.signal(number, handler)
