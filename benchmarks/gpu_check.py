"""The GPU path's first run: groups of 1, 8 and 32 on CUDA, each member checked against itself alone.

    python benchmarks/gpu_check.py --data-dir ../shared/data          # under 5 minutes on one GPU
    python benchmarks/gpu_check.py --data-dir ../shared/data --sizes 1,8,32 --max-batches 100

For each group size K it trains K configurations of the default network (784-256-128-10, ReLU,
Adam, batch 128, gradient statistics on; learning rates and seeds varied, as a study varies them)
as one stacked program, then trains each member alone, compares every metric the member logged
(all but the timing keys) and reports each group's per-member throughput: training examples per
second per member, and the group's member-epochs per second against the members' alone. Without
the dataset it trains on random data of the same shape and says so. On a machine without CUDA it
says so and exits 0; it exits 1 when a member's metrics differ from its own alone.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actopt.core import training  # noqa: E402
from actopt.core.config import TrainConfig  # noqa: E402
from actopt.core.data import DatasetSplits, DataSpec, Split, load_splits  # noqa: E402
from actopt.core.metric_names import EPOCH_TIME, GROUP_EPOCH_TIME, TRAIN_SECONDS  # noqa: E402
from actopt.core.models import CLASSES, INPUT_SIZE  # noqa: E402
from actopt.errors import DataError  # noqa: E402

SIZES = (1, 8, 32)
RATES = (3e-4, 1e-3, 3e-3, 1e-2)
SEEDS = (0, 1, 2)
# What the group-member-equals-alone test allows (tests/test_group.py): the stacked matmuls may pick
# other kernels for another batch count, so a member's floats may differ in their last bits.
RELATIVE_TOLERANCE = 1e-4
ABSOLUTE_TOLERANCE = 1e-7
# Timing keys differ by nature; everything else a member logs must match.
TIMING_KEYS = {EPOCH_TIME, GROUP_EPOCH_TIME, TRAIN_SECONDS}
# The whole check must fit a short lease of a GPU machine (5 minutes): members not compared by then are
# reported as not checked.
DEADLINE_SECONDS = 240.0


class Recorder:
    """Every metric a run logs (per epoch and the end-of-run summary); nothing else kept."""

    def __init__(self) -> None:
        self.metrics: dict[tuple[int | None, str], float] = {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            if key not in TIMING_KEYS:
                self.metrics[(step, key)] = value

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *arguments, **keywords: None


@dataclass
class GroupCheck:
    size: int
    seconds: float  # the group's wall time
    alone_seconds: list[float] = field(default_factory=list)  # each compared member's wall time alone
    largest_difference: float = 0.0  # relative, over every metric of every compared member
    mismatches: list[str] = field(default_factory=list)
    checked: int = 0
    examples: int = 0  # training examples one member sees over the whole run

    @property
    def member_throughput(self) -> float:
        return self.examples / self.seconds

    @property
    def speedup(self) -> float:
        """The group's member-epochs per second over the same members' one after another (where all were checked)."""
        return sum(self.alone_seconds) / self.seconds * self.size / max(self.checked, 1)


def member_configs(base: TrainConfig, count: int) -> list[TrainConfig]:
    return [base.replace(seed=SEEDS[index % len(SEEDS)], learning_rate=RATES[index // len(SEEDS) % len(RATES)])
            for index in range(count)]


def splits_by_seed(base: TrainConfig, device: torch.device, synthetic_examples: int) -> dict[int, DatasetSplits]:
    """Each seed's split on ``device``: the real dataset when its files are there, else random data of its shape."""
    try:
        return {seed: load_splits(DataSpec(base.dataset, base.data_dir, False, base.validation_fraction, seed), device)
                for seed in SEEDS}
    except DataError:  # missing or unreadable files: random data says as much about equality and speed
        def split(examples: int, generator: torch.Generator) -> Split:
            return Split(torch.randn(examples, INPUT_SIZE, generator=generator).to(device),
                         torch.randint(0, CLASSES, (examples,), generator=generator).to(device))

        made = {}
        for seed in SEEDS:
            generator = torch.Generator().manual_seed(seed)
            made[seed] = DatasetSplits("synthetic", "random", "none", split(synthetic_examples, generator),
                                       split(synthetic_examples // 4, generator), split(synthetic_examples // 4,
                                                                                        generator))
        return made


def epoch_examples(config: TrainConfig, train_examples: int) -> int:
    """Training examples one member sees per epoch (``max_batches`` cuts the epoch short)."""
    batches = math.ceil(train_examples / config.batch_size)
    if config.max_batches and config.max_batches < batches:
        return config.max_batches * config.batch_size
    return train_examples


def relative_difference(expected: float, got: float) -> float:
    if expected == got or (math.isnan(expected) and math.isnan(got)):
        return 0.0
    return abs(expected - got) / max(abs(expected), ABSOLUTE_TOLERANCE)


def timed_training(configs: Sequence[TrainConfig], datas: dict[int, DatasetSplits], device: torch.device
                   ) -> tuple[list[Recorder], float]:
    recorders = [Recorder() for _ in configs]
    started = time.perf_counter()
    training.train_group(configs, [datas[config.seed] for config in configs], recorders, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return recorders, time.perf_counter() - started


def run_check(base: TrainConfig, sizes: Sequence[int], device: torch.device, datas: dict[int, DatasetSplits],
              report: Callable[[str], None], deadline: float = DEADLINE_SECONDS) -> list[GroupCheck]:
    """Each group size trained once, then its members alone (each configuration alone once, reused across sizes)."""
    started = time.perf_counter()
    configs = member_configs(base, max(sizes))
    timed_training(configs[:1], datas, device)  # warm: CUDA context, kernels, allocator
    alone: dict[int, tuple[Recorder, float]] = {}
    results = []
    for size in sizes:
        recorders, seconds = timed_training(configs[:size], datas, device)
        check = GroupCheck(size, seconds, examples=base.epochs * epoch_examples(base, len(datas[SEEDS[0]].train)))
        for index, (config, recorder) in enumerate(zip(configs, recorders)):
            if time.perf_counter() - started > deadline:
                break
            if index not in alone:
                lone, lone_seconds = timed_training([config], datas, device)
                alone[index] = (lone[0], lone_seconds)
            expected, lone_seconds = alone[index]
            check.alone_seconds.append(lone_seconds)
            check.checked += 1
            if set(expected.metrics) != set(recorder.metrics):
                check.mismatches.append(f"member {index}: logs other keys than alone")
                continue
            for key, value in expected.metrics.items():
                difference = relative_difference(value, recorder.metrics[key])
                check.largest_difference = max(check.largest_difference, difference)
                if difference > RELATIVE_TOLERANCE:
                    check.mismatches.append(f"member {index}: {key[1]} at step {key[0]}: {value!r} alone, "
                                            f"{recorder.metrics[key]!r} in the group")
        report(f"group of {size}: {seconds:.2f} s, {check.checked}/{size} members compared, largest relative "
               f"difference {check.largest_difference:.2e}, {len(check.mismatches)} mismatch(es)")
        results.append(check)
    return results


def table(results: Sequence[GroupCheck], device_name: str, data_name: str) -> list[str]:
    lines = [f"Device: {device_name}; data: {data_name}.", "",
             "| group | wall s | members compared | largest relative difference | equal alone | "
             "examples/s per member | member-epochs/s vs one after another |",
             "| ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for check in results:
        lines.append(f"| {check.size} | {check.seconds:.2f} | {check.checked}/{check.size} | "
                     f"{check.largest_difference:.1e} | {'yes' if not check.mismatches else '**no**'} | "
                     f"{check.member_throughput:,.0f} | {check.speedup:.2f}× |")
    for check in results:
        lines += [f"- group of {check.size}: {mismatch}" for mismatch in check.mismatches[:5]]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("ACTOPT_DATA_DIR", "../shared/data"))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="group sizes, comma separated")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-batches", type=int, default=100, help="batches per epoch (0 = all)")
    arguments = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: torch finds no CUDA device here; nothing to check (run it on a machine with a GPU).")
        return 0
    device = torch.device("cuda")
    base = TrainConfig.from_mapping({"data_dir": str(Path(arguments.data_dir).resolve()), "download": False,
                                     "device": "cuda", "epochs": arguments.epochs,
                                     "max_batches": arguments.max_batches, "log_model": False})
    datas = splits_by_seed(base, device, synthetic_examples=128 * 200)
    results = run_check(base, [int(size) for size in arguments.sizes.split(",")], device, datas,
                        lambda line: print(line, file=sys.stderr, flush=True))
    data_name = datas[SEEDS[0]].name + ("" if datas[SEEDS[0]].name != "synthetic" else " (dataset files not found)")
    print("\n".join(table(results, torch.cuda.get_device_name(device), data_name)))
    return 1 if any(check.mismatches for check in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
