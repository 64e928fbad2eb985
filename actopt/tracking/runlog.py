"""One training run in MLflow: the RunLogger that training writes through, and the run's start, tags and end status."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torch import nn

from actopt.core.config import TrainConfig, config_digest
from actopt.core.data import DatasetSplits, load_splits
from actopt.core.training import TrainResult, resolve_device, train
from actopt.errors import mask_credentials
from actopt.tracking.records import CONFIG_DIGEST_TAG, ensure_experiment, process_tags
from actopt.tracking.signals import Terminated
from actopt.tracking.store import LEFT_RUNNING, RUN_ID_VARIABLE, configure, no_answer, quick_http


class MlflowRunLogger:
    """``training.RunLogger`` over one MLflow run; each call is one request to the store."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

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
        # Explicit requirements skip MLflow's inference, which re-imports the model in a subprocess.
        mlflow.pytorch.log_model(
            model,
            name="model",
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
        mlflow.set_experiment(experiment_id=ensure_experiment(client, config.experiment_name))
        # Tags from the first moment: a sweep finds its child runs (and their owner process) by them.
        run = mlflow.start_run(run_name=config.run_name, parent_run_id=parent_run_id, nested=parent_run_id is not None,
                               tags=tags)
    logger = MlflowRunLogger(client, run.info.run_id)
    try:
        logger.log_params(config.to_params())
        logger.set_tags({**run_tags(config, device), **tags})
        mask_tags(client, run.info.run_id)
        log_dataset(dataset_input(data))
        yield logger
    except (KeyboardInterrupt, Terminated):
        end_active_run("KILLED", quick=True)  # a signal asks to stop now, not after a silent server's retries
        raise
    except BaseException as error:
        try:
            end_active_run("FAILED", quick=no_answer(error))
        except Exception:  # the store that failed the run refuses its end too: the first error is the one to tell
            setattr(error, LEFT_RUNNING, True)
        raise
    else:
        mlflow.end_run(status="FINISHED")


def end_active_run(status: str, quick: bool = False) -> None:
    """End the active run. ``quick``: one short try, and a server that does not answer leaves the run
    RUNNING (the next sweep or `actopt train` of its configuration marks it FAILED) instead of
    waiting out the retries, which after a server has just failed them would only delay the error."""
    if not quick:
        mlflow.end_run(status=status)  # takes the run off MLflow's stack before it asks the store
        return
    with quick_http():
        try:
            mlflow.end_run(status=status)
        except Exception as error:
            if not no_answer(error):
                raise


def prepare(config: TrainConfig) -> tuple[torch.device, DatasetSplits]:
    """Everything that can fail on bad input, done before any run exists."""
    device = resolve_device(config.device)
    data = load_splits(config.dataset, config.data_dir, config.download, config.validation_fraction, config.seed,
                       device)
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
