"""``actopt`` on the command line: thin wrappers that parse, validate, then call the library.

Options are generated from ``TrainConfig``'s fields, so the CLI, the config and MLflow params
cannot drift apart (a test also holds MLproject to the same names). Named options are click
choices and numbers are typed and range-checked by click, so ``--help`` and shell completion show
them. This module imports neither torch nor mlflow: ``actopt --help`` and each TAB of completion
take a fraction of a second (a test counts the modules); the commands import what they use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import MISSING, Field, fields
from typing import Any

import click
from click.exceptions import NoArgsIsHelpError
from click.shell_completion import CompletionItem

from actopt.core.config import CHOICES, DEVICES, RANGES, TrainConfig, format_value, parse_boolean
from actopt.errors import UserError, mask_credentials

# Set by `mlflow run` for the process it starts: the run it made for the command (as tracking.store names it,
# without importing MLflow here).
RUN_ID_VARIABLE = "MLFLOW_RUN_ID"


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


class OptionalBoolean(click.ParamType):
    """Every boolean option of every subcommand: bare it is true (``--quick``), and it takes ``true`` / ``false``
    (``--log-model false``, ``--quick=false``), which is how MLproject passes its string parameters."""

    name = "boolean"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[true|false]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bool:
        try:
            return parse_boolean(value)
        except ValueError:
            self.fail(f"{value!r} is not true or false (a bare flag before an argument takes it as its value: "
                      "write it after the argument, or as --flag=true)", param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        return [CompletionItem(word) for word in ("true", "false") if word.startswith(incomplete)]


def boolean_option(name: str, destination: str, default: bool | None, help_text: str) -> Callable[..., Any]:
    return click.option(name, destination, type=OptionalBoolean(), is_flag=False, flag_value="true",
                        default=default, help=help_text)


class OrDefault(click.Choice):
    """A choice that also takes "" (what MLproject passes for an option left out) as "not given"."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return None if value in ("", None) else super().convert(value, param, ctx)


class Integer(click.IntRange):
    name = "integer"  # click's "integer range" reads oddly in "'two' is not a valid integer range"


class Number(click.FloatRange):
    name = "number"


def number_type(item: Field[Any]) -> click.ParamType:
    bounds = RANGES.get(item.name)
    limits = {} if bounds is None else {"min": bounds.minimum, "max": bounds.maximum,
                                        "min_open": bounds.minimum_open, "max_open": bounds.maximum_open}
    return Integer(**limits) if item.type == "int" else Number(**limits)


def field_option(item: Field[Any]) -> Callable[..., Any]:
    """The option of one config field. Its default stays None, so that ``TrainConfig.from_mapping`` fills in (and
    checks) only what was given, exactly as it does for MLproject parameters and logged params."""
    default = item.default if item.default is not MISSING else item.default_factory()  # type: ignore[misc]
    help_text = f"{item.metadata['help']} [default: {format_value(default)}]"
    name = option_name(item.name)
    if item.type == "bool":
        return boolean_option(name, item.name, None, help_text)
    if item.name in CHOICES:
        kind: click.ParamType | type = click.Choice(CHOICES[item.name])
    elif item.type in ("int", "float"):
        kind = number_type(item)
    elif item.name == "data_dir":
        kind = click.Path(file_okay=False)
    else:
        kind = str
    metavar = "W1,W2,..." if item.name == "hidden_sizes" else None
    return click.option(name, item.name, type=kind, default=None, metavar=metavar, help=help_text)


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One ``--option`` per config field."""
    for item in reversed(fields(TrainConfig)):
        command = field_option(item)(command)
    return command


def terminal_report(line: str) -> None:
    click.echo(line, err=True)


def progress_reporter() -> Callable[[str], None] | None:
    """Per-epoch lines on a terminal; silence when output goes to a file or a pipe."""
    return terminal_report if sys.stderr.isatty() else None


# Where the group notes which command it resolved.
COMMAND_KEY = "actopt.command"


class OneLineUsageError(click.ClickException):
    """A usage error (unknown option, missing argument, bad value) shown as one line, keeping exit code 2."""

    exit_code = 2


def one_line_usage(error: click.UsageError, command_path: str | None) -> OneLineUsageError:
    message = " ".join(error.format_message().split()).rstrip(".")
    if error.ctx is not None:
        command_path = error.ctx.command_path
    if command_path:
        message += f" (try '{command_path} --help')"
    return OneLineUsageError(message)


@contextlib.contextmanager
def usage_in_one_line(command_path: Callable[[], str | None] = lambda: None) -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:  # a bare `actopt` shows the help, as it should
        raise
    except click.UsageError as error:
        raise one_line_usage(error, command_path()) from None


@contextlib.contextmanager
def libraries_that_load() -> Iterator[None]:
    """torch and mlflow load inside each command; where they cannot (a low ``ulimit -v`` makes a shared
    library fail to map, or the import itself runs out of memory) that is one line, not a traceback."""
    try:
        yield
    except (ImportError, MemoryError) as error:
        from actopt.errors import import_failure

        message = import_failure(error)
        if message is None:  # not raised by an import: the command's own error
            raise
        raise click.ClickException(message) from None


class ActoptGroup(click.Group):
    """Click prints a usage error as usage, hint and error on three lines; every actopt error is one
    line ("Error: ..."), so that logs, CI output and scripts that read the last line keep it whole."""

    def make_context(self, *args: Any, **extra: Any) -> click.Context:
        with usage_in_one_line():
            return super().make_context(*args, **extra)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[COMMAND_KEY] = name  # some parse errors come without a context: this names the command
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        def command_path() -> str:
            return " ".join(filter(None, [ctx.command_path, ctx.meta.get(COMMAND_KEY)]))

        launcher = os.environ.get(RUN_ID_VARIABLE)  # the command may take it out of the environment
        with usage_in_one_line(command_path):  # parsing a command's options happens in here
            try:
                with libraries_that_load():
                    return super().invoke(ctx)
            except click.ClickException as error:  # the last word on a credential: none in any error line
                error.message = mask_credentials(error.message)
                if launcher:
                    from actopt.tracking import records

                    records.record_refusal(launcher, error.format_message())
                raise


@click.group("actopt", cls=ActoptGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """actopt: how activation functions and optimizers shape training, tracked in MLflow."""


# Exit codes of a command stopped by a signal, whatever it was doing: the shell's 128 + signal number.
SIGNAL_EXIT_CODES = {"KeyboardInterrupt": 130, "Terminated": 143}


@contextlib.contextmanager
def stopped_by_signals(what: str) -> Iterator[None]:
    """From a command's first line: Ctrl-C and SIGTERM never cut a store call, and end the command with 130 or
    143 and one line, also while imports and data loading run, before any run exists (click would say
    "Aborted!" and exit 1)."""
    from actopt.tracking import signals

    signals.interrupt_outside_store(signal.SIGINT, signal.SIGTERM)
    try:
        yield
    except (KeyboardInterrupt, signals.Terminated) as stop:
        # The command is leaving: a second Ctrl-C now would print a traceback, or kill it by the signal.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        name = type(stop).__name__
        click.echo(f"{'interrupted' if name == 'KeyboardInterrupt' else 'terminated'}: {what}", err=True)
        sys.exit(SIGNAL_EXIT_CODES[name])


@main.command("train")
@config_options
def train_command(**options: str | None) -> None:
    """Train one configuration as one MLflow run."""
    with stopped_by_signals("before the run was created"):
        config = parse_config(options)
        prepared = before_the_run(config)
    with stopped_by_signals("run ended KILLED"):
        run_id, result = train_one(config, prepared)
    status = f"diverged at epoch {result.diverged_epoch}" if result.diverged else "finished"
    best = (
        f"best epoch {result.best_epoch}, val accuracy {result.best_val_accuracy:.4f}, test accuracy "
        f"{result.test_accuracy:.4f}"
        if result.best_epoch is not None
        else "no epoch completed"
    )
    from actopt.tracking.records import run_name

    click.echo(f"run {run_id} ({run_name(config)}) {status}: {best}")


def parse_config(options: dict[str, str | None]) -> TrainConfig:
    try:
        return TrainConfig.from_mapping({key: value for key, value in options.items() if value is not None})
    except UserError as error:
        raise click.ClickException(str(error)) from None


def before_the_run(config: TrainConfig) -> Any:
    """``runlog.preflight``: every check that can refuse the command, before any run exists; returns the
    device and data."""
    from actopt.tracking import runlog  # imports mlflow and torch: slow, and not needed for --help

    try:
        return runlog.preflight(config, terminal_report)
    except UserError as error:
        raise click.ClickException(str(error)) from None


def train_one(config: TrainConfig, prepared: Any) -> Any:
    from actopt.errors import OutOfMemory
    from actopt.tracking import runlog, store

    try:
        return runlog.run_training(config, progress_reporter(), prepared=prepared)
    except (OutOfMemory, UserError) as error:  # said in the user's terms; the run ended FAILED
        raise click.ClickException(str(error)) from None
    except Exception as error:  # the run ended FAILED, or stays RUNNING when its server stopped answering,
        # until the next train of it marks it FAILED; the store is named only when the error was its own
        raise click.ClickException(store.store_failure(error, "training")) from None


def check_executor_options(options: Any) -> None:
    """Options that belong to the other executor, refused before anything is imported or said."""
    if options.executor == "process" and options.ray_address:
        raise UserError(f"--ray-address {options.ray_address} needs --executor ray")
    if options.executor == "ray" and options.workers != 1:
        raise UserError(f"--workers {options.workers} is for --executor process; on Ray each configuration takes "
                        "one CPU and the cluster's size sets how many run at once")


def process_executor(workers: int, ray_address: str) -> Any:
    from actopt.sweeps.executors import InlineExecutor, ProcessExecutor

    return InlineExecutor() if workers == 1 else ProcessExecutor(workers)


def ray_executor(workers: int, ray_address: str) -> Any:
    import os

    from actopt.sweeps.ray_executor import RayExecutor

    # Ray's own variable: set for the driver of a Ray job, and by users who always join one cluster.
    return RayExecutor(ray_address or os.environ.get("RAY_ADDRESS") or None)


EXECUTORS = {"process": process_executor, "ray": ray_executor}


def start_executor(executor: Any) -> str | None:
    """Start what the executor needs before any run exists, so that a Ray cluster that cannot be
    reached is a one-line error; returns what to tell the user about it."""
    from actopt.sweeps.executors import ProcessExecutor
    from actopt.sweeps.ray_executor import RayExecutor

    if isinstance(executor, RayExecutor):
        return executor.connect().describe(executor.cpus_per_task)
    if isinstance(executor, ProcessExecutor):
        return executor.describe()
    return None


def complete_study(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The presets' names; a path (with a / or ending .json) is left to the shell's file completion."""
    if "/" in incomplete or incomplete.endswith(".json"):
        return [CompletionItem(incomplete, type="file")]
    from actopt.sweeps.study import preset_names

    names = [CompletionItem(name) for name in preset_names() if name.startswith(incomplete)]
    return names or [CompletionItem(incomplete, type="file")]


@main.command("sweep")
@click.argument("study", shell_complete=complete_study)
@click.option("--workers", type=Integer(min=1), default=1, show_default=True,
              help="Groups trained at once; 2 or more run in worker processes with cores/workers threads each.")
@click.option("--group-size", type=Integer(min=1), default=8, show_default=True,
              help="Configurations that differ only in seed, init and optimizer numbers train together as one "
                   "stacked program of up to this many members; 1 trains each alone. Memory grows by about "
                   "240 MB per distinct seed in a group (docs/groups.md).")
@click.option("--executor", type=click.Choice(["process", "ray"]), default="process", show_default=True,
              help="process: this process, or --workers local processes; ray: one Ray task per group "
                   "(pip install 'actopt[ray]').")
@click.option("--ray-address", default="", metavar="ADDRESS",
              help="With --executor ray, the cluster to join: its head's HOST:PORT, ray://HOST:10001 or auto "
                   "[default: env RAY_ADDRESS, else a Ray instance started here for the sweep].")
@boolean_option("--quick", "quick", False,
                "Smoke run: every configuration trains 1 epoch of 5 batches and logs no model, in the experiment "
                "STUDY-quick [default: false].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder holding torchvision's raw dataset layout [default: env ACTOPT_DATA_DIR, else ./data].")
@boolean_option("--download", "download", True,
                "Download a missing dataset, once, before any run starts [default: true].")
@click.option("--device", type=OrDefault(list(DEVICES)), default=None,
              help="Device for every configuration [default: the study's, else auto].")
@click.option("--experiment-name", default=None,
              help="MLflow experiment [default: the study's name; under mlflow run, mlflow run's experiment].")
@click.option("--until-decided", type=OptionalBoolean(), is_flag=False, flag_value=True, default=False,
              help="After the declared seeds, add seeds only where a comparison is still undecided, judged by an "
                   "anytime-valid rule, until all are decided or the caps are reached (docs/analysis.md); also "
                   "on when the study file has 'until_decided'.")
@click.option("--max-seeds", type=int, default=0,
              help="With --until-decided: seeds per configuration at most [default: the study file's, else 20].")
@click.option("--max-runs", type=int, default=0,
              help="With --until-decided: runs in all at most, declared ones included [default: the study file's, "
                   "else no limit].")
def sweep_command(**given: Any) -> None:
    """Run a study: one parent MLflow run with one child run per configuration.

    STUDY is a preset's name (see `actopt studies`) or the path of a study file. Starting the same
    study again continues it: finished configurations are skipped, failed and killed ones run again.
    """
    from actopt.sweeps.options import SweepOptions

    options = SweepOptions(**given, epoch_lines=sys.stderr.isatty())
    with stopped_by_signals("the sweep stopped before any configuration started"):
        result = start_sweep(options)
    from actopt.sweeps.summary import next_step

    click.echo(summary_table_of(result))
    # An adaptive sweep's rows are its last look's: every configuration and seed it planned.
    rows = result.sweep.rows if options.until_decided else result.rows
    click.echo(next_step(rows, options.study, " --until-decided" if options.until_decided else ""))
    sys.exit(result.exit_code)


def summary_table_of(result: Any) -> str:
    from actopt.sweeps.summary import summary_table

    looks = getattr(result, "looks", None)
    if looks is None:
        return summary_table(result.rows)
    from actopt.analysis.adaptive import looks_summary

    return summary_table(result.sweep.rows) + "\n\n" + looks_summary(result.pairs, result.looks, result.stopped,
                                                                      result.measures)


def start_sweep(options: Any) -> Any:
    """The sweep that ``options`` (a ``SweepOptions``) asks for, its first line said before the slow imports."""
    import dataclasses

    from actopt.errors import choose
    from actopt.sweeps.options import first_line
    from actopt.sweeps.study import configurations, load_study
    from actopt.tracking import store  # imports mlflow: not needed for --help

    try:
        loaded = load_study(options.study)
        # The options' own mistakes are one line; the first line comes before anything slow.
        check_executor_options(options)
        budget = adaptive_budget(loaded, options.until_decided, options.max_seeds, options.max_runs)
        terminal_report(first_line(loaded.name, len(loaded.runs), options, store.shown_uri()))
        from actopt.sweeps.sweep import ensure_datasets, run_sweep  # imports torch: seconds
        from actopt.tracking import records

        engine = choose(EXECUTORS, options.executor, "executor")(options.workers, options.ray_address)
        launcher = records.take_launcher_run()  # (run id, experiment name) under mlflow run
        if launcher and options.experiment_name and options.experiment_name != launcher[1]:
            raise UserError(f"under mlflow run the experiment is mlflow run's own ({launcher[1]!r}): "
                            "give --experiment-name to mlflow run instead")
        configs = configurations(loaded, data_dir=options.data_dir or None, download=options.download,
                                 device=options.device or None, quick=options.quick,
                                 experiment_name=launcher[1] if launcher else options.experiment_name)
        options = dataclasses.replace(options, launcher_run_id=launcher[0] if launcher else None)
        store.check_store(terminal_report)
        records.check_experiment(configs[0].experiment_name)
        ensure_datasets(configs)
        started = start_executor(engine)
        if started:
            terminal_report(started)
        if budget is not None:
            from actopt.analysis.adaptive import sweep_until_decided

            return sweep_until_decided(loaded, configs, engine, budget, options, terminal_report)
        return run_sweep(loaded, configs, engine, options, terminal_report)
    except UserError as error:
        raise click.ClickException(str(error)) from None
    except Exception as error:  # the store or the artifact location failed
        raise click.ClickException(store.store_failure(error)) from None


def adaptive_budget(study: Any, until_decided: bool, max_seeds: int, max_runs: int) -> Any:
    """The caps of --until-decided (the options over the study file's), or None for a sweep of the declared seeds."""
    from actopt.analysis.adaptive import Budget
    from actopt.sweeps.study import DEFAULT_MAX_SEEDS, check_max_seeds

    file = study.until_decided
    if not until_decided and file is None:
        if max_seeds or max_runs:
            raise UserError("--max-seeds and --max-runs need --until-decided (or 'until_decided' in the study file)")
        return None
    if max_seeds < 0 or max_runs < 0:
        raise UserError(f"--max-seeds and --max-runs must be positive, got {max_seeds} and {max_runs}")
    seeds = max_seeds or (file or {}).get("max_seeds", DEFAULT_MAX_SEEDS)
    check_max_seeds(seeds, len({run["seed"] for run in study.runs}), "--max-seeds")
    return Budget(seeds, max_runs or (file or {}).get("max_runs"))


@main.command("studies")
def studies_command() -> None:
    """List the preset studies that `actopt sweep NAME` runs."""
    import textwrap

    from actopt.sweeps.study import load_study, preset_names

    for name in preset_names():
        study = load_study(name)
        click.echo(f"{name}  ({len(study.runs)} runs)")
        click.echo(textwrap.fill(study.description, width=100, initial_indent="    ", subsequent_indent="    "))


@main.command("analyze")
@click.option("--experiment", required=True, help="MLflow experiment (name or id) whose runs are analysed.")
@click.option("--parent-run-id", default="", help="Only the child runs of this sweep parent run.")
@click.option("--filter", "filter_string", default="",
              help="MLflow search filter, e.g. \"params.optimizer = 'sgd'\" or \"tags.study = 'fashion-activations'\".")
@click.option("--output-dir", default="analysis", show_default=True,
              help="The report and figures go to OUTPUT_DIR/<experiment>/.")
@boolean_option("--log", "log", True,
                "Also log the report and figures as the artifacts of an MLflow run named 'analysis' [default: true].")
def analyze_command(experiment: str, parent_run_id: str, filter_string: str, output_dir: str, log: bool) -> None:
    """Compare an experiment's runs: figures and a markdown report of findings computed from what they logged."""
    from actopt.analysis import (
        analyze,  # imports mlflow, pandas and matplotlib: slow, and not needed for --help
    )

    try:
        with stopped_by_signals("analysis run ended KILLED"):
            outcome = analyze.analyze_experiment(experiment, parent_run_id or None, filter_string or None, output_dir,
                                                 log)
    except UserError as error:
        raise click.ClickException(str(error)) from None
    written = outcome.written
    logged = f"; analysis run {outcome.run_id}" if outcome.run_id else ""
    click.echo(f"{written.report}: {outcome.runs} run(s), {len(written.findings)} finding(s), {len(written.figures)} "
               f"figures ({len(written.skipped)} not drawn, reasons in the report){logged}")
    for run_id, problem in outcome.history_problems.items():
        terminal_report(f"run {run_id}: {problem}")
