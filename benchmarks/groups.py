"""Group measurements for benchmark.py (sections 6 and 7): fused groups against one-by-one training.

5. (a) A group of 8 configurations (default network, 3 seeds, 4 learning rates) against the same 8
   trained one after another, everything logged to MLflow, in member-epochs per second; (b) a group
   of one against the code before groups (form (c) of section 1, run from a checkout given by
   ``--baseline-tree``), both in subprocesses, alternated; (c) sigmoid + Adam 1e-2 for 10 epochs, last
   epoch against first, with subnormals flushed (the default) and without, and the accuracies both logged.
6. The fashion-activations study with 3 seeds, grouped, against the one-seed study trained one
   configuration per program (``--group-size 1``), both with one worker per core, on one evenly
   spaced slice of its configurations.

Every pair is measured side by side in one run, alternating where it repeats, so that the load of a
shared machine falls on both; the ratios are what to read.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from actopt.core import training
from actopt.core.config import TrainConfig
from actopt.core.inputs import splits

ROOT = Path(__file__).resolve().parents[1]
GROUP_SIZE = 8
RATES = (3e-4, 1e-3, 3e-3, 1e-2)
SEEDS = (0, 1, 2)
# Form (c) of section 1 in a subprocess on the code found at sys.argv[1]: median seconds per epoch.
FORM_C = """
import json, statistics, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/benchmarks"]
import benchmark
from actopt.core.config import TrainConfig
from actopt.core.data import load_splits
import dataclasses
# Options added after the older tree keep their defaults there; it refuses names it does not know.
known = {field.name for field in dataclasses.fields(TrainConfig)}
config = TrainConfig.from_mapping({name: value for name, value in json.loads(sys.argv[2]).items() if name in known})
try:  # load_splits takes a DataSpec since the core was split by concern; the older code takes its fields
    from actopt.core.data import DataSpec
    data = load_splits(DataSpec(config.dataset, config.data_dir, False, config.validation_fraction, config.seed))
except ImportError:
    data = load_splits(config.dataset, config.data_dir, False, config.validation_fraction, config.seed)
logger = benchmark.actopt_epochs(config, data, "sqlite")
print(json.dumps(logger.epoch_times(logger.started)))
"""


class MetricsLogger:
    """Keeps each epoch's metrics and drops the rest (no tracking store)."""

    def __init__(self) -> None:
        self.history: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step:
            self.history.setdefault(step, {}).update(metrics)

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *arguments, **keywords: None


@dataclass
class Groups:
    epochs: int
    sequential_seconds: list[float] = field(default_factory=list)
    group_seconds: list[float] = field(default_factory=list)
    baseline_epoch: list[float] = field(default_factory=list)  # form (c) before groups, s/epoch
    single_epoch: list[float] = field(default_factory=list)  # form (c) as a group of one, s/epoch
    saturating: dict[str, list[float]] = field(default_factory=dict)  # "flushed"/"not flushed": epoch times
    saturating_accuracy: dict[str, list[float]] = field(default_factory=dict)  # val_accuracy per epoch


def group_configs(base: TrainConfig) -> list[TrainConfig]:
    return [base.replace(seed=SEEDS[index % len(SEEDS)], learning_rate=RATES[index % len(RATES)])
            for index in range(GROUP_SIZE)]


def logged_training(configs: list[TrainConfig], grouped: bool) -> float:
    """Wall seconds to train ``configs`` into a fresh sqlite store, as one group or one by one."""
    from benchmark import tracking_store

    from actopt.tracking import runlog

    with tempfile.TemporaryDirectory() as folder, tracking_store(None, Path(folder)):
        started = time.perf_counter()
        if grouped:
            runlog.run_group(configs)
        else:
            for config in configs:
                runlog.run_training(config)
        return time.perf_counter() - started


def form_c_epochs(tree: Path, config: TrainConfig) -> list[float]:
    values = config.to_params()
    output = subprocess.run([sys.executable, "-c", FORM_C, str(tree), json.dumps(values)], capture_output=True,
                            text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


@dataclass
class Saturating:
    epoch_seconds: list[float]
    accuracy: list[float]


def saturating_run(config: TrainConfig, flush: bool) -> Saturating:
    """sigmoid + Adam 1e-2 without MLflow; ``flush`` False keeps subnormals (the code before this change)."""
    data = splits(config)
    original = training.flushed_subnormals
    if not flush:
        training.flushed_subnormals = lambda device: contextlib.nullcontext()  # type: ignore[assignment]
    torch.set_flush_denormal(False)
    try:
        logger = MetricsLogger()
        training.train(config, data, logger)
    finally:
        training.flushed_subnormals = original  # type: ignore[assignment]
    history = [logger.history[epoch] for epoch in sorted(logger.history)]
    return Saturating([metrics["epoch_time"] for metrics in history], [metrics["val_accuracy"] for metrics in history])


def measure_groups(base: TrainConfig, repeats: int, baseline_tree: Path | None, saturating_epochs: int,
                   report: Callable[[str], None]) -> Groups:
    result = Groups(epochs=base.epochs)
    configs = group_configs(base)
    for repeat in range(repeats):
        result.sequential_seconds.append(logged_training(configs, grouped=False))
        result.group_seconds.append(logged_training(configs, grouped=True))
        report(f"groups, repeat {repeat + 1}/{repeats}: 8 one by one {result.sequential_seconds[-1]:.1f} s, "
               f"group of 8 {result.group_seconds[-1]:.1f} s")
        if baseline_tree is not None:
            result.baseline_epoch += form_c_epochs(baseline_tree, base)
            result.single_epoch += form_c_epochs(ROOT, base)
            report(f"groups, repeat {repeat + 1}/{repeats}: form (c) before groups "
                   f"{statistics.median(result.baseline_epoch):.3f}, as a group of one "
                   f"{statistics.median(result.single_epoch):.3f} s/epoch")
    saturating = base.replace(activation="sigmoid", optimizer="adam", learning_rate=1e-2, epochs=saturating_epochs,
                              log_model=False)
    for name, flush in (("flushed", True), ("not flushed", False)):
        run = saturating_run(saturating, flush)
        result.saturating[name], result.saturating_accuracy[name] = run.epoch_seconds, run.accuracy
        report(f"sigmoid + Adam 1e-2, subnormals {name}: first epoch {run.epoch_seconds[0]:.2f} s, last "
               f"{run.epoch_seconds[-1]:.2f} s, val_accuracy {run.accuracy[-1]:.4f}")
    return result


@dataclass
class StudyComparison:
    configurations: int
    total_configurations: int
    epochs: int
    workers: int
    seconds: dict[str, float] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)


def measure_study(data_dir: str, every: int, epochs: int | None, workers: int,
                  report: Callable[[str], None]) -> StudyComparison:
    from benchmark import STUDY, tracking_store

    from actopt.sweeps.executors import ProcessExecutor
    from actopt.sweeps.options import SweepOptions
    from actopt.sweeps.study import configurations, load_study
    from actopt.sweeps.sweep import run_sweep

    study = load_study(STUDY)
    everything = configurations(study, data_dir=data_dir, download=False, device="cpu")
    if epochs:
        everything = [config.replace(epochs=epochs) for config in everything]
    # The preset itself runs three seeds: the one-seed study is its configurations at the first seed.
    one_seed = [config for config in everything if config.seed == everything[0].seed]
    chosen = one_seed[::every]
    three_seeds = [config.replace(seed=seed) for config in chosen for seed in SEEDS]
    result = StudyComparison(len(chosen), len(one_seed), chosen[0].epochs, workers)
    for name, configs, group_size in (("1 seed, one configuration per program", chosen, 1),
                                      ("3 seeds, groups of up to 8", three_seeds, GROUP_SIZE)):
        with tempfile.TemporaryDirectory() as folder, tracking_store(None, Path(folder)):
            started = time.perf_counter()
            outcome = run_sweep(study, configs, ProcessExecutor(workers), SweepOptions(group_size=group_size))
            result.seconds[name] = time.perf_counter() - started
            result.runs[name] = len(configs)
            if outcome.exit_code:
                raise SystemExit(f"the benchmark sweep failed: {[row.status for row in outcome.rows]}")
        report(f"study, {name}: {result.seconds[name]:.0f} s")
    return result


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def groups_section(result: Groups) -> Iterator[str]:
    member_epochs = GROUP_SIZE * result.epochs
    sequential = statistics.median(result.sequential_seconds)
    grouped = statistics.median(result.group_seconds)
    speedup = sequential / grouped
    yield from [
        "## 6. Groups",
        "",
        f"Eight configurations of the default network ({result.epochs} epoch(s), seeds {', '.join(map(str, SEEDS))} "
        f"and learning rates {', '.join(f'{rate:g}' for rate in RATES)} in turn), everything logged to MLflow "
        f"(sqlite), {len(result.group_seconds)} alternating repetition(s), medians.",
        "",
        "| how | wall s | member-epochs per s |",
        "| --- | ---: | ---: |",
        f"| 8 one after another | {sequential:.1f} | {member_epochs / sequential:.2f} |",
        f"| one group of 8 | {grouped:.1f} | {member_epochs / grouped:.2f} |",
        "",
        "| ratio | value | target | |",
        "| --- | ---: | --- | --- |",
        f"| group of 8 vs one after another | {speedup:.2f}× | ≥ 1.8× | {verdict(speedup >= 1.8)} |",
    ]
    if result.baseline_epoch:
        before, single = statistics.median(result.baseline_epoch), statistics.median(result.single_epoch)
        yield (f"| group of one vs form (c) before groups ({single:.3f} vs {before:.3f} s/epoch) | "
               f"{single / before:.3f} | ≤ 1.05 | {verdict(single / before <= 1.05)} |")
    for name, times in result.saturating.items():
        ratio = times[-1] / times[0]
        target = "≤ 1.2" if name == "flushed" else "(the code before)"
        met = verdict(ratio <= 1.2) if name == "flushed" else ""
        yield f"| sigmoid + Adam 1e-2, last / first of {len(times)} epochs, subnormals {name} | {ratio:.2f} | " \
              f"{target} | {met} |"
    if len(result.saturating_accuracy) == 2:
        flushed, kept = result.saturating_accuracy["flushed"], result.saturating_accuracy["not flushed"]
        largest = max(abs(a - b) for a, b in zip(flushed, kept))
        yield ""
        yield (f"Subnormals flushed or not, the sigmoid + Adam 1e-2 run logs val_accuracy {flushed[-1]:.4f} vs "
               f"{kept[-1]:.4f} after {len(flushed)} epochs; the largest difference over its epochs is {largest:.4f} "
               f"(epoch seconds flushed: {', '.join(f'{t:.2f}' for t in result.saturating['flushed'])}; not flushed: "
               f"{', '.join(f'{t:.2f}' for t in result.saturating['not flushed'])}).")


def study_section(result: StudyComparison) -> Iterator[str]:
    which = f"an evenly spaced slice of {result.configurations} of its {result.total_configurations} configurations"
    one, three = result.seconds.values()
    ratio = three / one
    yield from [
        "## 7. Three seeds in groups against one seed alone",
        "",
        f"The fashion-activations study, {which}, {result.epochs} epoch(s) each, `--workers {result.workers}`; "
        "one measurement each.",
        "",
        "| how | runs | wall s |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {result.runs[name]} | {seconds:.1f} |" for name, seconds in result.seconds.items()),
        "",
        f"Target: three seeds in at most 2.2× the one-seed wall time: {ratio:.2f}×, {verdict(ratio <= 2.2)}.",
    ]


def render_sections(groups: Groups | None, study: StudyComparison | None, note: str) -> list[str]:
    parts = []
    if groups is not None:
        parts.append("\n".join(groups_section(groups)))
    if study is not None:
        parts.append("\n".join(study_section(study)))
    if parts and note:
        parts[0] = parts[0].replace("\n\n", f"\n\n{note}\n\n", 1)
    return parts
