"""A member's end of run: test on its best weights, its summary metrics and tags, its history table,
its gradient histograms (document and images) and its model; also after a divergence."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from actopt.core import metric_names
from actopt.core.data import majority_rate
from actopt.core.evaluation import evaluate
from actopt.core.member import Member
from actopt.core.metric_names import layer_name
from actopt.core.models import CLASSES, linear_layers
from actopt.core.probe import GroupProbe
from actopt.core.stacked import StackedMLP

HISTORY_ARTIFACT = "history.csv"
HISTOGRAM_ARTIFACT = "gradient_histograms.json"
HISTOGRAM_IMAGE_KEY = "gradient_histogram"


@dataclass(frozen=True)
class FinalWeights:
    """A member's weights at its end of run, out of the stack: the last ones as a plain ``nn.Sequential``
    and the best epoch's as its state dict (None when no epoch finished)."""

    model: nn.Module
    best_state: dict[str, torch.Tensor] | None


def finish_member(member: Member, model: StackedMLP, row: int, probe: GroupProbe | None) -> None:
    """A member's end of run, with its weights taken out of row ``row`` of the stack."""
    input_size = member.data.train.inputs.shape[1]
    module = model.member_module(model.member_state(row), input_size, CLASSES)
    best = None
    if member.best_state is not None:
        best = model.member_module(member.best_state, input_size, CLASSES).state_dict()
    finish(member, FinalWeights(module, best), probe)


def finish(member: Member, weights: FinalWeights, probe: GroupProbe | None) -> None:
    """Best-epoch tags, test on the best weights, artifacts; also after a divergence."""
    result, logger, data, model = member.result, member.logger, member.data, weights.model
    tags = {"diverged": str(result.diverged).lower()}
    # What always answering the most frequent class scores: a run near it did not learn.
    summary = {metric_names.CHANCE_ACCURACY: majority_rate(data.validation)}
    if result.diverged:
        tags["diverged_epoch"] = str(result.diverged_epoch)
    if weights.best_state is not None:
        model.load_state_dict(weights.best_state)
        result.test_loss, result.test_accuracy = evaluate(model, data.test)
        tags[metric_names.BEST_EPOCH] = str(result.best_epoch)
        summary.update(best_epoch=float(result.best_epoch), best_val_accuracy=result.best_val_accuracy,
                       test_accuracy=result.test_accuracy, test_loss=result.test_loss)
    seconds = own_seconds(result.history)
    if seconds is not None:
        summary[metric_names.TRAIN_SECONDS] = seconds
    logger.log_metrics(summary)
    logger.set_tags(tags)
    logger.log_text(history_csv(result.history), HISTORY_ARTIFACT)
    if probe is not None and member.histograms:
        log_histograms(member, model, probe)
    result.model = model
    if member.config.log_model and weights.best_state is not None:
        logger.log_model(model.cpu(), data.validation.inputs[:4].cpu().numpy())


def own_seconds(history: dict[int, dict[str, float]]) -> float | None:
    """A run's own training time: the sum of its ``epoch_time`` (a group member's share of each group epoch, so
    not the group's wall time); None when no epoch was timed. The sweep's progress line and its end table both
    read this, the one from the run's result, the other from the store."""
    times = [metrics[metric_names.EPOCH_TIME] for metrics in history.values() if metric_names.EPOCH_TIME in metrics]
    return float(sum(times)) if times else None


def log_histograms(member: Member, model: nn.Module, probe: GroupProbe) -> None:
    """The member's gradient histograms as one JSON document and one image per logged step."""
    layer_names = [layer_name(index) for index in range(1, len(linear_layers(model)) + 1)]
    member.logger.log_dict(histogram_document(member.histograms, probe.edges, layer_names, probe.size),
                           HISTOGRAM_ARTIFACT)
    from actopt.core.figures import histogram_images  # matplotlib is needed only here

    for step, image in histogram_images(member.histograms, probe.edges.tolist(), layer_names):
        member.logger.log_image(image, HISTOGRAM_IMAGE_KEY, step)


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
