"""Train a group of configurations as one stacked program and report each member through its own logger.

``train_group(configs, datas, loggers)`` trains K configurations that share what shapes the
computation (``GROUP_FIELDS``) as the K members of one ``StackedMLP``; each member keeps its own
initialisation, data split, batch order, dropout masks and optimizer hyperparameters, and logs
what it would log alone. ``train(config, data, logger)`` is a group of one: there is one path.
Training knows nothing of MLflow: a logger is any object with the ``RunLogger`` methods, so tests
pass a recorder and the tracking layer passes MLflow runs.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from actopt.core import gradstats
from actopt.core.config import DEVICES, TrainConfig
from actopt.core.data import DatasetSplits, Split, batch_indices, leading, majority_rate
from actopt.core.evaluation import evaluate, evaluate_members
from actopt.core.models import CLASSES, build_mlp, linear_layers, parameter_count, repeated_parameter_count
from actopt.core.optimizers import StackedOptimizer
from actopt.core.probe import GroupProbe, layer_name
from actopt.core.stacked import StackedMLP
from actopt.errors import ConfigError, OutOfMemory, choose

__all__ = ["evaluate", "layer_name", "train", "train_group"]

# How often the hot loop looks at the running losses for NaN/inf; each look is a device sync.
DIVERGENCE_CHECK_STEPS = 32
# The fields that shape the stacked computation: members of one group agree on all of them. The
# rest (seed, init, learning rate, momentum, weight decay, what is logged where) is per member.
# The depth and widths are compared as given (not as the built layer sizes): a depth study's absurd
# depth is refused by the memory check, not by listing its layers.
GROUP_FIELDS = ("dataset", "depth", "width", "hidden_sizes", "activation", "dropout", "batch_size", "epochs",
                "optimizer", "device", "gradient_statistics", "validation_fraction", "max_batches", "test_every_epoch")

HISTORY_ARTIFACT = "history.csv"
HISTOGRAM_ARTIFACT = "gradient_histograms.json"
HISTOGRAM_IMAGE_KEY = "gradient_histogram"


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


@dataclass
class EpochTotals:
    """One epoch of every member of the stack, summed on the device, read once at its end."""

    loss_sums: list[float]
    correct: list[int]
    seen: list[int]
    diverged: list[bool]
    steps: int
    statistic_sums: torch.Tensor | None
    statistic_maxima: torch.Tensor | None


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present; asking for CUDA without one is a user error, found before any run."""
    choose(DEVICES, name, "device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but torch finds no CUDA device; use --device cpu or auto")
    return torch.device(name)


def group_key(config: TrainConfig) -> tuple[Any, ...]:
    """What must be equal for configurations to train as one group."""
    return tuple(getattr(config, name) for name in GROUP_FIELDS)


def check_group(configs: Sequence[TrainConfig]) -> None:
    if not configs:
        raise ConfigError("a group needs at least one configuration")
    differing = [name for name in GROUP_FIELDS if len({getattr(config, name) for config in configs}) > 1]
    if differing:
        raise ConfigError(f"configurations of one group must share {', '.join(differing)}")


def flush_subnormals(device: torch.device) -> None:
    """Subnormal floats (a saturated net's gradients and Adam's second moments) take the CPU's slow
    path: a sigmoid + Adam 1e-2 run went from 1.3 to 3.8 s per epoch. Flushing them to zero keeps its
    speed; benchmarks/RESULTS.md measures that the logged accuracies stay the same."""
    if device.type == "cpu":
        torch.set_flush_denormal(True)


def gradient_metrics(statistics: gradstats.EpochGradientStatistics) -> dict[str, float]:
    metrics = {"grad_global_norm": statistics.global_norm, "grad_global_norm_peak": statistics.global_norm_peak}
    columns = {
        "grad_norm": statistics.l2_norm,
        "grad_mean_abs": statistics.mean_abs,
        "grad_max_abs": statistics.max_abs,
        "grad_max_abs_peak": statistics.max_abs_peak,
    }
    for prefix, values in columns.items():
        for index, value in enumerate(values, start=1):
            metrics[f"{prefix}/{layer_name(index)}"] = value
    return metrics


# The model's weights, their gradients and up to two optimizer states per weight, in float32.
TRAINING_BYTES_PER_PARAMETER = 4 * 4


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory the device has in all (None where it cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def build_stack(configs: Sequence[TrainConfig], device: torch.device) -> StackedMLP:
    """The members' stacked MLP, or ``OutOfMemory`` saying how large it is: at once when it cannot fit in
    the device's memory at all (building it layer by layer would end with the kernel killing the process),
    or when an allocation fails."""
    lead = configs[0]
    count = (repeated_parameter_count(lead.depth, lead.width) if lead.depth > 0
             else parameter_count(lead.hidden_sizes)) * len(configs)
    members = f" for {len(configs)} members" if len(configs) > 1 else ""
    failure = OutOfMemory(f"out of memory building the model ({count} parameters{members})")
    memory = device_memory(device)
    if memory is not None and count * TRAINING_BYTES_PER_PARAMETER > memory:
        raise failure
    try:
        return StackedMLP([initial_weights(config, device) for config in configs], lead.activation, lead.dropout,
                          [dropout_generator(config, device) for config in configs])
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "allocate" in str(error):
            raise failure from None
        raise


def initial_weights(config: TrainConfig, device: torch.device) -> nn.Sequential:
    """The member's own initialisation: the net ``build_mlp`` makes right after seeding with its seed."""
    torch.manual_seed(config.seed)
    return build_mlp(config.layer_sizes, config.activation, config.dropout, config.init).to(device)


def dropout_generator(config: TrainConfig, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(config.seed)


def train(
    config: TrainConfig,
    data: DatasetSplits,
    logger: RunLogger,
    device: torch.device | None = None,
    report: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config`` on ``data`` (already on ``device``) as a group of one; never raises on divergence."""
    return train_group([config], [data], [logger], device, report)[0]


def train_group(
    configs: Sequence[TrainConfig],
    datas: Sequence[DatasetSplits],
    loggers: Sequence[RunLogger],
    device: torch.device | None = None,
    report: Callable[[str], None] | None = None,
    finished: Callable[[int, TrainResult], None] | None = None,
) -> list[TrainResult]:
    """Train the configurations as one stacked program, logging each member per epoch.

    ``datas[k]`` is member k's data (its seed's split), already on ``device``. A diverging member
    stops at the end of the epoch where it diverged, logs that epoch and its end-of-run record,
    and leaves the stack; the others train on. ``finished(k, result)`` is called once member k has logged
    everything, so that the tracking layer can close its run then.
    """
    check_group(configs)
    lead = configs[0]
    device = device or datas[0].train.inputs.device
    flush_subnormals(device)
    members = [Member(config, data, logger, torch.Generator().manual_seed(config.seed))
               for config, data, logger in zip(configs, datas, loggers)]
    model = build_stack(configs, device)
    optimizer = StackedOptimizer(lead.optimizer, [model.member_parameters(row) for row in range(len(model))],
                                 [config.learning_rate for config in configs], [config.momentum for config in configs],
                                 [config.weight_decay for config in configs])
    probe = GroupProbe(configs, datas) if lead.gradient_statistics else None
    element_counts = [weight[0].numel() for weight in model.weights]
    active = list(range(len(members)))  # the member trained by each row of the stack
    # The train/validation gap is measured like validation accuracy (eval mode, no dropout, weights
    # after the epoch) on as many training examples as the validation split holds: the accuracy
    # accumulated during the epoch, with dropout active and weights still moving, understates it.
    train_subsets = [leading(member.data.train, len(member.data.validation)) for member in members]

    if probe is not None:
        for index, (metrics, histograms) in zip(active, probe.measure(model)):
            members[index].histograms[0] = [counts.tolist() for counts in histograms]
            members[index].record(0, metrics)

    for epoch in range(1, lead.epochs + 1):
        started = time.perf_counter()
        totals = train_epoch(model, optimizer, [members[index] for index in active], lead, probe is not None)
        epoch_time = time.perf_counter() - started
        validation = evaluate_members(model, [members[index].data.validation for index in active])
        train_eval = evaluate_members(model, [train_subsets[index] for index in active])
        tests = (evaluate_members(model, [members[index].data.test for index in active])
                 if lead.test_every_epoch else None)
        probed = probe.measure(model) if probe is not None and not all(totals.diverged) else None
        kept = []
        for row, index in enumerate(active):
            member = members[index]
            metrics = epoch_metrics(totals, row, optimizer.learning_rate(row), element_counts)
            # A member's share of the group's epoch: what its epoch cost, comparable with a run trained alone
            # (the report's seconds per epoch); the whole group's time is kept beside it.
            metrics["epoch_time"] = epoch_time / len(active)
            if len(members) > 1:
                metrics["group_epoch_time"] = epoch_time
            metrics["val_loss"], metrics["val_accuracy"] = validation[row]
            metrics["train_eval_loss"], metrics["train_eval_accuracy"] = train_eval[row]
            if tests is not None:
                metrics["epoch_test_loss"], metrics["epoch_test_accuracy"] = tests[row]
            if probed is not None and not totals.diverged[row]:
                probe_metrics, histograms = probed[row]
                member.histograms[epoch] = [counts.tolist() for counts in histograms]
                metrics.update(probe_metrics)
            member.record(epoch, metrics)
            if totals.diverged[row]:
                member.result.diverged, member.result.diverged_epoch = True, epoch
                finish_member(member, model, row, probe)
                if finished is not None:
                    finished(index, member.result)
                continue
            kept.append(row)
            member.result.epochs_completed = epoch
            if member.result.best_val_accuracy is None or metrics["val_accuracy"] > member.result.best_val_accuracy:
                member.result.best_epoch, member.result.best_val_accuracy = epoch, metrics["val_accuracy"]
                member.best_state = model.member_state(row)
            if report is not None:
                report(epoch_line(member, epoch, metrics, len(members) > 1))
        if not kept:
            return [member.result for member in members]
        if len(kept) < len(active):
            model.keep_rows(kept)
            optimizer.keep(kept, [model.member_parameters(row) for row in range(len(model))])
            if probe is not None:
                probe.keep(kept)
            active = [active[row] for row in kept]

    for row, index in enumerate(active):
        finish_member(members[index], model, row, probe)
        if finished is not None:
            finished(index, members[index].result)
    return [member.result for member in members]


def train_epoch(model: StackedMLP, optimizer: StackedOptimizer, members: Sequence[Member], config: TrainConfig,
                statistics: bool) -> EpochTotals:
    """One epoch of every member, each on its own batches; a member whose loss stops being finite
    stops counting (its NaN stays in its own rows), and the epoch ends early once all have."""
    count = len(members)
    device = model.weights[0].device
    features = members[0].data.train.inputs.shape[1]
    loss_sums = torch.zeros(count, dtype=torch.float64, device=device)
    correct = torch.zeros(count, dtype=torch.int64, device=device)
    seen = torch.zeros(count, dtype=torch.int64, device=device)
    alive = torch.ones(count, dtype=torch.bool, device=device)
    size = 3 * len(model.weights) + 1
    sums = torch.zeros(count, size, device=device) if statistics else None
    maxima = torch.zeros(count, size, device=device) if statistics else None
    scratch = [torch.empty_like(weight) for weight in model.weights] if statistics else None
    orders = [list(batch_indices(len(member.data.train), config.batch_size, member.batches, device,
                                 config.max_batches)) for member in members]
    sources, rows_of = distinct_batches(members, orders)
    steps = 0
    for batch in zip(*(orders[position] for position in sources)):
        inputs, targets = gather_batch([members[position].data.train for position in sources], batch, rows_of,
                                       features)
        rows = inputs.shape[1]
        logits = model.forward(inputs, training=True)
        losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             reduction="none").view(count, rows).mean(dim=1)
        model.zero_grad()
        losses.sum().backward()
        if sums is not None and maxima is not None:
            step = gradstats.stacked_step_statistics([weight.grad for weight in model.weights],
                                                     [bias.grad for bias in model.biases], scratch)
            sums += step
            torch.maximum(maxima, step, out=maxima)
        optimizer.step()
        loss_sums += losses.detach() * rows
        correct += (logits.argmax(dim=2) == targets).sum(dim=1) * alive
        seen += rows * alive
        steps += 1
        if steps % DIVERGENCE_CHECK_STEPS == 0:
            alive &= torch.isfinite(loss_sums)
            if not bool(alive.any()):
                break
    seen_list = seen.tolist()
    losses_list = [total / max(number, 1) for total, number in zip(loss_sums.tolist(), seen_list)]
    diverged = [not (living and math.isfinite(loss)) for living, loss in zip(alive.tolist(), losses_list)]
    return EpochTotals(loss_sums.tolist(), correct.tolist(), seen_list, diverged, steps, sums, maxima)


def distinct_batches(members: Sequence[Member], orders: list[list[torch.Tensor]]
                     ) -> tuple[list[int], torch.Tensor | None]:
    """The members whose batches are gathered (one per distinct training split and batch order: the members
    of one seed share both) and, for every row of the stack, which of them it copies (None: each its own)."""
    sources: list[int] = []
    rows_of = []
    for position, member in enumerate(members):
        same = next((index for index, source in enumerate(sources) if members[source].data.train is member.data.train
                     and all(torch.equal(mine, theirs) for mine, theirs in zip(orders[position], orders[source]))),
                    None)
        if same is None:
            sources.append(position)
            same = len(sources) - 1
        rows_of.append(same)
    if rows_of == list(range(len(members))):
        return sources, None
    return sources, torch.tensor(rows_of, device=orders[0][0].device)


def gather_batch(splits: Sequence[Split], batch: Sequence[torch.Tensor], rows_of: torch.Tensor | None,
                 features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (K, N, features) and targets (K, N) of one step: each distinct batch copied once from its
    split, then spread over the rows that train on it in one indexed copy."""
    count, rows = len(splits), batch[0].shape[0]
    device = batch[0].device
    inputs = torch.empty(count, rows, features, device=device)
    targets = torch.empty(count, rows, dtype=torch.int64, device=device)
    for position, (split, indices) in enumerate(zip(splits, batch)):
        torch.index_select(split.inputs, 0, indices, out=inputs[position])
        torch.index_select(split.targets, 0, indices, out=targets[position])
    if rows_of is None:
        return inputs, targets
    return inputs.index_select(0, rows_of), targets.index_select(0, rows_of)


def epoch_metrics(totals: EpochTotals, row: int, learning_rate: float, element_counts: list[int]) -> dict[str, float]:
    seen = max(totals.seen[row], 1)
    metrics = {
        "train_loss": totals.loss_sums[row] / seen,
        "train_accuracy": totals.correct[row] / seen,
        "learning_rate": learning_rate,
    }
    if totals.statistic_sums is not None and totals.statistic_maxima is not None:
        metrics.update(gradient_metrics(gradstats.summarize_epoch(
            totals.statistic_sums[row], totals.statistic_maxima[row], totals.steps, element_counts)))
    return metrics


def epoch_line(member: Member, epoch: int, metrics: dict[str, float], named: bool) -> str:
    prefix = f"{member.config.run_name} seed {member.config.seed}: " if named else ""
    return (f"{prefix}epoch {epoch}/{member.config.epochs}  train_loss {metrics['train_loss']:.4f}  train_acc "
            f"{metrics['train_accuracy']:.4f}  val_loss {metrics['val_loss']:.4f}  "
            f"val_acc {metrics['val_accuracy']:.4f}  {metrics['epoch_time']:.2f}s")


def finish_member(member: Member, model: StackedMLP, row: int, probe: GroupProbe | None) -> None:
    """A member's end of run, with its weights taken out of the stack as a plain ``nn.Sequential``."""
    input_size = member.data.train.inputs.shape[1]
    module = model.member_module(model.member_state(row), input_size, CLASSES)
    best = None
    if member.best_state is not None:
        best = model.member_module(member.best_state, input_size, CLASSES).state_dict()
    finish(member.config, member.data, member.logger, module, best, member.histograms, member.result, probe)


def finish(
    config: TrainConfig,
    data: DatasetSplits,
    logger: RunLogger,
    model: nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    histograms: dict[int, list[list[int]]],
    result: TrainResult,
    probe: GroupProbe | None,
) -> None:
    """Best-epoch tags, test on the best weights, artifacts; also after a divergence."""
    tags = {"diverged": str(result.diverged).lower()}
    # What always answering the most frequent class scores: a run near it did not learn.
    summary = {"chance_accuracy": majority_rate(data.validation)}
    if result.diverged:
        tags["diverged_epoch"] = str(result.diverged_epoch)
    if best_state is not None:
        model.load_state_dict(best_state)
        result.test_loss, result.test_accuracy = evaluate(model, data.test)
        tags["best_epoch"] = str(result.best_epoch)
        summary.update(best_epoch=float(result.best_epoch), best_val_accuracy=result.best_val_accuracy,
                       test_accuracy=result.test_accuracy, test_loss=result.test_loss)
    logger.log_metrics(summary)
    logger.set_tags(tags)
    logger.log_text(history_csv(result.history), HISTORY_ARTIFACT)
    if probe is not None and histograms:
        layer_names = [layer_name(index) for index in range(1, len(linear_layers(model)) + 1)]
        logger.log_dict(histogram_document(histograms, probe.edges, layer_names, probe.size), HISTOGRAM_ARTIFACT)
        from actopt.core.figures import (
            histogram_images,  # matplotlib is needed only here
        )

        for step, image in histogram_images(histograms, probe.edges.tolist(), layer_names):
            logger.log_image(image, HISTOGRAM_IMAGE_KEY, step)
    result.model = model
    if config.log_model and best_state is not None:
        logger.log_model(model.cpu(), data.validation.inputs[:4].cpu().numpy())


def history_csv(history: dict[int, dict[str, float]]) -> str:
    """The per-epoch table as CSV (a ``step`` column, then one column per metric key)."""
    keys = sorted({key for metrics in history.values() for key in metrics})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", *keys])
    for step in sorted(history):
        row = history[step]
        writer.writerow([step, *(repr(row[key]) if key in row else "" for key in keys)])
    return buffer.getvalue()


def histogram_document(
    histograms: dict[int, list[list[int]]], edges: torch.Tensor, layer_names: list[str], probe_size: int
) -> dict[str, Any]:
    return {
        "description": (
            "Counts of log10|weight gradient| on a fixed training minibatch, per step (0 = initialisation, "
            "n = after epoch n) and Linear layer. Bucket 0 holds values below edges[0] (exact zeros too), "
            "bucket i holds edges[i-1] <= log10|g| < edges[i], the last bucket values >= edges[-1]."
        ),
        "probe_examples": probe_size,
        "edges_log10": edges.tolist(),
        "layers": layer_names,
        "steps": sorted(histograms),
        "counts": [histograms[step] for step in sorted(histograms)],
    }
