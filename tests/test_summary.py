"""The sweep's end summary and its parent's record: values and the text a reader sees."""

from __future__ import annotations

from actopt.core.config import TrainConfig, config_digest
from actopt.sweeps import summary
from actopt.sweeps.summary import Row
from actopt.tracking.records import SweepRun


def row(status: str, accuracy: float | None = None, learning_rate: float = 0.1, seed: int = 0,
        diagnoses: tuple[str, ...] = (), train_seconds: float | None = 6.5) -> Row:
    """A configuration's row; its run lasted 72.5 s in the store (its group's wall time), ``train_seconds`` its own."""
    config = TrainConfig(learning_rate=learning_rate, seed=seed, experiment_name="tiny study")
    digest = config_digest(config)
    run = None if status == summary.NOT_RUN else SweepRun(
        run_id=f"run-{learning_rate}", run_name=f"lr{learning_rate}", status="FINISHED", start_time=1_000,
        end_time=73_500, digest=digest, host=None, pid=None, diverged=status == summary.DIVERGED,
        best_val_accuracy=accuracy, diagnoses=diagnoses, experiment_id="7", train_seconds=train_seconds)
    return Row(config, digest, status, run)


def test_seconds_read_in_the_largest_unit_that_helps():
    assert [summary.format_seconds(value) for value in (None, 4.26, 59.9, 72.5, 3599, 3600, 7265)] == [
        "-", "4.3s", "59.9s", "1m12s", "59m59s", "1h00m", "2h01m"]
    assert summary.format_accuracy(None) == "-" and summary.format_accuracy(0.85) == "0.8500"


def test_the_table_is_best_first_with_the_runs_own_time_and_the_diverged_not_the_best():
    rows = [row(summary.FINISHED, 0.5, 0.1), row(summary.NOT_RUN, None, 0.2), row(summary.DIVERGED, 0.95, 0.3),
            row(summary.FINISHED, 0.8, 0.4, train_seconds=None)]
    *lines, note = summary.summary_table(rows).splitlines()
    assert lines[0].split() == ["status", "val_acc", "own_time", "run_id", "configuration"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["diverged", "0.9500", "6.5s"], ["finished", "0.8000", "-"], ["finished", "0.5000", "6.5s"],
        ["not", "run", "-"]]  # a run that logged no own time (from before the metric) shows none, not its wall time
    assert note.startswith("own_time: each run's own training time") and "not the group's wall time" in note
    assert summary.best_row(rows) is rows[3]  # diverged runs are infeasible, never the best
    metrics, tags = summary.parent_record(rows)
    assert metrics["children_total"] == 4 and metrics["children_finished"] == 2 and metrics["children_not_run"] == 1
    assert metrics["best_val_accuracy"] == 0.8 and tags["best_run_id"] == "run-0.4"


def test_the_next_step_is_the_same_sweep_while_configurations_are_left_else_the_analysis():
    left = [row(summary.FINISHED, 0.5, 0.1), row(summary.NOT_RUN, None, 0.2)]
    assert summary.next_step(left, "my study.json") == (
        "next: actopt sweep 'my study.json'   (runs the 1 configuration not finished; the finished ones are kept)")
    done = [row(summary.FINISHED, 0.5, 0.1)]
    assert summary.next_step(done, "tiny") == (
        "next: actopt analyze --experiment 'tiny study'   (and the runs in the UI: "
        "#/experiments/7/runs?viewStateShareKey=study, README)")


def test_the_parent_description_links_the_best_child_and_tables_every_configuration():
    rows = [row(summary.FINISHED, 0.8, 0.4, seed=2, diagnoses=("dead_units",)), row(summary.NOT_RUN, None, 0.2)]
    text = summary.sweep_description("What the study asks.", rows).splitlines()
    assert text[:3] == ["What the study asks.", "", "2 configurations: 1 finished, 1 not run."]
    assert text[4] == "**Best child:** [lr0.4](#/experiments/7/runs/run-0.4) (seed 2), best validation accuracy 0.8000."
    assert text[-2:] == [f"| {rows[0].config.run_name} | 2 | finished | 0.8000 | dead units |",
                         f"| {rows[1].config.run_name} | 0 | not run | - | – |"]


def test_a_groups_members_show_their_own_times_not_the_groups_wall_time():
    """Two members of one group: the same wall time in the store (the group's 72.5 s), each its own training time."""
    members = [row(summary.FINISHED, 0.8, 0.1, train_seconds=12.5), row(summary.FINISHED, 0.7, 0.2, train_seconds=30.0)]
    assert {summary.run_seconds(member.run) for member in members} == {72.5}
    lines = summary.summary_table(members).splitlines()
    assert [line.split()[:3] for line in lines[1:3]] == [["finished", "0.8000", "12.5s"],
                                                         ["finished", "0.7000", "30.0s"]]
    assert summary.format_seconds(72.5) not in "\n".join(lines[1:3])


def test_the_csv_holds_every_configuration_in_study_order_with_both_times_named():
    rows = [row(summary.NOT_RUN, None, 0.2), row(summary.FINISHED, 0.8, 0.4)]
    lines = summary.summary_csv(rows).splitlines()
    assert lines[0] == "configuration,seed,status,best_val_accuracy,train_seconds,wall_seconds,run_id,config_digest"
    assert lines[1].split(",")[2:7] == ["not run", "", "", "", ""]
    assert lines[2].split(",")[2:7] == ["finished", "0.8", "6.5", "72.5", "run-0.4"]
