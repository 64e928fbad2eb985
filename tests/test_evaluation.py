"""``evaluation`` against an oracle written from its definition: each example's cross-entropy as
log-sum-exp minus the target's logit in float64 numpy, and accuracy as a count of argmax hits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actopt.core import evaluation
from actopt.core.data import Split
from actopt.core.models import build_mlp
from actopt.core.stacked import StackedMLP

FEATURES, CLASSES = 20, 5


def random_split(examples: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    return Split(torch.randn(examples, FEATURES, generator=generator),
                 torch.randint(0, CLASSES, (examples,), generator=generator))


def network(seed: int, dropout: float = 0.0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return build_mlp((16, 8), "tanh", dropout, input_size=FEATURES, classes=CLASSES)


def oracle(model: torch.nn.Module, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, each example on its own, without dropout (eval mode)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(split.inputs).numpy().astype(np.float64)
    model.train(was_training)
    targets = split.targets.numpy()
    peak = logits.max(axis=1, keepdims=True)
    log_partition = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
    losses = log_partition - logits[np.arange(len(targets)), targets]
    hits = sum(int(np.argmax(row)) == int(target) for row, target in zip(logits, targets))
    return float(losses.mean()), hits / len(targets)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 examples: the 50-example splits below take several, the last one short."""
    monkeypatch.setattr(evaluation, "EVALUATION_BATCH", 7)


def test_evaluate_matches_the_oracle_over_chunks_and_restores_the_mode(small_chunks):
    model, split = network(0, dropout=0.5), random_split(50, 1)
    model.train()
    loss, accuracy = evaluation.evaluate(model, split)
    expected_loss, expected_accuracy = oracle(model, split)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert accuracy == expected_accuracy
    assert model.training  # the caller's mode comes back
    assert evaluation.evaluate(model, split) == (loss, accuracy)  # dropout is off: the same every time


def test_evaluate_members_matches_each_member_alone(small_chunks):
    members = [network(seed, dropout=0.3) for seed in range(3)]
    stack = StackedMLP(members, "tanh", 0.3, [torch.Generator().manual_seed(seed) for seed in range(3)])
    own = [random_split(50, 10 + seed) for seed in range(3)]
    for splits in (own, [own[0]] * 3):  # each member its own split, then one split shared by all
        results = evaluation.evaluate_members(stack, splits)
        for (loss, accuracy), member, split in zip(results, members, splits):
            expected_loss, expected_accuracy = oracle(member, split)
            assert loss == pytest.approx(expected_loss, rel=1e-5)
            assert accuracy == expected_accuracy


def test_an_empty_split_scores_zero_without_dividing_by_zero():
    empty = Split(torch.empty(0, FEATURES), torch.empty(0, dtype=torch.int64))
    assert evaluation.evaluate(network(0), empty) == (0.0, 0.0)
