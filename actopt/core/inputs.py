"""Each member's data, prepared once: the device resolved, the dataset read, scaled and split.

``data_key`` is the one key under which prepared data is shared: two configurations with the same key
train on the same tensors (the members of one seed do). ``DataCache`` keeps what the last group
prepared for the next one; a single run or a single group prepares through a cache of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from actopt.core.config import TrainConfig
from actopt.core.data import DatasetSplits, DataSpec, load_splits
from actopt.core.device import resolve_device


def data_spec(config: TrainConfig) -> DataSpec:
    """Which data ``config`` trains on and how it is cut."""
    return DataSpec(config.dataset, config.data_dir, config.download, config.validation_fraction, config.seed,
                    config.input_scaling, config.train_examples)


def data_key(config: TrainConfig) -> tuple[Any, ...]:
    """What must be equal for two configurations to share their prepared data."""
    return data_spec(config), config.device


def prepare(config: TrainConfig) -> tuple[torch.device, DatasetSplits]:
    """Everything that can fail on bad input, done before any run exists."""
    device = resolve_device(config.device)
    return device, load_splits(data_spec(config), device)


class DataCache:
    """Prepared data by ``data_key``; each ``prepare`` keeps only what its group needs.

    A study's consecutive groups mostly share dataset and seeds, so a sweep worker keeps one cache for
    all its groups; dropping the rest holds its memory to one group's data.
    """

    def __init__(self) -> None:
        self.prepared: dict[tuple[Any, ...], tuple[torch.device, DatasetSplits]] = {}

    def prepare(self, configs: Sequence[TrainConfig]) -> tuple[torch.device, list[DatasetSplits]]:
        """The device and each member's data, loaded once per distinct key, in the members' order."""
        wanted = {data_key(config): config for config in configs}
        for key in [key for key in self.prepared if key not in wanted]:
            del self.prepared[key]
        for key, config in wanted.items():
            if key not in self.prepared:
                self.prepared[key] = prepare(config)
        return self.prepared[data_key(configs[0])][0], [self.prepared[data_key(config)][1] for config in configs]


def prepare_group(configs: Sequence[TrainConfig]) -> tuple[torch.device, list[DatasetSplits]]:
    """Each member's data, loaded once per distinct split (members of one seed share it)."""
    return DataCache().prepare(configs)


def splits(config: TrainConfig) -> DatasetSplits:
    """``config``'s data alone, on its device."""
    return prepare(config)[1]
