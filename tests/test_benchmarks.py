"""The benchmark script still runs end to end (quick mode, tiny data); its timings are never asserted.
Its FLOP count, the arithmetic limit's numerator, is checked against torch's own FlopCounterMode."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from recording import RecordingLogger
from scipy import stats
from sweeping import write_study
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from actopt.core import evaluation, training
from actopt.core.config import TrainConfig
from actopt.core.data import DatasetSplits, Split
from actopt.core.models import CLASSES, INPUT_SIZE, build_mlp
from actopt.core.optimizers import build_optimizer
from actopt.sweeps.executors import InlineExecutor
from actopt.sweeps.study import configurations, load_study
from actopt.sweeps.sweep import ensure_datasets
from actopt.tracking import records

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(script: str = "benchmark"):
    """benchmarks/<script>.py as a module (the folder is not a package), loaded once."""
    name = f"actopt_{script}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


# The default 784-256-128-10, one hidden layer, and a deeper net of the depth study's shape.
SHAPES = [{}, {"hidden_sizes": "64"}, {"depth": 3, "width": 32}]


def small_config(**changes: object) -> TrainConfig:
    return TrainConfig.from_mapping({"device": "cpu", "download": False, "batch_size": 8, **changes})


def random_split(examples: int) -> Split:
    return Split(torch.randn(examples, INPUT_SIZE), torch.randint(0, CLASSES, (examples,)))


@pytest.mark.parametrize("changes", SHAPES)
def test_epoch_flops_matches_flop_counter_on_a_training_step_and_a_validation_pass(changes):
    benchmark = load_benchmark()
    config = small_config(**changes)
    torch.manual_seed(0)
    model = build_mlp(config.layer_sizes, config.activation, config.dropout, config.init)
    optimizer = build_optimizer(config.optimizer, model.parameters(), config.learning_rate, config.momentum,
                                config.weight_decay)
    batch = random_split(config.batch_size)
    with FlopCounterMode(display=False) as counter:  # one step as actopt.training.train takes it
        loss = nn.functional.cross_entropy(model(batch.inputs), batch.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert counter.get_total_flops() > 0
    assert benchmark.epoch_flops(config, config.batch_size, 0) == counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        evaluation.evaluate(model, random_split(24))
    assert benchmark.epoch_flops(config, 0, 24) == counter.get_total_flops()


@pytest.mark.parametrize("changes", SHAPES)
def test_epoch_flops_matches_flop_counter_on_the_timed_epoch_of_form_b(changes):
    """The whole bare epoch the benchmark times (a partial last batch too), less the test pass that
    follows the last epoch's stamp."""
    benchmark = load_benchmark()
    config = small_config(epochs=1, **changes)
    data = DatasetSplits("synthetic", "memory", "none", random_split(20), random_split(12), random_split(6))
    with FlopCounterMode(display=False) as counter:
        logger = benchmark.actopt_epochs(config, data, None)
    assert len(logger.stamps) == 1
    test_pass = benchmark.epoch_flops(config, 0, len(data.test))
    assert benchmark.epoch_flops(config, len(data.train), len(data.validation)) == counter.get_total_flops() - test_pass


@pytest.mark.parametrize("statistics", [True, False])
def test_run_flops_matches_flop_counter_on_a_whole_run_probes_and_test_pass_included(statistics):
    limits = load_benchmark().limits
    config = small_config(epochs=2, hidden_sizes="16", gradient_statistics=statistics, log_model=False)
    data = DatasetSplits("synthetic", "memory", "none", random_split(20), random_split(12), random_split(6))
    with FlopCounterMode(display=False) as counter:
        training.train(config, data, RecordingLogger())
    probe = limits.probe_flops(config, 12)
    assert probe > 0
    assert limits.run_flops(config, 20, 12, 6, probe) == counter.get_total_flops()
    assert limits.study_flops([config, config], (20, 12, 6)) == 2 * counter.get_total_flops()


def test_the_model_matmul_rate_is_measured_and_splits_use_every_core():
    benchmark = load_benchmark()
    assert benchmark.limits.model_matmul_rate(small_config(hidden_sizes="16"), 1, seconds=0.05) > 0
    assert benchmark.study_limit.core_splits(2) == [(1, 2), (2, 1)]
    assert benchmark.study_limit.core_splits(4) == [(1, 4), (2, 2), (4, 1)]


def test_default_configuration_counts_no_input_gradient_for_the_first_layer():
    benchmark = load_benchmark()
    config = small_config()
    weights = 784 * 256 + 256 * 128 + 128 * 10
    assert benchmark.epoch_flops(config, 1, 0) == 3 * 2 * weights - 2 * 784 * 256
    assert benchmark.epoch_flops(config, 0, 1) == 2 * weights


def training_result(benchmark, seconds_c: float, limit: float):
    result = benchmark.Training(epochs=1, repeats=1, limit=limit, profile={"other": 1.0})
    result.seconds.update({"a": [10.0], "b": [seconds_c / 1.05], "c": [seconds_c]})
    return result


def test_results_print_the_limit_and_a_verdict_computed_from_the_ratio():
    benchmark = load_benchmark()
    met = "\n".join(benchmark.training_section(training_result(benchmark, 0.5, 0.3)))
    assert re.search(r"\| arithmetic limit[^|]*\| 0\.300 \|", met)
    assert "| (c)/limit | 1.67× | ≤ 2× | met |" in met
    missed = "\n".join(benchmark.training_section(training_result(benchmark, 0.7, 0.3)))
    assert "| (c)/limit | 2.33× | ≤ 2× | **missed** |" in missed


@pytest.mark.slow
def test_quick_mode_writes_every_section_and_leaves_the_users_store_alone(tmp_path, data_dir, tracking_store):
    output = tmp_path / "RESULTS.md"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "benchmark.py"), "--quick", "--no-server", "--data-dir",
         str(data_dir), "--output", str(output)],
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_store}, capture_output=True, text=True,
        timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = output.read_text()
    assert "quick mode" in text and "Machine:" in text
    for heading in ("## 1. Training throughput", "## 2. Sweep throughput", "## 3. Analysis scaling",
                    "## 4. Logging overhead", "## 6. Groups", "## 7. Three seeds in groups"):
        assert heading in text
    for row in ("(a) seed-style loop", "(b) actopt, no gradient statistics", "(c) actopt, everything on",
                "arithmetic limit", "actopt sweep, 1 worker", "seed-style loop, one by one"):
        assert re.search(rf"\| {re.escape(row)}[^|]*\| \d+\.\d+ \|", text), row
    assert re.search(r"\| sqlite \| 6 \| \d+\.\d\d \| -?\d+\.\d\d \| \d+\.\d\d \|", text)
    client = MlflowClient(tracking_store)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    assert not experiments or not client.search_runs(experiments)


def test_group_sections_give_verdicts_from_the_ratios_and_a_rerun_keeps_unmeasured_sections():
    groups = load_benchmark().groups
    result = groups.Groups(epochs=2, sequential_seconds=[30.0], group_seconds=[20.0], baseline_epoch=[1.0],
                           single_epoch=[1.06], saturating={"flushed": [1.0, 1.1], "not flushed": [1.0, 3.0]},
                           saturating_accuracy={"flushed": [0.5, 0.8], "not flushed": [0.5, 0.8001]})
    lines = "\n".join(groups.groups_section(result))
    # Issue 25's target is 1.8×: 1.50× misses it, and 30 s against 15 s meets it.
    assert re.search(r"group of 8 vs one after another \| 1\.50× \| ≥ 1\.8× \| \*\*missed\*\*", lines)
    faster = groups.Groups(epochs=2, sequential_seconds=[30.0], group_seconds=[15.0])
    faster_lines = "\n".join(groups.groups_section(faster))
    assert re.search(r"group of 8 vs one after another \| 2\.00× \| ≥ 1\.8× \| met", faster_lines)
    assert re.search(r"group of one vs form \(c\).*\| 1\.060 \| ≤ 1\.05 \| \*\*missed\*\*", lines)
    assert re.search(r"subnormals flushed \| 1\.10 \| ≤ 1\.2 \| met", lines)
    assert "largest difference over its epochs is 0.0001" in lines
    study = groups.StudyComparison(7, 21, 10, 2, seconds={"one": 100.0, "three": 230.0}, runs={"one": 7, "three": 21})
    assert "2.30×, **missed**" in "\n".join(groups.study_section(study))
    results_file = load_benchmark().results_file
    existing = ("# results\n\nold header\n\n## 1. Training\n\nold\n\n## 5. System metrics\n\nkept\n\n"
                "## 6. Groups\n\nstale\n")
    merged = results_file.merge(existing, "# results\n\nnew header\n\n## 6. Groups\n\nnew\n\n## 1. Training\n\nfresh\n")
    assert merged == ("# results\n\nnew header\n\nSection 5 was not measured in this run and kept from the previous "
                      "file, with its own date and conditions.\n\n## 1. Training\n\nfresh\n\n## 5. System metrics"
                      "\n\nkept\n\n## 6. Groups\n\nnew\n")


def test_the_study_limit_section_gives_verdicts_from_its_ratios():
    study_limit = load_benchmark().study_limit
    result = study_limit.StudyLimit(runs=9, total_runs=63, epochs=1, flops=int(4e12), rates={2: 50e9, 1: 40e9})
    result.splits = [study_limit.Split(1, 2, 8, seconds=150.0, limit=80.0, outside_epochs=1.0),
                     study_limit.Split(2, 1, 8, seconds=120.0, limit=50.0, outside_epochs=2.0),
                     study_limit.Split(2, 1, 1, seconds=250.0, limit=50.0, outside_epochs=2.0)]
    text = "\n".join(study_limit.study_limit_section(result))
    assert "an evenly spaced slice of 9 of its 63 runs" in text and "4.00 TFLOP" in text
    # A grouped run waits for its group, so only the runs trained alone split their time.
    assert "| 2 × 1 | 8 | 120.0 | 50.0 | 2.40× | — | — |" in text
    assert "| 2 × 1 | 1 | 250.0 | 50.0 | 5.00× | 2.00 | 191.0 |" in text  # 250 - 50 - 2 s × 9 runs / 2 workers
    assert "Fastest split in groups: 2 × 1." in text
    assert "| wall time ≤ 2× the arithmetic limit (2 × 1) | 2.40× | **missed** |" in text
    assert "| wall time ≤ half the one-configuration-per-program wall time | 0.48 | met |" in text


def test_the_adaptive_cost_section_gives_what_the_store_holds_and_no_fixed_decision_without_its_seeds(
        tmp_path, data_dir):
    from actopt.analysis.adaptive import Budget, sweep_until_decided

    # Two activations at two learning rates, seeds 0 and 1, up to 4: look 0 cannot decide at 2 seeds, so seeds 2 and
    # 3 go to each activation's chosen rate and look 1, at the cap, stops.
    grid = {"activation": ["relu", "tanh"], "optimizer": {"sgd": {"learning_rate": [0.05, 0.5]}}}
    study = load_study(str(write_study(tmp_path, grid, seeds=(0, 1), epochs=1, max_batches=2)))
    configs = configurations(study, data_dir=str(data_dir))
    ensure_datasets(configs)
    parent = sweep_until_decided(study, configs, InlineExecutor(), Budget(4)).sweep.parent_run_id
    client = MlflowClient()
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.`{records.PARENT_RUN_TAG}` = '{parent}'", max_results=1000)
    finished = [run for run in children if run.info.status == "FINISHED"]
    before = (client.get_run(parent).data.tags, len(children))
    seeds: dict[tuple[str, str], dict[int, float]] = {}
    for run in finished:
        key = (run.data.params["activation"], run.data.params["learning_rate"])
        seeds.setdefault(key, {})[int(run.data.params["seed"])] = run.data.metrics["test_accuracy"]
    chosen = {activation: values for (activation, _), values in seeds.items() if len(values) == 4}
    info = client.get_run(parent).info
    wall = (info.end_time - info.start_time) / 1000

    output = tmp_path / "RESULTS.md"
    output.write_text("# results\n\nheader\n\n## 1. Training\n\nkept\n\n## 9. Adding seeds\n\nstale\n")
    script = load_benchmark("adaptive_cost")
    script.main(["--experiment", "tiny", "--output", str(output)])
    text = output.read_text()
    assert text.startswith("# results\n\nheader\n\n## 1. Training\n\nkept\n\n## 9. Adding seeds until decided "
                           "against a fixed ten-seed sweep\n") and "stale" not in text
    assert f"2 looks, {len(finished)} finished child runs, {wall:.1f} s wall" in text and len(finished) == 12
    assert f"{wall / 12:.2f} s per run" in text
    assert "Configurations by their seeds at the end: 2 with 2 seeds, 2 with 4 seeds" in text
    assert "| activation tanh vs relu | test_accuracy |" in text and " | 4, 4 | " in text
    assert f"4 configurations × 10 seeds = 40 runs; wall ≈ {40 * wall / 12:.1f} s" in text
    assert "not a measurement" in text
    assert "| activation tanh vs relu | test_accuracy | not available from this sweep" in text
    assert (client.get_run(parent).data.tags, len(client.search_runs(
        [info.experiment_id], f"tags.`{records.PARENT_RUN_TAG}` = '{parent}'"))) == before  # read only

    # At four seeds the chosen rates have them all: the report's paired t, Holm over one comparison, is scipy's.
    script.main(["--experiment", "tiny", "--output", str(output), "--fixed-seeds", "4"])
    text = output.read_text()
    first, second = ([chosen[name][seed] for seed in range(4)] for name in ("tanh", "relu"))
    p_value = stats.ttest_rel(first, second).pvalue
    difference = 100 * (sum(first) - sum(second)) / 4
    assert "fixed 4-seed sweep" in text and "on seeds 0–3 of the adaptive sweep's runs" in text
    assert "4 configurations × 4 seeds = 16 runs" in text
    assert re.search(rf"\| activation tanh vs relu \| test_accuracy \| (cannot decide|decided: .*) \| "
                     rf"{difference:.2f} \[.*\] \| {p_value:.3g} \| {p_value:.3g} \| (yes|no) \|", text)
    assert ("cannot decide" in text) == (p_value > 0.05)
