"""Groups: stacked members compute what they would alone, optimizers match torch.optim, members stay independent."""

from __future__ import annotations

import math

import pytest
import torch
from recording import RecordingLogger

from actopt.core import gradstats, inputs, member, run_end, training
from actopt.core.data import DatasetSplits, Split
from actopt.core.models import build_mlp, linear_layers
from actopt.core.optimizers import StackedOptimizer, build_optimizer
from actopt.core.stacked import StackedMLP
from actopt.errors import ConfigError

SETTINGS = [  # (optimizer, learning rates, momenta, weight decays) of four members; the last two share theirs
    ("sgd", [0.1, 0.05, 0.01, 0.01], [0.0, 0.9, 0.5, 0.5], [0.0, 1e-3, 1e-2, 1e-2]),
    ("sgd", [0.1, 0.05, 0.01, 0.01], [0.0, 0.0, 0.0, 0.0], [0.0, 1e-3, 1e-2, 1e-2]),
    ("adam", [1e-3, 1e-2, 3e-4, 3e-4], [0.0, 0.0, 0.0, 0.0], [0.0, 1e-2, 1e-4, 1e-4]),
    ("adamw", [1e-3, 1e-2, 3e-4, 3e-4], [0.0, 0.0, 0.0, 0.0], [0.0, 1e-2, 0.1, 0.1]),
    ("rmsprop", [1e-3, 1e-2, 3e-4, 3e-4], [0.0, 0.9, 0.5, 0.5], [0.0, 1e-3, 1e-2, 1e-2]),
]
ORACLES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}


def members(count: int, activation: str = "tanh", dropout: float = 0.0) -> list[torch.nn.Sequential]:
    modules = []
    for seed in range(count):
        torch.manual_seed(seed)
        modules.append(build_mlp((12, 8), activation, dropout, "default", input_size=20, classes=5))
    return modules


def stack(modules: list[torch.nn.Sequential], dropout: float = 0.0) -> StackedMLP:
    return StackedMLP(modules, "tanh", dropout, [torch.Generator().manual_seed(index) for index in range(len(modules))])


def oracle_optimizers(name, modules, rates, momenta, decays):
    """torch.optim, built as a lone run builds it, one per member."""
    return [build_optimizer(name, module.parameters(), rate, momentum, decay)
            for module, rate, momentum, decay in zip(modules, rates, momenta, decays)]


def random_gradients(model, modules, rows, generator):
    """The same random gradients into each module's parameters and the stack's rows ``rows``."""
    model.zero_grad()
    for row, module in zip(rows, modules):
        module.zero_grad()
        for parameter, stacked_parameter in zip(
                [layer.weight for layer in linear_layers(module)] + [layer.bias for layer in linear_layers(module)],
                model.parameters()):
            gradient = torch.randn(parameter.shape, generator=generator)
            parameter.grad = gradient.clone()
            stacked_parameter.grad[row].copy_(gradient.t() if gradient.dim() == 2 else gradient.reshape(1, -1))


def assert_rows_equal(model, modules):
    for row, module in enumerate(modules):
        for layer, weight, bias in zip(linear_layers(module), model.weights, model.biases):
            assert torch.equal(weight[row].detach().t(), layer.weight.detach())
            assert torch.equal(bias[row, 0].detach(), layer.bias.detach())


@pytest.mark.parametrize(("name", "rates", "momenta", "decays"), SETTINGS)
def test_stacked_optimizers_follow_torch_optim_bit_for_bit(name, rates, momenta, decays):
    modules = members(4)
    model = stack(modules)
    stacked = StackedOptimizer(name, [model.member_parameters(row) for row in range(4)], rates, momenta, decays)
    assert len(stacked.plans) == 3  # the last two members share one kernel call
    oracles = oracle_optimizers(name, modules, rates, momenta, decays)
    generator = torch.Generator().manual_seed(7)
    for _ in range(5):
        random_gradients(model, modules, range(4), generator)
        for oracle in oracles:
            oracle.step()
        stacked.step()
    assert_rows_equal(model, modules)
    # Dropping members (a diverged one) carries the others' state: they go on as torch.optim does.
    kept = [0, 3]
    model.keep_rows(kept)
    stacked.keep(kept, [model.member_parameters(row) for row in range(len(kept))])
    modules, oracles = [modules[index] for index in kept], [oracles[index] for index in kept]
    for _ in range(3):
        random_gradients(model, modules, range(len(kept)), generator)
        for oracle in oracles:
            oracle.step()
        stacked.step()
    assert_rows_equal(model, modules)
    assert [stacked.learning_rate(row) for row in range(len(kept))] == [rates[index] for index in kept]


def test_stacked_optimizer_uses_torch_optims_defaults():
    import inspect

    from actopt.core import optimizers

    adam = inspect.signature(torch.optim.Adam).parameters
    rmsprop = inspect.signature(torch.optim.RMSprop).parameters
    assert (optimizers.ADAM_BETAS, optimizers.ADAM_EPS) == (adam["betas"].default, adam["eps"].default)
    assert (optimizers.RMSPROP_ALPHA, optimizers.RMSPROP_EPS) == (rmsprop["alpha"].default, rmsprop["eps"].default)


def test_backward_accumulates_into_the_rows_the_optimizers_hold():
    model = stack(members(2))
    views = model.member_parameters(1)
    inputs = torch.randn(2, 4, 20)
    for _ in range(2):
        model.zero_grad()
        model.forward(inputs, training=True).sum().backward()
        assert torch.equal(views[0].grad, model.weights[0].grad[1])
        assert views[0].grad.abs().sum() > 0


def test_each_member_computes_its_own_net_and_comes_back_as_one():
    modules = members(3)
    model = stack(modules)
    inputs = torch.randn(3, 6, 20)
    logits = model.forward(inputs, training=False)
    for row, module in enumerate(modules):
        torch.testing.assert_close(logits[row], module(inputs[row]), rtol=1e-5, atol=1e-6)
        rebuilt = model.member_module(model.member_state(row), 20, 5)
        torch.testing.assert_close(rebuilt(inputs[row]), module(inputs[row]), rtol=1e-5, atol=1e-6)
    shared = model.forward(inputs[0], training=False)  # one input batch for every member
    torch.testing.assert_close(shared[2], modules[2](inputs[0]), rtol=1e-5, atol=1e-6)


def test_dropout_masks_are_each_members_own():
    one = stack(members(1), dropout=0.5)
    three = stack(members(3), dropout=0.5)
    masks_alone = one.dropout_masks(4, 12, torch.device("cpu"))
    masks_in_group = three.dropout_masks(4, 12, torch.device("cpu"))
    assert torch.equal(masks_alone[0], masks_in_group[0])
    assert not torch.equal(masks_in_group[0], masks_in_group[1])
    assert set(masks_in_group.unique().tolist()) == {0.0, 2.0}


def test_keeping_rows_carries_weights_and_optimizer_state():
    modules = members(3)
    model = stack(modules)
    optimizer = StackedOptimizer("adam", [model.member_parameters(row) for row in range(3)], [1e-2] * 3, [0.0] * 3,
                                 [0.0] * 3)
    inputs = torch.randn(3, 5, 20)
    model.forward(inputs, training=True).sum().backward()
    optimizer.step()
    before = model.member_state(2)
    model.keep_rows([0, 2])
    optimizer.keep([0, 2], [model.member_parameters(row) for row in range(2)])
    assert all(torch.equal(a, b) for a, b in zip(model.member_state(1), before))
    assert optimizer.states[1].slots["step"][0] == 1
    model.zero_grad()
    model.forward(inputs[[0, 2]], training=True).sum().backward()
    optimizer.step()
    assert not torch.equal(model.member_state(1)[0], before[0])


def test_stacked_step_statistics_are_step_statistics_per_member():
    weights = [torch.randn(4, 30, 12), torch.randn(4, 12, 3) * 1e-3]
    biases = [torch.randn(4, 1, 12), torch.randn(4, 1, 3)]
    weights[0][2] = 0.0  # a member whose first layer has no gradient
    stacked = gradstats.stacked_step_statistics(weights, biases)
    for row in range(4):
        expected = gradstats.step_statistics([w[row] for w in weights], [b[row] for b in biases])
        torch.testing.assert_close(stacked[row], expected, rtol=1e-5, atol=1e-7)


def test_each_distinct_batch_is_copied_once_and_every_row_gets_its_own():
    shared, other = (Split(torch.randn(10, 3), torch.arange(10)) for _ in range(2))
    data = [DatasetSplits("x", "memory", "none", split, split, split) for split in (shared, shared, other)]
    group = [member.Member(None, item, None, None) for item in data]
    same_order, other_order = [torch.tensor([3, 1]), torch.tensor([0, 2])], [torch.tensor([4, 2]), torch.tensor([1, 0])]
    orders = [same_order, [order.clone() for order in same_order], other_order]
    sources, rows_of = training.distinct_batches(group, orders)
    assert sources == [0, 2] and rows_of.tolist() == [0, 0, 1]
    inputs, targets = training.gather_batch([shared, other], [same_order[0], other_order[0]], rows_of, 3)
    for row, (split, order) in enumerate(((shared, same_order), (shared, same_order), (other, other_order))):
        assert torch.equal(inputs[row], split.inputs[order[0]]) and torch.equal(targets[row], split.targets[order[0]])
    orders[1] = other_order  # same split, another order: its own batches
    assert training.distinct_batches(group, orders) == ([0, 1, 2], None)


def splits(config):
    return inputs.splits(config)


def test_a_member_logs_the_same_alone_and_in_a_group_of_four(small_config):
    config = small_config.replace(epochs=2, dropout=0.1, learning_rate=2e-3)
    # One other member shares the seed (its split and batch order, so its batches are copied from the same rows).
    others = [config.replace(learning_rate=rate, seed=seed) for rate, seed in ((1e-2, 1), (5e-4, config.seed),
                                                                               (3e-3, 3))]
    alone = RecordingLogger()
    training.train(config, splits(config), alone)
    group = [config, *others]
    loggers = [RecordingLogger() for _ in group]
    by_seed = {member.seed: splits(member) for member in group}  # as a sweep prepares them: one split per seed
    training.train_group(group, [by_seed[member.seed] for member in group], loggers)
    inside = loggers[0]
    assert [step for step, _ in inside.metrics] == [step for step, _ in alone.metrics]
    for (_, expected), (_, got) in zip(alone.metrics, inside.metrics):
        assert set(got) - {"group_epoch_time"} == set(expected)
        for key, value in expected.items():
            if key not in ("epoch_time", "train_seconds"):  # the clock's, and a member's share of the group's
                assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
    # epoch_time is each member's share of the group's epoch, so that seconds per epoch compare with a lone run.
    for _, got in inside.metrics:
        if "group_epoch_time" in got:
            assert got["epoch_time"] == pytest.approx(got["group_epoch_time"] / len(group))
    assert "group_epoch_time" not in {key for _, metrics in alone.metrics for key in metrics}
    assert inside.tags == alone.tags
    # The others really trained their own configurations: other seeds, other rates, other curves.
    assert loggers[1].series("val_loss") != inside.series("val_loss")


def test_a_diverging_member_stops_alone_and_the_others_train_on(small_config):
    config = small_config.replace(optimizer="sgd", learning_rate=0.05, epochs=4, seed=1)
    group = [config, config.replace(learning_rate=1e6, seed=0), config.replace(seed=2)]
    loggers = [RecordingLogger() for _ in group]
    finished = []
    results = training.train_group(group, [splits(member) for member in group], loggers,
                                   finished=lambda index, result: finished.append(index))
    diverged = results[1]
    assert diverged.diverged and diverged.diverged_epoch < 4
    assert loggers[1].tags["diverged"] == "true"
    assert loggers[1].tags["diverged_epoch"] == str(diverged.diverged_epoch)
    assert max(loggers[1].series("train_loss")) == diverged.diverged_epoch
    assert not math.isfinite(loggers[1].series("train_loss")[diverged.diverged_epoch])
    assert run_end.HISTORY_ARTIFACT in loggers[1].texts
    assert finished == [1, 0, 2]  # the diverged member's run can close as soon as it stops
    for index in (0, 2):
        assert not results[index].diverged and results[index].epochs_completed == 4
        assert all(math.isfinite(value) for value in loggers[index].series("train_loss").values())
    healthy = RecordingLogger()
    training.train(group[2], splits(group[2]), healthy)
    assert loggers[2].series("val_loss")[4] == pytest.approx(healthy.series("val_loss")[4], rel=1e-4)


def test_configurations_that_shape_the_computation_differently_are_not_one_group(small_config):
    with pytest.raises(ConfigError, match="activation"):
        member.check_group([small_config, small_config.replace(activation="tanh")])
    member.check_group([small_config, small_config.replace(learning_rate=0.1, seed=4, init="xavier")])


def test_a_single_configuration_trains_through_the_group(small_config, monkeypatch):
    calls = []
    original = training.train_group

    def counting(configs, *args, **kwargs):
        calls.append(len(configs))
        return original(configs, *args, **kwargs)

    monkeypatch.setattr(training, "train_group", counting)
    training.train(small_config.replace(epochs=1, max_batches=2), splits(small_config), RecordingLogger())
    assert calls == [1]
