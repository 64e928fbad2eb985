"""Mean cross-entropy and accuracy over whole splits, for one plain model or every member of a stack."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from actopt.core.data import Split
from actopt.core.stacked import StackedMLP

# Evaluation runs in large chunks: bounded memory for deep nets, few Python round trips. A stack of
# K members takes EVALUATION_BATCH / K examples of each per chunk, so memory stays that of one model.
EVALUATION_BATCH = 4096


def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split, without dropout or gradients."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.inputs.device)
    correct = torch.zeros((), dtype=torch.int64, device=split.inputs.device)
    with torch.no_grad():
        for start in range(0, len(split), EVALUATION_BATCH):
            inputs = split.inputs[start : start + EVALUATION_BATCH]
            targets = split.targets[start : start + EVALUATION_BATCH]
            logits = model(inputs)
            loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
    model.train(was_training)
    count = max(len(split), 1)
    return float(loss_sum) / count, int(correct) / count


def evaluate_members(model: StackedMLP, splits: Sequence[Split]) -> list[tuple[float, float]]:
    """``evaluate`` for every member at once: member k on ``splits[k]`` (all of one length)."""
    members = len(model)
    shared = all(split is splits[0] for split in splits)
    count = len(splits[0])
    device = splits[0].inputs.device
    chunk = max(1, EVALUATION_BATCH // members)
    loss_sums = torch.zeros(members, dtype=torch.float64, device=device)
    correct = torch.zeros(members, dtype=torch.int64, device=device)
    with torch.no_grad():
        for start in range(0, count, chunk):
            if shared:  # the test set, or members of one seed: one copy of the inputs for all
                inputs = splits[0].inputs[start : start + chunk]
                targets = splits[0].targets[start : start + chunk].expand(members, -1)
            else:
                inputs = torch.stack([split.inputs[start : start + chunk] for split in splits])
                targets = torch.stack([split.targets[start : start + chunk] for split in splits])
            logits = model.forward(inputs, training=False)
            losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 reduction="none")
            loss_sums += losses.view(members, -1).sum(dim=1)
            correct += (logits.argmax(dim=2) == targets).sum(dim=1)
    total = max(count, 1)
    return [(loss / total, hits / total) for loss, hits in zip(loss_sums.tolist(), correct.tolist())]
