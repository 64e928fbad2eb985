"""Where runs are stored: the tracking URI, bounded HTTP retries, and one-line errors for a store that fails."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

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
# Which row actopt last wrote into the environment (inherited by workers): a value that differs from
# that row's was set by the user.
APPLIED_LIMITS_VARIABLE = "ACTOPT_HTTP_LIMITS"


def apply_http_limits(use: str) -> None:
    """Write row ``use`` of HTTP_LIMITS where MLflow reads it (the environment, at each request),
    keeping every value the user exported."""
    previous = HTTP_LIMITS.get(os.environ.get(APPLIED_LIMITS_VARIABLE, ""), {})
    for name, value in HTTP_LIMITS[use].items():
        current = os.environ.get(name)
        if current is None or current == previous.get(name):
            os.environ[name] = value
    os.environ[APPLIED_LIMITS_VARIABLE] = use


def configure(use: str = "run") -> MlflowClient:
    """Point MLflow at the tracking URI with the HTTP limits of ``use``; returns a client for it."""
    apply_http_limits(use)
    masking.hide_credentials(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient(tracking_uri())


@contextlib.contextmanager
def quick_http() -> Iterator[None]:
    """MLflow requests with the "check" limits for a moment; the limits before it come back after."""
    names = [*HTTP_LIMITS["check"], APPLIED_LIMITS_VARIABLE]
    saved = {name: os.environ.get(name) for name in names}
    apply_http_limits("check")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


def store_failure(error: BaseException) -> str:
    """One line for an error of the store or of the artifact location, naming the store, and saying so when
    the run could not be marked FAILED."""
    if no_answer(error):
        return no_answer_message()
    cause = root_cause(error)
    what = describe_error(cause)
    line = (f"cannot write the run's artifacts: {what}" if isinstance(cause, OSError)
            else f"the tracking store {shown_uri()} failed: {what}")
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
