"""Run a study as one MLflow parent run with one child run per configuration: resumable, in parallel.

    actopt sweep fashion-activations --workers 2

``run_sweep`` plans (which configurations still lack a FINISHED child under the study's parent
run), hands ``Task``s to an ``Executor`` and reports each ``Outcome`` as it arrives. An executor
only has to call ``run_task`` somewhere, hand back its outcome, and stop what is in flight when
the iteration is left early; a distributed engine can replace the local process pool without
touching the study or the training code.
"""

from __future__ import annotations

import contextlib
import csv
import io
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Protocol

from actopt.core.config import TrainConfig, config_digest
from actopt.core.data import check_raw, load_raw, raw_files
from actopt.errors import UserError, describe_error
from actopt.sweeps.study import Study, label
from actopt.sweeps.tasks import DEFAULT_GROUP_SIZE, Outcome, Task, plan_groups, run_task
from actopt.tracking import claims, notes, records, signals, store
from actopt.tracking.records import process_alive, reap_stale

# A configuration's status in the summary; the first two count as done.
FINISHED, DIVERGED, FAILED, KILLED, RUNNING, NOT_RUN = "finished", "diverged", "failed", "killed", "running", "not run"
STATUSES = (FINISHED, DIVERGED, FAILED, KILLED, RUNNING, NOT_RUN)
# How long stopped workers get to end their runs KILLED before they are killed outright.
STOP_GRACE_SECONDS = 60.0
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
class Executor(Protocol):
    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        """Run every task (a group), yielding each member's outcome as it comes. Leaving the iteration early (an
        exception, a signal) stops the tasks in flight, whose runs end KILLED, and starts no more."""
        ...


class InlineExecutor:
    """One task after another in this process; a signal reaches the training loop directly."""

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        for task in tasks:
            yield from run_task(task)


@dataclass
class Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    task: Task | None = None


class ProcessExecutor:
    """A local pool of spawned worker processes, each limited to its share of the cores' threads.

    The driver hands one task at a time to each idle worker, so it always knows what a worker was
    running when it dies. Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the
    driver alone decides to stop them, with SIGTERM, which ends their runs KILLED.
    """

    def __init__(self, workers: int, threads: int | None = None, grace: float = STOP_GRACE_SECONDS) -> None:
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)
        self.grace = grace

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        waiting = deque(tasks)
        workers: list[Worker] = []
        try:
            while waiting or any(worker.task for worker in workers):
                for worker in [worker for worker in workers if worker.task is None]:
                    if waiting and not self.assign(worker, waiting):
                        workers.remove(worker)
                while waiting and len(workers) < self.workers:
                    worker = self.start_worker()
                    workers.append(worker)
                    self.assign(worker, waiting)
                busy = [worker for worker in workers if worker.task is not None]
                ready = wait([worker.connection for worker in busy] + [worker.process.sentinel for worker in busy])
                for worker in busy:
                    if worker.connection in ready or worker.process.sentinel in ready:
                        outcomes = self.collect(worker)
                        if not worker.process.is_alive():
                            workers.remove(worker)
                        yield from outcomes
        finally:
            self.stop(workers)

    def describe(self) -> str:
        """How many workers and threads, and what the machine's cores do to that."""
        line = f"{self.workers} worker processes, {self.threads} threads each"
        cores = available_cores()
        if self.workers > cores:
            line += (f": more workers than the {cores} cores here, so they take turns on them and the sweep is "
                     "no faster than with one per core")
        return line

    def starting(self, tasks: int) -> str | None:
        """Why fewer workers start than were asked for, if they do: never more than there are tasks."""
        if 0 < tasks < self.workers:
            return (f"{tasks} of the {self.workers} worker processes start: only {tasks} configuration"
                    f"{'s' if tasks > 1 else ''} to run")
        return None

    def start_worker(self) -> Worker:
        context = multiprocessing.get_context("spawn")  # fork and torch's threads do not mix
        ours, theirs = context.Pipe()
        process = context.Process(target=worker_main, args=(theirs, self.threads), daemon=True)
        with ignoring(signal.SIGINT):  # an ignored SIGINT is inherited through spawn's exec
            process.start()
        theirs.close()
        return Worker(process, ours)

    @staticmethod
    def assign(worker: Worker, waiting: deque[Task]) -> bool:
        task = waiting.popleft()
        try:
            worker.connection.send(task)
        except OSError:  # the worker died between two tasks
            waiting.appendleft(task)
            return False
        worker.task = task
        return True

    @staticmethod
    def collect(worker: Worker) -> list[Outcome]:
        task, worker.task = worker.task, None
        assert task is not None
        try:
            if worker.connection.poll():
                return worker.connection.recv()
        except (EOFError, OSError):
            pass
        worker.process.join(5)
        code = worker.process.exitcode
        error = f"worker process {worker.process.pid} died (exit code {code})"
        return [Outcome(digest, "FAILED", None, 0.0, error=error) for digest in task.digests]

    def stop(self, workers: list[Worker]) -> None:
        with ignoring(signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not orphan the workers
            for worker in workers:
                if worker.task is None:
                    with contextlib.suppress(OSError):
                        worker.connection.send(None)
                else:
                    worker.process.terminate()
                # Closed, so that a worker whose run swallowed the signal still leaves after it.
                worker.connection.close()
            deadline = time.monotonic() + self.grace
            for worker in workers:
                worker.process.join(max(0.0, deadline - time.monotonic()))
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()


def worker_main(connection: Connection, threads: int) -> None:
    """A worker process: trains each task it is sent until it gets None; SIGTERM ends its run KILLED."""
    import torch

    signals.raise_on_sigterm()
    os.environ.pop(store.RUN_ID_VARIABLE, None)  # the sweep's launcher run is not this worker's
    torch.set_num_threads(threads)
    try:
        while (task := connection.recv()) is not None:
            connection.send(run_task(task))
    except (signals.Terminated, EOFError, OSError):  # stopped by the driver, or the driver is gone
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # leaving: a late SIGTERM has nothing left to stop


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def ignoring(*signals: signal.Signals) -> Iterator[None]:
    """Ignore some signals for a moment (only the main thread can change handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in signals}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass(frozen=True)
class Row:
    """A configuration of the study and where it stands in the store."""

    config: TrainConfig
    digest: str
    status: str
    run: records.SweepRun | None


@dataclass(frozen=True)
class SweepResult:
    parent_run_id: str
    rows: list[Row]
    stopped_by: str | None  # "SIGINT" or "SIGTERM" when a signal ended the sweep

    @property
    def exit_code(self) -> int:
        if self.stopped_by:
            return EXIT_CODES[self.stopped_by]
        return 0 if all(row.status in (FINISHED, DIVERGED) for row in self.rows) else 1


def ensure_datasets(configs: Sequence[TrainConfig]) -> None:
    """Every dataset is on disk and whole before any run starts: downloaded here, once, when allowed (never by
    two workers at once), else a DataError naming the folder or the file (a truncated one, as ``train`` says).
    Reading the values is each run's job."""
    for dataset, data_dir, download in sorted({(c.dataset, c.data_dir, c.download) for c in configs}):
        if not all(path.is_file() for path in raw_files(dataset, data_dir)):
            load_raw(dataset, data_dir, download)
        check_raw(dataset, data_dir)


def summarize(configs: Sequence[TrainConfig], children: Sequence[records.SweepRun]) -> list[Row]:
    """Each configuration's status: its FINISHED run if any, else a live one, else its latest attempt."""
    rows = []
    for config in configs:
        digest = config_digest(config)
        runs = [run for run in children if run.digest == digest]
        finished = [run for run in runs if run.status == "FINISHED"]
        running = [run for run in runs if run.status == "RUNNING"]
        if finished:
            row = Row(config, digest, DIVERGED if finished[0].diverged else FINISHED, finished[0])
        elif running:
            row = Row(config, digest, RUNNING, running[0])
        elif runs:
            latest = max(runs, key=lambda run: run.start_time)
            row = Row(config, digest, KILLED if latest.status == "KILLED" else FAILED, latest)
        else:
            row = Row(config, digest, NOT_RUN, None)
        rows.append(row)
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
        metrics["best_val_accuracy"] = best.run.best_val_accuracy  # type: ignore[assignment]
        tags = {"best_run_id": best.run.run_id, "best_run_name": best.run.run_name, "best_config_digest": best.digest}
    return metrics, tags


def run_seconds(run: records.SweepRun | None) -> float | None:
    if run is None or run.end_time is None or not run.start_time:
        return None
    return (run.end_time - run.start_time) / 1000


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
    return row.run.best_val_accuracy if row.run and row.status in (FINISHED, DIVERGED) else None


def by_result(rows: Sequence[Row]) -> list[Row]:
    """Best validation accuracy first; runs without one (failed, killed, not run) last, in the study's order."""
    return sorted(rows, key=lambda row: -(row_accuracy(row) if row_accuracy(row) is not None else -1.0))


def summary_table(rows: Sequence[Row]) -> str:
    """The end-of-sweep table: every configuration with its status, best validation accuracy and time, best first."""
    lines = [f"{'status':<9} {'val_acc':>7} {'time':>8}  {'run_id':<32}  configuration"]
    for row in by_result(rows):
        lines.append(f"{row.status:<9} {format_accuracy(row_accuracy(row)):>7} "
                     f"{format_seconds(run_seconds(row.run)):>8}  "
                     f"{row.run.run_id if row.run else '-':<32}  {label(row.config)}")
    return "\n".join(lines)


def summary_csv(rows: Sequence[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["configuration", "seed", "status", "best_val_accuracy", "seconds", "run_id", "config_digest"])
    for row in rows:
        accuracy, seconds = row_accuracy(row), run_seconds(row.run)
        writer.writerow([row.config.run_name, row.config.seed, row.status, "" if accuracy is None else accuracy,
                         "" if seconds is None else f"{seconds:.1f}", row.run.run_id if row.run else "", row.digest])
    return buffer.getvalue()


def progress_line(done: int, total: int, outcome: Outcome, config: TrainConfig, elapsed: float) -> str:
    """One line per finished configuration, with an estimate of the time left at the pace so far."""
    status = "diverged" if outcome.diverged else outcome.status.lower()
    eta = elapsed / done * (total - done)
    line = (f"[{done:>{len(str(total))}}/{total}] {status:<8} val {format_accuracy(outcome.best_val_accuracy):>6} "
            f"{format_seconds(outcome.seconds):>7}  {label(config)}")
    if outcome.error:
        line += f"  ({outcome.error})"
    return line + (f"  · eta {format_seconds(eta)}" if done < total else "  · all done")


def refuse_if_running(parent: records.SweepRun) -> None:
    if (parent.status == "RUNNING" and parent.pid is not None and parent.pid != os.getpid()
            and parent.host == socket.gethostname() and process_alive(parent.pid)):
        raise UserError(f"this study is already being swept by process {parent.pid} (parent run {parent.run_id}); "
                        "stop it first, or wait for it")


def run_sweep(
    study: Study,
    configs: Sequence[TrainConfig],
    executor: Executor,
    quick: bool = False,
    launcher_run_id: str | None = None,
    report: Callable[[str], None] = lambda line: None,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> SweepResult:
    """Run the configurations that still lack a FINISHED child under the study's parent run.

    A signal (KeyboardInterrupt, ``signals.Terminated``) stops the sweep cleanly: runs in flight end
    KILLED, the parent records what finished and ends KILLED, and a later start continues.
    """
    experiment_name = configs[0].experiment_name
    claim = claims.claim_sweep(experiment_name, study.name, study.digest, quick)
    try:
        return sweep_claimed(study, configs, executor, quick, launcher_run_id, report, group_size)
    finally:
        with ignoring(signal.SIGINT, signal.SIGTERM), contextlib.suppress(Exception):
            claims.release(claim)  # a claim left behind by a store that failed is ended by the next sweep


def sweep_claimed(
    study: Study, configs: Sequence[TrainConfig], executor: Executor, quick: bool, launcher_run_id: str | None,
    report: Callable[[str], None], group_size: int,
) -> SweepResult:
    """``run_sweep`` once this process holds the study's claim."""
    experiment_name = configs[0].experiment_name
    existing = records.find_sweep_parent(experiment_name, study.digest, quick)
    if existing is not None:
        refuse_if_running(existing)
    varying = tuple(name for name, value in configs[0].to_params().items()
                    if any(config.to_params()[name] != value for config in configs))
    parent = records.open_sweep_parent(experiment_name, study.name, study.digest, quick, study.text, existing,
                                        launcher_run_id, study.description, varying)
    try:
        return sweep_under(parent, study, configs, executor, report, group_size)
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


def sweep_under(parent: str, study: Study, configs: Sequence[TrainConfig], executor: Executor,
                report: Callable[[str], None], group_size: int) -> SweepResult:
    """Plan, run and record the configurations under the open parent run."""
    experiment_name = configs[0].experiment_name
    rows = summarize(configs, reap_stale(records.sweep_children(parent), report))
    # A rerun regroups what is left: the groups are planned from the configurations still to run.
    waiting = [row.config for row in rows if row.status not in (FINISHED, DIVERGED, RUNNING)]
    tasks = plan_groups(waiting, parent, group_size)
    by_digest = {config_digest(config): config for config in waiting}
    done_before = sum(row.status in (FINISHED, DIVERGED) for row in rows)
    elsewhere = sum(row.status == RUNNING for row in rows)
    report(f"study {study.name}: {len(rows)} configurations, {done_before} finished before, {len(waiting)} to run"
           + (f" in {len(tasks)} groups" if len(tasks) != len(waiting) else "")
           + (f", {elsewhere} running elsewhere" if elsewhere else "")
           + f"; parent run {parent} in experiment {experiment_name!r}")
    fewer = executor.starting(len(tasks)) if isinstance(executor, ProcessExecutor) else None
    if fewer:
        report(fewer)
    stopped_by = None
    started = time.monotonic()
    try:
        for done, outcome in enumerate(executor.run(tasks), start=1):
            if outcome.unreachable:
                # Leaving the loop stops the workers; the runs they leave RUNNING, and the parent, are
                # marked FAILED (runs) or reopened (parent) when the same sweep starts again.
                raise store.StoreUnavailable(f"{store.no_answer_message()}; the sweep stopped: start it "
                                                "again once the server is back, and it continues")
            report(progress_line(done, len(waiting), outcome, by_digest[outcome.digest], time.monotonic() - started))
    except KeyboardInterrupt:
        stopped_by = "SIGINT"
    except signals.Terminated:
        stopped_by = "SIGTERM"
    with ignoring(signal.SIGINT, signal.SIGTERM):
        if stopped_by:
            report(f"stopped by {stopped_by}: runs in flight ended KILLED; start the same sweep again to continue")
        rows = summarize(configs, reap_stale(records.sweep_children(parent), report))
        metrics, tags = parent_record(rows)
        finished = all(row.status in (FINISHED, DIVERGED) for row in rows)
        status = "KILLED" if stopped_by else "FINISHED" if finished else "FAILED"
        best = best_row(rows)
        note = notes.sweep_description(study.description, [(row.config.run_name, row.config.seed, row.status,
                                       row_accuracy(row), row.run.diagnoses if row.run else ()) for row in rows],
                                       best and best.run and (best.run.run_name, best.run.experiment_id,
                                                              best.run.run_id, best.config.seed, row_accuracy(best)))
        records.close_sweep_parent(parent, status, metrics, tags, summary_csv(rows), note)
    return SweepResult(parent, rows, stopped_by)
