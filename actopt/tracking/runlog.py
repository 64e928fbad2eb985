"""One training run in MLflow: the RunLogger that training writes through, and the run's start, tags and end status."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID
from torch import nn

from actopt.core.config import TrainConfig, config_digest
from actopt.core.data import DatasetSplits
from actopt.core.inputs import prepare, prepare_group
from actopt.core.member import TrainResult
from actopt.core.training import train_group
from actopt.errors import mask_credentials
from actopt.tracking import notes
from actopt.tracking.records import CONFIG_DIGEST_TAG, GROUP_TAG, ensure_experiment, process_tags, run_name
from actopt.tracking.signals import Terminated
from actopt.tracking.store import LEFT_RUNNING, RUN_ID_VARIABLE, configure, no_answer, quick_http

# MLflow's system-metrics monitor says at INFO that it starts and stops: four lines per run, per sweep child.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


class MlflowRunLogger:
    """``training.RunLogger`` over one MLflow run; each call is one request to the store."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.ended = False
        self.monitor: SystemMetricsMonitor | None = None

    def monitor_system(self, resume: bool) -> None:
        """Log MLflow's system metrics (CPU, memory, GPU) to this run until it ends. Every member of a group
        gets its own monitor: each run shows the process that trained it."""
        self.monitor = SystemMetricsMonitor(self.run_id, resume_logging=resume)
        self.monitor.start()

    def end(self, status: str, quick: bool = False) -> None:
        """End the run once. ``quick``: one short try, and a server that does not answer leaves the run
        RUNNING (the next sweep or `actopt train` of its configuration marks it FAILED) instead of
        waiting out the retries, which after a server has just failed them would only delay the error."""
        if self.ended:
            return
        if self.monitor is not None:
            self.monitor.finish()
            self.monitor = None
        if not quick:
            self.client.set_terminated(self.run_id, status)
        else:
            with quick_http():
                try:
                    self.client.set_terminated(self.run_id, status)
                except Exception as error:
                    if not no_answer(error):
                        raise
        # Only once the store has taken it: a refused FINISHED is tried again as FAILED.
        self.ended = True

    def log_params(self, params: dict[str, str]) -> None:
        # `mlflow run` has already logged the entry point's parameters in the user's spelling;
        # MLflow refuses to change a param, so only the missing ones are added.
        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(key, mask_credentials(value)) for key, value in params.items() if key not in existing]
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
        # mlflow.pytorch.log_model(run_id=...) without an active run files the LoggedModel under the
        # process's current experiment (`Default`), where neither the run page nor the study's Models page
        # finds it; created here, in the run's own experiment, it is both.
        run = self.client.get_run(self.run_id)
        logged = self.client.create_logged_model(run.info.experiment_id, name="model", source_run_id=self.run_id,
                                                 params=dict(run.data.params))
        # Explicit requirements skip MLflow's inference, which re-imports the model in a subprocess.
        mlflow.pytorch.log_model(
            model,
            name="model",
            run_id=self.run_id,  # members of a group are logged side by side: no active run to rely on
            model_id=logged.model_id,
            signature=infer_signature(input_example, output),
            input_example=input_example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )


def mask_tags(client: MlflowClient, run_id: str) -> None:
    """MLflow tags a run with where it comes from (a git remote's URL among them): no password stays in one."""
    tags = client.get_run(run_id).data.tags
    masked = [RunTag(key, mask_credentials(value)) for key, value in tags.items() if mask_credentials(value) != value]
    if masked:
        client.log_batch(run_id, tags=masked)


def dataset_input(data: DatasetSplits) -> MetaDataset:
    return MetaDataset(source=LocalArtifactDatasetSource(os.path.abspath(data.source)), name=data.name,
                       digest=data.digest)


def log_dataset(client: MlflowClient, run_id: str, dataset: MetaDataset) -> None:
    """Runs that start together (a sweep's workers) race to insert the experiment's one row for a new
    dataset; the loser's insert fails, and its second try finds the winner's row."""
    inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        client.log_inputs(run_id, datasets=inputs)


def run_tags(config: TrainConfig, device: torch.device) -> dict[str, str]:
    tags = {"dataset": config.dataset, "activation": config.activation, "optimizer": config.optimizer,
            "device": device.type, "mlflow.runName": run_name(config)}
    if config.study:
        tags["study"] = config.study
    return tags


def start_member_run(client: MlflowClient, config: TrainConfig, parent_run_id: str | None,
                     tags: dict[str, str]) -> MlflowRunLogger:
    """One member's run, with its tags from the first moment: a sweep finds its child runs (and
    their owner process) by them. Under `mlflow run` a group of one continues mlflow run's run."""
    existing = os.environ.get(RUN_ID_VARIABLE)
    if existing:
        client.update_run(existing, status="RUNNING")
        run_id = existing
    else:
        experiment_id = ensure_experiment(client, config.experiment_name)
        first = {**tags, **({MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else {})}
        run_id = client.create_run(experiment_id, tags=resolve_tags(first), run_name=run_name(config)).info.run_id
    logger = MlflowRunLogger(client, run_id)
    if config.system_metrics:
        logger.monitor_system(resume=bool(existing))
    return logger


def describe_member_run(logger: MlflowRunLogger, config: TrainConfig, data: DatasetSplits, device: torch.device,
                        tags: dict[str, str]) -> None:
    """The run's params, tags (credentials masked) and dataset, once the run exists and can be ended FAILED."""
    client, run_id = logger.client, logger.run_id
    notes.mark_experiment(client, client.get_run(run_id).info.experiment_id)
    logger.log_params(config.to_params())
    logger.set_tags({**run_tags(config, device), **tags})
    mask_tags(client, run_id)
    log_dataset(client, run_id, dataset_input(data))


@contextlib.contextmanager
def training_runs(
    configs: Sequence[TrainConfig], datas: Sequence[DatasetSplits], device: torch.device,
    parent_run_id: str | None = None, tags: dict[str, str] | None = None,
) -> Iterator[list[MlflowRunLogger]]:
    """One MLflow run per member of a group, all tagged with the group's id: each ends FINISHED when
    its member has logged everything (``MlflowRunLogger.end``), and those still open end KILLED on a
    signal and FAILED on an error."""
    if len(configs) > 1 and os.environ.get(RUN_ID_VARIABLE):
        raise ValueError("under mlflow run only a single configuration continues mlflow run's run")
    client = configure()
    group = {GROUP_TAG: uuid.uuid4().hex[:16]}
    loggers: list[MlflowRunLogger] = []
    try:
        for config, data in zip(configs, datas):
            # The configuration and the process, so that a run left RUNNING by a process that died is
            # found and marked FAILED by the next sweep or `actopt train` of the same configuration.
            member_tags = {CONFIG_DIGEST_TAG: config_digest(config), **process_tags(), **(tags or {}), **group}
            loggers.append(start_member_run(client, config, parent_run_id, member_tags))
            describe_member_run(loggers[-1], config, data, device, member_tags)
        yield loggers
    except (KeyboardInterrupt, Terminated):
        end_all(loggers, "KILLED", quick=True)  # a signal asks to stop now, not after a silent server's retries
        raise
    except BaseException as error:
        try:
            end_all(loggers, "FAILED", quick=no_answer(error))
        except Exception:  # the store that failed the run refuses its end too: the first error is the one to tell
            setattr(error, LEFT_RUNNING, True)
        raise
    else:
        end_all(loggers, "FINISHED")


@contextlib.contextmanager
def training_run(
    config: TrainConfig, data: DatasetSplits, device: torch.device,
    parent_run_id: str | None = None, tags: dict[str, str] | None = None,
) -> Iterator[MlflowRunLogger]:
    """The run of a group of one."""
    with training_runs([config], [data], device, parent_run_id, tags) as loggers:
        yield loggers[0]


def end_all(loggers: Sequence[MlflowRunLogger], status: str, quick: bool = False) -> None:
    """End every run still open; the first store error is raised once all have been tried."""
    failure: Exception | None = None
    for logger in loggers:
        try:
            logger.end(status, quick)
        except Exception as error:
            failure = failure or error
    if failure is not None:
        raise failure


def run_group(
    configs: Sequence[TrainConfig],
    report: Callable[[str], None] | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    prepared: tuple[torch.device, Sequence[DatasetSplits]] | None = None,
    finished: Callable[[int, str, TrainResult], None] | None = None,
) -> list[tuple[str, TrainResult]]:
    """Train the configurations as one group, each inside its own MLflow run; returns (run id, result) each.

    ``finished(k, run_id, result)`` is called as soon as member k's run has ended FINISHED, so that a
    caller whose group fails later still knows which members were complete.
    """
    device, datas = prepared or prepare_group(configs)
    with training_runs(configs, datas, device, parent_run_id, tags) as loggers:

        def member_finished(index: int, result: TrainResult) -> None:
            loggers[index].set_tags(notes.run_note_tags(configs[index], result))
            loggers[index].end("FINISHED")
            if finished is not None:
                finished(index, loggers[index].run_id, result)

        results = train_group(configs, datas, loggers, device, report, member_finished)
    return [(logger.run_id, result) for logger, result in zip(loggers, results)]


def run_training(
    config: TrainConfig,
    report: Callable[[str], None] | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    prepared: tuple[torch.device, DatasetSplits] | None = None,
) -> tuple[str, TrainResult]:
    """Load data, then train ``config`` inside one MLflow run (a group of one), tagged at the end with its
    diagnosis and description; returns the run id and the result."""
    device, data = prepared or prepare(config)
    return run_group([config], report, parent_run_id, tags, (device, [data]))[0]
