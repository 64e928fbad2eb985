"""What a member of a training group is, what it hands back, and what the members of one group share.

A member is one configuration (one MLflow run) trained as row k of a stacked program. Training
knows nothing of MLflow: a member reports through a ``RunLogger``, any object with its methods, so
tests pass a recorder and the tracking layer passes MLflow runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from actopt.core import metric_names
from actopt.core.config import TrainConfig
from actopt.core.data import DatasetSplits
from actopt.errors import ConfigError

# The fields that shape the stacked computation: members of one group agree on all of them. The
# rest (seed, init, learning rate, momentum, weight decay, what is logged where) is per member.
# The depth and widths are compared as given (not as the built layer sizes): a depth study's absurd
# depth is refused by the memory check, not by listing its layers.
GROUP_FIELDS = ("dataset", "depth", "width", "hidden_sizes", "activation", "dropout", "batch_size", "epochs",
                "optimizer", "device", "gradient_statistics", "validation_fraction", "max_batches", "test_every_epoch",
                "train_examples")


class RunLogger(Protocol):
    """What training needs from a tracking backend."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def log_model(self, model: nn.Module, input_example: np.ndarray) -> None: ...


@dataclass
class TrainResult:
    """What a run produced; ``history`` has one dict of metrics per logged step (epoch)."""

    history: dict[int, dict[str, float]] = field(default_factory=dict)
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    diverged: bool = False
    diverged_epoch: int | None = None
    epochs_completed: int = 0
    model: nn.Module | None = None


@dataclass
class Member:
    """One configuration inside a group: its data, its logger, its RNG for batch order, what it has logged."""

    config: TrainConfig
    data: DatasetSplits
    logger: RunLogger
    batches: torch.Generator
    result: TrainResult = field(default_factory=TrainResult)
    best_state: list[torch.Tensor] | None = None
    histograms: dict[int, list[list[int]]] = field(default_factory=dict)

    def record(self, step: int, metrics: dict[str, float]) -> None:
        self.logger.log_metrics(metrics, step=step)
        self.result.history.setdefault(step, {}).update(metrics)

    def epoch_line(self, epoch: int, metrics: dict[str, float], named: bool) -> str:
        """The progress line of one epoch; ``named`` prefixes the run (a group reports several)."""
        prefix = f"{self.config.run_name} seed {self.config.seed}: " if named else ""
        values = [metrics[name] for name in (metric_names.TRAIN_LOSS, metric_names.TRAIN_ACCURACY,
                                             metric_names.VAL_LOSS, metric_names.VAL_ACCURACY, metric_names.EPOCH_TIME)]
        return (f"{prefix}epoch {epoch}/{self.config.epochs}  train_loss {values[0]:.4f}  train_acc {values[1]:.4f}  "
                f"val_loss {values[2]:.4f}  val_acc {values[3]:.4f}  {values[4]:.2f}s")


def group_key(config: TrainConfig) -> tuple[Any, ...]:
    """What must be equal for configurations to train as one group."""
    return tuple(getattr(config, name) for name in GROUP_FIELDS)


def check_group(configs: Sequence[TrainConfig]) -> None:
    if not configs:
        raise ConfigError("a group needs at least one configuration")
    differing = [name for name in GROUP_FIELDS if len({getattr(config, name) for config in configs}) > 1]
    if differing:
        raise ConfigError(f"configurations of one group must share {', '.join(differing)}")
