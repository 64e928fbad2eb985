"""The signal helpers: what each installs, and that every one gives the previous handlers back."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from actopt.tracking import signals


def marker(number, frame):  # a handler of the test's own, to see it come back
    raise AssertionError("not expected")


@pytest.fixture
def own_handlers():
    previous = {number: signal.signal(number, marker) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in previous.items():
        signal.signal(number, handler)


def test_ignoring_ignores_for_a_moment_then_restores(own_handlers):
    with signals.ignoring(signal.SIGINT, signal.SIGTERM):
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: nothing raised
    assert signal.getsignal(signal.SIGINT) is marker and signal.getsignal(signal.SIGTERM) is marker


def test_ignoring_outside_the_main_thread_changes_nothing(own_handlers):
    seen = []

    def body():
        with signals.ignoring(signal.SIGINT):
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [marker]


def test_ignore_from_now_leaves_the_signal_ignored(own_handlers):
    signals.ignore_from_now(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_own_signal_handlers_undo_a_call_that_replaces_them(own_handlers):
    with signals.own_signal_handlers():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as ray.init does
    assert signal.getsignal(signal.SIGTERM) is marker


def test_signals_held_are_delivered_once_the_call_returns(own_handlers):
    signals.raise_on_sigterm()
    with pytest.raises(signals.Terminated):
        with signals.signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # the same signal twice is delivered once
            held = "still inside"
    assert held == "still inside"


def test_cancellable_turns_sigint_into_keyboard_interrupt_and_restores_the_ignored_handler(own_handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a Ray worker
    with pytest.raises(KeyboardInterrupt):
        with signals.cancellable():
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_stop_exceptions_name_their_signals():
    assert signals.STOP_SIGNALS == {KeyboardInterrupt: signal.SIGINT, signals.Terminated: signal.SIGTERM}
