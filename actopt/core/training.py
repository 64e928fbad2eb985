"""Train a group of configurations as one stacked program and report each member through its own logger.

``train_group(configs, datas, loggers)`` trains K configurations that share what shapes the
computation (``member.GROUP_FIELDS``) as the K members of one ``StackedMLP``; each member keeps its
own initialisation, data split, batch order, dropout masks and optimizer hyperparameters, and logs
what it would log alone. ``train(config, data, logger)`` is a group of one: there is one path.
This module is the loop; what a member is lives in ``member``, the device and the stack's memory in
``device``, preparing the data in ``inputs``, and a member's end of run in ``run_end``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from actopt.core import gradstats, metric_names
from actopt.core.config import TrainConfig
from actopt.core.data import DatasetSplits, Split, batch_indices, leading
from actopt.core.device import build_stack, flushed_subnormals
from actopt.core.evaluation import evaluate_members
from actopt.core.member import Member, RunLogger, TrainResult, check_group
from actopt.core.metric_names import layer_name
from actopt.core.optimizers import StackedOptimizer
from actopt.core.probe import GroupProbe
from actopt.core.run_end import finish_member
from actopt.core.stacked import StackedMLP

__all__ = ["train", "train_group", "train_epoch"]

# How often the hot loop looks at the running losses for NaN/inf; each look is a device sync.
DIVERGENCE_CHECK_STEPS = 32


@dataclass
class EpochTotals:
    """One epoch of every member of the stack, summed on the device, read once at its end."""

    loss_sums: list[float]
    correct: list[int]
    seen: list[int]
    diverged: list[bool]
    steps: int
    gradients: gradstats.GradientAccumulator | None


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
    device = device or datas[0].train.inputs.device
    members = [Member(config, data, logger, torch.Generator().manual_seed(config.seed))
               for config, data, logger in zip(configs, datas, loggers)]
    with flushed_subnormals(device):
        group = Group(members, device, report, finished)
        group.measure_initial()
        for epoch in range(1, configs[0].epochs + 1):
            if not group.train_one_epoch(epoch):
                break
        for row in range(len(group.active)):
            group.end(row)
    return [member.result for member in members]


class Group:
    """A group in training: its stack, optimizer and probe, and which member each row of the stack trains."""

    def __init__(self, members: list[Member], device: torch.device, report: Callable[[str], None] | None,
                 finished: Callable[[int, TrainResult], None] | None) -> None:
        configs = [member.config for member in members]
        self.members, self.lead, self.report, self.finished = members, configs[0], report, finished
        self.model = build_stack(configs, device)
        self.optimizer = StackedOptimizer(
            self.lead.optimizer, [self.model.member_parameters(row) for row in range(len(self.model))],
            [config.learning_rate for config in configs], [config.momentum for config in configs],
            [config.weight_decay for config in configs])
        self.probe = GroupProbe(configs, [member.data for member in members]) if self.lead.gradient_statistics else None
        self.active = list(range(len(members)))  # the member trained by each row of the stack
        # The train/validation gap is measured like validation accuracy (eval mode, no dropout, weights
        # after the epoch) on as many training examples as the validation split holds: the accuracy
        # accumulated during the epoch, with dropout active and weights still moving, understates it.
        self.train_subsets = [leading(member.data.train, len(member.data.validation)) for member in members]

    def rows(self) -> list[Member]:
        return [self.members[index] for index in self.active]

    def measure_initial(self) -> None:
        """Step 0: the probe at the initial weights."""
        if self.probe is not None:
            for member, (metrics, histograms) in zip(self.rows(), self.probe.measure(self.model)):
                member.histograms[0] = [counts.tolist() for counts in histograms]
                member.record(0, metrics)

    def train_one_epoch(self, epoch: int) -> bool:
        """Train and log one epoch of every member, end the runs that diverged; False once no member is left."""
        started = time.perf_counter()
        totals = train_epoch(self.model, self.optimizer, self.rows(), self.lead, self.probe is not None)
        measured = self.measure(totals, time.perf_counter() - started, epoch)
        kept = [row for row, metrics in enumerate(measured)
                if self.close_epoch(row, epoch, metrics, totals.diverged[row])]
        if not kept:
            self.active = []
        elif len(kept) < len(self.active):
            self.model.keep_rows(kept)
            self.optimizer.keep(kept, [self.model.member_parameters(row) for row in range(len(self.model))])
            if self.probe is not None:
                self.probe.keep(kept)
            self.active = [self.active[row] for row in kept]
        return bool(self.active)

    def measure(self, totals: EpochTotals, epoch_time: float, epoch: int) -> list[dict[str, float]]:
        """Each row's metrics of the epoch: its training totals, evaluations and probe (its histograms kept)."""
        rows = self.rows()
        validation = evaluate_members(self.model, [member.data.validation for member in rows])
        train_eval = evaluate_members(self.model, [self.train_subsets[index] for index in self.active])
        tests = (evaluate_members(self.model, [member.data.test for member in rows])
                 if self.lead.test_every_epoch else None)
        probed = self.probe.measure(self.model) if self.probe is not None and not all(totals.diverged) else None
        measured = []
        for row, member in enumerate(rows):
            metrics = epoch_metrics(totals, row, self.optimizer.learning_rate(row))
            # A member's share of the group's epoch: what its epoch cost, comparable with a run trained alone
            # (the report's seconds per epoch); the whole group's time is kept beside it.
            metrics[metric_names.EPOCH_TIME] = epoch_time / len(rows)
            if len(self.members) > 1:
                metrics[metric_names.GROUP_EPOCH_TIME] = epoch_time
            metrics[metric_names.VAL_LOSS], metrics[metric_names.VAL_ACCURACY] = validation[row]
            metrics[metric_names.TRAIN_EVAL_LOSS], metrics[metric_names.TRAIN_EVAL_ACCURACY] = train_eval[row]
            if tests is not None:
                metrics[metric_names.EPOCH_TEST_LOSS], metrics[metric_names.EPOCH_TEST_ACCURACY] = tests[row]
            if probed is not None and not totals.diverged[row]:
                probe_metrics, histograms = probed[row]
                member.histograms[epoch] = [counts.tolist() for counts in histograms]
                metrics.update(probe_metrics)
            measured.append(metrics)
        return measured

    def close_epoch(self, row: int, epoch: int, metrics: dict[str, float], diverged: bool) -> bool:
        """Log row ``row``'s epoch and keep its best weights; a diverged member ends here (False)."""
        member = self.members[self.active[row]]
        member.record(epoch, metrics)
        if diverged:
            member.result.diverged, member.result.diverged_epoch = True, epoch
            self.end(row)
            return False
        member.result.epochs_completed = epoch
        accuracy = metrics[metric_names.VAL_ACCURACY]
        if member.result.best_val_accuracy is None or accuracy > member.result.best_val_accuracy:
            member.result.best_epoch, member.result.best_val_accuracy = epoch, accuracy
            member.best_state = self.model.member_state(row)
        if self.report is not None:
            self.report(member.epoch_line(epoch, metrics, len(self.members) > 1))
        return True

    def end(self, row: int) -> None:
        """The end of run of the member that row ``row`` trains, then ``finished`` for it."""
        index = self.active[row]
        finish_member(self.members[index], self.model, row, self.probe)
        if self.finished is not None:
            self.finished(index, self.members[index].result)


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
    gradients = gradstats.GradientAccumulator(model.weights) if statistics else None
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
        if gradients is not None:
            gradients.add([weight.grad for weight in model.weights], [bias.grad for bias in model.biases])
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
    return EpochTotals(loss_sums.tolist(), correct.tolist(), seen_list, diverged, steps, gradients)


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


def epoch_metrics(totals: EpochTotals, row: int, learning_rate: float) -> dict[str, float]:
    seen = max(totals.seen[row], 1)
    metrics = {
        metric_names.TRAIN_LOSS: totals.loss_sums[row] / seen,
        metric_names.TRAIN_ACCURACY: totals.correct[row] / seen,
        metric_names.LEARNING_RATE: learning_rate,
    }
    if totals.gradients is not None:
        metrics.update(gradient_metrics(totals.gradients.summary(row)))
    return metrics


def gradient_metrics(statistics: gradstats.EpochGradientStatistics) -> dict[str, float]:
    metrics = {metric_names.GRAD_GLOBAL_NORM: statistics.global_norm,
               metric_names.GRAD_GLOBAL_NORM_PEAK: statistics.global_norm_peak}
    columns = {
        metric_names.GRAD_NORM: statistics.l2_norm,
        metric_names.GRAD_MEAN_ABS: statistics.mean_abs,
        metric_names.GRAD_MAX_ABS: statistics.max_abs,
        metric_names.GRAD_MAX_ABS_PEAK: statistics.max_abs_peak,
    }
    for prefix, values in columns.items():
        for index, value in enumerate(values, start=1):
            metrics[f"{prefix}/{layer_name(index)}"] = value
    return metrics
