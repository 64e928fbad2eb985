"""Runs logged straight into the test store with known values, shaped like the runs training logs."""

from __future__ import annotations

import time
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from actopt.core.config import TrainConfig
from actopt.core.models import ACTIVATIONS
from actopt.core.run_end import HISTORY_ARTIFACT, history_csv
from actopt.tracking import records


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def history(
    activation: str,
    epochs: int = 4,
    best: float = 0.85,
    ratio: float = 0.5,
    unit_fraction: float = 0.1,
    gap: float = 0.0,
    reach: int = 2,
    test_every_epoch: bool = False,
) -> dict[int, dict[str, float]]:
    """A plausible per-epoch table: validation accuracy climbs to ``best`` and first reaches 95% of it at
    epoch ``reach``; layer 1's gradient norm is ``ratio`` × the output layer's; the last epoch's
    dead or saturated fraction (by activation) is ``unit_fraction``; train accuracy = val + ``gap``."""
    spec = ACTIVATIONS[activation]
    unit_key = "dead_fraction" if spec.dies else "inactive_fraction" if spec.rectifier else "saturated_fraction"
    table: dict[int, dict[str, float]] = {0: {}}
    for layer in (1, 2, 3):
        table[0][f"probe_grad_max_abs/layer_{layer:02d}"] = 0.01 * layer
    for layer in (1, 2):
        table[0][f"{unit_key}/layer_{layer:02d}"] = 0.0
    for epoch in range(1, epochs + 1):
        val = best * (0.9 if epoch < reach else 1.0 if epoch == epochs else 0.97)
        row = {"train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch, "val_accuracy": val, "train_accuracy": val + gap,
               "learning_rate": 0.1, "epoch_time": 0.5 + epoch / 10, "grad_global_norm": 1.0}
        row.update({"grad_norm/layer_01": ratio, "grad_norm/layer_02": 0.7, "grad_norm/layer_03": 1.0})
        row.update({f"probe_grad_max_abs/layer_{layer:02d}": 0.02 * layer for layer in (1, 2, 3)})
        row.update({f"{unit_key}/layer_{layer:02d}": unit_fraction * epoch / epochs for layer in (1, 2)})
        if test_every_epoch:
            row.update(epoch_test_accuracy=val - 0.01, epoch_test_loss=1.2 / epoch)
        table[epoch] = row
    return table


def log_run(
    client: MlflowClient,
    experiment: str,
    config: dict[str, Any],
    table: dict[int, dict[str, float]],
    diverged_epoch: int | None = None,
    test_accuracy: float = 0.84,
    status: str = "FINISHED",
    with_history_csv: bool = True,
    tags: dict[str, str] | None = None,
) -> str:
    """Log one run as ``tracking.run_training`` would: params, per-step metrics, summaries, tags, history.csv."""
    settings = TrainConfig.from_mapping({"dataset": "mnist", "data_dir": "unused", "experiment_name": experiment,
                                         "hidden_sizes": "32,16", "epochs": max(max(table, default=1), 1),
                                         **config})  # a history as long as its epochs, as training logs it
    run = client.create_run(experiment_id(client, experiment), run_name=records.run_name(settings))
    run_id = run.info.run_id
    stamp = int(time.time() * 1000)
    metrics = [Metric(key, value, stamp, step) for step, row in table.items() for key, value in row.items()]
    vals = {step: row["val_accuracy"] for step,
            row in table.items() if "val_accuracy" in row and step != diverged_epoch}
    run_tags = {"diverged": "true" if diverged_epoch else "false", "dataset": settings.dataset,
                "activation": settings.activation, "optimizer": settings.optimizer, **(tags or {})}
    if diverged_epoch:
        run_tags["diverged_epoch"] = str(diverged_epoch)
    if vals:
        best_epoch = max(vals, key=vals.get)
        run_tags["best_epoch"] = str(best_epoch)
        summary = {"best_epoch": float(best_epoch), "best_val_accuracy": vals[best_epoch],
                   "test_accuracy": test_accuracy,
                   "test_loss": 0.4}
        metrics += [Metric(key, value, stamp, 0) for key, value in summary.items()]
    params = [Param(key, value) for key, value in settings.to_params().items()]
    client.log_batch(run_id, metrics=metrics, params=params, tags=[RunTag(k, v) for k, v in run_tags.items()])
    if with_history_csv:
        client.log_text(run_id, history_csv(table), HISTORY_ARTIFACT)
    client.set_terminated(run_id, status)
    return run_id
