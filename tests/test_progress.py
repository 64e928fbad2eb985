"""What a running sweep prints: a first line at once, a line per group and epoch, an ETA from measured epoch
times, each member's own time, and an end summary best first with the next command."""

from __future__ import annotations

import json

from click.testing import CliRunner

from actopt.cli import main as cli_main
from actopt.sweeps.executors import InlineExecutor
from actopt.sweeps.options import SweepOptions
from actopt.sweeps.progress import Progress
from actopt.sweeps.study import configurations, load_study
from actopt.sweeps.summary import OWN_TIME_NOTE
from actopt.sweeps.sweep import ensure_datasets, run_sweep
from actopt.sweeps.tasks import EpochDone, Outcome, plan_groups

TINY = {"dataset": "mnist", "hidden_sizes": [16], "epochs": 3, "max_batches": 3, "batch_size": 32,
        "gradient_statistics": False, "log_model": False, "device": "cpu"}


def write_study(folder, grid, epochs=3):
    path = folder / "tiny.json"
    fixed = {**{key: value for key, value in TINY.items() if key not in grid}, "epochs": epochs}
    path.write_text(json.dumps({"description": "A tiny study for tests.", "seeds": [0], "fixed": fixed,
                                "grid": grid}))
    return path


def two_groups(tmp_path):
    """Two groups of two members (relu and tanh, each with two learning rates), 3 epochs each."""
    study = load_study(str(write_study(tmp_path, {"activation": ["relu", "tanh"], "learning_rate": [0.1, 0.2]})))
    return plan_groups(configurations(study), "parent", 8)


def test_the_eta_comes_from_measured_epochs_before_any_run_finished(tmp_path):
    tasks = two_groups(tmp_path)
    assert [len(task.configs) for task in tasks] == [2, 2]
    lines: list[str] = []
    progress = Progress(tasks, workers=1, report=lines.append, epoch_lines=True)
    assert progress.seconds_left() is None
    progress.epoch(EpochDone(tasks[0].digests[0], 1, 4.0))  # 4 s for 2 member-epochs: 2 s each
    # Left: 2 more epochs of the first group and 3 of the second, 2 members each, on one worker: 10 × 2 s.
    assert progress.seconds_left() == 20.0
    assert lines == [f"  {tasks[0].name}: epoch 1/3 after 4.0s (2 members)  · eta 20.0s"]
    two_workers = Progress(tasks, workers=2, report=lines.append)
    two_workers.epoch(EpochDone(tasks[0].digests[0], 1, 4.0))
    assert two_workers.seconds_left() == 12.0  # the second group alone takes 3 × 2 × 2 s, longer than half of 20


def test_a_finished_line_shows_the_members_own_time(tmp_path):
    tasks = two_groups(tmp_path)
    lines: list[str] = []
    progress = Progress(tasks, workers=1, report=lines.append)
    digest = tasks[0].digests[1]
    progress.outcome(Outcome(digest, "FINISHED", "run", seconds=30.0, best_val_accuracy=0.75, train_seconds=6.5,
                             epochs=3))
    assert lines[0].startswith("[1/4] finished val 0.7500    6.5s  ")  # the member's 6.5 s, not the group's 30
    # Measured by the outcome, 30 s for 3 epochs of 2 members: 5 s a member-epoch; the second group's 6 are left.
    assert lines[0].endswith("  · eta 30.0s")


def test_a_tiny_sweep_says_what_it_runs_first_then_eta_and_the_sorted_summary_with_the_next_step(tmp_path, data_dir):
    path = write_study(tmp_path, {"activation": ["relu", "tanh"], "learning_rate": [0.1, 0.2]}, epochs=2)
    result = CliRunner().invoke(cli_main, ["sweep", str(path), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    errors = result.stderr.splitlines()
    assert errors[0].startswith("sweep tiny: 4 runs in this process, in groups of up to 8; store sqlite:///")
    assert errors[0].endswith("/mlflow.db; checking the store and the data before the first run")
    assert not any(": epoch " in line for line in errors)  # off a terminal: line-oriented, no epoch lines
    finished = [line for line in errors if line.startswith("[")]
    assert [line[:14] for line in finished] == ["[1/4] finished", "[2/4] finished", "[3/4] finished",
                                                "[4/4] finished"]
    assert " · eta " in finished[0] and "eta after the first epoch" not in finished[0]
    assert finished[-1].endswith("all done")
    *table, note, next_step = result.stdout.splitlines()
    accuracies = [float(line.split()[1]) for line in table[1:]]
    assert accuracies == sorted(accuracies, reverse=True) and len(accuracies) == 4
    # Each row's time is the one its finished line printed: the member's own, not its group's wall time.
    own = {line.split("  ")[-1]: line.split()[2] for line in table[1:]}
    assert {line.split("  ")[-2]: line.split()[4] for line in finished} == own and note == OWN_TIME_NOTE
    assert next_step.startswith("next: actopt analyze --experiment tiny   (and the runs in the UI: #/experiments/")


def test_an_adaptive_sweep_ends_with_its_looks_and_the_next_step_not_a_traceback(tmp_path, data_dir):
    path = write_study(tmp_path, {"activation": ["relu", "tanh"]}, epochs=1)
    result = CliRunner().invoke(cli_main, ["sweep", str(path), "--data-dir", str(data_dir), "--until-decided",
                                           "--max-seeds", "3"])
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Stopped: " in result.stdout and "Adaptive seeds: " in result.stdout
    assert result.stdout.splitlines()[-1].startswith("next: actopt analyze --experiment tiny")


def test_on_a_terminal_each_group_reports_each_epoch_with_the_eta(tmp_path, data_dir):
    study = load_study(str(write_study(tmp_path, {"activation": ["relu", "tanh"], "learning_rate": [0.1, 0.2]},
                                       epochs=2)))
    configs = configurations(study, data_dir=str(data_dir))
    ensure_datasets(configs)
    lines: list[str] = []
    result = run_sweep(study, configs, InlineExecutor(), SweepOptions(epoch_lines=True), lines.append)
    assert result.exit_code == 0
    epochs = [line for line in lines if line.startswith("  ")]
    names = [task.name for task in plan_groups(configs, "parent", 8)]
    assert [line.split(" after ")[0] for line in epochs] == [f"  {name}: epoch {epoch}/2" for name in names
                                                             for epoch in (1, 2)]
    assert all(line.endswith("s") and " (2 members)  · eta " in line for line in epochs)
    # Lines in order: the plan, then each group's epochs before its members' finished lines.
    assert [line[:2] for line in lines[1:]] == ["  ", "  ", "[1", "[2", "  ", "  ", "[3", "[4"]
