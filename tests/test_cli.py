"""The command line: a good run prints its summary; bad input is one line, non-zero, and creates no run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from actopt.cli import main, option_name
from actopt.core.config import RANGES, TrainConfig
from actopt.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_count(uri: str) -> int:
    client = MlflowClient(uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return len(client.search_runs(experiments)) if experiments else 0


def small_options(data_dir) -> list[str]:
    return ["--dataset", "mnist", "--data-dir", str(data_dir), "--download", "false", "--hidden-sizes", "16",
            "--epochs", "1", "--log-model", "false", "--experiment-name", "tests"]


def test_train_prints_a_summary_and_creates_one_run(data_dir, tracking_store):
    result = CliRunner().invoke(main, ["train", *small_options(data_dir), "--activation", "tanh"])
    assert result.exit_code == 0, result.output
    assert "(tanh-adam-lr0.001-seed0) finished: best epoch 1" in result.output
    assert run_count(tracking_store) == 1


def test_cuda_without_a_cuda_device_is_one_line_and_creates_no_run(data_dir, tracking_store):
    """The other rejected inputs are in docs/bad-input.md (tests/test_bad_input.py); this one depends on the machine."""
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(main, ["train", *small_options(data_dir), "--device", "cuda"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: device cuda requested but torch finds no CUDA device; use --device cpu or auto"]
    assert run_count(tracking_store) == 0


@pytest.mark.slow
def test_mlflow_run_end_to_end(data_dir, tracking_store):
    """`mlflow run . --env-manager local` with parameters: one FINISHED run holding them."""
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local",
               "--experiment-name", "tests", "-P", "dataset=mnist", "-P", f"data_dir={data_dir}",
               "-P", "download=false", "-P", "activation=tanh", "-P", "optimizer=sgd", "-P", "learning_rate=1e-1",
               "-P", "hidden_sizes=16", "-P", "epochs=2", "-P", "log_model=false"]
    # The MLproject command calls `python`: the one of this environment, as after `source .venv/bin/activate`.
    environment = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    client = MlflowClient(tracking_store)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["activation"] == "tanh" and run.data.params["learning_rate"] == "1e-1"
    assert run.data.params["gradient_statistics"] == "true"
    assert run.data.tags["mlflow.runName"] == "tanh-sgd-lr0.1-seed0"
    assert [point.step for point in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert "test_accuracy" in run.data.metrics


# What `actopt --help` and shell completion must not import: each costs seconds.
HEAVY = ("torch", "torchvision", "mlflow", "numpy", "pandas", "matplotlib")
IMPORTS_OF = """
import sys
heavy = set(sys.argv.pop(1).split(','))
from actopt.__main__ import run
try:
    run()
except SystemExit:
    pass
print("imported:", sorted({name.split('.')[0] for name in sys.modules} & heavy), file=sys.stderr)
"""


def cli_imports(arguments: list[str], environment: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Run ``actopt ARGUMENTS`` in a fresh interpreter: its output and which of HEAVY it imported."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(environment or {})}
    done = subprocess.run([sys.executable, "-c", IMPORTS_OF, ",".join(HEAVY), *arguments], capture_output=True,
                          text=True, env=env, cwd=PROJECT_ROOT, timeout=60)
    line = next(line for line in done.stderr.splitlines() if line.startswith("imported:"))
    return done.stdout, eval(line.removeprefix("imported:"))  # noqa: S307 (a list this test printed)


def completion(words: str) -> tuple[str, list[str]]:
    return cli_imports([], {"_ACTOPT_COMPLETE": "bash_complete", "COMP_WORDS": words,
                            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))})


def test_help_and_completion_import_neither_torch_nor_mlflow():
    for arguments in (["--help"], ["train", "--help"], ["sweep", "--help"]):
        output, heavy = cli_imports(arguments)
        assert "Usage: actopt" in output and heavy == [], arguments
    studies, heavy = completion("actopt sweep mnist-")
    presets = ["plain,mnist-depth", "plain,mnist-overfitting", "plain,mnist-overfitting-search"]
    assert studies.split() == presets and heavy == []
    activations, heavy = completion("actopt train --activation s")
    assert activations.split() == ["plain,sigmoid", "plain,selu", "plain,silu"] and heavy == []
    assert completion("actopt train --log-model ")[0].split() == ["plain,true", "plain,false"]


def test_train_help_lists_choices_and_types():
    output = CliRunner().invoke(main, ["train", "--help"]).output
    assert "--optimizer [sgd|adam|adamw|rmsprop]" in output and "--device [auto|cpu|cuda]" in output
    assert "--init [default|xavier|kaiming|lecun]" in output and "--dataset [fashion-mnist|mnist]" in output
    assert "--epochs INTEGER" in output and "[1<=x<=2147483647]" in output
    assert "--learning-rate NUMBER" in output and "[x>0]" in output
    assert "--log-model [true|false]" in output


def parsed(*arguments: str) -> dict[str, object]:
    command = main.commands[arguments[0]]
    return command.make_context(arguments[0], list(arguments[1:])).params


def test_boolean_options_read_alike_in_every_subcommand():
    assert parsed("train", "--log-model")["log_model"] is True
    assert parsed("train", "--log-model", "false", "--download=no")["log_model"] is False
    assert parsed("train")["log_model"] is None  # left to the config's default
    assert parsed("sweep", "s", "--quick")["quick"] is True and parsed("sweep", "s", "--quick=false")["quick"] is False
    assert parsed("sweep", "s", "--download", "false")["download"] is False
    assert parsed("analyze", "--experiment", "e", "--log", "false")["log"] is False
    assert parsed("analyze", "--experiment", "e")["log"] is True
    # MLproject's sweep passes "" for a device left out: the study's own.
    assert parsed("sweep", "s", "--device", "")["device"] is None


def accepted_by_the_config(name: str, value: float) -> bool:
    try:
        TrainConfig.from_mapping({"optimizer": "sgd", name: value})
    except ConfigError:
        return False
    return True


def accepted_by_click(name: str, value: float) -> bool:
    try:
        parsed("train", option_name(name), str(value))
    except click.BadParameter:
        return False
    return True


@pytest.mark.parametrize("name", sorted(RANGES))
def test_click_ranges_are_the_configs_checks(name):
    bounds = RANGES[name]
    integer = name in ("depth", "width", "batch_size", "epochs", "seed", "max_batches")
    step = 1 if integer else 1e-6
    values = [bound + offset for bound in (bounds.minimum, bounds.maximum) if bound is not None
              for offset in (-step, 0, step)]
    assert values
    for value in values:
        value = int(value) if integer else value
        assert accepted_by_click(name, value) == accepted_by_the_config(name, value), (name, value)
