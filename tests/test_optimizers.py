"""``build_optimizer`` against plain ``torch.optim`` oracles built independently with the expected hyperparameters.

Each case starts both optimizers from the same parameters, feeds them the same few random
gradients and compares the parameters after every step. The oracle uses PyTorch's for-loop
implementation (``foreach=False``), so the fused kernels (SGD, Adam, AdamW) and RMSprop's foreach
path are checked against a different code path, not against themselves.
"""

from __future__ import annotations

import pytest
import torch

from actopt.core.optimizers import OPTIMIZERS, build_optimizer
from actopt.errors import ConfigError

STEPS = 5
SHAPES = [(7, 5), (5,), (3, 7)]  # a weight, a bias, another weight: more than one tensor per group

# (name, learning_rate, momentum, weight_decay) → the optimizer the builder should be equivalent to.
CASES = {
    "sgd": ("sgd", 0.1, 0.0, 0.0, lambda p: torch.optim.SGD(p, lr=0.1, foreach=False)),
    "sgd-weight-decay": ("sgd", 0.1, 0.0, 0.01, lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.01, foreach=False)),
    "sgd-momentum": ("sgd", 0.1, 0.9, 0.0, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=False)),
    "sgd-momentum-weight-decay": (
        "sgd", 0.1, 0.9, 0.01, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, foreach=False)),
    "adam": ("adam", 1e-2, 0.0, 0.0, lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False)),
    # Adam's weight decay is the L2 term added to the gradient.
    "adam-weight-decay": ("adam", 1e-2, 0.0, 0.1, lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1,
                                                                             foreach=False)),
    # AdamW passes weight_decay through as given: 0 means none (not torch's own default of 0.01).
    "adamw": ("adamw", 1e-2, 0.0, 0.0, lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0, foreach=False)),
    "adamw-weight-decay": (
        "adamw", 1e-2, 0.0, 0.1, lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=False)),
    "rmsprop": ("rmsprop", 1e-2, 0.0, 0.0, lambda p: torch.optim.RMSprop(p, lr=1e-2, foreach=False)),
    "rmsprop-weight-decay": (
        "rmsprop", 1e-2, 0.0, 0.1, lambda p: torch.optim.RMSprop(p, lr=1e-2, weight_decay=0.1, foreach=False)),
    "rmsprop-momentum": ("rmsprop", 1e-2, 0.9, 0.0, lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.9,
                                                                                  foreach=False)),
    "rmsprop-momentum-weight-decay": (
        "rmsprop", 1e-2, 0.9, 0.1,
        lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.9, weight_decay=0.1, foreach=False)),
}


def parameters(generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(shape, generator=generator).requires_grad_() for shape in SHAPES]


@pytest.mark.parametrize("case", list(CASES))
def test_builder_matches_a_plain_torch_optimizer(case):
    name, learning_rate, momentum, weight_decay, oracle_for = CASES[case]
    generator = torch.Generator().manual_seed(0)
    ours = parameters(generator)
    theirs = [tensor.detach().clone().requires_grad_() for tensor in ours]
    initial = [tensor.detach().clone() for tensor in ours]
    built = build_optimizer(name, ours, learning_rate, momentum, weight_decay)
    oracle = oracle_for(theirs)
    assert type(built) is type(oracle)
    for _ in range(STEPS):
        # Gradients of varying scale and sign, as training gives: the same tensors to both.
        gradients = [torch.randn(shape, generator=generator) * 3 for shape in SHAPES]
        for tensor, other, gradient in zip(ours, theirs, gradients):
            tensor.grad = gradient.clone()
            other.grad = gradient.clone()
        built.step()
        oracle.step()
        for tensor, other in zip(ours, theirs):
            torch.testing.assert_close(tensor.detach(), other.detach())
    # The comparison is not vacuous: every parameter moved.
    assert all(not torch.equal(tensor.detach(), start) for tensor, start in zip(ours, initial))


@pytest.mark.parametrize("name, flag", [("sgd", "fused"), ("adam", "fused"), ("adamw", "fused"), ("rmsprop",
                                                                                                  "foreach")])
def test_fastest_implementation_is_chosen(name, flag):
    """Fused kernels where PyTorch has them (SGD, Adam, AdamW on CPU since torch 2.6); RMSprop has none
    and takes the foreach path."""
    built = build_optimizer(name, [torch.zeros(3, requires_grad=True)], 0.1, 0.0, 0.0)
    assert built.param_groups[0][flag] is True
    if flag == "foreach":
        assert not built.param_groups[0].get("fused")


@pytest.mark.parametrize("name, momentum, weight_decay", [(n, m, w) for n in OPTIMIZERS
                                                          for m in (0.0, 0.5) for w in (0.0, 0.2)
                                                          if not (m and n in ("adam", "adamw"))])
def test_hyperparameters_reach_the_param_group(name, momentum, weight_decay):
    group = build_optimizer(name, [torch.zeros(3, requires_grad=True)], 0.03, momentum, weight_decay).param_groups[0]
    assert group["lr"] == 0.03
    assert group["weight_decay"] == weight_decay
    if name in ("sgd", "rmsprop"):
        assert group["momentum"] == momentum
    else:  # Adam's first-moment decay stays torch's default; it is not fed from --momentum
        assert group["betas"] == (0.9, 0.999)


def test_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown optimizer 'adagrad'"):
        build_optimizer("adagrad", [torch.zeros(1, requires_grad=True)], 0.1, 0.0, 0.0)
