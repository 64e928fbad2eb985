"""The per-run rules on hand-written histories, the inactive-unit statistic against a numpy oracle, and the
description a run gets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actopt.core import derivatives, diagnosis, gradstats
from actopt.core.config import TrainConfig
from actopt.core.description import run_description
from actopt.core.member import TrainResult


def norms(first: float, last: float = 1.0, step: int = 1) -> dict[int, dict[str, float]]:
    return {step: {"grad_norm/layer_01": first, "grad_norm/layer_02": 0.5, "grad_norm/layer_03": last}}


@pytest.mark.parametrize("first, holds", [(0.0099, True), (0.01, False), (0.5, False)])
def test_vanishing_gradients_compares_layer_one_with_the_output_layer_in_epoch_one(first, holds):
    check = diagnosis.vanishing_gradients(norms(first, 1.0))
    assert check.holds is holds and check.value == pytest.approx(first) and check.layer == 1
    assert "layer_03" in check.evidence and "0.01" in check.evidence


def test_rules_that_find_nothing_to_read_are_unchecked_and_false():
    checks = diagnosis.diagnose({1: {"train_loss": 0.5}}, diverged=False)
    unchecked = [rule for rule, check in checks.items() if not check.checked]
    assert unchecked == ["vanishing_gradients", "exploding_gradients", "dead_units", "inactive_units", "saturation",
                         "overfitting"]
    assert not any(check.holds for check in checks.values())
    assert list(checks) == list(diagnosis.RULES)


@pytest.mark.parametrize("first, holds", [(100.5, True), (99.0, False)])
def test_exploding_gradients_by_layer_ratio(first, holds):
    check = diagnosis.exploding_gradients(norms(first, 1.0))
    assert check.holds is holds


@pytest.mark.parametrize("peak, holds, value", [(50.0, False, 50.0), (200.0, True, 200.0), (math.nan, True, math.inf),
                                                (math.inf, True, math.inf)])
def test_exploding_gradients_by_a_step_norm_far_above_epoch_one(peak, holds, value):
    history = {1: {"grad_global_norm": 1.0, "grad_global_norm_peak": 3.0},
               2: {"grad_global_norm": 2.0, "grad_global_norm_peak": peak}}
    check = diagnosis.exploding_gradients(history)
    assert check.holds is holds and check.value == value
    assert ("epoch 2" in check.evidence) and (("not finite" in check.evidence) == (not math.isfinite(peak)))


def test_unit_rules_read_the_worst_layer_at_the_last_measured_epoch():
    history = {0: {"dead_fraction/layer_01": 0.9},
               1: {"dead_fraction/layer_01": 0.2, "dead_fraction/layer_02": 0.6},
               2: {"train_loss": math.nan}}  # a diverged epoch: no probe
    check = diagnosis.dead_units(history)
    assert (check.holds, check.value, check.layer) == (True, 0.6, 2)
    assert check.evidence.startswith("layer_02: 0.60 of units never active") and "after epoch 1" in check.evidence
    assert not diagnosis.dead_units({1: {"dead_fraction/layer_01": 0.5}}).holds  # the threshold is strict
    assert diagnosis.inactive_units({1: {"inactive_fraction/layer_01": 0.51}}).holds
    assert diagnosis.saturation({1: {"saturated_fraction/layer_01": 0.51}}).holds
    assert not diagnosis.inactive_units({1: {"dead_fraction/layer_01": 1.0}}).checked  # dead is not inactive


def test_overfitting_prefers_the_eval_mode_train_accuracy():
    running = {3: {"train_accuracy": 0.95, "val_accuracy": 0.90}}
    assert diagnosis.overfitting(running).holds and diagnosis.overfitting(running).value == pytest.approx(0.05)
    evaluated = {3: {"train_accuracy": 0.95, "train_eval_accuracy": 0.91, "val_accuracy": 0.90}}
    check = diagnosis.overfitting(evaluated)
    assert not check.holds and check.value == pytest.approx(0.01) and "train_eval_accuracy" in check.evidence


def test_divergence_says_the_epoch_whose_loss_was_not_finite():
    history = {1: {"train_loss": 1.0}, 2: {"train_loss": math.inf}}
    assert diagnosis.divergence(True, history).evidence.endswith("in epoch 2")
    assert not diagnosis.divergence(False, {1: {"train_loss": 1.0}}).holds


def inactive_oracle(z: np.ndarray, derivative, peak: float) -> float:
    """Loop over units: inactive when no example's |f'(z)| reaches a tenth of the peak."""
    inactive = 0
    for unit in range(z.shape[1]):
        slopes = [abs(float(derivative(torch.tensor(value, dtype=torch.float64)))) for value in z[:, unit]]
        inactive += all(slope < 0.1 * peak for slope in slopes)
    return inactive / z.shape[1]


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "gelu", "selu", "silu"])
def test_inactive_fraction_matches_a_loop_over_units(name):
    rng = np.random.default_rng(3)
    # Units shifted from far negative to positive, so that some are inactive and some not.
    z = rng.normal(size=(64, 40)) + np.linspace(-8, 2, 40)
    derivative = derivatives.CLOSED_FORMS[name][1]
    peak = derivatives.peak_magnitude(name)
    expected = inactive_oracle(z, derivative, peak)
    assert 0 < expected < 1
    measured = gradstats.inactive_fraction(torch.tensor(z, dtype=torch.float32), derivative, peak)
    assert measured == pytest.approx(expected)


def test_peak_magnitudes_are_the_derivatives_known_maxima():
    assert derivatives.peak_magnitude("relu") == 1.0
    assert derivatives.peak_magnitude("leaky_relu") == 1.0
    assert derivatives.peak_magnitude("selu") == pytest.approx(1.6733 * 1.0507, rel=1e-4)  # λα at x → 0⁻
    assert derivatives.peak_magnitude("gelu") == pytest.approx(1.1289, abs=1e-4)


def test_relu_inactive_is_dead():
    z = torch.tensor([[-1.0, 0.0, 2.0], [-3.0, -0.5, -1.0]])
    relu = derivatives.CLOSED_FORMS["relu"][1]
    assert gradstats.inactive_fraction(z, relu, 1.0) == gradstats.dead_fraction(z) == pytest.approx(2 / 3)


def test_the_description_names_configuration_outcome_and_evidence():
    config = TrainConfig.from_mapping({"activation": "relu", "optimizer": "sgd", "learning_rate": 0.5,
                                       "hidden_sizes": "32,16", "epochs": 3, "data_dir": "unused"})
    history = {1: {"train_loss": 0.5, "train_accuracy": 0.8, "val_accuracy": 0.79, "dead_fraction/layer_02": 0.75}}
    result = TrainResult(history=history, best_epoch=1, best_val_accuracy=0.79, test_accuracy=0.78)
    text = run_description(config, result, diagnosis.diagnose(history, False))
    assert text.splitlines()[0] == "**Diagnosis: dead units** (rules and thresholds: actopt/core/diagnosis.py)."
    assert text.splitlines()[2] == ("**relu · sgd · lr 0.5** · hidden 32,16 · batch 128 · 3 epochs · seed 0 · "
                                    "fashion-mnist")
    assert "Best epoch 1 of 3: validation accuracy 0.7900, test accuracy 0.7800" in text
    assert "- **Dead units**: layer_02: 0.75 of units never active" in text
    assert "Overfitting" not in text
    quiet = {1: {**history[1], "dead_fraction/layer_02": 0.1}}
    quiet_text = run_description(config, result, diagnosis.diagnose(quiet, False))
    assert quiet_text.startswith("**Diagnosis: no problem found by the rules**")
