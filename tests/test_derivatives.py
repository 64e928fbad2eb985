"""Derivative closed forms against autograd (the oracle), and the ranges the report prints."""

from __future__ import annotations

import pytest
import torch

from actopt.core import derivatives
from actopt.core.models import ACTIVATIONS


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_closed_form_matches_autograd(name):
    x, _, slope = derivatives.curve(name)
    _, formula = derivatives.CLOSED_FORMS[name]
    assert torch.allclose(formula(x), slope, atol=1e-12)


def test_measured_ranges():
    ranges = {item.name: item for item in derivatives.derivative_ranges()}
    assert list(ranges) == list(ACTIVATIONS)
    assert ranges["sigmoid"].maximum == pytest.approx(0.25) and ranges["sigmoid"].argmax == 0.0
    assert ranges["tanh"].maximum == pytest.approx(1.0)
    assert ranges["lecun_tanh"].maximum == pytest.approx(1.7159 * 2 / 3)
    assert round(ranges["lecun_tanh"].maximum, 4) == 1.1439
    assert ranges["relu"].values == (0.0, 1.0) and ranges["relu"].describe() == "f′ ∈ {0, 1}"
    assert ranges["leaky_relu"].values == pytest.approx((0.01, 1.0))
    assert ranges["sigmoid"].describe() == "f′ ∈ [0.0025, 0.2500], peak at x = 0.00"
    assert ranges["gelu"].values is None and ranges["gelu"].minimum < 0
