"""Each activation's derivative: its closed form, and its range measured by autograd on a dense grid.

The ranges printed in the analysis report (sigmoid' ≤ 0.25, tanh' ≤ 1, ReLU' ∈ {0, 1},
LeCun tanh' ≤ 1.1439) come from ``derivative_ranges``, not from typed-in numbers; the closed forms
are checked against autograd by the tests. docs/backprop.md explains why the range matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from actopt.core.activation_constants import LEAKY_SLOPE, SELU_ALPHA, SELU_SCALE
from actopt.core.models import ACTIVATIONS, LeCunTanh

# The grid: wide enough that every bounded derivative is near its limit at the ends, dense
# enough (5e-4 apart, x = 0 included) that a peak is measured to four decimals.
GRID_LIMIT = 6.0
GRID_STEP = 5e-4
# A derivative that takes at most this many distinct values on the grid is shown as a set.
MAX_SET_SIZE = 3



def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _normal_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


# name → (f'(x) written out, the same formula as code). PyTorch's defaults: ELU α = 1, LeakyReLU slope 0.01.
CLOSED_FORMS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "sigmoid": ("σ(x)·(1 − σ(x))", lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))),
    "tanh": ("1 − tanh²(x)", lambda x: 1 - torch.tanh(x) ** 2),
    "lecun_tanh": (
        "1.7159·(2/3)·(1 − tanh²(2x/3))",
        lambda x: LeCunTanh.scale * LeCunTanh.slope * (1 - torch.tanh(LeCunTanh.slope * x) ** 2),
    ),
    "relu": ("1 if x > 0, else 0", lambda x: (x > 0).to(x.dtype)),
    "leaky_relu": ("1 if x > 0, else 0.01",
                   lambda x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, LEAKY_SLOPE))),
    "elu": ("1 if x > 0, else eˣ", lambda x: torch.where(x > 0, torch.ones_like(x), torch.exp(x))),
    "gelu": ("Φ(x) + x·φ(x)  (Φ, φ: standard normal cdf and density)", lambda x: _normal_cdf(x) + x * _normal_pdf(x)),
    "selu": (
        "λ if x > 0, else λ·α·eˣ  (λ ≈ 1.0507, α ≈ 1.6733)",
        lambda x: torch.where(x > 0, SELU_SCALE * torch.ones_like(x), SELU_SCALE * SELU_ALPHA * torch.exp(x)),
    ),
    "silu": ("σ(x)·(1 + x·(1 − σ(x)))", lambda x: torch.sigmoid(x) * (1 + x * (1 - torch.sigmoid(x)))),
}


@dataclass(frozen=True)
class DerivativeRange:
    """What autograd finds for one activation on the grid."""

    name: str
    closed_form: str
    minimum: float
    maximum: float
    argmax: float  # where the derivative peaks (the first such x)
    values: tuple[float, ...] | None  # the distinct values, when there are at most MAX_SET_SIZE

    def describe(self) -> str:
        """``f′ ∈ {0, 1}`` or ``f′ ∈ [0.0025, 0.2500], peak at x = 0``."""
        if self.values is not None:
            return "f′ ∈ {" + ", ".join(f"{value:g}" for value in self.values) + "}"
        return f"f′ ∈ [{self.minimum:.4f}, {self.maximum:.4f}], peak at x = {self.argmax:.2f}"


def grid() -> torch.Tensor:
    """Integer multiples of the step, so that x = 0 is on the grid exactly."""
    half = round(GRID_LIMIT / GRID_STEP)
    return torch.arange(-half, half + 1, dtype=torch.float64) * GRID_STEP


def curve(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, f(x) and f'(x) on the grid, f' by autograd through the module training uses."""
    x = grid().requires_grad_(True)
    module = ACTIVATIONS[name].build().to(torch.float64)
    y = module(x)
    (slope,) = torch.autograd.grad(y.sum(), x)
    return x.detach(), y.detach(), slope


def derivative_ranges() -> list[DerivativeRange]:
    """One ``DerivativeRange`` per registered activation, in registry order."""
    ranges = []
    for name in ACTIVATIONS:
        x, _, slope = curve(name)
        distinct = torch.unique(torch.round(slope, decimals=9))
        peak = int(torch.argmax(slope))
        ranges.append(
            DerivativeRange(
                name=name,
                closed_form=CLOSED_FORMS[name][0],
                minimum=float(slope.min()),
                maximum=float(slope.max()),
                argmax=float(x[peak]),
                values=tuple(float(value) for value in distinct) if len(distinct) <= MAX_SET_SIZE else None,
            )
        )
    return ranges


def peak_magnitude(name: str) -> float:
    """The largest |f′| of an activation's closed form on the grid (gradstats.inactive_fraction's scale)."""
    return float(CLOSED_FORMS[name][1](grid()).abs().max())
