"""Nets whose hidden units are forced into a known state (dead, saturated or live), through the real builder."""

from __future__ import annotations

import pytest
import torch

from actopt.core import device
from actopt.core.models import linear_layers

WEIGHT_SCALE = 1e-3


def forcing_builder(bias: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``train`` build its MLP as usual, then set every hidden layer's bias to ``bias``."""
    original = device.build_mlp

    def build(*args, **kwargs):
        model = original(*args, **kwargs)
        with torch.no_grad():
            for layer in linear_layers(model)[:-1]:  # the last Linear produces the logits
                layer.weight.mul_(WEIGHT_SCALE)
                layer.bias.fill_(bias)
        return model

    monkeypatch.setattr(device, "build_mlp", build)
