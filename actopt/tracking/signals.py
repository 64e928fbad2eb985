"""Every signal handler of actopt: signals never cut a store call (SIGTERM becomes an exception, and both SIGINT
and SIGTERM wait until the main thread is outside MLflow, SQLAlchemy, sqlite and logging), signals ignored while
a sweep stops, and the handlers a Ray worker or driver needs."""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every ``finally`` runs and the run ends KILLED."""


def raise_on_sigterm() -> None:
    """Turn SIGTERM into ``Terminated`` in the main thread (sweeps and schedulers send it)."""
    interrupt_outside_store(signal.SIGTERM)


# Code that holds database transactions or a lock that other threads need. A signal raised in there can
# leave a sqlite write lock with a connection that nobody closes: every later write, the run's own KILLED
# status included, then fails. logging takes its module lock without try/finally (``Manager._clear_cache``,
# run by every ``setLevel``): a SIGTERM raised inside left it held, MLflow's system-metrics thread waited
# for it forever, and so did the run's end, which joins that thread (a CI run's `actopt train` never left).
GUARDED_MODULES = ("mlflow", "sqlalchemy", "sqlite3", "logging")
# How soon a signal that arrived inside guarded code is sent again.
SIGNAL_RETRY_SECONDS = 0.05


def in_guarded_code(frame: Any) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").split(".")[0] in GUARDED_MODULES:
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
    MLflow, database or logging code: there the signal is sent again a moment later, once the call is over.
    A SIGINT that this process ignores (a background job's) stays ignored."""

    def handler(signum: int, frame: Any) -> None:
        if in_guarded_code(frame):
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


def in_main_thread() -> bool:
    """Only the main thread may change signal handlers; elsewhere the helpers below leave them alone."""
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def ignoring(*numbers: int) -> Iterator[None]:
    """Ignore some signals for a moment: while a sweep stops its workers or closes its parent, a second Ctrl-C
    must not leave runs RUNNING or workers orphaned."""
    if not in_main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def ignore_from_now(number: int) -> None:
    """Ignore ``number`` for the rest of this process: a worker that is leaving has nothing left to stop."""
    signal.signal(number, signal.SIG_IGN)


@contextlib.contextmanager
def cancellable() -> Iterator[None]:
    """Let ``ray.cancel`` stop the run in this Ray worker, as Ctrl-C stops ``actopt train``.

    Ray cancels a running task by raising KeyboardInterrupt through the SIGINT handler, which Ray
    workers set to "ignore"; with actopt's handler the interrupt ends the run KILLED, and never
    halfway through a store call. The worker gets its own handler back for its next task."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt_outside_store(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def restore_handlers(saved: dict[int, Any]) -> None:
    """Put back handlers read with ``signal.getsignal`` (None: one not installed from Python, left as it is)."""
    for number, handler in saved.items():
        if handler is not None:
            signal.signal(number, handler)


@contextlib.contextmanager
def own_signal_handlers() -> Iterator[None]:
    """Keep this process's SIGINT and SIGTERM handlers through a call that replaces them (``ray.init`` sets one
    for SIGTERM that exits at once, which would leave a sweep's runs RUNNING instead of ending them KILLED)."""
    if not in_main_thread():  # Ray sets none there either
        yield
        return
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        restore_handlers(saved)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM during a blocking call into Ray, and deliver them once it returns: Ray's blocking
    calls turn a KeyboardInterrupt raised by a signal handler into an exception, but any other
    (``Terminated``) into a SystemError."""
    if not in_main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        restore_handlers(previous)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)  # to the handler installed before, which raises outside Ray
