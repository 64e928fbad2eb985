"""K MLPs of one shape as one program: weights (K, fan_in, fan_out), batched matmuls, per-member dropout.

Member k of a ``StackedMLP`` computes exactly what its own ``nn.Sequential`` (``build_mlp``) would:
row k of every stacked tensor holds that member's weights, transposed so that a batch is
``inputs @ weight`` (``baddbmm``), and nothing mixes rows. The members are built one by one with
their own seed and init scheme and then stacked, so a member starts from the weights it would
have had alone; ``member_module`` turns a row back into a plain ``nn.Sequential``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from actopt.core.models import ACTIVATIONS, build_mlp, linear_layers
from actopt.errors import choose


class StackedMLP:
    """The stacked weights of K members and their forward pass; rows can be dropped (diverged members)."""

    def __init__(self, members: Sequence[nn.Sequential], activation: str, dropout: float,
                 dropout_generators: Sequence[torch.Generator]) -> None:
        layers = [linear_layers(member) for member in members]
        depth = len(layers[0])
        with torch.no_grad():
            self.weights = [torch.stack([member[index].weight.t() for member in layers]).contiguous().requires_grad_()
                            for index in range(depth)]
            self.biases = [torch.stack([member[index].bias for member in layers]).unsqueeze(1).contiguous()
                           .requires_grad_() for index in range(depth)]
        self.hidden_sizes = tuple(weight.shape[2] for weight in self.weights[:-1])
        self.activation_name = activation
        self.activation = choose(ACTIVATIONS, activation, "activation").build()
        self.dropout = dropout
        self.dropout_generators = list(dropout_generators)
        # Gradients live in fixed buffers that backward accumulates into, so that each member's
        # optimizer can hold views of its rows once instead of being handed new tensors every step.
        for parameter in self.parameters():
            parameter.grad = torch.zeros_like(parameter)

    def __len__(self) -> int:
        return self.weights[0].shape[0]

    def parameters(self) -> list[torch.Tensor]:
        """Weights then biases, each (K, ...)."""
        return [*self.weights, *self.biases]

    def zero_grad(self) -> None:
        for parameter in self.parameters():
            parameter.grad.zero_()  # type: ignore[union-attr]

    def member_parameters(self, position: int) -> list[torch.Tensor]:
        """Views of row ``position`` of every parameter, with views of the gradient rows as their grads;
        leaf tensors without autograd, which ``torch.optim`` updates in place (and so the stack)."""
        views = []
        for parameter in self.parameters():
            view = parameter.detach()[position]
            view.grad = parameter.grad[position]  # type: ignore[index]
            views.append(view)
        return views

    def forward(self, inputs: torch.Tensor, training: bool, keep: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                ) -> torch.Tensor:
        """Logits (K, N, classes) for ``inputs`` (K, N, features), or (N, features) shared by every member.

        ``keep`` collects each hidden layer's (pre-activation, activation output) when given.
        """
        values = inputs
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if values.dim() == 2:
                values = torch.matmul(values, weight) + bias
            else:
                values = torch.baddbmm(bias, values, weight)
            if index == last:
                return values
            pre_activation = values
            values = self.activation(values)
            if keep is not None:
                keep.append((pre_activation, values))
            if training and self.dropout > 0:
                values = values * self.dropout_masks(values.shape[1], values.shape[2], values.device)
        return values

    def dropout_masks(self, rows: int, width: int, device: torch.device) -> torch.Tensor:
        """Inverted-dropout masks, each member's from its own generator: a member draws the same
        masks whichever group it trains in."""
        keep = 1.0 - self.dropout
        masks = torch.empty(len(self), rows, width, device=device)
        for mask, generator in zip(masks, self.dropout_generators):
            mask.bernoulli_(keep, generator=generator)
        return masks.div_(keep)

    def keep_rows(self, positions: Sequence[int]) -> None:
        """Keep only the members at ``positions`` (in that order); their optimizers must be rebuilt."""
        index = torch.tensor(list(positions), device=self.weights[0].device)
        with torch.no_grad():
            self.weights = [weight.index_select(0, index).requires_grad_() for weight in self.weights]
            self.biases = [bias.index_select(0, index).requires_grad_() for bias in self.biases]
        self.dropout_generators = [self.dropout_generators[position] for position in positions]
        for parameter in self.parameters():
            parameter.grad = torch.zeros_like(parameter)

    def member_state(self, position: int) -> list[torch.Tensor]:
        """A copy of one member's weights and biases (the best epoch's weights are kept this way)."""
        return [parameter.detach()[position].clone() for parameter in self.parameters()]

    def member_module(self, state: Sequence[torch.Tensor], input_size: int, classes: int) -> nn.Sequential:
        """A plain ``nn.Sequential`` (as ``build_mlp`` makes it) holding one member's ``state``."""
        module = build_mlp(self.hidden_sizes, self.activation_name, self.dropout, "default", input_size, classes)
        layers = linear_layers(module)
        depth = len(layers)
        with torch.no_grad():
            for layer, weight, bias in zip(layers, state[:depth], state[depth:]):
                layer.weight.copy_(weight.t())
                layer.bias.copy_(bias.reshape(-1))
        return module.to(state[0].device)
