"""A study's configurations trained one after another with the seed projects' plain loop, timed.

    python benchmarks/seed_loop.py fashion-activations --data-dir ../shared/data [--first N]

The baseline for ``actopt sweep``: per configuration, a torchvision dataset with ToTensor and
Normalize transforms behind a DataLoader, the optimizer as PyTorch builds it by default, a
validation pass after every epoch and a test pass at the end; no tracking, no statistics. The
model is actopt's MLP, so only the loop differs. ``--first N`` times the first N configurations
and extrapolates to the whole study by the mean per configuration (it says so).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actopt.core.config import TrainConfig  # noqa: E402
from actopt.core.data import DATASETS  # noqa: E402
from actopt.core.models import build_mlp  # noqa: E402
from actopt.sweeps.study import configurations, label, load_study  # noqa: E402

TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = seen = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((model(images.flatten(1)).argmax(dim=1) == labels).sum())
            seen += len(labels)
    return correct / seen


def plain_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    raise SystemExit(f"seed_loop.py knows sgd and adam, not {config.optimizer}")


def plain_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader,
                validation_loader: DataLoader) -> float:
    """One epoch the seed way: the training loop, then a validation pass; returns validation accuracy."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    for images, labels in train_loader:
        optimizer.zero_grad()
        criterion(model(images.flatten(1)), labels).backward()
        optimizer.step()
    return accuracy(model, validation_loader)


def plain_setup(
    config: TrainConfig, train_set: Dataset, validation_set: Dataset
) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader, DataLoader]:
    torch.manual_seed(config.seed)
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True)
    validation_loader = DataLoader(validation_set, batch_size=1000)
    model = build_mlp(config.layer_sizes, config.activation, config.dropout, config.init)
    return model, plain_optimizer(config, model), train_loader, validation_loader


def plain_splits(config: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
    """The dataset behind per-image transforms, split 90/10 by ``random_split``, and the test set."""
    dataset_class = DATASETS[config.dataset]
    full = dataset_class(root=config.data_dir, train=True, download=False, transform=TRANSFORM)
    validation_count = round(len(full) * config.validation_fraction)
    train_set, validation_set = random_split(
        full, [len(full) - validation_count, validation_count], generator=torch.Generator().manual_seed(config.seed))
    test_set = dataset_class(root=config.data_dir, train=False, download=False, transform=TRANSFORM)
    return train_set, validation_set, test_set


def train_plainly(config: TrainConfig) -> float:
    """One configuration, the seed way, datasets built anew; returns the last epoch's validation accuracy."""
    train_set, validation_set, test_set = plain_splits(config)
    model, optimizer, train_loader, validation_loader = plain_setup(config, train_set, validation_set)
    validation_accuracy = 0.0
    for _ in range(config.epochs):
        validation_accuracy = plain_epoch(model, optimizer, train_loader, validation_loader)
    accuracy(model, DataLoader(test_set, batch_size=1000))
    return validation_accuracy

def time_configurations(configs: list[TrainConfig], report=print) -> list[float]:
    """Seconds each configuration takes the seed way."""
    seconds = []
    for config in configs:
        started = time.perf_counter()
        validation_accuracy = train_plainly(config)
        seconds.append(time.perf_counter() - started)
        report(f"{label(config):<32} {seconds[-1]:7.1f} s  val {validation_accuracy:.4f}")
    return seconds

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--first", type=int, default=0, help="time only the first N configurations (0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    configs = configurations(load_study(arguments.study), data_dir=arguments.data_dir)
    timed = configs[: arguments.first] if arguments.first else configs
    seconds = time_configurations(timed, report=lambda line: print(line, flush=True))
    total = sum(seconds)
    print(f"{len(timed)} configurations in {total:.0f} s, {statistics.mean(seconds):.1f} s each on average "
          f"({torch.get_num_threads()} threads)")
    if len(timed) < len(configs):
        print(f"whole study ({len(configs)} configurations), extrapolated: {total / len(timed) * len(configs):.0f} s")

if __name__ == "__main__":
    main()
