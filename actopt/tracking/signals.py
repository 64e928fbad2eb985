"""Signals that never cut a store call: SIGTERM becomes an exception, and both SIGINT and SIGTERM wait until the main
thread is outside MLflow, SQLAlchemy and sqlite."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from typing import Any


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every ``finally`` runs and the run ends KILLED."""


def raise_on_sigterm() -> None:
    """Turn SIGTERM into ``Terminated`` in the main thread (sweeps and schedulers send it)."""
    interrupt_outside_store(signal.SIGTERM)


# Code that holds database transactions. A signal raised in there can leave a sqlite write lock with
# a connection that nobody closes: every later write, the run's own KILLED status included, then fails.
STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3")
# How soon a signal that arrived inside the store is sent again.
SIGNAL_RETRY_SECONDS = 0.05


def in_store(frame: Any) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").split(".")[0] in STORE_MODULES:
            return True
        frame = frame.f_back
    return False


def signal_again(signum: int) -> None:
    """Send this process ``signum`` once more. A real signal also wakes a main thread blocked in a
    system call; where the signal is blocked (Ray's workers block SIGINT in every thread, and
    ``ray.cancel`` simulates it), the handler is called without one."""
    if signum in signal.pthread_sigmask(signal.SIG_BLOCK, []):
        _thread.interrupt_main(signum)
    else:
        os.kill(os.getpid(), signum)


def interrupt_outside_store(*signals: int) -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM ``Terminated`` in the main thread, but never inside
    MLflow or database code: there the signal is sent again a moment later, once the call is over.
    A SIGINT that this process ignores (a background job's) stays ignored."""

    def handler(signum: int, frame: Any) -> None:
        if in_store(frame):
            again = threading.Timer(SIGNAL_RETRY_SECONDS, signal_again, (signum,))
            again.daemon = True  # a process that is leaving anyway does not wait for it
            again.start()
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise Terminated(f"signal {signum}")

    for number in signals:
        if number == signal.SIGINT and signal.getsignal(number) is signal.SIG_IGN:
            continue
        signal.signal(number, handler)
    if not getattr(sys.unraisablehook, "resends_signals", False):
        sys.unraisablehook = resending_hook(sys.unraisablehook)


# The signal each stop exception stands for.
STOP_SIGNALS = {KeyboardInterrupt: signal.SIGINT, Terminated: signal.SIGTERM}


def resending_hook(previous: Any) -> Any:
    """An unraisable-exception hook that sends a swallowed signal again. The handler's exception can land in a
    finalizer or a weakref callback (a WeakKeyDictionary's), where Python prints "Exception ignored in" and goes
    on: the sweep would train on. Sent again a moment later, it lands in ordinary code."""

    def hook(unraisable: Any) -> None:
        signum = STOP_SIGNALS.get(type(unraisable.exc_value)) if unraisable.exc_value is not None else None
        if signum is None:
            previous(unraisable)
            return
        again = threading.Timer(SIGNAL_RETRY_SECONDS, signal_again, (signum,))
        again.daemon = True
        again.start()

    hook.resends_signals = True  # type: ignore[attr-defined]
    return hook
