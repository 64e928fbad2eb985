"""``python -m actopt`` and the ``actopt`` script. Importing the CLI takes seconds (torch, and mlflow after it): a
Ctrl-C in that time ends the command with 130 and one line, as it does later, not with a traceback."""

import os
import signal
import sys


def run() -> None:
    try:
        from actopt.cli import main
    except KeyboardInterrupt:
        # A half-imported torch or mlflow may leave exit handlers that a second Ctrl-C, or the interrupted
        # import itself, turns into death by SIGINT (exit -2 instead of 130, seen in CI); nothing exists
        # yet that needs cleaning up, so the process leaves at once.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("interrupted: before the run was created", file=sys.stderr, flush=True)
        os._exit(130)
    main(prog_name="actopt")  # what the messages and --help call the command, however it was started


if __name__ == "__main__":
    run()
