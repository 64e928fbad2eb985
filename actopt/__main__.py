"""``python -m actopt`` and the ``actopt`` script. Importing the CLI takes seconds (torch, and mlflow after it): a
Ctrl-C in that time ends the command with 130 and one line, as it does later, not with a traceback."""

import sys


def run() -> None:
    try:
        from actopt.cli import main
    except KeyboardInterrupt:
        print("interrupted: before the run was created", file=sys.stderr)
        sys.exit(130)
    main(prog_name="actopt")  # what the messages and --help call the command, however it was started


if __name__ == "__main__":
    run()
