"""Seconds per epoch of the default configuration, three ways, side by side in one process.

    python benchmarks/epoch_speed.py --data-dir ../shared/data [--epochs 3] [--repeats 3]

(a) the seed's plain loop: torchvision dataset with ToTensor/Normalize transforms, DataLoader,
    default Adam, no instrumentation;
(b) actopt's loop with gradient statistics off and a logger that drops everything;
(c) actopt with everything on, logging to a fresh sqlite MLflow store in a temporary folder.
Each epoch includes the validation pass. It also measures the arithmetic limit: the model's
forward + backward FLOPs per epoch divided by a matmul rate measured here, and prints medians and
ratios as a markdown table. Ratios, not absolute times, are what carry across machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actopt import training  # noqa: E402
from actopt.config import TrainConfig  # noqa: E402
from actopt.data import load_splits  # noqa: E402
from actopt.models import build_mlp  # noqa: E402


def seed_style_epoch_times(data_dir: str, epochs: int, batch_size: int = 128) -> list[float]:
    """The original studies' loop, timed per epoch (training plus a validation pass)."""
    torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    full = datasets.FashionMNIST(root=data_dir, train=True, download=False, transform=transform)
    train_set, validation_set = random_split(full, [54000, 6000], generator=torch.Generator().manual_seed(0))
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    validation_loader = DataLoader(validation_set, batch_size=1000)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_function = nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = loss_function(model(images), labels)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images, labels in validation_loader:
                model(images).argmax(1).eq(labels).sum()
        times.append(time.perf_counter() - started)
    return times


class TimingLogger:
    """Drops everything (or forwards to another logger), notes when each epoch was logged and how
    long the per-epoch ``log_metrics`` calls spent inside the tracking backend."""

    def __init__(self, inner=None) -> None:
        self.inner = inner
        self.stamps: list[float] = [time.perf_counter()]
        self.logging_seconds: list[float] = []

    def log_metrics(self, metrics, step=None):
        if self.inner is not None:
            started = time.perf_counter()
            self.inner.log_metrics(metrics, step)
            if step:
                self.logging_seconds.append(time.perf_counter() - started)
        if step:
            self.stamps.append(time.perf_counter())

    def __getattr__(self, name):
        if self.inner is not None:
            return getattr(self.inner, name)
        return lambda *args, **kwargs: None

    def epoch_times(self) -> list[float]:
        return [later - earlier for earlier, later in zip(self.stamps[1:], self.stamps[2:])] or [
            self.stamps[1] - self.stamps[0]
        ]


def actopt_epoch_times(config: TrainConfig, data, instrumented: bool, logging_seconds: list[float]) -> list[float]:
    if not instrumented:
        logger = TimingLogger()
        training.train(config.replace(gradient_statistics=False, log_model=False), data, logger)
        return logger.epoch_times()
    from actopt import tracking

    with tempfile.TemporaryDirectory() as folder:
        previous = os.getcwd()
        os.chdir(folder)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        try:
            with tracking.training_run(config, data, torch.device("cpu")) as run_logger:
                logger = TimingLogger(run_logger)
                logger.stamps = [time.perf_counter()]
                training.train(config, data, logger)
        finally:
            os.chdir(previous)
    logging_seconds += logger.logging_seconds
    # The first stamp is taken after the step-0 probe; epochs are measured between epoch logs.
    return logger.epoch_times()


def matmul_rate(size: int = 1024, repeats: int = 20) -> float:
    """float32 FLOP/s of a square matmul: the machine's arithmetic ceiling for this model."""
    left, right = torch.randn(size, size), torch.randn(size, size)
    torch.mm(left, right)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(left, right)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def epoch_flops(config: TrainConfig, train_examples: int, validation_examples: int) -> float:
    """Forward (2·in·out per example and layer) plus backward (twice that) over an epoch, plus validation."""
    sizes = [784, *config.layer_sizes, 10]
    per_example = sum(2 * fan_in * fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))
    return 3 * per_example * train_examples + per_example * validation_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("ACTOPT_DATA_DIR", "./data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()

    config = TrainConfig.from_mapping({"data_dir": arguments.data_dir, "download": False, "epochs": arguments.epochs,
                                       "device": "cpu", "log_model": False, "experiment_name": "benchmark"})
    data = load_splits(config.dataset, config.data_dir, False, config.validation_fraction, config.seed)
    results: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    logging_seconds: list[float] = []
    for _ in range(arguments.repeats):
        results["a"] += seed_style_epoch_times(arguments.data_dir, arguments.epochs)
        results["b"] += actopt_epoch_times(config, data, False, logging_seconds)
        results["c"] += actopt_epoch_times(config, data, True, logging_seconds)
    median = {form: statistics.median(times) for form, times in results.items()}
    limit = epoch_flops(config, len(data.train), len(data.validation)) / matmul_rate()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{arguments.repeats} repeats × {arguments.epochs} epochs, medians of seconds per epoch\n")
    print("| form | s/epoch |")
    print("| --- | --- |")
    print(f"| (a) seed-style DataLoader loop | {median['a']:.3f} |")
    print(f"| (b) actopt, no instrumentation, no logging | {median['b']:.3f} |")
    print(f"| (c) actopt, everything on, MLflow sqlite | {median['c']:.3f} |")
    print(f"| arithmetic limit (FLOPs / measured matmul rate) | {limit:.3f} |")
    print(f"| of which MLflow log_metrics per epoch (c) | {statistics.median(logging_seconds):.4f} |")
    print(f"\n(a)/(c) = {median['a'] / median['c']:.2f}×   (c)/(b) = {median['c'] / median['b']:.3f}   "
          f"(c)/limit = {median['c'] / limit:.2f}×")


if __name__ == "__main__":
    main()
