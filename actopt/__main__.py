"""``python -m actopt`` and the ``actopt`` script. Importing the CLI takes seconds (torch, and mlflow after it): a
Ctrl-C or SIGTERM in that time ends the command with 130 or 143 and one line, as it does later, not with a
traceback or a silent death by the signal."""

import os
import signal
import sys

# The shell's 128 + signal number, and the line each stop says before any run exists.
STOP_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
STOP_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class StoppedWhileLoading(BaseException):
    """SIGTERM while the CLI imports (SIGINT arrives as KeyboardInterrupt)."""


def stop_on_sigterm(signum, frame):
    raise StoppedWhileLoading


def leave(signum: int) -> None:
    # A half-imported torch or mlflow may leave exit handlers that a second signal, or the interrupted
    # import itself, turns into death by the signal (exit -2 instead of 130, seen in CI); nothing exists
    # yet that needs cleaning up, so the process leaves at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"{STOP_WORDS[signum]}: before the run was created", file=sys.stderr, flush=True)
    os._exit(STOP_EXIT_CODES[signum])


def run() -> None:
    # Each command replaces this handler with its own as it starts (actopt.cli.stopped_by_signals).
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        from actopt.cli import main
    except KeyboardInterrupt:
        leave(signal.SIGINT)
    except StoppedWhileLoading:
        leave(signal.SIGTERM)
    try:
        main(prog_name="actopt")  # what the messages and --help call the command, however it was started
    except StoppedWhileLoading:  # while click parsed the command line, before the command's own handler
        leave(signal.SIGTERM)


if __name__ == "__main__":
    run()
