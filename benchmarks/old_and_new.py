"""The stacked training step of two checkouts side by side: seconds of one group's training epoch, alternated.

    python benchmarks/old_and_new.py OLD_TREE NEW_TREE --data-dir ../shared/data --size 8 --batches 50 --repeats 5

Each repetition runs, in a fresh subprocess per tree, ``training.train_epoch`` (gradient statistics on,
no evaluation, no logging) for a group of ``--size`` members of the default network with Adam,
learning rates 1e-4, 1e-3, 1e-2 × seeds 0, 1, 2 in study order (one data split shared, as a
sweep shares a seed's), after a warm epoch; the best of three epochs is kept. The trees alternate
so that a shared machine's load falls on both; the ratio of medians is what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

EPOCH = r'''
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
from actopt.core import training
from actopt.core.config import TrainConfig
from actopt.core.data import load_splits
from actopt.core.optimizers import StackedOptimizer
size, threads, batches, data_dir = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
class Silent:
    def __getattr__(self, name): return lambda *arguments, **keywords: None
base = TrainConfig.from_mapping({"data_dir": data_dir, "download": False, "device": "cpu", "epochs": 1,
                                 "max_batches": batches, "log_model": False})
try:  # load_splits takes a DataSpec since the core was split by concern; the older code takes its fields
    from actopt.core.data import DataSpec
    data = load_splits(DataSpec(base.dataset, base.data_dir, False, base.validation_fraction, 0))
except ImportError:
    data = load_splits(base.dataset, base.data_dir, False, base.validation_fraction, 0)
configs = [base.replace(learning_rate=rate, seed=seed) for rate in (1e-4, 1e-3, 1e-2) for seed in (0, 1, 2)][:size]
model = training.build_stack(configs, torch.device("cpu"))
members = [training.Member(config, data, Silent(), torch.Generator().manual_seed(config.seed)) for config in configs]
optimizer = StackedOptimizer("adam", [model.member_parameters(row) for row in range(size)],
                             [config.learning_rate for config in configs], [0.0] * size, [0.0] * size)
training.train_epoch(model, optimizer, members, base, True)
seconds = []
for _ in range(3):
    started = time.perf_counter()
    training.train_epoch(model, optimizer, members, base, True)
    seconds.append(time.perf_counter() - started)
print(json.dumps(min(seconds)))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--data-dir", default=os.environ.get("ACTOPT_DATA_DIR", "./data"))
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    trees = {"old": arguments.old, "new": arguments.new}
    seconds: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(arguments.repeats):
        for name, tree in trees.items():
            output = subprocess.run([sys.executable, "-c", EPOCH, tree, str(arguments.size), str(arguments.threads),
                                     str(arguments.batches), arguments.data_dir],
                                    capture_output=True, text=True, check=True)
            seconds[name].append(json.loads(output.stdout.strip().splitlines()[-1]))
    old, new = (statistics.median(seconds[name]) for name in trees)
    print(f"group of {arguments.size}, {arguments.batches} batches, {arguments.threads} thread(s): "
          + "; ".join(f"{name} {', '.join(f'{value:.2f}' for value in values)} s" for name, values in seconds.items())
          + f"; old/new median {old / new:.2f}")


if __name__ == "__main__":
    main()
