"""End to end: a group of one and a group of four train as a plain PyTorch loop would.

The oracle is written here from torch alone: an ``nn.Sequential`` made right after seeding with the
member's seed, its ``torch.optim`` optimizer, and the batches of a ``torch.randperm`` drawn from a
generator seeded with the member's seed, one permutation per epoch. It shares nothing with actopt
but the data tensors it trains on. Every member's per-epoch training and validation losses must match.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actopt.core import training
from actopt.core.inputs import splits

OPTIMIZERS = {
    "adam": lambda parameters, config: torch.optim.Adam(parameters, lr=config.learning_rate,
                                                        weight_decay=config.weight_decay),
    "sgd": lambda parameters, config: torch.optim.SGD(parameters, lr=config.learning_rate, momentum=config.momentum,
                                                      weight_decay=config.weight_decay),
}
# Float32 through batched matmuls (the stack) against nn.Linear's addmm, the same sums in another order:
# after three epochs the losses differ by about 1e-7 relative (SGD) and up to 1.5e-5 (Adam at 1e-2, whose
# normalised steps carry rounding further); a learning rate 1% off moves them by 2.5e-3 or more.
TOLERANCE = dict(rel=1e-4, abs=1e-6)


def plain_losses(config, data) -> tuple[dict[int, float], dict[int, float]]:
    """Per epoch: the mean training loss over the epoch's examples and the validation loss after it."""
    torch.manual_seed(config.seed)
    widths = (784, *config.hidden_sizes, 10)
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(widths) - 2:
            layers.append(nn.Tanh() if config.activation == "tanh" else nn.ReLU())
    model = nn.Sequential(*layers)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
    order = torch.Generator().manual_seed(config.seed)
    train_losses, validation_losses = {}, {}
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for indices in torch.randperm(len(data.train.targets), generator=order).split(config.batch_size):
            loss = nn.functional.cross_entropy(model(data.train.inputs[indices]), data.train.targets[indices])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(indices)
            seen += len(indices)
        model.eval()
        with torch.no_grad():
            validation = nn.functional.cross_entropy(model(data.validation.inputs), data.validation.targets)
        train_losses[epoch], validation_losses[epoch] = total / seen, float(validation)
    return train_losses, validation_losses


@pytest.fixture
def base(small_config):
    return small_config.replace(epochs=3, activation="tanh")


@pytest.mark.parametrize("optimizer, settings", [
    ("adam", [(0, 1e-3, 0.0, 0.0)]),
    ("sgd", [(0, 0.05, 0.9, 0.0)]),
    ("adam", [(0, 1e-3, 0.0, 0.0), (1, 3e-3, 0.0, 1e-2), (0, 3e-4, 0.0, 0.0), (2, 1e-2, 0.0, 0.0)]),
    ("sgd", [(0, 0.05, 0.9, 0.0), (1, 0.1, 0.0, 1e-3), (0, 0.02, 0.5, 1e-2), (2, 0.05, 0.9, 0.0)]),
], ids=["adam-one", "sgd-one", "adam-four", "sgd-four"])
def test_a_group_trains_as_plain_torch_loops_would(base, recorder, optimizer, settings):
    configs = [base.replace(optimizer=optimizer, seed=seed, learning_rate=rate, momentum=momentum, weight_decay=decay)
               for seed, rate, momentum, decay in settings]
    by_seed = {config.seed: splits(config) for config in configs}  # members of one seed share their split
    loggers = [type(recorder)() for _ in configs]
    training.train_group(configs, [by_seed[config.seed] for config in configs], loggers)
    for config, logger in zip(configs, loggers):
        expected_train, expected_validation = plain_losses(config, by_seed[config.seed])
        assert logger.series("train_loss") == pytest.approx(expected_train, **TOLERANCE), config.run_name
        assert logger.series("val_loss") == pytest.approx(expected_validation, **TOLERANCE), config.run_name
