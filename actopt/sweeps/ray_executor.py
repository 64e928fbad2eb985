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
import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from actopt.errors import UserError, describe_error, mask_credentials
from actopt.sweeps.sweep import STOP_GRACE_SECONDS, available_cores, ignoring
from actopt.sweeps.tasks import Outcome, Task, run_task
from actopt.tracking import records, signals, store

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
# The driver's settings that workers need to log as it does: the store's credentials and TLS, and
# actopt's HTTP limits (not MLFLOW_RUN_ID and the like, which name the driver's own run).
CLIENT_VARIABLE_PREFIXES = ("MLFLOW_TRACKING_", "MLFLOW_HTTP_REQUEST_")
# Tracking URI schemes that are a path on this machine's disk.
FILE_SCHEMES = ("", "file", "sqlite")
# Tracking URIs that are a word, not a path: MLflow's names for a Databricks workspace.
NAMED_STORES = ("databricks", "databricks-uc", "uc")
WORKER_CRASHED = "its Ray worker died"


def import_ray() -> Any:
    """Ray, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cluster_is_local(address: str | None) -> bool:
    """Whether every Ray worker runs on this machine: a local instance (no address), or a head
    addressed on loopback (``127.0.0.1:6379``). Any other address may place tasks on other machines:
    another host, ``auto`` (the head is here, its nodes need not be), and every ``ray://`` client
    address, even on localhost, which is usually a port forwarded to a cluster elsewhere."""
    if not address or address == "local":
        return True
    if address.startswith("ray://") or ":" not in address:
        return False
    host = address.rsplit(":", 1)[0].strip("[]")
    return is_loopback(host)


def uri_host(uri: str) -> str | None:
    """The host a network tracking URI names (``http://h:5000``, ``postgresql://u@h/db``); None for a path."""
    parts = urlsplit(uri)
    if uri in NAMED_STORES:
        return uri
    if parts.scheme.split("+")[0] in FILE_SCHEMES:
        return None
    return parts.hostname or ""


def local_store_reason(uri: str) -> str | None:
    """Why workers on another machine could not use ``uri``, or None when they could."""
    host = uri_host(uri)
    if host is None:
        return "a file on this machine"
    if host == "" or is_loopback(host):
        return "reachable from this machine only"
    return None


def absolute_store_uri(uri: str) -> str:
    """``uri`` with a relative store path made absolute, so that workers, which do not run in the
    driver's folder, open the same store: ``sqlite:///mlflow.db`` -> ``sqlite:////here/mlflow.db``."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme == "sqlite":
        prefix, _, path = uri.partition(":///")
        if not path or path.startswith(":memory:"):
            raise UserError(f"the tracking URI {mask_credentials(uri)} is an in-memory store that no other process "
                            "sees; point MLFLOW_TRACKING_URI at a file or a tracking server")
        return f"{prefix}:///{os.path.abspath(path)}" if not path.startswith("/") else uri
    if scheme == "file":
        return f"file://{os.path.abspath(parts.path)}"
    if scheme == "" and uri not in NAMED_STORES:
        return os.path.abspath(uri)
    return uri


def worker_tracking_uri(uri: str, address: str | None) -> str:
    """The tracking URI the workers log to: the driver's, with relative paths made absolute.
    A store that workers on other machines cannot reach is refused when they may run elsewhere."""
    reason = local_store_reason(uri)
    if reason and not cluster_is_local(address):
        raise UserError(
            f"the tracking URI {mask_credentials(uri)} is {reason}, but Ray may run tasks on other machines of the "
            f"cluster at {address}: set MLFLOW_TRACKING_URI to a tracking server every node reaches "
            "(deploy/mlflow-server.sh starts one on PostgreSQL), or join a cluster on this machine "
            "(--ray-address 127.0.0.1:PORT)")
    return absolute_store_uri(uri)


def worker_environment(uri: str) -> dict[str, str]:
    """What workers need of the driver's environment: the tracking URI, and its MLflow settings
    (HTTP limits, credentials), which the workers of a remote cluster would otherwise lack."""
    variables = {name: value for name, value in os.environ.items() if name.startswith(CLIENT_VARIABLE_PREFIXES)}
    return {**variables, "MLFLOW_TRACKING_URI": uri}


@contextlib.contextmanager
def cancellable() -> Iterator[None]:
    """Let ``ray.cancel`` stop the run in this worker, as Ctrl-C stops ``actopt train``.

    Ray cancels a running task by raising KeyboardInterrupt through the SIGINT handler, which Ray
    workers set to "ignore"; with actopt's handler the interrupt ends the run KILLED, and never
    halfway through a store call. The worker gets its own handler back for its next task."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signals.interrupt_outside_store(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def own_signal_handlers() -> Iterator[None]:
    """Keep the driver's signal handlers: ``ray.init`` replaces SIGTERM's with one that exits at
    once, which would leave the sweep's runs RUNNING instead of ending them KILLED."""
    if threading.current_thread() is not threading.main_thread():  # Ray sets none there either
        yield
        return
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            if handler is not None:
                signal.signal(number, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the driver waits inside Ray, and deliver them once the call
    returns (within WAIT_SECONDS): Ray's blocking calls turn a KeyboardInterrupt raised by a signal
    handler into an exception, but any other (``signals.Terminated``) into a SystemError."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler is not None:
                signal.signal(number, handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)  # to the handler the sweep installed, which raises outside Ray


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

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
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
