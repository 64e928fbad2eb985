"""A plain ``nn.Sequential``'s forward pass with every Linear layer's output kept for its gradient: the
oracle that the stacked probe's per-example and mean-field statistics are checked against."""

from __future__ import annotations

import torch
from torch import nn


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
