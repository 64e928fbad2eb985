"""Dead and saturated unit fractions through the real ``training.train``, on nets whose hidden units are forced
into a known state: the logged values, not just their keys, must be exactly 0 or 1.

The hidden biases are forced by wrapping the model builder that ``train`` calls; the hidden weights
are shrunk to a thousandth of their initial values so that the bias alone decides each unit's state on
every input (pixels lie in [0, 1], so |W·x| ≤ 784 · 1e-3/√784 ≈ 0.03 in layer 1, and below 1 in
layer 2 even when layer 1 outputs about 100). The output layer is left as built.

The fractions are measured by the probe at step 0, on the initial weights before any optimizer step,
and again after each epoch. ``learning_rate`` must be > 0 (the config refuses 0), so training runs
one epoch of a single SGD minibatch (``max_batches=1``) at learning rate 1e-6: dead ReLU units
(bias −100) and saturated tanh units (bias ±100, where tanh' is 0 in float32) get exactly zero
gradient and stay put, and the others move by about 1e-6, far from changing state. So the value
after epoch 1 is expected to equal the one at step 0, and the test checks both.
"""

from __future__ import annotations

import pytest
import torch
from forcing import forcing_builder

from actopt.core import training
from actopt.core.inputs import splits
from actopt.core.models import linear_layers


def train_forced(small_config, recorder, activation: str, bias: float, monkeypatch):
    forcing_builder(bias, monkeypatch)
    config = small_config.replace(activation=activation, optimizer="sgd", learning_rate=1e-6, epochs=1, max_batches=1)
    data = splits(config)
    result = training.train(config, data, recorder)
    # The biases did stay where they were forced (result.model holds the weights after epoch 1).
    for layer in linear_layers(result.model)[:-1]:
        torch.testing.assert_close(layer.bias.detach(), torch.full_like(layer.bias, bias), rtol=0, atol=1e-3)
    return result


HIDDEN_LAYERS = ("layer_01", "layer_02")  # small_config's 32,16


@pytest.mark.parametrize("bias, expected", [(-100.0, 1.0), (100.0, 0.0)])
def test_relu_dead_fraction_is_exact(small_config, recorder, monkeypatch, bias, expected):
    train_forced(small_config, recorder, "relu", bias, monkeypatch)
    for layer in HIDDEN_LAYERS:
        assert recorder.series(f"dead_fraction/{layer}") == {0: expected, 1: expected}, layer
    assert "dead_fraction/layer_03" not in recorder.metrics[0][1]  # the output layer has no units to die
    assert not any(key.startswith("saturated_fraction") for _, metrics in recorder.metrics for key in metrics)


@pytest.mark.parametrize("bias, expected", [(-100.0, 1.0), (100.0, 1.0), (0.0, 0.0)])
def test_tanh_saturated_fraction_is_exact(small_config, recorder, monkeypatch, bias, expected):
    train_forced(small_config, recorder, "tanh", bias, monkeypatch)
    for layer in HIDDEN_LAYERS:
        assert recorder.series(f"saturated_fraction/{layer}") == {0: expected, 1: expected}, layer
    assert not any(key.startswith("dead_fraction") for _, metrics in recorder.metrics for key in metrics)


@pytest.mark.parametrize("activation", ["leaky_relu", "elu", "gelu", "selu", "silu"])
@pytest.mark.parametrize("bias, expected", [(-100.0, 1.0), (100.0, 0.0)])
def test_other_rectifiers_have_inactive_units_not_dead_ones(small_config, recorder, monkeypatch, activation, bias,
                                                            expected):
    train_forced(small_config, recorder, activation, bias, monkeypatch)
    for layer in HIDDEN_LAYERS:
        assert recorder.series(f"inactive_fraction/{layer}") == {0: expected, 1: expected}, layer
    assert not any(key.startswith("dead_fraction") for _, metrics in recorder.metrics for key in metrics)
