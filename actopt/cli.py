"""``actopt`` on the command line: thin wrappers that parse, validate, then call the library.

Options are generated from ``TrainConfig``'s fields, so the CLI, the config and MLflow params
cannot drift apart (a test also holds MLproject to the same names).
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, fields
from typing import Any, Callable

import click

from actopt.config import TrainConfig, format_value
from actopt.errors import UserError


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One ``--option`` per config field. Values stay text here: ``TrainConfig.from_mapping``
    parses and validates them exactly as it parses MLproject parameters and logged params."""
    for item in reversed(fields(TrainConfig)):
        default = item.default if item.default is not MISSING else item.default_factory()
        help_text = f"{item.metadata['help']} [default: {format_value(default)}]"
        command = click.option(option_name(item.name), item.name, default=None, metavar="VALUE", help=help_text)(command)
    return command


def terminal_report(line: str) -> None:
    click.echo(line, err=True)


def progress_reporter() -> Callable[[str], None] | None:
    """Per-epoch lines on a terminal; silence when output goes to a file or a pipe."""
    return terminal_report if sys.stderr.isatty() else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """actopt: how activation functions and optimizers shape training, tracked in MLflow."""


@main.command("train")
@config_options
def train_command(**options: str | None) -> None:
    """Train one configuration as one MLflow run."""
    from actopt import tracking  # imports mlflow and torch: slow, and not needed for --help

    try:
        config = TrainConfig.from_mapping({key: value for key, value in options.items() if value is not None})
        prepared = tracking.prepare(config)
    except UserError as error:
        raise click.ClickException(str(error)) from None
    tracking.raise_on_sigterm()
    try:
        run_id, result = tracking.run_training(config, progress_reporter(), prepared=prepared)
    except KeyboardInterrupt:
        click.echo("interrupted: run ended KILLED", err=True)
        sys.exit(130)
    except tracking.Terminated:
        click.echo("terminated: run ended KILLED", err=True)
        sys.exit(143)
    status = f"diverged at epoch {result.diverged_epoch}" if result.diverged else "finished"
    best = (
        f"best epoch {result.best_epoch}, val accuracy {result.best_val_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}"
        if result.best_epoch is not None
        else "no epoch completed"
    )
    click.echo(f"run {run_id} ({config.run_name}) {status}: {best}")
