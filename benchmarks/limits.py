"""The arithmetic a study needs and how fast this machine does it: FLOPs over a measured matmul rate.

Only matrix multiplications count, as ``torch.utils.flop_counter.FlopCounterMode`` counts them
(tests/test_benchmarks.py checks that the two agree on a training step, an evaluation pass and a
probe); the rate is measured on the model's own matmul shapes, with a given number of threads, in
the run that uses it, so that the limit is this machine's today.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode

from actopt.core.config import TrainConfig
from actopt.core.data import DatasetSplits, Split
from actopt.core.device import build_stack
from actopt.core.evaluation import EVALUATION_BATCH
from actopt.core.models import CLASSES, INPUT_SIZE
from actopt.core.probe import UNIT_PROBE_EXAMPLES, GroupProbe


def matmul_rate(size: int = 1024, repeats: int = 20) -> float:
    """float32 FLOP/s of a square matmul with torch's threads: the machine's arithmetic ceiling here."""
    left, right = torch.randn(size, size), torch.randn(size, size)
    torch.mm(left, right)
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.mm(left, right)
        rates.append(2 * size**3 * repeats / (time.perf_counter() - started))
    return max(rates)


def layer_shapes(config: TrainConfig) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each Linear layer that training builds for ``config``, in forward order."""
    sizes = [INPUT_SIZE, *config.layer_sizes, CLASSES]
    return list(itertools.pairwise(sizes))


def training_flops_per_example(config: TrainConfig) -> int:
    """Matmul FLOPs of one training step, per example: forward, weight gradient, input gradient.

    Per Linear layer and example, the forward matmul is 2·in·out, the weight gradient 2·in·out and
    the gradient with respect to the layer's input 2·in·out; the first layer has no input gradient,
    since the data needs none (784-256-128-10 keeps 85% of its weights there).
    """
    shapes = layer_shapes(config)
    return sum(4 * fan_in * fan_out for fan_in, fan_out in shapes) + sum(2 * fan_in * fan_out for fan_in,
                                                                         fan_out in shapes[1:])


def forward_flops_per_example(config: TrainConfig) -> int:
    """Matmul FLOPs of one forward pass (no gradients), per example: 2·in·out per Linear layer."""
    return sum(2 * fan_in * fan_out for fan_in, fan_out in layer_shapes(config))


def epoch_flops(config: TrainConfig, train_examples: int, validation_examples: int) -> int:
    """Matmul FLOPs of what an epoch's timing covers: the training steps over ``train_examples``, the
    validation pass (forward only) over ``validation_examples``, and the eval-mode pass over as many
    training examples (the train side of the train/validation gap).

    Only the matrix multiplications count, as ``torch.utils.flop_counter.FlopCounterMode`` counts
    them (tests/test_benchmarks.py checks the two agree): bias adds and bias gradients,
    activations, the loss and the optimizer's update are elementwise, O(in + out) per layer
    against O(in·out), well under 1% here, and bound by memory rather than arithmetic; the matmul
    rate below would misprice them anyway. The instrumented form's gradient probe (one batch
    forward and backward, a forward over 2048 validation examples per epoch) is instrumentation,
    part of what (c)/(b) measures, and is not counted either.
    """
    evaluated = validation_examples + min(train_examples, validation_examples)
    return training_flops_per_example(config) * train_examples + forward_flops_per_example(config) * evaluated


def probe_flops(config: TrainConfig, validation: int) -> int:
    """Matmul FLOPs of one gradient probe (a batch forward and backward, a forward over the unit-probe
    examples, at most ``validation``), counted by FlopCounterMode on the probe itself, with random data
    of the right shape."""
    def split(examples: int) -> Split:
        return Split(torch.randn(examples, INPUT_SIZE), torch.randint(0, CLASSES, (examples,)))

    units = min(UNIT_PROBE_EXAMPLES, validation)
    data = DatasetSplits("synthetic", "memory", "none", split(config.batch_size), split(units), split(1))
    model = build_stack([config], torch.device("cpu"))
    probe = GroupProbe([config], [data])
    with FlopCounterMode(display=False) as counter:
        probe.measure(model)
    return counter.get_total_flops()


def run_flops(config: TrainConfig, train: int, validation: int, test: int, probe: int) -> int:
    """Matmul FLOPs of a whole run: every epoch (training steps, validation and train-side evaluation
    passes), the probe at initialisation and after each epoch when statistics are on, and the test pass
    on the best weights at its end."""
    probes = (config.epochs + 1) * probe if config.gradient_statistics else 0
    return config.epochs * epoch_flops(config, train, validation) + probes + epoch_flops(config, 0, test)


@contextmanager
def threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def model_matmul_rate(config: TrainConfig, thread_count: int, seconds: float = 1.0) -> float:
    """float32 FLOP/s of the model's own matmuls with ``thread_count`` threads: one training step's
    (forward, weight and input gradients at the batch size) and one evaluation chunk's forward, in the
    proportion an epoch has them (the best of three rounds of about ``seconds`` each)."""
    shapes = layer_shapes(config)
    rows = config.batch_size
    step = [((rows, fan_in), (fan_in, fan_out)) for fan_in, fan_out in shapes]  # forward
    step += [((fan_in, rows), (rows, fan_out)) for fan_in, fan_out in shapes]  # weight gradients
    step += [((rows, fan_out), (fan_out, fan_in)) for fan_in, fan_out in shapes[1:]]  # input gradients
    evaluation = [((EVALUATION_BATCH, fan_in), (fan_in, fan_out)) for fan_in, fan_out in shapes]
    # An epoch evaluates about a fifth as many examples as it trains on (validation and train side, 10% each).
    steps_per_chunk = max(1, round(5 * EVALUATION_BATCH / rows / 3))
    operands = [(torch.randn(*left), torch.randn(*right)) for left, right in step * steps_per_chunk + evaluation]
    flops = sum(2 * left.shape[0] * left.shape[1] * right.shape[1] for left, right in operands)
    with threads(thread_count):
        for left, right in operands:
            torch.mm(left, right)
        best = 0.0
        for _ in range(3):
            rounds, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / 3:
                for left, right in operands:
                    torch.mm(left, right)
                rounds += 1
            best = max(best, rounds * flops / (time.perf_counter() - started))
    return best


def study_flops(configs: Sequence[TrainConfig], sizes: tuple[int, int, int]) -> int:
    """Matmul FLOPs of every run of a study, given its splits' sizes (train, validation, test)."""
    probes: dict[tuple[int, ...], int] = {}
    total = 0
    for config in configs:
        key = (*config.layer_sizes, config.batch_size)
        if config.gradient_statistics and key not in probes:
            probes[key] = probe_flops(config, sizes[1])
        total += run_flops(config, *sizes, probes.get(key, 0))
    return total
