"""Where a sweep's groups train on this machine: one after another in this process, or in a pool of worker
processes. Any executor only has to run each ``Task`` with ``tasks.run_task``, hand back its outcomes, and
stop what is in flight when the iteration is left early (``ray_executor`` is the distributed one).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Protocol

from actopt.sweeps.tasks import EpochDone, Outcome, Task, run_task
from actopt.tracking import signals, store
from actopt.tracking.signals import ignoring

# How long stopped workers get to end their runs KILLED before they are killed outright.
STOP_GRACE_SECONDS = 60.0


def ignore_progress(event: EpochDone) -> None:
    """The default listener: no one asked for per-epoch progress."""


class Executor(Protocol):
    def run(self, tasks: Sequence[Task], progress: Callable[[EpochDone], None] = ignore_progress) -> Iterator[Outcome]:
        """Run every task (a group), yielding each member's outcome as it comes, and calling ``progress`` in this
        process at the end of each group's epoch where the executor can. Leaving the iteration early (an
        exception, a signal) stops the tasks in flight, whose runs end KILLED, and starts no more."""
        ...

    def starting(self, tasks: int) -> str | None:
        """Why fewer workers start than were asked for, if they do."""
        ...


class InlineExecutor:
    """One task after another in this process; a signal reaches the training loop directly."""

    def run(self, tasks: Sequence[Task], progress: Callable[[EpochDone], None] = ignore_progress) -> Iterator[Outcome]:
        for task in tasks:
            yield from run_task(task, progress)

    def starting(self, tasks: int) -> str | None:
        return None


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

    def run(self, tasks: Sequence[Task], progress: Callable[[EpochDone], None] = ignore_progress) -> Iterator[Outcome]:
        waiting = deque(tasks)
        workers: list[Worker] = []
        try:
            while waiting or any(worker.task for worker in workers):
                self.fill(workers, waiting)
                busy = [worker for worker in workers if worker.task is not None]
                ready = wait([worker.connection for worker in busy] + [worker.process.sentinel for worker in busy])
                for worker in busy:
                    if worker.connection in ready or worker.process.sentinel in ready:
                        outcomes = self.receive(worker, progress)
                        if outcomes is not None and not worker.process.is_alive():
                            workers.remove(worker)
                        yield from outcomes or ()
        finally:
            self.stop(workers)

    def fill(self, workers: list[Worker], waiting: deque[Task]) -> None:
        """A task for every idle worker (one that died between two tasks leaves), and new workers up to the pool's
        size while tasks wait."""
        for worker in [worker for worker in workers if worker.task is None]:
            if waiting and not self.assign(worker, waiting):
                workers.remove(worker)
        while waiting and len(workers) < self.workers:
            worker = self.start_worker()
            workers.append(worker)
            self.assign(worker, waiting)

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
    def receive(worker: Worker, progress: Callable[[EpochDone], None]) -> list[Outcome] | None:
        """What a busy worker sent: an epoch's progress is handed on (None: the task goes on); its outcomes end
        the task; a worker that died fails each member of its task."""
        try:
            if worker.connection.poll():
                message = worker.connection.recv()
                if isinstance(message, EpochDone):
                    progress(message)
                    return None
                worker.task = None
                return message
        except (EOFError, OSError):
            pass
        task, worker.task = worker.task, None
        assert task is not None
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
            connection.send(run_task(task, progress_sender(connection)))
    except (signals.Terminated, EOFError, OSError):  # stopped by the driver, or the driver is gone
        pass
    finally:
        signals.ignore_from_now(signal.SIGTERM)  # leaving: a late SIGTERM has nothing left to stop


def progress_sender(connection: Connection) -> Callable[[EpochDone], None]:
    """A worker's progress to the driver; a driver that has stopped listening (it is stopping this worker, whose
    SIGTERM may still wait for a store call to end) must not fail the run it asked to end KILLED."""

    def send(event: EpochDone) -> None:
        with contextlib.suppress(OSError):
            connection.send(event)

    return send


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
