"""The MLP, its activations and its weight initialisations, each chosen by name from a plain dict."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from actopt.core.activation_constants import LECUN_SCALE, LECUN_SLOPE
from actopt.errors import choose


class LeCunTanh(nn.Module):
    """LeCun's scaled tanh, 1.7159·tanh(2x/3): unit variance outputs for unit variance inputs."""

    scale = LECUN_SCALE
    slope = LECUN_SLOPE

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.slope * inputs)


@dataclass(frozen=True)
class Activation:
    """How to build an activation and which unit statistic tells that it has stopped learning.

    ``bounds`` is set for saturating activations (their outputs approach the bounds where the
    derivative vanishes); ``rectifier`` marks the ReLU family, whose units can stop learning. Only
    ReLU's derivative is exactly zero on a half-line (``dies``): a ReLU unit never active is dead.
    The others keep a small derivative there, so theirs are measured as inactive, not dead.
    """

    build: type[nn.Module]  # the module class; instances are built by calling it
    bounds: tuple[float, float] | None = None
    rectifier: bool = False
    dies: bool = False


# Names differ within their first 10 characters: the MLflow UI's parallel-coordinates plot cuts there.
ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(nn.Sigmoid, bounds=(0.0, 1.0)),
    "tanh": Activation(nn.Tanh, bounds=(-1.0, 1.0)),
    "lecun_tanh": Activation(LeCunTanh, bounds=(-LeCunTanh.scale, LeCunTanh.scale)),
    "relu": Activation(nn.ReLU, rectifier=True, dies=True),
    "leaky_relu": Activation(nn.LeakyReLU, rectifier=True),
    "elu": Activation(nn.ELU, rectifier=True),
    "gelu": Activation(nn.GELU, rectifier=True),
    "selu": Activation(nn.SELU, rectifier=True),
    "silu": Activation(nn.SiLU, rectifier=True),
}


def _lecun_normal(weight: torch.Tensor) -> None:
    fan_in = weight.shape[1]
    nn.init.normal_(weight, mean=0.0, std=1.0 / math.sqrt(fan_in))


def _kaiming(weight: torch.Tensor) -> None:
    nn.init.kaiming_normal_(weight, nonlinearity="relu")


def _xavier(weight: torch.Tensor) -> None:
    nn.init.xavier_uniform_(weight)


# None keeps nn.Linear's own init (Kaiming-uniform with a=√5, i.e. U(±1/√fan_in)); the others
# zero the biases so that only the weight scale differs between schemes.
INITIALIZATIONS: dict[str, Callable[[torch.Tensor], None] | None] = {
    "default": None,
    "xavier": _xavier,
    "kaiming": _kaiming,
    "lecun": _lecun_normal,
}

INPUT_SIZE = 28 * 28
CLASSES = 10


def build_mlp(
    hidden_sizes: tuple[int, ...],
    activation: str,
    dropout: float = 0.0,
    init: str = "default",
    input_size: int = INPUT_SIZE,
    classes: int = CLASSES,
) -> nn.Sequential:
    """Linear → activation (→ dropout) per hidden layer, then a Linear producing logits.

    The logits go to cross-entropy, which is LogSoftmax followed by NLLLoss in one stable step.
    """
    spec = choose(ACTIVATIONS, activation, "activation")
    initialize = choose(INITIALIZATIONS, init, "init")
    layers: list[nn.Module] = []
    width_in = input_size
    for width in hidden_sizes:
        layers += [nn.Linear(width_in, width), spec.build()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width_in = width
    layers.append(nn.Linear(width_in, classes))
    model = nn.Sequential(*layers)
    if initialize is not None:
        for layer in linear_layers(model):
            initialize(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers in forward order; layer i (from 1) in metric names is element i-1."""
    return [module for module in model.modules() if isinstance(module, nn.Linear)]



def parameter_count(hidden_sizes: tuple[int, ...], input_size: int = INPUT_SIZE, classes: int = CLASSES) -> int:
    """Weights and biases of the MLP ``build_mlp`` makes, counted without building it."""
    widths = (input_size, *hidden_sizes, classes)
    return sum(width_in * width_out + width_out for width_in, width_out in zip(widths, widths[1:]))


def repeated_parameter_count(depth: int, width: int, input_size: int = INPUT_SIZE, classes: int = CLASSES) -> int:
    """``parameter_count`` of ``depth`` hidden layers of ``width``, without a tuple of ``depth`` widths (an absurd
    depth would take gigabytes just to list)."""
    return (input_size * width + width) + (depth - 1) * (width * width + width) + (width * classes + classes)
