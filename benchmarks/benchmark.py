"""actopt's speed, side by side in one run, written to benchmarks/RESULTS.md.

    python benchmarks/benchmark.py --data-dir ../shared/data                  # everything, ~20 min on 2 cores
    python benchmarks/benchmark.py --data-dir DIR --quick --output OUT.md     # a minute or two: still works?

1. Training throughput: seconds per epoch of the default configuration (784-256-128-10, ReLU,
   Adam, batch 128, Fashion-MNIST) as (a) the seed's plain loop (torchvision dataset with
   ToTensor/Normalize transforms behind a DataLoader), (b) actopt with gradient statistics,
   histograms and MLflow off, (c) actopt with everything on, logging to MLflow; and the arithmetic
   limit: forward + backward FLOPs per epoch over a matmul rate measured in the same run.
2. Sweep throughput: a fixed slice of the fashion-activations study (every third configuration,
   or all of it) by ``actopt sweep`` with 1 worker and with one per core, against the same
   configurations one by one in form (a).
3. Analysis scaling: 10, 64, 100 and 300 synthetic runs (61 per-epoch keys, 20 epochs, history.csv),
   each logged into a fresh store, loaded and reported on sqlite and through a local
   ``mlflow server``.
4. Logging overhead: seconds per epoch inside MLflow calls during form (c), on sqlite and through
   the server, and the end-of-run artifacts.
5. System metrics: written by benchmarks/system_metrics.py (kept here when this script runs).
6. and 7. Groups (benchmarks/groups.py): a group of 8 against the same 8 one after another, a group
   of one against the code before groups, a saturating run's epoch times, and the three-seed study
   in groups against the one-seed study.

A run rewrites the sections it measures (``--sections``) and keeps the others from the output file.

Timings are medians of ``--repeats`` repetitions (sweeps: one of each, they take minutes). Ratios,
not absolute times, are what carry from one machine to another. Nothing here writes into your own
tracking store: every store is a fresh one in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import analysis_scaling  # noqa: E402
import groups  # noqa: E402
import history_loading  # noqa: E402
import limits  # noqa: E402
import results_file  # noqa: E402
import seed_loop  # noqa: E402
import study_limit  # noqa: E402

from actopt.core import training  # noqa: E402
from actopt.core.config import TrainConfig  # noqa: E402
from actopt.core.inputs import splits  # noqa: E402
from actopt.sweeps.study import configurations, load_study  # noqa: E402

# The arithmetic's counting lives in limits.py; these names are what benchmark.py and its tests use.
epoch_flops, matmul_rate = limits.epoch_flops, limits.matmul_rate

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
STUDY = "fashion-activations"


# --- measuring ----------------------------------------------------------------------------------------------


class TimingLogger:
    """Stands between training and a run logger: stamps each epoch's log and times every call that
    reaches the tracking backend, by method. Without an inner logger it drops everything (form (b))."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.stamps: list[float] = []
        self.loop_seconds: list[float] = []  # per epoch, inside log_metrics(step=epoch)
        self.end_seconds: dict[str, float] = defaultdict(float)  # after the last epoch, by method

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        seconds = self.forward("log_metrics", metrics, step)
        if step:  # the step-0 probe comes before the first epoch; the final summary has no step
            self.stamps.append(time.perf_counter())
            self.loop_seconds.append(seconds)
        elif step is None:
            self.end_seconds["log_metrics"] += seconds

    def forward(self, name: str, *arguments: Any) -> float:
        if self.inner is None:
            return 0.0
        started = time.perf_counter()
        getattr(self.inner, name)(*arguments)
        return time.perf_counter() - started

    def __getattr__(self, name: str) -> Callable[..., None]:
        def timed(*arguments: Any) -> None:
            self.end_seconds[name] += self.forward(name, *arguments)

        return timed

    def epoch_times(self, started: float) -> list[float]:
        stamps = [started, *self.stamps]
        return [later - earlier for earlier, later in zip(stamps, stamps[1:])]


@contextlib.contextmanager
def tracking_store(uri: str | None, folder: Path) -> Iterator[str]:
    """MLFLOW_TRACKING_URI set to ``uri`` (or a fresh sqlite store in ``folder``), and the working
    directory in ``folder`` so that artifacts land there, for the duration."""
    uri = uri or f"sqlite:///{folder}/mlflow.db"
    previous_uri, previous_directory = os.environ.get("MLFLOW_TRACKING_URI"), os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(folder)
    try:
        yield uri
    finally:
        os.chdir(previous_directory)
        if previous_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_uri


def actopt_epochs(config: TrainConfig, data: Any, store: str | None) -> TimingLogger:
    """One training of ``config``: bare when ``store`` is None, else fully instrumented and logged there."""
    if store is None:
        logger = TimingLogger()
        started = time.perf_counter()
        training.train(config.replace(gradient_statistics=False, log_model=False), data, logger)
        logger.started = started  # type: ignore[attr-defined]
        return logger
    from actopt.tracking import runlog

    with tempfile.TemporaryDirectory() as folder, tracking_store(None if store == "sqlite" else store, Path(folder)):
        with runlog.training_run(config, data, torch.device("cpu")) as run_logger:
            logger = TimingLogger(run_logger)
            logger.started = time.perf_counter()  # type: ignore[attr-defined]
            training.train(config, data, logger)
    return logger


def seed_style_epochs(config: TrainConfig) -> list[float]:
    train_set, validation_set, _ = seed_loop.plain_splits(config)
    model, optimizer, train_loader, validation_loader = seed_loop.plain_setup(config, train_set, validation_set)
    times = []
    for _ in range(config.epochs):
        started = time.perf_counter()
        seed_loop.plain_epoch(model, optimizer, train_loader, validation_loader)
        times.append(time.perf_counter() - started)
    return times


# Where an epoch's time goes, by the operators' names (self time, so nothing counts twice).
CATEGORIES = {
    # A group of one trains through the stacked program: its layers are batched matmuls (bmm, baddbmm).
    "matrix multiplications (mm, addmm, bmm, baddbmm)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "optimizer step and zero_grad": ("Optimizer.step", "Optimizer.zero_grad", "aten::_fused_adam", "aten::_fused_sgd"),
    "gathering each batch by index": ("aten::index",),  # aten::index and aten::index_select
}


def epoch_profile(config: TrainConfig, data: Any) -> dict[str, float]:
    """Seconds of one instrumented epoch (no MLflow) by category, under torch's profiler; what the
    operators do not account for is Python and dispatch overhead between them."""
    config = config.replace(epochs=1, log_model=False)
    training.train(config, data, TimingLogger())  # warm
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        started = time.perf_counter()
        training.train(config, data, TimingLogger())
        wall = time.perf_counter() - started
    seconds: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        category = next((name for name, prefixes in CATEGORIES.items() if event.key.startswith(prefixes)),
                        "other operators (activations, loss, statistics, probes, copies)")
        seconds[category] += event.self_cpu_time_total / 1e6
    seconds["between operators (Python, dispatch)"] = max(0.0, wall - sum(seconds.values()))
    return {name: value / wall for name, value in seconds.items()}


@dataclass
class Training:
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # form → epoch times
    loop_logging: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # store → per epoch
    end_logging: dict[str, dict[str,
                                list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    limit: float = 0.0
    profile: dict[str, float] = field(default_factory=dict)  # share of an epoch by category
    epochs: int = 0
    repeats: int = 0


def measure_training(config: TrainConfig, repeats: int, server: str | None, report: Callable[[str], None]) -> Training:
    data = splits(config)
    result = Training(epochs=config.epochs, repeats=repeats)
    stores = ["sqlite"] + ([server] if server else [])
    for repeat in range(repeats):
        result.seconds["a"] += seed_style_epochs(config)
        bare = actopt_epochs(config, data, None)
        result.seconds["b"] += bare.epoch_times(bare.started)  # type: ignore[attr-defined]
        for store in stores:
            logged = actopt_epochs(config, data, store)
            kind = "sqlite" if store == "sqlite" else "server"
            if kind == "sqlite":
                result.seconds["c"] += logged.epoch_times(logged.started)  # type: ignore[attr-defined]
            result.loop_logging[kind] += logged.loop_seconds
            for name, seconds in logged.end_seconds.items():
                result.end_logging[kind][name].append(seconds)
        report(f"training, repeat {repeat + 1}/{repeats}: (a) {statistics.median(result.seconds['a']):.2f} "
               f"(b) {statistics.median(result.seconds['b']):.2f} (c) {statistics.median(result.seconds['c']):.2f} "
               "s/epoch")
    result.limit = epoch_flops(config, len(data.train), len(data.validation)) / matmul_rate()
    result.profile = epoch_profile(config, data)
    return result


@dataclass
class Sweep:
    configurations: int
    total_configurations: int
    epochs: int
    seconds: dict[str, float] = field(default_factory=dict)  # "1 worker", "N workers", "seed one by one"
    fixed_cost: dict[str, float] = field(default_factory=dict)  # median seconds a run spends outside its epochs


def run_fixed_costs(uri: str) -> list[float]:
    """Each child run's wall time minus the sum of its epochs' times: set-up, test pass and artifacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    costs = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            if run.data.tags.get("actopt.kind") == "sweep":  # the parent
                continue
            epochs = sum(point.value for point in client.get_metric_history(run.info.run_id, "epoch_time"))
            costs.append((run.info.end_time - run.info.start_time) / 1000 - epochs)
    return costs


def measure_sweep(data_dir: str, every: int, epochs: int | None, workers: int,
                  report: Callable[[str], None]) -> Sweep:
    from actopt.sweeps.executors import ProcessExecutor
    from actopt.sweeps.sweep import run_sweep

    study = load_study(STUDY)
    everything = configurations(study, data_dir=data_dir, download=False, device="cpu")
    if epochs:
        everything = [config.replace(epochs=epochs) for config in everything]
    chosen = everything[::every]
    result = Sweep(len(chosen), len(everything), chosen[0].epochs)
    for count in sorted({1, workers}):
        name = f"{count} worker{'s' if count > 1 else ''}"
        with tempfile.TemporaryDirectory() as folder, tracking_store(None, Path(folder)) as uri:
            started = time.perf_counter()
            outcome = run_sweep(study, chosen, ProcessExecutor(count))
            result.seconds[name] = time.perf_counter() - started
            if outcome.exit_code:
                raise SystemExit(f"the benchmark sweep failed: {[row.status for row in outcome.rows]}")
            result.fixed_cost[name] = statistics.median(run_fixed_costs(uri))
        report(f"sweep, {name}: {result.seconds[name]:.0f} s")
    started = time.perf_counter()
    seed_loop.time_configurations(chosen, report=lambda line: None)
    result.seconds["seed one by one"] = time.perf_counter() - started
    report(f"sweep, seed-style one by one: {result.seconds['seed one by one']:.0f} s")
    return result


@contextlib.contextmanager
def local_server(folder: Path) -> Iterator[str]:
    """A fresh ``mlflow server`` on loopback, sqlite behind it, artifacts proxied into ``folder``."""
    server, uri = history_loading.start_server(folder)
    try:
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- writing --------------------------------------------------------------------------------------------------


def machine() -> str:
    model = next((line.split(":",
                             1)[1].strip() for line in read_lines("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or platform.machine())
    memory = next((int(line.split()[1]) / 2**20 for line in read_lines("/proc/meminfo")
                   if line.startswith("MemTotal")), 0)
    import mlflow

    return (f"{model}; {len(os.sched_getaffinity(0))} cores available to this process, {memory:.0f} GiB memory; "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), mlflow {mlflow.__version__}")


def read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def training_section(result: Training) -> list[str]:
    median = {form: statistics.median(times) for form, times in result.seconds.items()}
    a, b, c = median["a"], median["b"], median["c"]
    return [
        "## 1. Training throughput",
        "",
        f"Default configuration, {result.epochs} epoch(s) × {result.repeats} repetition(s), median seconds per epoch "
        "(training plus the validation pass).",
        "",
        "| form | s/epoch |",
        "| --- | ---: |",
        f"| (a) seed-style loop: per-image transforms, DataLoader | {a:.3f} |",
        f"| (b) actopt, no gradient statistics, no histograms, no MLflow | {b:.3f} |",
        f"| (c) actopt, everything on, logging to MLflow (sqlite) | {c:.3f} |",
        (f"| arithmetic limit: matmul FLOPs per epoch (training and validation) / measured matmul rate "
         f"| {result.limit:.3f} |"),
        "",
        "| ratio | value | target | |",
        "| --- | ---: | --- | --- |",
        f"| (a)/(c): actopt instrumented vs seed loop | {a / c:.2f}× | ≥ 5× | {verdict(a / c >= 5)} |",
        f"| (c)/(b): cost of the instrumentation | {c / b:.3f} | ≤ 1.10 | {verdict(c / b <= 1.10)} |",
        f"| (c)/limit | {c / result.limit:.2f}× | ≤ 2× | {verdict(c / result.limit <= 2)} |",
        "",
        "Where an instrumented epoch's time goes (one epoch of (c) without MLflow under `torch.profiler`, which "
        "slows it; shares, not seconds):",
        "",
        "| category | share |",
        "| --- | ---: |",
        *(f"| {name} | {share:.0%} |" for name, share in sorted(result.profile.items(), key=lambda item: -item[1])),
    ]


def sweep_section(result: Sweep, workers: int) -> list[str]:
    seed = result.seconds["seed one by one"]
    which = ("the whole study" if result.configurations == result.total_configurations else
             f"a fixed slice of {result.configurations} of its {result.total_configurations} configurations, evenly "
             "spaced")
    lines = [
        "## 2. Sweep throughput",
        "",
        f"The {STUDY} study, {which}, {result.epochs} epoch(s) each; one measurement each. "
        "'Outside epochs' is the median time a child run spends beyond its epochs (start, test pass on the best "
        "weights, history, histogram images, model).",
        "",
        "| how | wall s | seed one by one / this | outside epochs, s per run |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, seconds in result.seconds.items():
        cost = result.fixed_cost.get(name)
        lines.append(f"| {'seed-style loop, one by one' if name == 'seed one by one' else f'actopt sweep, {name}'} "
                     f"| {seconds:.1f} | {seed / seconds:.2f}× | {'-' if cost is None else f'{cost:.2f}'} |")
    best = min(seconds for name, seconds in result.seconds.items() if name != "seed one by one")
    lines += ["", f"Target: the study in at most 1/8 of the seed-style time: {seed / best:.2f}× with the faster sweep, "
              f"{verdict(seed / best >= 8)} (with {workers} workers on {workers} cores)."]
    return lines


def logging_section(result: Training) -> list[str]:
    lines = [
        "## 4. Logging overhead",
        "",
        "Seconds per epoch inside MLflow calls during form (c) (each epoch's metrics in one `log_metrics`), "
        "and what the end of a run logs once.",
        "",
        "| store | per epoch, in the loop | share of an epoch | end of run: calls |",
        "| --- | ---: | ---: | --- |",
    ]
    epoch = statistics.median(result.seconds["c"])
    for store, seconds in result.loop_logging.items():
        ends = ", ".join(f"{name} {statistics.median(values):.2f} s" for name,
                         values in sorted(result.end_logging[store].items()))
        lines.append(f"| {store} | {statistics.median(seconds):.4f} s | {statistics.median(seconds) / epoch:.1%} | "
                     f"{ends} |")
    return lines


def render(arguments: argparse.Namespace, training_result: Training | None, sweep_result: Sweep | None,
           analysis_points: list[analysis_scaling.AnalysisPoint] | None, workers: int) -> str:
    command = "python benchmarks/benchmark.py " + " ".join(sys.argv[1:])
    sections = [
        "# actopt benchmark results",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()}"
        + (" in quick mode: tiny sizes, to show the script works; these numbers mean little."
           if arguments.quick else "."),
        "",
        f"Machine: {machine()}.",
    ]
    for lines in (training_section(training_result) if training_result else None,
                  sweep_section(sweep_result, workers) if sweep_result else None,
                  analysis_scaling.analysis_section(analysis_points) if analysis_points else None,
                  logging_section(training_result) if training_result else None):
        if lines:
            sections += ["", *lines]
    return "\n".join(sections) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("ACTOPT_DATA_DIR", "./data"),
                        help="holds FashionMNIST/raw (never downloaded here)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures little")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training measurement")
    parser.add_argument("--whole-study", action="store_true", help="sweep all configurations, not every third")
    parser.add_argument("--sections", default="training,sweep,analysis,groups,study,limit",
                        help="comma-separated: training (includes logging overhead), sweep, analysis, groups, study, "
                             "limit")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="a checkout of the code before groups (git worktree add DIR 90ba340): section 6 times "
                             "its form (c) against a group of one")
    parser.add_argument("--study-epochs", type=int, default=None,
                        help="epochs per configuration in sections 7 and 8 [default: the study's]")
    parser.add_argument("--note", default="", help="a sentence written under section 6's title (machine load)")
    parser.add_argument("--no-server", action="store_true", help="skip the measurements through a local mlflow server")
    arguments = parser.parse_args()
    sections = set(arguments.sections.split(","))
    # Absolute: the stores and runs below work inside temporary folders.
    arguments.data_dir = str(Path(arguments.data_dir).resolve())
    workers = len(os.sched_getaffinity(0))
    repeats, epochs = (1, 1) if arguments.quick else (arguments.repeats, arguments.epochs)
    sizes = [3, 6] if arguments.quick else [10, 64, 100, 300]

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    config = TrainConfig.from_mapping({"data_dir": arguments.data_dir, "download": False, "epochs": epochs,
                                       "device": "cpu", "log_model": True, "experiment_name": "benchmark"})
    training_result = sweep_result = analysis_points = None
    if "training" in sections:
        with tempfile.TemporaryDirectory() as folder:
            with (contextlib.nullcontext(None) if arguments.no_server else local_server(Path(folder))) as server:
                training_result = measure_training(config, repeats, server, report)
    if "sweep" in sections:
        # The preset is 21 configurations × 3 seeds: every 9th is an evenly spaced slice of 7 (3 in quick mode).
        every = 1 if arguments.whole_study else 21 if arguments.quick else 9
        sweep_result = measure_sweep(arguments.data_dir, every, 1 if arguments.quick else None, workers, report)
    if "analysis" in sections:
        analysis_points = analysis_scaling.measure_analysis(sizes, repeats, not arguments.no_server, report)
    group_result = study_result = None
    if "groups" in sections:
        group_result = groups.measure_groups(config.replace(epochs=2 if not arguments.quick else 1), repeats,
                                             arguments.baseline_tree, 2 if arguments.quick else 10, report)
    if "study" in sections:
        every = 7 if arguments.quick else 3
        study_result = groups.measure_study(arguments.data_dir, every, 1 if arguments.quick else arguments.study_epochs,
                                            workers, report)
    limit_result = None
    if "limit" in sections:
        every = 7 if arguments.quick else 3
        limit_result = study_limit.measure_study_limit(arguments.data_dir, every, 1 if arguments.quick else
                                                       arguments.study_epochs, workers, report)
    text = render(arguments, training_result, sweep_result, analysis_points, workers)
    added = groups.render_sections(group_result, study_result, arguments.note)
    if limit_result is not None:
        added.append("\n".join(study_limit.study_limit_section(limit_result)))
    text = text.rstrip("\n") + "".join(f"\n\n{section}" for section in added) + "\n"
    if arguments.output.exists():
        text = results_file.merge(arguments.output.read_text(), text)
    arguments.output.write_text(text)
    report(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
