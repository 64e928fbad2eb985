"""Where runs are stored: the tracking URI, bounded HTTP retries, and one-line errors for a store that fails."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from actopt.errors import UserError, describe_error, mask_credentials, one_line
from actopt.tracking import masking, schema

# MLflow 3's own default, stated here so that every actopt command agrees on it.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# mlflow run sets this for the process it starts; the run then already exists with our params.
RUN_ID_VARIABLE = "MLFLOW_RUN_ID"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set (a server, another store), else the sqlite file here."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def shown_uri(uri: str | None = None) -> str:
    """The tracking URI as every message, log line, tag and artifact shows it: without its password."""
    return mask_credentials(uri or tracking_uri())


# MLflow retries a failing HTTP request 7 times with doubling waits and a 120 s timeout: minutes of
# silence when a server is down. actopt bounds them, with one row per kind of request:
# - "run" (training runs and sweep bookkeeping): 5 retries, urllib3 waiting 0, 2, 4, 8 and 16 s between
#   them (factor × 2^(n-1), plus up to 1 s of jitter each): a server has about 30 s to come back, long
#   enough for `mlflow server` to restart (about 11 s on our 2-core machine), short enough that a server
#   that is gone is reported within a minute; 30 s per request bounds a server that hangs.
# - "read" (analysis and Python queries): a person waits at the terminal; a dead server is said in seconds.
# - "check" (the check before a command starts, and the last word of a run whose server has gone): a
#   server that is not there at the start is a wrong URI or a server not started, not a restart.
# The rule: each request uses the row of what it does (``configure(use)``; ``quick_http()`` for a
# check); a value the user exported in the environment wins over every row.
HTTP_LIMITS = {
    "run": {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"},
    "read": {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"},
    "check": {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"},
}
# Which row of HTTP_LIMITS is in the environment, while actopt holds one there (inherited by the workers a
# sweep starts meanwhile): a value that differs from that row's was set by the user.
APPLIED_LIMITS_VARIABLE = "ACTOPT_HTTP_LIMITS"


@contextlib.contextmanager
def restored_environment(names: Iterable[str]) -> Iterator[None]:
    """The variables ``names`` as they were on entry, once the block ends: MLflow reads its settings from the
    environment at each request, so actopt writes them there, for the length of a call only."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def http_limits(use: str, replace: bool = True) -> Iterator[None]:
    """Row ``use`` of HTTP_LIMITS where MLflow reads it, for the block, keeping every value the user exported.
    ``replace=False`` (each call of a client from ``configure``) leaves a row already in force as it is, so that
    the innermost ``quick_http`` or run scope decides."""
    applied = os.environ.get(APPLIED_LIMITS_VARIABLE, "")
    # A row counts as in force only while its values are there: a marker left without them (a scope that another
    # thread's scope outlived, a test that cleared MLflow's variables) would leave MLflow's defaults, minutes long.
    in_force = applied in HTTP_LIMITS and all(os.environ.get(name) is not None for name in HTTP_LIMITS[applied])
    with restored_environment([*HTTP_LIMITS[use], APPLIED_LIMITS_VARIABLE]):
        if replace or not in_force:
            previous = HTTP_LIMITS.get(applied, {})
            for name, value in HTTP_LIMITS[use].items():
                current = os.environ.get(name)
                if current is None or current == previous.get(name):
                    os.environ[name] = value
            os.environ[APPLIED_LIMITS_VARIABLE] = use
        yield


@contextlib.contextmanager
def tracking_scope(use: str = "run", replace: bool = True) -> Iterator[None]:
    """What MLflow needs around a request: the HTTP limits of ``use``, and its output kept free of passwords and
    of its "View run" lines (``masking.quiet_mlflow``); everything comes back as it was when the block ends."""
    with http_limits(use, replace), masking.quiet_mlflow():
        yield


@contextlib.contextmanager
def run_scope() -> Iterator[None]:
    """``tracking_scope("run")`` for the length of training runs, and MLflow's own tracking URI pointed at the
    store: ``mlflow.pytorch.log_model`` and the system-metrics monitor's thread use it, not our client."""
    from mlflow.tracking._tracking_service import utils

    with tracking_scope("run"), restored_environment(["MLFLOW_TRACKING_URI"]):
        previous = utils._tracking_uri  # set_tracking_uri has no getter of the value set, only of the one resolved
        mlflow.set_tracking_uri(tracking_uri())
        try:
            yield
        finally:
            if utils._tracking_uri != previous:
                mlflow.set_tracking_uri(previous)


class ScopedClient(MlflowClient):
    """An ``MlflowClient`` whose every public call runs inside ``tracking_scope(use, replace=False)``: the
    limits, masking and silence hold for each request, and nothing of them outlasts the call."""

    def __init__(self, uri: str, use: str) -> None:
        self.use = use
        with tracking_scope(use, replace=False):  # the client opens (a sqlite store: creates) its store here
            super().__init__(uri)

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name.startswith("_") or not inspect.ismethod(value):
            return value
        use = super().__getattribute__("use")

        @functools.wraps(value)
        def scoped(*args: Any, **options: Any) -> Any:
            with tracking_scope(use, replace=False):
                return value(*args, **options)

        return scoped


def configure(use: str = "run") -> MlflowClient:
    """A client for the tracking URI whose requests use the HTTP limits of ``use`` (unless a scope holds
    another row); nothing global is changed."""
    return ScopedClient(tracking_uri(), use)


@contextlib.contextmanager
def quick_http() -> Iterator[None]:
    """MLflow requests with the "check" limits for a moment; the limits before it come back after."""
    with tracking_scope("check"):
        yield


class StoreUnavailable(UserError):
    """The store cannot be opened, or its server gives no answer even after the retries: one line naming it."""


def no_answer(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it arose from, says that no answer came back from the server
    (refused, reset, timed out, or only 5xx while it restarts), as opposed to an answer saying no."""
    import requests

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                              requests.exceptions.RetryError)):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def retry_window() -> str:
    """The retries in effect, how long they pause in all and how long each try waits for an answer, in words:
    a server that hangs costs every try its timeout, which the pauses alone would not say."""
    settings = {name: os.environ.get(name, default) for name, default in HTTP_LIMITS["run"].items()}
    retries = int(settings["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    factor = float(settings["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    timeout = float(settings["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    waits = sum(factor * 2 ** number for number in range(1, retries))  # urllib3 does not wait before the first
    return f"{retries} retries over {waits:.0f} s, each try waiting up to {timeout:.0f} s for an answer"


def no_answer_message() -> str:
    return (f"no answer from the tracking server {shown_uri()} after {retry_window()}: is it running and "
            "reachable? (MLFLOW_TRACKING_URI chooses the store)")


def root_cause(error: BaseException) -> BaseException:
    """The first error of a chain: MLflow and SQLAlchemy wrap the one that says what happened
    ("database or disk is full") in errors that say where."""
    seen = {id(error)}
    while (cause := error.__cause__ or error.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        error = cause
    return error


# Set on an error after which the run could not be marked FAILED either (the store refused that too).
LEFT_RUNNING = "actopt_left_running"


# Code whose errors are the store's or the artifact location's: a traceback through it is a store error.
STORE_PACKAGES = frozenset({"mlflow", "sqlalchemy", "sqlite3", "alembic", "requests", "urllib3", "psycopg"})


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it arose from, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def raised_in_store(error: BaseException) -> bool:
    """Whether ``error`` (or one it arose from) was raised by the store, its client or the artifact location:
    raised in, or passing through, their code. An error of training itself (a shape, a NaN check, a bug) is
    not, and is not to be blamed on the store."""
    for item in chain(error):
        if type(item).__module__.split(".")[0] in STORE_PACKAGES:  # MlflowException, SQLAlchemy's, requests'
            return True
        trace = item.__traceback__
        while trace is not None:
            if trace.tb_frame.f_globals.get("__name__", "").split(".")[0] in STORE_PACKAGES:
                return True
            trace = trace.tb_next
    return False


def store_failure(error: BaseException, doing: str = "the command") -> str:
    """One line for an error that ended a run: naming the store, or the artifact location, when it was theirs,
    else what was being done (``doing``, say "training") and the error itself; and saying so when the run could
    not be marked FAILED."""
    if no_answer(error):
        return no_answer_message()
    cause = root_cause(error)
    what = describe_error(cause)
    if not raised_in_store(error):
        line = f"{doing} failed: {describe_error(error)}"
    elif isinstance(cause, OSError):
        line = f"cannot write the run's artifacts: {what}"
    else:
        line = f"the tracking store {shown_uri()} failed: {what}"
    if getattr(error, LEFT_RUNNING, False):
        line += ("; the run could not be marked FAILED either: it stays RUNNING until the next `actopt train` of "
                 "this configuration (or sweep of its study) marks it FAILED")
    return line


def check_store(report: Callable[[str], None] = lambda line: None) -> None:
    """Before any run exists: the store answers (quickly) and can be opened, else a one-line error. A sqlite
    store is created (and migrated) here under a lock, and one that a killed process left half-created is
    created again when it holds nothing."""
    uri = tracking_uri()
    try:
        with quick_http():
            def open_store() -> None:
                configure().search_experiments(max_results=1)  # a sqlite store is created (and migrated) here

            if not schema.prepare_sqlite_store(uri, open_store, report):
                open_store()
    except UserError:
        raise
    except Exception as error:  # MlflowException, requests' and SQLAlchemy's errors, OSError
        if no_answer(error):
            raise StoreUnavailable(f"no answer from the tracking server {shown_uri()}: is it running and "
                                   "reachable? (MLFLOW_TRACKING_URI chooses the store)") from None
        raise StoreUnavailable(f"cannot open the tracking store {shown_uri()}: {describe_error(error)}") from None


class StoreError(UserError):
    """The tracking store cannot be reached, or does not hold what was asked for."""


def connect():
    """An ``MlflowClient`` for reading actopt's tracking URI, with HTTP retries bounded to seconds; a sqlite
    store is created, or repaired, as ``check_store`` does."""
    schema.prepare_sqlite_store(tracking_uri(), lambda: configure("read").search_experiments(max_results=1))
    return configure("read")


@contextlib.contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Turn the store's failures (connection, bad filter, database) into a one-line ``StoreError``."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # MlflowException, requests and SQLAlchemy errors all end here
        from mlflow.exceptions import MlflowException

        text = one_line(str(error), limit=len(str(error)))
        if isinstance(error, MlflowException) and getattr(error, "error_code", "") == "INVALID_PARAMETER_VALUE":
            raise StoreError(f"the tracking store refused the query: {one_line(text)}") from None
        signs = ("NewConnectionError", "Connection refused", "Max retries exceeded", "timed out")
        if no_answer(error) or any(sign in text for sign in signs):
            raise StoreError(f"cannot read the tracking store {shown_uri(uri)}: no answer from the server (is it "
                             "running and reachable? MLFLOW_TRACKING_URI chooses the store)") from None
        raise StoreError(f"cannot read the tracking store {shown_uri(uri)}: {describe_error(error)}") from None
