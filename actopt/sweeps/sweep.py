"""Run a study as one MLflow parent run with one child run per configuration: resumable, in parallel.

    actopt sweep fashion-activations --workers 2

``run_sweep`` plans (which configurations still lack a FINISHED child under the study's parent
run), hands ``Task``s to an executor (``executors``, ``ray_executor``), reports progress as outcomes
arrive (``progress``) and closes the parent with the study's summary (``summary``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actopt.core.config import TrainConfig
from actopt.core.data import check_raw, load_raw, raw_files
from actopt.errors import UserError, describe_error
from actopt.sweeps.executors import Executor
from actopt.sweeps.options import SweepOptions
from actopt.sweeps.progress import Progress
from actopt.sweeps.study import Study
from actopt.sweeps.summary import (
    DIVERGED,
    DONE,
    FINISHED,
    RUNNING,
    Row,
    parent_record,
    summarize,
    summary_csv,
    sweep_description,
)
from actopt.sweeps.tasks import plan_groups
from actopt.tracking import claims, records, signals, store
from actopt.tracking.records import owner_gone, reap_stale
from actopt.tracking.signals import ignoring

__all__ = ["DIVERGED", "FINISHED", "Row", "SweepResult", "ensure_datasets", "run_sweep"]
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


@dataclass(frozen=True)
class SweepResult:
    parent_run_id: str
    rows: list[Row]
    stopped_by: str | None  # "SIGINT" or "SIGTERM" when a signal ended the sweep

    @property
    def exit_code(self) -> int:
        if self.stopped_by:
            return EXIT_CODES[self.stopped_by]
        return 0 if all(row.status in DONE for row in self.rows) else 1


def ensure_datasets(configs: Sequence[TrainConfig]) -> None:
    """Every dataset is on disk and whole before any run starts: downloaded here, once, when allowed (never by
    two workers at once), else a DataError naming the folder or the file (a truncated one, as ``train`` says).
    Reading the values is each run's job."""
    for dataset, data_dir, download in sorted({(c.dataset, c.data_dir, c.download) for c in configs}):
        if not all(path.is_file() for path in raw_files(dataset, data_dir)):
            load_raw(dataset, data_dir, download)
        check_raw(dataset, data_dir)


def refuse_if_running(parent: records.SweepRun) -> None:
    if (parent.status == "RUNNING" and parent.pid not in (None, os.getpid()) and parent.host == socket.gethostname()
            and not owner_gone(parent.host, parent.pid)):
        raise UserError(f"this study is already being swept by process {parent.pid} (parent run {parent.run_id}); "
                        "stop it first, or wait for it")


def silent(line: str) -> None:
    """The default report: a sweep run from Python says nothing."""


def run_sweep(study: Study, configs: Sequence[TrainConfig], executor: Executor,
              options: SweepOptions | None = None, report: Callable[[str], None] = silent) -> SweepResult:
    """Run the configurations that still lack a FINISHED child under the study's parent run.

    A signal (KeyboardInterrupt, ``signals.Terminated``) stops the sweep cleanly: runs in flight end
    KILLED, the parent records what finished and ends KILLED, and a later start continues.
    """
    options = options or SweepOptions()
    experiment_name = configs[0].experiment_name
    claim = claims.claim_sweep(experiment_name, study.name, study.digest, options.quick)
    try:
        return sweep_claimed(Sweep(study, configs, executor, options, report))
    finally:
        with ignoring(signal.SIGINT, signal.SIGTERM), contextlib.suppress(Exception):
            claims.release(claim)  # a claim left behind by a store that failed is ended by the next sweep


@dataclass(frozen=True)
class Sweep:
    """One sweep under way: what runs, where, how, and who hears of it."""

    study: Study
    configs: Sequence[TrainConfig]
    executor: Executor
    options: SweepOptions
    report: Callable[[str], None]

    @property
    def experiment_name(self) -> str:
        return self.configs[0].experiment_name

    def parent(self) -> records.StudyParent:
        first = self.configs[0].to_params()
        varying = tuple(name for name, value in first.items()
                        if any(config.to_params()[name] != value for config in self.configs))
        return records.StudyParent(self.experiment_name, self.study.name, self.study.digest, self.options.quick,
                                   self.study.text, self.study.description, varying)


def sweep_claimed(sweep: Sweep) -> SweepResult:
    """``run_sweep`` once this process holds the study's claim."""
    existing = records.find_sweep_parent(sweep.experiment_name, sweep.study.digest, sweep.options.quick)
    if existing is not None:
        refuse_if_running(existing)
    parent = records.open_sweep_parent(sweep.parent(), existing, sweep.options.launcher_run_id)
    try:
        return sweep_under(parent, sweep)
    except (KeyboardInterrupt, signals.Terminated):
        # A signal before sweep_under's loop (which closes the parent itself) would leave the parent RUNNING.
        with ignoring(signal.SIGINT, signal.SIGTERM), contextlib.suppress(Exception):
            records.terminate_run(parent, "KILLED", "stopped by a signal before any configuration started")
        raise
    except Exception as error:
        fail_parent(parent, error)
        raise


def fail_parent(parent: str, error: Exception) -> None:
    """End the parent FAILED with the error that stopped the sweep; a server that stopped answering cannot be
    told (the next sweep reopens the parent), and a store that refuses this too leaves it RUNNING, said in the
    error's line."""
    if store.no_answer(error) or isinstance(error, store.StoreUnavailable):
        return
    try:
        records.terminate_run(parent, "FAILED", describe_error(error))
    except Exception:
        setattr(error, store.LEFT_RUNNING, True)


def sweep_under(parent: str, sweep: Sweep) -> SweepResult:
    """Plan, run and record the configurations under the open parent run."""
    rows = summarize(sweep.configs, reap_stale(records.sweep_children(parent), sweep.report))
    # A rerun regroups what is left: the groups are planned from the configurations still to run.
    waiting = [row.config for row in rows if row.status not in (*DONE, RUNNING)]
    tasks = plan_groups(waiting, parent, sweep.options.group_size)
    done_before = sum(row.status in DONE for row in rows)
    elsewhere = sum(row.status == RUNNING for row in rows)
    sweep.report(f"study {sweep.study.name}: {len(rows)} configurations, {done_before} finished before, "
                 f"{len(waiting)} to run" + (f" in {len(tasks)} groups" if len(tasks) != len(waiting) else "")
                 + (f", {elsewhere} running elsewhere" if elsewhere else "")
                 + f"; parent run {parent} in experiment {sweep.experiment_name!r}")
    fewer = sweep.executor.starting(len(tasks))
    if fewer:
        sweep.report(fewer)
    # Groups that train at once: the pool's size (a Ray cluster's once connected), else the options'.
    workers = getattr(sweep.executor, "workers", None) or sweep.options.workers
    progress = Progress(tasks, workers, sweep.report, sweep.options.epoch_lines)
    stopped_by = None
    try:
        for outcome in sweep.executor.run(tasks, progress.epoch):
            if outcome.unreachable:
                # Leaving the loop stops the workers; the runs they leave RUNNING, and the parent, are
                # marked FAILED (runs) or reopened (parent) when the same sweep starts again.
                raise store.StoreUnavailable(f"{store.no_answer_message()}; the sweep stopped: start it "
                                             "again once the server is back, and it continues")
            progress.outcome(outcome)
    except KeyboardInterrupt:
        stopped_by = "SIGINT"
    except signals.Terminated:
        stopped_by = "SIGTERM"
    with ignoring(signal.SIGINT, signal.SIGTERM):
        return close_parent(parent, sweep, stopped_by)


def close_parent(parent: str, sweep: Sweep, stopped_by: str | None) -> SweepResult:
    """Record on the parent what the store holds now, and end it: KILLED after a signal, else FINISHED when
    every configuration is done, else FAILED."""
    if stopped_by:
        sweep.report(f"stopped by {stopped_by}: runs in flight ended KILLED; start the same sweep again to continue")
    # After a signal, a run whose worker is gone was in flight: the signal stopped it, whoever ended the worker.
    children = reap_stale(records.sweep_children(parent), sweep.report, "KILLED" if stopped_by else "FAILED")
    rows = summarize(sweep.configs, children)
    metrics, tags = parent_record(rows)
    finished = all(row.status in DONE for row in rows)
    status = "KILLED" if stopped_by else "FINISHED" if finished else "FAILED"
    note = sweep_description(sweep.study.description, rows)
    records.close_sweep_parent(parent, status, metrics, tags, summary_csv(rows), note)
    return SweepResult(parent, rows, stopped_by)
