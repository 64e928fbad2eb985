"""The whole study against its arithmetic limit, and how to split the cores (benchmark.py, section 8).

An evenly spaced slice of the fashion-activations study (every configuration at all three seeds)
is swept with each workers × threads split the cores allow (1 × 2 and 2 × 1 on two cores), in
groups, and once more one configuration per program with the faster split. Each split's limit is
the slice's matmul FLOPs (every epoch, evaluation pass, probe and test pass: ``limits.study_flops``)
over ``workers`` × the model's matmul rate with ``threads`` threads, measured in the same run. What
the sweep spends beyond the limit is split into the time each run spends outside its epochs (start,
test pass, artifacts) and the rest of the epochs (Python, dispatch, elementwise operators).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import limits

from actopt.core.inputs import splits
from actopt.sweeps.options import SweepOptions

GROUP_SIZE = 8


@dataclass
class Split:
    workers: int
    threads: int
    group_size: int
    seconds: float = 0.0
    limit: float = 0.0  # seconds the slice's arithmetic needs with this split
    outside_epochs: float = 0.0  # median seconds per run beyond its epochs

    @property
    def name(self) -> str:
        return f"{self.workers} × {self.threads}"


@dataclass
class StudyLimit:
    runs: int
    total_runs: int
    epochs: int
    flops: int
    rates: dict[int, float] = field(default_factory=dict)  # threads → FLOP/s on the model's shapes
    splits: list[Split] = field(default_factory=list)


def core_splits(cores: int) -> list[tuple[int, int]]:
    """Every workers × threads that uses all ``cores`` evenly: (1, 2) and (2, 1) on two."""
    return [(workers, cores // workers) for workers in range(1, cores + 1) if cores % workers == 0]


def measure_study_limit(data_dir: str, every: int, epochs: int | None, cores: int,
                        report: Callable[[str], None]) -> StudyLimit:
    from benchmark import STUDY, run_fixed_costs, tracking_store

    from actopt.sweeps.executors import ProcessExecutor
    from actopt.sweeps.study import configurations, load_study
    from actopt.sweeps.sweep import run_sweep

    study = load_study(STUDY)
    everything = configurations(study, data_dir=data_dir, download=False, device="cpu")
    if epochs:
        everything = [config.replace(epochs=epochs) for config in everything]
    first_seed = [config for config in everything if config.seed == everything[0].seed]
    chosen_keys = {config.run_name for config in first_seed[::every]}
    chosen = [config for config in everything if config.run_name in chosen_keys]
    lead = chosen[0]
    data = splits(lead)
    sizes = (len(data.train), len(data.validation), len(data.test))
    result = StudyLimit(len(chosen), len(everything), lead.epochs, limits.study_flops(chosen, sizes))
    for _, threads in core_splits(cores):
        result.rates[threads] = limits.model_matmul_rate(lead, threads)
        report(f"study limit: {result.rates[threads] / 1e9:.1f} GFLOP/s with {threads} thread(s)")
    plans = [Split(workers, threads, GROUP_SIZE) for workers, threads in core_splits(cores)]
    for plan in plans:
        sweep_once(study, chosen, plan, result, ProcessExecutor, run_sweep, tracking_store, run_fixed_costs)
        report(f"study limit: {plan.name}, groups of up to {plan.group_size}: {plan.seconds:.0f} s "
               f"(limit {plan.limit:.0f} s)")
    fastest = min(plans, key=lambda plan: plan.seconds)
    alone = Split(fastest.workers, fastest.threads, 1)
    sweep_once(study, chosen, alone, result, ProcessExecutor, run_sweep, tracking_store, run_fixed_costs)
    report(f"study limit: {alone.name}, one configuration per program: {alone.seconds:.0f} s")
    result.splits = [*plans, alone]
    return result


def sweep_once(study, chosen, plan: Split, result: StudyLimit, executor, run_sweep, tracking_store,
               run_fixed_costs) -> None:
    with tempfile.TemporaryDirectory() as folder, tracking_store(None, Path(folder)) as uri:
        started = time.perf_counter()
        options = SweepOptions(group_size=plan.group_size)
        outcome = run_sweep(study, chosen, executor(plan.workers, plan.threads), options)
        plan.seconds = time.perf_counter() - started
        if outcome.exit_code:
            raise SystemExit(f"the benchmark sweep failed: {[row.status for row in outcome.rows]}")
        plan.outside_epochs = statistics.median(run_fixed_costs(uri))
    plan.limit = result.flops / (plan.workers * result.rates[plan.threads])


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def split_costs(plan: Split, runs: int) -> str:
    """The 'outside epochs' and 'rest' cells: only a run trained alone has a wall time of its own."""
    if plan.group_size > 1:
        return "— | —"
    outside = plan.outside_epochs * runs / plan.workers
    return f"{plan.outside_epochs:.2f} | {max(0.0, plan.seconds - plan.limit - outside):.1f}"


def study_limit_section(result: StudyLimit) -> Iterator[str]:
    grouped = [plan for plan in result.splits if plan.group_size > 1]
    fastest = min(grouped, key=lambda plan: plan.seconds)
    alone = next(plan for plan in result.splits if plan.group_size == 1)
    which = ("the whole study" if result.runs == result.total_runs else
             f"an evenly spaced slice of {result.runs} of its {result.total_runs} runs")
    yield from [
        "## 8. The study against its arithmetic limit; workers × threads",
        "",
        f"The fashion-activations study, {which} (each chosen configuration at every seed), {result.epochs} "
        f"epoch(s) each; one sweep per row. Its matmul FLOPs (every epoch, evaluation pass, probe and test pass): "
        f"{result.flops / 1e12:.2f} TFLOP. The model's matmul rate, measured in this run on its own shapes: "
        + ", ".join(f"{rate / 1e9:.1f} GFLOP/s with {threads} thread(s)" for threads, rate in result.rates.items())
        + ". A split's limit is the FLOPs over workers × the rate at its threads.",
        "",
        "| workers × threads | groups of up to | wall s | limit s | wall / limit | outside epochs, s per run | "
        "rest: epochs beyond the arithmetic, s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for plan in result.splits:
        yield (f"| {plan.name} | {plan.group_size} | {plan.seconds:.1f} | {plan.limit:.1f} | "
               f"{plan.seconds / plan.limit:.2f}× | {split_costs(plan, result.runs)} |")
    ratio, against_alone = fastest.seconds / fastest.limit, fastest.seconds / alone.seconds
    yield from [
        "",
        f"Fastest split in groups: {fastest.name}. 'Rest' is the wall time less the limit and the runs' time outside "
        "their epochs (shared among the workers): per-step Python and dispatch, elementwise operators, statistics. "
        "A grouped run's wall time includes waiting for the rest of its group, so neither column is measured for "
        "groups (—).",
        "",
        "| target | value | |",
        "| --- | ---: | --- |",
        f"| wall time ≤ 2× the arithmetic limit ({fastest.name}) | {ratio:.2f}× | {verdict(ratio <= 2)} |",
        f"| wall time ≤ half the one-configuration-per-program wall time | {against_alone:.2f} | "
        f"{verdict(against_alone <= 0.5)} |",
    ]
