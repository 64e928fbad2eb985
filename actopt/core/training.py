"""Train one configuration and report everything through a logger; returns what happened.

``train(config, data, logger)`` knows nothing of MLflow: the logger is any object with the
``RunLogger`` methods, so tests pass a recorder and the tracking layer passes an MLflow run.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from actopt.core import derivatives, gradstats
from actopt.core.config import DEVICES, TrainConfig
from actopt.core.data import DatasetSplits, Split, batch_indices, leading, majority_rate
from actopt.core.models import ACTIVATIONS, build_mlp, linear_layers, parameter_count, repeated_parameter_count
from actopt.core.optimizers import build_optimizer
from actopt.errors import ConfigError, OutOfMemory, choose

# Evaluation runs in large chunks: bounded memory for deep nets, few Python round trips.
EVALUATION_BATCH = 4096
# Unit statistics (dead / saturated) are measured on this many fixed validation examples.
UNIT_PROBE_EXAMPLES = 2048
# How often the hot loop looks at the running loss for NaN/inf; each look is a device sync.
DIVERGENCE_CHECK_STEPS = 32

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


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present; asking for CUDA without one is a user error, found before any run."""
    choose(DEVICES, name, "device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but torch finds no CUDA device; use --device cpu or auto")
    return torch.device(name)


def layer_name(index: int) -> str:
    """Linear layer names counted from 1 and zero-padded so the MLflow UI sorts them in order."""
    return f"layer_{index:02d}"


def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split, without dropout or gradients."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.inputs.device)
    correct = torch.zeros((), dtype=torch.int64, device=split.inputs.device)
    with torch.no_grad():
        for start in range(0, len(split), EVALUATION_BATCH):
            inputs = split.inputs[start : start + EVALUATION_BATCH]
            targets = split.targets[start : start + EVALUATION_BATCH]
            logits = model(inputs)
            loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
    model.train(was_training)
    count = max(len(split), 1)
    return float(loss_sum) / count, int(correct) / count


def hidden_outputs(model: nn.Module, inputs: torch.Tensor, activation: str) -> tuple[list[torch.Tensor],
                                                                                     list[torch.Tensor]]:
    """Pre-activations and activation outputs of every hidden layer for ``inputs`` (eval mode)."""
    # Every registered builder is the activation's module class itself.
    kind = choose(ACTIVATIONS, activation, "activation").build
    pre_activations: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        values = inputs
        for module in model:
            values = module(values)
            if isinstance(module, nn.Linear):
                pre_activations.append(values)
            elif isinstance(module, kind):
                outputs.append(values)
    model.train(was_training)
    # The last Linear gives the logits, not a hidden layer.
    return pre_activations[:-1], outputs


def forward_with_pre_activations(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor],
                                                                               list[torch.Tensor]]:
    """The model's output, every Linear layer's output (kept for its gradient) and every Linear layer's input."""
    pre_activations: list[torch.Tensor] = []
    layer_inputs: list[torch.Tensor] = []
    values = inputs
    for module in model:
        if isinstance(module, nn.Linear):
            layer_inputs.append(values.detach())
        values = module(values)
        if isinstance(module, nn.Linear):
            values.retain_grad()
            pre_activations.append(values)
    return values, pre_activations, layer_inputs


class Probe:
    """Fixed batches that are measured at initialisation and after every epoch.

    The gradient probe is one training minibatch (seed 001's "given mini-batch"), taken without
    dropout so that it measures the weights alone; the unit probe is a slice of the validation set.
    """

    def __init__(self, config: TrainConfig, data: DatasetSplits) -> None:
        generator = torch.Generator().manual_seed(config.seed + 1)
        indices = torch.randperm(len(data.train), generator=generator)[: config.batch_size].to(data.train.inputs.device)
        self.inputs = data.train.inputs[indices]
        self.targets = data.train.targets[indices]
        self.unit_inputs = data.validation.inputs[:UNIT_PROBE_EXAMPLES]
        self.activation = config.activation
        self.spec = choose(ACTIVATIONS, config.activation, "activation")
        self.edges = gradstats.histogram_edges()
        # Non-ReLU rectifiers: the closed-form derivative and its peak decide which units are inactive.
        self.derivative = derivatives.CLOSED_FORMS[config.activation][1]
        self.peak = derivatives.peak_magnitude(config.activation) if self.spec.rectifier else math.nan

    def measure(self, model: nn.Module) -> tuple[dict[str, float], list[torch.Tensor]]:
        """Metrics of the probe at the current weights, and each layer's gradient histogram."""
        layers = linear_layers(model)
        was_training = model.training
        model.eval()
        model.zero_grad(set_to_none=True)
        logits, pre_activations, layer_inputs = forward_with_pre_activations(model, self.inputs)
        nn.functional.cross_entropy(logits, self.targets).backward()
        model.train(was_training)
        gradients = [layer.weight.grad for layer in layers]
        metrics = {"probe_input_moment": gradstats.second_moment_per_layer([self.inputs])[0]}
        columns = {
            "probe_grad_max_abs": gradstats.max_abs_per_layer(gradients),
            "probe_grad_norm": gradstats.l2_norm_per_layer(gradients),
            "probe_example_grad_norm": gradstats.example_gradient_norms([pre.grad for pre in pre_activations],
                                                                        layer_inputs),
            # The logits are not a hidden layer: the mean-field q-map covers hidden layers only.
            "probe_preactivation_moment": gradstats.second_moment_per_layer([pre.detach() for pre in
                                                                             pre_activations[:-1]]),
        }
        for prefix, values in columns.items():
            metrics.update({f"{prefix}/{layer_name(index)}": value for index, value in enumerate(values, start=1)})
        histograms = [gradstats.log_magnitude_histogram(gradient, self.edges) for gradient in gradients]
        model.zero_grad(set_to_none=True)
        pre_activations, outputs = hidden_outputs(model, self.unit_inputs, self.activation)
        for index, (pre, out) in enumerate(zip(pre_activations, outputs), start=1):
            if self.spec.dies:
                metrics[f"dead_fraction/{layer_name(index)}"] = gradstats.dead_fraction(pre)
            elif self.spec.rectifier:
                metrics[f"inactive_fraction/{layer_name(index)}"] = gradstats.inactive_fraction(
                    pre, self.derivative, self.peak)
            if self.spec.bounds is not None:
                metrics[f"saturated_fraction/{layer_name(index)}"] = gradstats.saturated_fraction(out, self.spec.bounds)
        return metrics, histograms


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


def build_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """The MLP on ``device``, or ``OutOfMemory`` saying how large it is: at once when it cannot fit in the
    device's memory at all (building it layer by layer would end with the kernel killing the process), or
    when an allocation fails."""
    count = (repeated_parameter_count(config.depth, config.width) if config.depth > 0
             else parameter_count(config.hidden_sizes))
    failure = OutOfMemory(f"out of memory building the model ({count} parameters)")
    memory = device_memory(device)
    if memory is not None and count * TRAINING_BYTES_PER_PARAMETER > memory:
        raise failure
    try:
        return build_mlp(config.layer_sizes, config.activation, config.dropout, config.init).to(device)
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "allocate" in str(error):
            raise failure from None
        raise


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (init, dropout) and return the generator that orders batches."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train(
    config: TrainConfig,
    data: DatasetSplits,
    logger: RunLogger,
    device: torch.device | None = None,
    report: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config`` on ``data`` (already on ``device``), logging per epoch; never raises on divergence."""
    device = device or data.train.inputs.device
    batch_generator = seed_everything(config.seed)
    model = build_model(config, device)
    optimizer = build_optimizer(
        config.optimizer, model.parameters(), config.learning_rate, config.momentum, config.weight_decay
    )
    layers = linear_layers(model)
    weights = [layer.weight for layer in layers]
    biases = [layer.bias for layer in layers]
    element_counts = [weight.numel() for weight in weights]
    scratch = [torch.empty_like(weight) for weight in weights]
    probe = Probe(config, data) if config.gradient_statistics else None
    # The train/validation gap is measured like validation accuracy (eval mode, no dropout, weights
    # after the epoch) on as many training examples as the validation split holds: the accuracy
    # accumulated during the epoch, with dropout active and weights still moving, understates it.
    train_subset = leading(data.train, len(data.validation))
    result = TrainResult()
    histograms: dict[int, list[list[int]]] = {}
    best_state: dict[str, torch.Tensor] | None = None

    def record(step: int, metrics: dict[str, float]) -> None:
        logger.log_metrics(metrics, step=step)
        result.history.setdefault(step, {}).update(metrics)

    if probe is not None:
        metrics, layer_histograms = probe.measure(model)
        histograms[0] = [counts.tolist() for counts in layer_histograms]
        record(0, metrics)

    statistics_size = 3 * len(layers) + 1
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        statistic_sums = torch.zeros(statistics_size, device=device)
        statistic_maxima = torch.zeros(statistics_size, device=device)
        seen = 0
        steps = 0
        diverged = False
        for indices in batch_indices(len(data.train), config.batch_size, batch_generator, device, config.max_batches):
            inputs = data.train.inputs[indices]
            targets = data.train.targets[indices]
            logits = model(inputs)
            loss = nn.functional.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if probe is not None:
                statistics = gradstats.step_statistics([w.grad for w in weights], [b.grad for b in biases], scratch)
                statistic_sums += statistics
                torch.maximum(statistic_maxima, statistics, out=statistic_maxima)
            optimizer.step()
            loss_sum += loss.detach() * targets.shape[0]
            correct += (logits.argmax(dim=1) == targets).sum()
            seen += targets.shape[0]
            steps += 1
            if steps % DIVERGENCE_CHECK_STEPS == 0 and not torch.isfinite(loss_sum):
                diverged = True
                break
        train_loss = float(loss_sum) / max(seen, 1)
        diverged = diverged or not math.isfinite(train_loss)
        metrics = {
            "train_loss": train_loss,
            "train_accuracy": int(correct) / max(seen, 1),
            "learning_rate": optimizer.param_groups[0]["lr"],
        }
        if probe is not None:
            metrics.update(gradient_metrics(gradstats.summarize_epoch(statistic_sums, statistic_maxima, steps,
                                                                      element_counts)))
        metrics["epoch_time"] = time.perf_counter() - started
        metrics["val_loss"], metrics["val_accuracy"] = evaluate(model, data.validation)
        metrics["train_eval_loss"], metrics["train_eval_accuracy"] = evaluate(model, train_subset)
        if config.test_every_epoch:
            metrics["epoch_test_loss"], metrics["epoch_test_accuracy"] = evaluate(model, data.test)
        if probe is not None and not diverged:
            probe_metrics, layer_histograms = probe.measure(model)
            histograms[epoch] = [counts.tolist() for counts in layer_histograms]
            metrics.update(probe_metrics)
        record(epoch, metrics)
        if diverged:
            result.diverged, result.diverged_epoch = True, epoch
            break
        result.epochs_completed = epoch
        if result.best_val_accuracy is None or metrics["val_accuracy"] > result.best_val_accuracy:
            result.best_epoch, result.best_val_accuracy = epoch, metrics["val_accuracy"]
            best_state = copy.deepcopy(model.state_dict())
        if report is not None:
            report(
                f"epoch {epoch}/{config.epochs}  train_loss {train_loss:.4f}  train_acc "
                f"{metrics['train_accuracy']:.4f}  "
                f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_accuracy']:.4f}  "
                f"{metrics['epoch_time']:.2f}s"
            )

    finish(config, data, logger, model, best_state, histograms, result, probe)
    return result


def finish(
    config: TrainConfig,
    data: DatasetSplits,
    logger: RunLogger,
    model: nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    histograms: dict[int, list[list[int]]],
    result: TrainResult,
    probe: Probe | None,
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
        logger.log_dict(histogram_document(histograms, probe.edges, layer_names, len(probe.inputs)), HISTOGRAM_ARTIFACT)
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
