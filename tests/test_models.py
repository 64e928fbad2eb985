"""Activations, LeCun tanh, initialisations and the MLP's shape."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from actopt.core.models import (
    ACTIVATIONS,
    INITIALIZATIONS,
    LeCunTanh,
    build_mlp,
    linear_layers,
)


def test_activation_names_differ_within_ten_characters():
    prefixes = [name[:10] for name in ACTIVATIONS]
    assert len(prefixes) == len(set(prefixes))


def test_required_activations_are_registered():
    assert {"sigmoid", "tanh", "relu", "lecun_tanh", "leaky_relu", "elu", "gelu", "selu", "silu"} <= set(ACTIVATIONS)


def test_lecun_tanh_values():
    inputs = torch.linspace(-5, 5, 101, dtype=torch.float64)
    expected = 1.7159 * torch.tanh(2.0 * inputs / 3.0)
    assert torch.allclose(LeCunTanh()(inputs), expected)
    # Designed so that f(±1) = ±1.
    assert abs(float(LeCunTanh()(torch.tensor(1.0, dtype=torch.float64))) - 1.0) < 1e-3


def test_lecun_tanh_derivative_peaks_at_1_1439():
    inputs = torch.linspace(-6, 6, 20001, dtype=torch.float64, requires_grad=True)
    LeCunTanh()(inputs).sum().backward()
    derivative = inputs.grad
    assert abs(float(derivative.max()) - 1.7159 * 2 / 3) < 1e-9
    assert round(float(derivative.max()), 4) == 1.1439
    assert float(derivative.min()) > 0
    closed_form = 1.7159 * (2 / 3) * (1 - torch.tanh(2 * inputs.detach() / 3) ** 2)
    assert torch.allclose(derivative, closed_form)


def test_mlp_shape_dropout_and_logits():
    model = build_mlp((256, 128), "relu", dropout=0.2)
    shapes = [(layer.in_features, layer.out_features) for layer in linear_layers(model)]
    assert shapes == [(784, 256), (256, 128), (128, 10)]
    assert sum(isinstance(module, torch.nn.Dropout) for module in model) == 2
    assert isinstance(model[-1], torch.nn.Linear)  # logits, no softmax: cross-entropy applies it
    assert model(torch.zeros(3, 784)).shape == (3, 10)


def test_deep_mlp_has_one_activation_per_hidden_layer():
    model = build_mlp((32,) * 20, "lecun_tanh")
    assert sum(isinstance(module, LeCunTanh) for module in model) == 20
    assert len(linear_layers(model)) == 21


@pytest.mark.parametrize(
    ("init", "expected_std"),
    [
        ("lecun", lambda fan_in, fan_out: 1 / math.sqrt(fan_in)),
        ("kaiming", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
        ("xavier", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
        ("default", lambda fan_in, fan_out: 1 / math.sqrt(3 * fan_in)),  # U(±1/√fan_in)
    ],
)
def test_initialisation_scales(init, expected_std):
    torch.manual_seed(0)
    layer = linear_layers(build_mlp((512,), "relu", init=init))[0]
    assert abs(float(layer.weight.detach().std()) / expected_std(784, 512) - 1) < 0.02
    if init != "default":
        assert float(layer.bias.detach().abs().max()) == 0.0
    assert set(INITIALIZATIONS) == {"default", "xavier", "kaiming", "lecun"}


def test_the_activation_constants_are_torchs_own():
    from actopt.core.activation_constants import LEAKY_SLOPE, SELU_ALPHA, SELU_SCALE

    negative = torch.linspace(-4, -0.1, 50, dtype=torch.float64)
    torch.testing.assert_close(nn.SELU()(negative), SELU_SCALE * SELU_ALPHA * torch.expm1(negative))
    torch.testing.assert_close(nn.SELU()(-negative), SELU_SCALE * -negative)
    torch.testing.assert_close(nn.LeakyReLU()(negative), LEAKY_SLOPE * negative)
    # LeCun's choice: f(±1) = ±1 to four decimals.
    assert float(LeCunTanh()(torch.tensor(1.0))) == pytest.approx(1.0, abs=1e-4)
