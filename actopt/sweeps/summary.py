"""Where a study stands: each configuration's status in the store, and what the sweep says of it at its end.

``summarize`` reads the study's child runs into one ``Row`` per configuration; from the rows come the
parent run's record (counts, the best child, its description and CSV) and the terminal's end summary
(best first, then the next command to run).
"""

from __future__ import annotations

import csv
import io
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from actopt.core import metric_names
from actopt.core.config import TrainConfig, config_digest
from actopt.sweeps.study import label
from actopt.tracking import records

# A configuration's status in the summary; the first two count as done.
FINISHED, DIVERGED, FAILED, KILLED, RUNNING, NOT_RUN = "finished", "diverged", "failed", "killed", "running", "not run"
STATUSES = (FINISHED, DIVERGED, FAILED, KILLED, RUNNING, NOT_RUN)
DONE = (FINISHED, DIVERGED)


@dataclass(frozen=True)
class Row:
    """A configuration of the study and where it stands in the store."""

    config: TrainConfig
    digest: str
    status: str
    run: records.SweepRun | None


def row_of(config: TrainConfig, digest: str, runs: Sequence[records.SweepRun]) -> Row:
    """A configuration's row from its runs: its FINISHED run if any, else a live one, else its latest attempt."""
    finished = [run for run in runs if run.status == "FINISHED"]
    running = [run for run in runs if run.status == "RUNNING"]
    if finished:
        return Row(config, digest, DIVERGED if finished[0].diverged else FINISHED, finished[0])
    if running:
        return Row(config, digest, RUNNING, running[0])
    if runs:
        latest = max(runs, key=lambda run: run.start_time)
        return Row(config, digest, KILLED if latest.status == "KILLED" else FAILED, latest)
    return Row(config, digest, NOT_RUN, None)


def summarize(configs: Sequence[TrainConfig], children: Sequence[records.SweepRun]) -> list[Row]:
    """Each configuration's row, in the study's order."""
    rows = []
    for config in configs:
        digest = config_digest(config)
        rows.append(row_of(config, digest, [run for run in children if run.digest == digest]))
    return rows


def best_row(rows: Sequence[Row]) -> Row | None:
    """The best finished configuration by validation accuracy; diverged runs are infeasible, not candidates."""
    candidates = [row for row in rows if row.status == FINISHED and row.run and row.run.best_val_accuracy is not None]
    return max(candidates, key=lambda row: row.run.best_val_accuracy, default=None)  # type: ignore[union-attr]


def parent_record(rows: Sequence[Row]) -> tuple[dict[str, float], dict[str, str]]:
    """The parent run's metrics (a count per status, the best accuracy) and tags (the best child)."""
    metrics: dict[str, float] = {"children_total": len(rows)}
    for status in STATUSES:
        metrics[f"children_{status.replace(' ', '_')}"] = sum(row.status == status for row in rows)
    tags: dict[str, str] = {}
    best = best_row(rows)
    if best is not None and best.run is not None:
        metrics[metric_names.BEST_VAL_ACCURACY] = best.run.best_val_accuracy  # type: ignore[assignment]
        tags = {"best_run_id": best.run.run_id, "best_run_name": best.run.run_name, "best_config_digest": best.digest}
    return metrics, tags


def run_seconds(run: records.SweepRun | None) -> float | None:
    """The run's wall time in the store: for a group member, its whole group's (data, runs and the other members'
    training included)."""
    if run is None or run.end_time is None or not run.start_time:
        return None
    return (run.end_time - run.start_time) / 1000


def logged_training_seconds(run: records.SweepRun | None) -> float | None:
    """The run's own training time as it logged it (``train_seconds``, what the finished progress line prints);
    None for a run that trained no epoch or was logged before the metric existed."""
    return run.train_seconds if run is not None else None


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def row_accuracy(row: Row) -> float | None:
    return row.run.best_val_accuracy if row.run and row.status in DONE else None


def by_result(rows: Sequence[Row]) -> list[Row]:
    """Best validation accuracy first; runs without one (failed, killed, not run) last, in the study's order."""
    return sorted(rows, key=lambda row: -(row_accuracy(row) if row_accuracy(row) is not None else -1.0))


# The table's time column and the line under the table that says what it holds.
OWN_TIME = "own_time"
OWN_TIME_NOTE = (f"{OWN_TIME}: each run's own training time, its share of its group's epochs (the finished lines' "
                 "time), not the group's wall time; validation and test not included")


def summary_table(rows: Sequence[Row]) -> str:
    """The end-of-sweep table: every configuration with its status, best validation accuracy and own training time,
    best first, and a line saying what the time is."""
    lines = [f"{'status':<9} {'val_acc':>7} {OWN_TIME:>8}  {'run_id':<32}  configuration"]
    for row in by_result(rows):
        lines.append(f"{row.status:<9} {format_accuracy(row_accuracy(row)):>7} "
                     f"{format_seconds(logged_training_seconds(row.run)):>8}  "
                     f"{row.run.run_id if row.run else '-':<32}  {label(row.config)}")
    return "\n".join([*lines, OWN_TIME_NOTE])


def next_step(rows: Sequence[Row], study: str, flags: str = "") -> str:
    """The command to run after the sweep: the same sweep (with ``flags``, e.g. `` --until-decided``) while
    configurations are left, else the analysis."""
    left = sum(row.status not in DONE for row in rows)
    if left:
        return (f"next: actopt sweep {shlex.quote(study)}{flags}   (runs the {left} configuration"
                f"{'' if left == 1 else 's'} not finished; the finished ones are kept)")
    experiment = rows[0].config.experiment_name
    experiment_id = next((row.run.experiment_id for row in rows if row.run), "<id>")
    return (f"next: actopt analyze --experiment {shlex.quote(experiment)}   (and the runs in the UI: "
            f"#/experiments/{experiment_id}/runs?viewStateShareKey=study, README)")


def csv_seconds(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}"


def summary_csv(rows: Sequence[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # Both times, each named for what it is: the run's own training and its wall time in the store.
    writer.writerow(["configuration", "seed", "status", metric_names.BEST_VAL_ACCURACY, metric_names.TRAIN_SECONDS,
                     "wall_seconds", "run_id", "config_digest"])
    for row in rows:
        accuracy = row_accuracy(row)
        writer.writerow([row.config.run_name, row.config.seed, row.status, "" if accuracy is None else accuracy,
                         csv_seconds(logged_training_seconds(row.run)), csv_seconds(run_seconds(row.run)),
                         row.run.run_id if row.run else "", row.digest])
    return buffer.getvalue()


def sweep_description(description: str, rows: Sequence[Row]) -> str:
    """A sweep parent's description (markdown): the study's question, its best child as a link, and a table with
    each configuration's seed, status, best validation accuracy and the diagnoses that hold."""
    counts = Counter(row.status for row in rows)
    lines = [description, "", f"{len(rows)} configurations: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."]
    best = best_row(rows)
    if best is not None and best.run is not None:
        link = f"[{best.run.run_name}](#/experiments/{best.run.experiment_id}/runs/{best.run.run_id})"
        lines += ["", f"**Best child:** {link} (seed {best.config.seed}), best validation accuracy "
                      f"{format_accuracy(row_accuracy(best))}."]
    lines += ["", "| configuration | seed | status | best val acc | diagnoses |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        found = row.run.diagnoses if row.run else ()
        lines.append(f"| {row.config.run_name} | {row.config.seed} | {row.status} | "
                     f"{format_accuracy(row_accuracy(row))} | "
                     f"{', '.join(rule.replace('_', ' ') for rule in found) or '–'} |")
    return "\n".join(lines) + "\n"
