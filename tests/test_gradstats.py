"""Every statistic against a direct torch (or numpy) oracle, micrograd-style."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from plain_forward import forward_with_pre_activations

from actopt.core import device, gradstats, probe, stacked, training
from actopt.core.inputs import splits
from actopt.core.models import build_mlp


def random_gradients(seed: int, shapes=((64, 784), (32, 64), (10, 32))) -> tuple[list[torch.Tensor],
                                                                                 list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(shape, generator=generator) * 10.0 ** -index for index, shape in enumerate(shapes)]
    biases = [torch.randn(shape[0], generator=generator) for shape in shapes]
    return weights, biases


def test_step_statistics_match_torch():
    weights, biases = random_gradients(0)
    statistics = gradstats.step_statistics(weights, biases)
    layers = len(weights)
    for index, gradient in enumerate(weights):
        assert statistics[index] == pytest.approx(float(torch.linalg.vector_norm(gradient)), rel=1e-5)
        assert statistics[layers + index] / gradient.numel() == pytest.approx(float(gradient.abs().mean()), rel=1e-5)
        assert statistics[2 * layers + index] == pytest.approx(float(gradient.abs().max()), rel=1e-6)
    # The global norm is the one gradient clipping uses, over weights and biases.
    expected_global = torch.nn.utils.get_total_norm(weights + biases)
    assert statistics[3 * layers] == pytest.approx(float(expected_global), rel=1e-5)
    # The training loop passes scratch buffers (dirty from earlier steps): same values.
    scratch = [torch.full_like(weight, -7.0) for weight in weights]
    assert torch.equal(gradstats.step_statistics(weights, biases, scratch), statistics)


def test_epoch_summary_is_mean_and_peak_of_steps():
    steps = [random_gradients(seed) for seed in range(5)]
    sums = torch.zeros(10)
    maxima = torch.zeros(10)
    for weights, biases in steps:
        statistics = gradstats.step_statistics(weights, biases)
        sums += statistics
        torch.maximum(maxima, statistics, out=maxima)
    counts = [gradient.numel() for gradient in steps[0][0]]
    summary = gradstats.summarize_epoch(sums, maxima, len(steps), counts)
    for layer in range(3):
        norms = [float(torch.linalg.vector_norm(weights[layer])) for weights, _ in steps]
        means = [float(weights[layer].abs().mean()) for weights, _ in steps]
        peaks = [float(weights[layer].abs().max()) for weights, _ in steps]
        assert summary.l2_norm[layer] == pytest.approx(np.mean(norms), rel=1e-5)
        assert summary.mean_abs[layer] == pytest.approx(np.mean(means), rel=1e-5)
        assert summary.max_abs[layer] == pytest.approx(np.mean(peaks), rel=1e-5)
        assert summary.max_abs_peak[layer] == pytest.approx(max(peaks), rel=1e-6)
    totals = [float(torch.nn.utils.get_total_norm(weights + biases)) for weights, biases in steps]
    assert summary.global_norm == pytest.approx(np.mean(totals), rel=1e-5)
    assert summary.global_norm_peak == pytest.approx(max(totals), rel=1e-5)


def test_the_accumulator_summarizes_each_member_as_the_oracle_does():
    """Three members' stacked gradients over five steps; each member's summary against torch on its own rows."""
    shapes = ((12, 30), (7, 12), (4, 7))
    generator = torch.Generator().manual_seed(8)
    # Members of very different scales (the last one's squares would underflow in float32): rows stay apart.
    scales = torch.tensor([1.0, 1e-3, 1e-25]).view(3, 1, 1)
    steps = [([torch.randn(3, fan_in, fan_out, generator=generator) * scales * 10.0 ** -layer
               for layer, (fan_out, fan_in) in enumerate(shapes)],
              [torch.randn(3, 1, fan_out, generator=generator) for fan_out, _ in shapes]) for _ in range(5)]
    weights = [torch.zeros(3, fan_in, fan_out) for fan_out, fan_in in shapes]
    accumulator = gradstats.GradientAccumulator(weights)
    assert accumulator.layout.width == 3 * len(shapes) + 1
    for weight_gradients, bias_gradients in steps:
        accumulator.add(weight_gradients, bias_gradients)
    assert accumulator.steps == len(steps)
    for member in range(3):
        summary = accumulator.summary(member)
        for layer in range(len(shapes)):
            own = [weight_gradients[layer][member] for weight_gradients, _ in steps]
            assert summary.l2_norm[layer] == pytest.approx(np.mean([float(torch.linalg.vector_norm(g)) for g in own]),
                                                           rel=1e-5)
            assert summary.mean_abs[layer] == pytest.approx(np.mean([float(g.abs().mean()) for g in own]), rel=1e-5)
            assert summary.max_abs[layer] == pytest.approx(np.mean([float(g.abs().max()) for g in own]), rel=1e-6)
            assert summary.max_abs_peak[layer] == pytest.approx(max(float(g.abs().max()) for g in own), rel=1e-6)
        totals = [float(torch.nn.utils.get_total_norm([g[member] for g in weight_gradients + bias_gradients]))
                  for weight_gradients, bias_gradients in steps]
        assert summary.global_norm == pytest.approx(np.mean(totals), rel=1e-5)
        assert summary.global_norm_peak == pytest.approx(max(totals), rel=1e-5)


def test_the_layout_places_each_block_where_step_statistics_puts_it():
    layout = gradstats.StatisticsLayout(3)
    packed = layout.pack(*(torch.full((2, size), float(block)) for block, size in enumerate((3, 3, 3, 1))))
    assert packed.shape == (2, layout.width) == (2, 10)
    for block, place in enumerate((layout.l2_norms, layout.abs_sums, layout.max_abs)):
        assert torch.equal(packed[:, place], torch.full((2, 3), float(block)))
    assert torch.equal(packed[:, layout.global_norm], torch.full((2,), 3.0))


def test_histogram_matches_numpy():
    generator = torch.Generator().manual_seed(3)
    gradient = torch.randn(200, 300, generator=generator) * torch.logspace(-14, 3, 300)
    gradient[:5] = 0.0  # dead rows: exact zeros go to the open bucket below
    edges = gradstats.histogram_edges()
    counts = gradstats.log_magnitude_histogram(gradient, edges)
    with np.errstate(divide="ignore"):
        logs = np.log10(np.abs(gradient.numpy().astype(np.float64)))
    expected, _ = np.histogram(logs, bins=np.concatenate([[-np.inf], edges.numpy(), [np.inf]]))
    assert counts.tolist() == expected.tolist()
    assert int(counts.sum()) == gradient.numel()
    assert int(counts[0]) >= 5 * 300
    assert len(counts) == gradstats.HISTOGRAM_BINS + 2


def test_histogram_bucket_boundaries():
    edges = torch.tensor([-2.0, -1.0, 0.0], dtype=torch.float64)
    values = torch.tensor([0.0, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0], dtype=torch.float64)
    # buckets: <1e-2 | [1e-2,1e-1) | [1e-1,1) | >=1
    assert gradstats.log_magnitude_histogram(values, edges).tolist() == [2, 2, 2, 2]


def test_dead_fraction_matches_a_direct_count():
    generator = torch.Generator().manual_seed(4)
    pre = torch.randn(50, 40, generator=generator)
    pre[:, :10] = -torch.rand(50, 10, generator=generator)  # never positive: dead
    pre[:, 10] = 0.0  # zero is not active for a ReLU
    pre[0, 11] = 0.3
    pre[1:, 11] = -1.0  # active once: alive
    expected = sum(1 for unit in range(40) if all(float(pre[row, unit]) <= 0 for row in range(50))) / 40
    assert gradstats.dead_fraction(pre) == pytest.approx(expected)
    assert gradstats.dead_fraction(pre) == pytest.approx(11 / 40)


@pytest.mark.parametrize(("bounds", "function"), [((0.0, 1.0), torch.sigmoid), ((-1.0, 1.0), torch.tanh),
                                                 ((-1.7159, 1.7159), lambda x: 1.7159 * torch.tanh(2 * x / 3))])
def test_saturated_fraction_matches_a_direct_count(bounds, function):
    outputs = function(torch.linspace(-8, 8, 1601, dtype=torch.float64)).reshape(1601, 1)
    low, high = bounds
    reach = gradstats.SATURATION_MARGIN * (high - low)
    expected = np.mean([(value <= low + reach) or (value >= high - reach) for value in outputs.flatten().tolist()])
    assert gradstats.saturated_fraction(outputs, bounds) == pytest.approx(expected)
    assert 0 < expected < 1


def test_saturation_threshold_is_where_the_derivative_is_small():
    # Documented claim: at the saturation threshold the derivative is about a tenth of its peak or less.
    sigmoid_at_threshold = 1 - gradstats.SATURATION_MARGIN
    assert sigmoid_at_threshold * (1 - sigmoid_at_threshold) / 0.25 < 0.11
    tanh_at_threshold = 1 - 2 * gradstats.SATURATION_MARGIN
    assert 1 - tanh_at_threshold**2 < 0.11


def test_max_abs_per_layer():
    weights, _ = random_gradients(5)
    assert gradstats.max_abs_per_layer(weights) == pytest.approx([float(w.abs().max()) for w in weights])


def test_logged_gradient_statistics_equal_hooked_gradients(small_config, data_dir, recorder, monkeypatch):
    """Capture every training step's weight gradient with hooks and recompute the epoch's numbers."""
    captured: list[list[torch.Tensor]] = []
    original = stacked.StackedMLP.__init__

    def instrumented(self, *args, **kwargs):
        original(self, *args, **kwargs)
        per_step: dict[int, torch.Tensor] = {}

        def hook_for(index):
            def hook(gradient):
                if self.training_step:  # the probe's backward is not a training step
                    per_step[index] = gradient[0].detach().clone()
                    if len(per_step) == len(self.weights):
                        captured.append([per_step[i] for i in range(len(self.weights))])
                        per_step.clear()
            return hook

        for index, weight in enumerate(self.weights):
            weight.register_hook(hook_for(index))

    def forward(self, inputs, training, keep=None):
        self.training_step = training
        return original_forward(self, inputs, training, keep)

    original_forward = stacked.StackedMLP.forward
    monkeypatch.setattr(stacked.StackedMLP, "__init__", instrumented)
    monkeypatch.setattr(stacked.StackedMLP, "forward", forward)
    config = small_config.replace(epochs=1, max_batches=4)
    data = splits(config)
    training.train(config, data, recorder)
    assert len(captured) == 4
    for layer in range(3):
        name = probe.layer_name(layer + 1)
        norms = [float(torch.linalg.vector_norm(step[layer])) for step in captured]
        peaks = [float(step[layer].abs().max()) for step in captured]
        assert recorder.series(f"grad_norm/{name}")[1] == pytest.approx(np.mean(norms), rel=1e-5)
        assert recorder.series(f"grad_mean_abs/{name}")[1] == pytest.approx(
            np.mean([float(step[layer].abs().mean()) for step in captured]), rel=1e-5)
        assert recorder.series(f"grad_max_abs_peak/{name}")[1] == pytest.approx(max(peaks), rel=1e-6)


def test_probe_gradient_is_the_fixed_minibatch_gradient(small_config, recorder):
    """probe_grad_max_abs at step 0 equals the max |grad| of the untrained net on the probe batch."""
    config = small_config.replace(epochs=1, max_batches=1)
    data = splits(config)
    torch.manual_seed(config.seed)
    model = build_mlp(config.layer_sizes, config.activation, config.dropout, config.init)
    inputs, targets = probe.probe_batch(config, data)
    model.eval()
    captured = []
    for module in model:
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _, __, output: captured.append(output.detach().double()))
    torch.nn.functional.cross_entropy(model(inputs), targets).backward()
    linear = [layer for layer in model if isinstance(layer, torch.nn.Linear)]
    expected = [float(layer.weight.grad.abs().max()) for layer in linear]
    expected_norms = [float(np.linalg.norm(layer.weight.grad.numpy().astype(np.float64))) for layer in linear]
    # Measured q^l of the hidden layers: mean square of their pre-activations over the probe batch.
    expected_moments = [float((output ** 2).mean()) for output in captured[:-1]]
    squares = np.zeros(len(linear))
    for example in range(len(inputs)):  # each example's own loss, its own backward
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs[example:example + 1]), targets[example:example + 1]).backward()
        squares += [float(layer.weight.grad.double().pow(2).sum()) for layer in linear]
    expected_example_norms = np.sqrt(squares / len(inputs))
    training.train(config, data, recorder)
    names = [probe.layer_name(index) for index in (1, 2, 3)]
    assert [recorder.series(f"probe_grad_max_abs/{name}")[0] for name in names] == pytest.approx(expected, rel=1e-6)
    assert [recorder.series(f"probe_grad_norm/{name}")[0] for name in names] == pytest.approx(expected_norms, rel=1e-6)
    assert [recorder.series(f"probe_example_grad_norm/{name}")[0] for name in names] == pytest.approx(
        expected_example_norms, rel=1e-4)
    assert [recorder.series(f"probe_preactivation_moment/{name}")[0] for name in names[:2]] == pytest.approx(
        expected_moments, rel=1e-6)
    assert "probe_preactivation_moment/layer_03" not in recorder.metrics[0][1]  # the logits are no hidden layer
    assert recorder.series("probe_input_moment")[0] == pytest.approx(float((inputs.double() ** 2).mean()))


def test_example_gradient_norms_match_per_example_autograd():
    torch.manual_seed(4)
    model = build_mlp((24, 12), "tanh", input_size=30, classes=5).double()
    inputs, targets = torch.randn(9, 30, dtype=torch.float64), torch.randint(0, 5, (9,))
    logits, pre_activations, layer_inputs = forward_with_pre_activations(model, inputs)
    torch.nn.functional.cross_entropy(logits, targets).backward()
    logged = gradstats.example_gradient_norms([pre.grad for pre in pre_activations], layer_inputs)
    linear = [layer for layer in model if isinstance(layer, torch.nn.Linear)]
    squares = np.zeros(len(linear))
    for example in range(len(inputs)):  # each example's own loss, its own backward
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs[example:example + 1]), targets[example:example + 1])
        loss.backward()
        squares += [float(layer.weight.grad.pow(2).sum()) for layer in linear]
    assert logged == pytest.approx(np.sqrt(squares / len(inputs)), rel=1e-10)


def test_norms_and_second_moments_match_numpy():
    generator = torch.Generator().manual_seed(3)
    tensors = [torch.randn(40, 30, generator=generator) * 1e-21, torch.randn(7, generator=generator) * 5]
    assert gradstats.l2_norm_per_layer(tensors) == pytest.approx(
        [float(np.sqrt((t.numpy().astype(np.float64) ** 2).sum())) for t in tensors], rel=1e-12)
    assert gradstats.second_moment_per_layer(tensors) == pytest.approx(
        [float((t.numpy().astype(np.float64) ** 2).mean()) for t in tensors], rel=1e-12)


def test_vanished_gradients_are_logged_not_flushed(small_config, recorder, monkeypatch):
    """Sigmoid, default init, depth 40: the first layers' gradients are near 1e-34, whose float32
    squares underflow. Every logged norm is nonzero and equals a float64 autograd oracle computed at
    the same weights on the same batches, with the CPU's subnormal flushing on and off."""
    config = small_config.replace(epochs=1, max_batches=3, depth=40, width=16, activation="sigmoid",
                                  gradient_statistics=True)
    data = splits(config)
    steps: list[tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]] = []
    original_forward = stacked.StackedMLP.forward
    pending = [False]  # whether the next loss is a training step's

    def forward(self, inputs, training, keep=None):
        if training:  # the weights and inputs each training step sees (the probe's forward is not one)
            steps.append(([w[0].detach().double() for w in self.weights],
                          [b[0].detach().double() for b in self.biases], inputs[0].detach().double()))
        pending[:] = [training]
        return original_forward(self, inputs, training, keep)

    def oracle_norms(weights, biases, inputs, targets):
        weights = [weight.clone().requires_grad_() for weight in weights]
        values = inputs
        for index, (weight, bias) in enumerate(zip(weights, biases)):
            values = values @ weight + bias  # stacked weights are (in, out)
            if index < len(weights) - 1:
                values = torch.sigmoid(values)
        loss = torch.nn.functional.cross_entropy(values, targets)
        return [float(torch.linalg.vector_norm(gradient)) for gradient in torch.autograd.grad(loss, weights)]

    monkeypatch.setattr(stacked.StackedMLP, "forward", forward)
    targets_seen: list[torch.Tensor] = []
    original_cross_entropy = torch.nn.functional.cross_entropy

    def cross_entropy(logits, targets, *args, **kwargs):
        if pending[0]:
            pending[0] = False
            targets_seen.append(targets.detach().clone())
        return original_cross_entropy(logits, targets, *args, **kwargs)

    monkeypatch.setattr(training.nn.functional, "cross_entropy", cross_entropy)
    logged = {}
    previous = device.subnormals_flushed()
    for flushing in (True, False):
        steps.clear()
        targets_seen.clear()

        @contextlib.contextmanager
        def subnormal_mode(_device, flushing=flushing):
            torch.set_flush_denormal(flushing)
            yield

        monkeypatch.setattr(training, "flushed_subnormals", subnormal_mode)
        run = type(recorder)()
        training.train(config, data, run)
        logged[flushing] = [run.series(f"grad_norm/{probe.layer_name(index)}")[1] for index in range(1, 42)]
        assert len(steps) == len(targets_seen) == 3
        expected = np.mean([oracle_norms(*step, targets) for step, targets in zip(steps, targets_seen)], axis=0)
        assert expected[0] < 1e-25  # the case the float32 squares lost
        assert all(value > 0 for value in logged[flushing])
        assert logged[flushing] == pytest.approx(list(expected), rel=1e-3)
    torch.set_flush_denormal(previous)
    assert logged[True] == pytest.approx(logged[False], rel=1e-6)
