"""Tiny studies swept against the test's own store, and the runs they leave, for the sweep tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from actopt.cli import main as cli_main
from actopt.sweeps.executors import InlineExecutor
from actopt.sweeps.options import SweepOptions
from actopt.sweeps.study import configurations, load_study
from actopt.sweeps.sweep import ensure_datasets, run_sweep
from actopt.tracking import records, store

# Each configuration trains in well under a second on the synthetic data.
TINY = {"dataset": "mnist", "hidden_sizes": [16], "epochs": 2, "max_batches": 3, "batch_size": 32,
        "gradient_statistics": False, "log_model": False, "device": "cpu"}
FOUR = {"activation": ["relu", "tanh"], "optimizer": {"sgd": {"learning_rate": [0.1]},
                                                      "adam": {"learning_rate": [0.001]}}}


def write_study(folder: Path, grid: dict, name: str = "tiny", seeds=(0,), **fixed) -> Path:
    path = folder / f"{name}.json"
    fixed = {key: value for key, value in {**TINY, **fixed}.items() if key not in grid}
    document = {"description": "A tiny study for tests.", "seeds": list(seeds), "fixed": fixed, "grid": grid}
    path.write_text(json.dumps(document, indent=2))
    return path


def sweep(path: Path, data_dir: Path, executor=None, report=None, group_size=8, **values):
    study = load_study(str(path))
    configs = configurations(study, data_dir=str(data_dir), **values)
    ensure_datasets(configs)
    result = run_sweep(study, configs, executor or InlineExecutor(), SweepOptions(group_size=group_size),
                       report or (lambda line: None))
    return study, configs, result


def experiment_runs(name: str = "tiny") -> list:
    # The store actopt logs to (MLFLOW_TRACKING_URI), which a test may change after conftest chose mlflow's own.
    client = MlflowClient(store.tracking_uri())
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []


def split(runs):
    parents = [run for run in runs if records.PARENT_RUN_TAG not in run.data.tags]
    children = [run for run in runs if records.PARENT_RUN_TAG in run.data.tags]
    return parents, children


def finished_per_digest(children) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in children:
        if run.info.status == "FINISHED":
            digest = run.data.tags[records.CONFIG_DIGEST_TAG]
            counts[digest] = counts.get(digest, 0) + 1
    return counts


def invoke(*arguments: str):
    return CliRunner().invoke(cli_main, list(arguments))


# A sweep says what it will run before the slow imports and the checks (sweeps/options.py: first_line).
ANNOUNCEMENT = re.compile(r"sweep \S+: \d+ runs? .* checking the store and the data before the first run")


def without_announcement(output: str) -> list[str]:
    """The lines of a command's output after a sweep's announcement: what a refusal says."""
    lines = output.strip().splitlines()
    return lines[1:] if lines and ANNOUNCEMENT.fullmatch(lines[0]) else lines
