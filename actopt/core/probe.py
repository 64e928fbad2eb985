"""Fixed batches measured at initialisation and after every epoch, for every member of a stack.

The gradient probe is one training minibatch per member (seed 001's "given mini-batch", drawn
with the member's seed + 1), taken without dropout so that it measures the weights alone; the
unit probe is a slice of the member's validation set. One stacked forward and backward serves
all members; each member's statistics are the pure ``gradstats`` functions applied to its rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from actopt.core import derivatives, gradstats, metric_names
from actopt.core.config import TrainConfig
from actopt.core.data import DatasetSplits
from actopt.core.metric_names import layer_name
from actopt.core.models import ACTIVATIONS
from actopt.core.stacked import StackedMLP
from actopt.errors import choose

# Unit statistics (dead / saturated) are measured on this many fixed validation examples.
UNIT_PROBE_EXAMPLES = 2048


def probe_batch(config: TrainConfig, data: DatasetSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """The member's fixed gradient-probe minibatch (inputs, targets)."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    indices = torch.randperm(len(data.train), generator=generator)[: config.batch_size].to(data.train.inputs.device)
    return data.train.inputs[indices], data.train.targets[indices]


def layer_metrics(prefix: str, values: Sequence[float]) -> dict[str, float]:
    return {f"{prefix}/{layer_name(index)}": value for index, value in enumerate(values, start=1)}


class GroupProbe:
    """The probe batches of every member, stacked; ``measure`` returns each active member's metrics."""

    def __init__(self, configs: Sequence[TrainConfig], datas: Sequence[DatasetSplits]) -> None:
        batches = [probe_batch(config, data) for config, data in zip(configs, datas)]
        self.inputs = torch.stack([inputs for inputs, _ in batches])
        self.targets = torch.stack([targets for _, targets in batches])
        self.unit_inputs = torch.stack([data.validation.inputs[:UNIT_PROBE_EXAMPLES] for data in datas])
        activation = configs[0].activation
        self.spec = choose(ACTIVATIONS, activation, "activation")
        self.edges = gradstats.histogram_edges()
        self.size = self.inputs.shape[1]
        # Non-ReLU rectifiers: the closed-form derivative and its peak decide which units are inactive.
        self.derivative = derivatives.CLOSED_FORMS[activation][1]
        self.peak = derivatives.peak_magnitude(activation) if self.spec.rectifier else math.nan

    def keep(self, members: Sequence[int]) -> None:
        """Follow the stack when members leave it (``members`` are the positions kept)."""
        index = torch.tensor(list(members), device=self.inputs.device)
        self.inputs, self.targets, self.unit_inputs = (
            tensor.index_select(0, index) for tensor in (self.inputs, self.targets, self.unit_inputs))

    def measure(self, model: StackedMLP) -> list[tuple[dict[str, float], list[torch.Tensor]]]:
        """Per member: metrics of the probe at the current weights, and each layer's gradient histogram."""
        hidden: list[tuple[torch.Tensor, torch.Tensor]] = []
        logits = model.forward(self.inputs, training=False, keep=hidden)
        # Each Linear layer's output (its gradient is the per-example error) and input.
        pre_activations = [pre for pre, _ in hidden] + [logits]
        layer_inputs = [self.inputs] + [out.detach() for _, out in hidden]
        losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.targets.reshape(-1),
                                             reduction="none").view(len(model), -1).mean(dim=1)
        # Each member's loss depends on its rows only, so the sum's gradient is every member's own.
        gradients = torch.autograd.grad(losses.sum(), [*model.weights, *pre_activations])
        depth = len(model.weights)
        weight_gradients, errors = gradients[:depth], gradients[depth:]
        units: list[tuple[torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            model.forward(self.unit_inputs, training=False, keep=units)
        measured = []
        for position in range(len(model)):
            member_gradients = [gradient[position] for gradient in weight_gradients]
            metrics = {metric_names.PROBE_INPUT_MOMENT: gradstats.second_moment_per_layer([self.inputs[position]])[0]}
            metrics.update(layer_metrics(metric_names.PROBE_GRAD_MAX_ABS,
                                         gradstats.max_abs_per_layer(member_gradients)))
            metrics.update(layer_metrics(metric_names.PROBE_GRAD_NORM, gradstats.l2_norm_per_layer(member_gradients)))
            metrics.update(layer_metrics(metric_names.PROBE_EXAMPLE_GRAD_NORM, gradstats.example_gradient_norms(
                [error[position] for error in errors], [values[position] for values in layer_inputs])))
            # The logits are not a hidden layer: the mean-field q-map covers hidden layers only.
            metrics.update(layer_metrics(metric_names.PROBE_PREACTIVATION_MOMENT, gradstats.second_moment_per_layer(
                [pre[position].detach() for pre, _ in hidden])))
            histograms = [gradstats.log_magnitude_histogram(gradient, self.edges) for gradient in member_gradients]
            metrics.update(self.unit_metrics(units, position))
            measured.append((metrics, histograms))
        return measured

    def unit_metrics(self, units: Sequence[tuple[torch.Tensor, torch.Tensor]], position: int) -> dict[str, float]:
        """Dead or inactive units (rectifiers) and saturated units (bounded activations), per hidden layer."""
        metrics = {}
        for index, (pre, out) in enumerate(units, start=1):
            if self.spec.dies:
                dead = gradstats.dead_fraction(pre[position])
                metrics[metric_names.per_layer(metric_names.DEAD_FRACTION, index)] = dead
            elif self.spec.rectifier:
                metrics[metric_names.per_layer(metric_names.INACTIVE_FRACTION, index)] = gradstats.inactive_fraction(
                    pre[position], self.derivative, self.peak)
            if self.spec.bounds is not None:
                metrics[metric_names.per_layer(metric_names.SATURATED_FRACTION, index)] = gradstats.saturated_fraction(
                    out[position], self.spec.bounds)
        return metrics
