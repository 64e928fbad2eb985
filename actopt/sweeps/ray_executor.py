"""Run a sweep's configurations as Ray tasks, on a Ray instance started here or on a cluster joined by address.

    actopt sweep fashion-activations --executor ray                        # a local Ray instance
    actopt sweep fashion-activations --executor ray --ray-address HOST:6379  # a running cluster

Each group of configurations (``tasks.plan_groups``) is one Ray task that asks for one CPU (and
one GPU where the cluster has GPUs and the group may use CUDA) and calls ``tasks.run_task``, exactly
as the local executors
do; the driver (``sweep.run_sweep``) plans, reports and closes the parent run as always. Ray is an
optional extra, imported only when this executor is created.

The driver ships the ``actopt`` package it runs with to the workers (Ray's ``py_modules``), so the
cluster trains with the same code that computed the configuration digests; the nodes need only
actopt's dependencies (torch, mlflow, ...). Workers log to the driver's tracking URI, with the
driver's ``MLFLOW_TRACKING_*`` (credentials, TLS) and ``MLFLOW_HTTP_REQUEST_*`` settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from actopt.errors import UserError, describe_error
from actopt.sweeps.executors import STOP_GRACE_SECONDS, available_cores, ignore_progress
from actopt.sweeps.ray_store import worker_environment, worker_tracking_uri
from actopt.sweeps.tasks import EpochDone, Outcome, Task, run_task
from actopt.tracking import records, store
from actopt.tracking.signals import cancellable, ignoring, own_signal_handlers, signals_held

INSTALL_HINT = "pip install 'actopt[ray]'"
# A worker that dies (node lost, process killed, out of memory) is started again twice: a lost node
# gets two more chances, and a configuration that kills its worker every time wastes only three.
MAX_RETRIES = 2
# Each task's CPU share, and so its torch threads: one thread per task beats two threads on one
# program for these small MLPs (benchmarks/RESULTS.md, sweep throughput), and fills the cluster's CPUs.
CPUS_PER_TASK = 1
# Tasks exchange only small records (a Task in, an Outcome out): a local instance needs no big store.
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20
# How often the driver wakes from waiting on Ray, so that a signal is handled promptly.
WAIT_SECONDS = 1.0
WORKER_CRASHED = "its Ray worker died"


def import_ray() -> Any:
    """Ray, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def train_in_worker(task: Task, threads: int) -> list[Outcome]:
    """The body of every Ray task: one group, on this task's share of the node's cores."""
    import torch

    os.environ.pop(store.RUN_ID_VARIABLE, None)  # a run of the driver's is not this task's
    torch.set_num_threads(threads)
    with cancellable():
        return run_task(task)


@dataclasses.dataclass(frozen=True)
class Connection:
    """What the executor found on connecting: shown to the user, and measured by the benchmark."""

    address: str  # the cluster's, or "a local instance"
    cpus: float
    gpus: float
    seconds: float  # to start or join the cluster

    def describe(self, cpus_per_task: int) -> str:
        return (f"Ray: {self.address}, {self.cpus:g} CPUs and {self.gpus:g} GPUs, connected in {self.seconds:.1f} s; "
                f"{cpus_per_task} CPU per group")


class RayExecutor:
    """One Ray task per group of configurations; see the module's docstring.

    Leaving ``run`` early (Ctrl-C, SIGTERM) cancels every task: queued ones never start, running
    ones get KeyboardInterrupt and end their runs KILLED; any still running after ``grace`` seconds
    are killed, and their runs marked KILLED by the driver. A task whose worker died is retried up
    to ``max_retries`` times by Ray, then counts as FAILED; no attempt of it is left RUNNING.
    """

    def __init__(self, address: str | None = None, max_retries: int = MAX_RETRIES,
                 cpus_per_task: int = CPUS_PER_TASK, local_cpus: int | None = None,
                 grace: float = STOP_GRACE_SECONDS) -> None:
        self.address = None if address in (None, "", "local") else address
        self.tracking_uri = worker_tracking_uri(store.tracking_uri(), self.address)
        self.ray = import_ray()
        self.max_retries = max_retries
        self.cpus_per_task = cpus_per_task
        self.local_cpus = local_cpus or available_cores()
        self.grace = grace
        self.connection: Connection | None = None
        self.remote: Any = None  # train_in_worker as a Ray remote function, once connected

    def connect(self) -> Connection:
        """Join the cluster at the address, or start a local instance; a one-line error when Ray cannot."""
        if self.connection is not None:
            return self.connection
        import actopt

        ray = self.ray
        runtime_env = {"py_modules": [os.path.dirname(actopt.__file__)],
                       "env_vars": worker_environment(self.tracking_uri)}
        # Usage statistics would be sent from a user's machine; they can set this to 1 themselves.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options: dict[str, Any] = {"runtime_env": runtime_env, "logging_level": logging.ERROR,
                                   "log_to_driver": False}
        if self.address is None:
            # "local": a new instance even where another one runs ("no address" would join that one).
            options.update(address="local", num_cpus=self.local_cpus, include_dashboard=False,
                           object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        else:
            options["address"] = self.address
        started = time.monotonic()
        try:
            with own_signal_handlers():
                ray.init(**options)
        except Exception as error:  # ConnectionError, ValueError for a malformed address, ...
            if self.address is None:
                raise UserError(f"cannot start a local Ray instance: {describe_error(error)}") from None
            # Ray turns token authentication on for `ray start` where ~/.ray/auth_token exists, but a
            # driver joining by address sends the token only when told to.
            hint = ("" if os.environ.get("RAY_AUTH_MODE")
                    else "; if the cluster uses token authentication, set RAY_AUTH_MODE=token")
            raise UserError(f"cannot join the Ray cluster at {self.address}: {describe_error(error)}{hint}") from None
        self.remote = ray.remote(train_in_worker)
        resources = ray.cluster_resources()
        self.connection = Connection(self.address or "a local instance", resources.get("CPU", 0.0),
                                     resources.get("GPU", 0.0), time.monotonic() - started)
        return self.connection

    def disconnect(self) -> None:
        """Leave the cluster; a local instance started here stops with it."""
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.ray.shutdown()
            self.connection = None

    def submit(self, task: Task) -> Any:
        # Workers do not run in the driver's folder: a relative data folder would be another one there.
        configs = tuple(config.replace(data_dir=os.path.abspath(config.data_dir)) for config in task.configs)
        shipped = dataclasses.replace(task, configs=configs)
        assert self.connection is not None
        gpus = 1 if self.connection.gpus and configs[0].device != "cpu" else 0
        options = self.remote.options(num_cpus=self.cpus_per_task, num_gpus=gpus, max_retries=self.max_retries,
                                      retry_exceptions=False, name=f"actopt:{task.name}")
        return options.remote(shipped, self.cpus_per_task)

    @property
    def workers(self) -> int | None:
        """Groups that train at once: the cluster's CPUs over each task's share, once connected."""
        return int(self.connection.cpus // self.cpus_per_task) or 1 if self.connection else None

    def starting(self, tasks: int) -> str | None:
        return None

    def run(self, tasks: Sequence[Task], progress: Callable[[EpochDone], None] = ignore_progress) -> Iterator[Outcome]:
        """Each group as a Ray task; ``progress`` hears nothing (no channel back from a task before it ends), so
        the sweep measures a group by its outcomes."""
        if not tasks:
            return
        pending: dict[Any, Task] = {}
        try:
            self.connect()
            submitted = time.monotonic()
            for task in tasks:
                pending[self.submit(task)] = task
            while pending:
                with signals_held():
                    ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
                for ref in ready:
                    yield from self.settle(ref, pending.pop(ref), time.monotonic() - submitted)
        finally:
            try:
                if pending:
                    self.stop(pending)
            finally:
                self.disconnect()

    def settle(self, ref: Any, task: Task, seconds: float) -> list[Outcome]:
        """The group's outcomes; a worker that died on every attempt fails every member."""
        try:
            outcomes = self.ray.get(ref)
        except self.ray.exceptions.RayError as error:
            message = self.explain(error)
            outcomes = [Outcome(digest, "FAILED", None, seconds, error=message) for digest in task.digests]
        # Attempts whose worker died were left RUNNING; whatever the last attempt did, they failed.
        for outcome in outcomes:
            for run_id in records.running_attempts(task.parent_run_id, outcome.digest):
                if run_id != outcome.run_id:
                    records.terminate_run(run_id, "FAILED", f"{WORKER_CRASHED}; Ray retried the configuration")
        return outcomes

    def explain(self, error: Exception) -> str:
        """Why Ray could not give a task's outcome, on one line."""
        exceptions = self.ray.exceptions
        if isinstance(error, exceptions.RayTaskError):  # the task itself raised: actopt or torch missing on a node, ...
            cause = error.cause if isinstance(error.cause, BaseException) else error
            return f"the Ray task failed: {describe_error(cause)}"
        if isinstance(error, (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.OutOfMemoryError,
                              exceptions.LocalRayletDiedError)):
            return f"{WORKER_CRASHED} on each of {self.max_retries + 1} attempts ({describe_error(error)})"
        return f"Ray could not run it: {describe_error(error)}"

    def stop(self, pending: dict[Any, Task]) -> None:
        """Cancel what is left; runs still RUNNING after the grace period end KILLED."""
        with ignoring(signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not leave runs RUNNING
            try:
                for ref in pending:
                    self.ray.cancel(ref)
                _, unfinished = self.ray.wait(list(pending), num_returns=len(pending), timeout=self.grace)
                for ref in unfinished:
                    self.ray.cancel(ref, force=True)
            except Exception:  # Ray itself is gone (a local instance hit by the same Ctrl-C)
                pass
            digests = {digest for task in pending.values() for digest in task.digests}
            for parent_run_id in {task.parent_run_id for task in pending.values()}:
                for run in records.sweep_children(parent_run_id):
                    if run.status == "RUNNING" and run.digest in digests:
                        records.terminate_run(run.run_id, "KILLED",
                                              "the sweep stopped; its Ray task did not end the run")
