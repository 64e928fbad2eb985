"""A sweep's unit of work: a group of configurations trained as one stacked program, and its outcomes.

``plan_groups`` cuts the configurations still to run into ``Task``s; ``run_task`` trains one
wherever an executor runs it (this process, a worker process, a Ray task) and returns one
``Outcome`` per member.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actopt.core import metric_names
from actopt.core.config import TrainConfig, config_digest
from actopt.core.data import DatasetSplits
from actopt.core.inputs import DataCache
from actopt.core.member import group_key
from actopt.core.run_end import own_seconds
from actopt.errors import describe_error
from actopt.sweeps import options
from actopt.tracking import records, runlog, store

# Members per group: its reasons are given where it is set.
DEFAULT_GROUP_SIZE = options.DEFAULT_GROUP_SIZE


@dataclass(frozen=True)
class Task:
    """A group of configurations to train as one stacked program, each member a child run of
    ``parent_run_id``: plain data that any engine can ship."""

    configs: tuple[TrainConfig, ...]
    digests: tuple[str, ...]
    parent_run_id: str

    @property
    def name(self) -> str:
        first = self.configs[0].run_name
        return first if len(self.configs) == 1 else f"{first} +{len(self.configs) - 1}"


@dataclass(frozen=True)
class Outcome:
    digest: str
    status: str  # FINISHED or FAILED; a stopped task reports nothing (its run ends KILLED)
    run_id: str | None
    seconds: float  # since its group started: data, runs and the other members' training included
    diverged: bool = False
    best_val_accuracy: float | None = None
    error: str | None = None
    # The tracking server stopped answering: nothing more can be recorded, so the sweep stops.
    unreachable: bool = False
    # The member's own training time: its share of each of its group's epochs (the runs' epoch_time metric).
    train_seconds: float | None = None
    epochs: int = 0  # the epochs it completed (its diverging one included)


# The data of the last group, kept for the next: a study's groups mostly share dataset and seeds.
_prepared = DataCache()


def prepare_shared(configs: Sequence[TrainConfig]) -> tuple[Any, list[DatasetSplits]]:
    """Each member's data; splits already loaded for the previous group are reused, others dropped."""
    return _prepared.prepare(configs)


# The start of training's per-epoch line (``epoch 3/10  train_loss ...``), after the member's name in a group.
EPOCH_LINE = re.compile(r"(?:^|: )epoch (\d+)/(\d+)  ")


@dataclass(frozen=True)
class EpochDone:
    """A group has finished an epoch; ``seconds`` since the group started (data and runs included)."""

    task: str  # the group's key: its first member's digest
    epoch: int
    seconds: float


def epoch_of(line: str) -> int | None:
    """The epoch a training progress line reports, None for any other line."""
    found = EPOCH_LINE.search(line)
    return int(found.group(1)) if found else None


def epoch_reporter(task: Task, send: Callable[[EpochDone], None]) -> Callable[[str], None]:
    """The ``report`` a group trains with: one ``EpochDone`` per epoch (its first member's line), timed from now."""
    started = time.monotonic()
    last = 0

    def report(line: str) -> None:
        nonlocal last
        epoch = epoch_of(line)
        if epoch is not None and epoch > last:
            last = epoch
            send(EpochDone(task.digests[0], epoch, time.monotonic() - started))

    return report


def finished_outcome(digest: str, run_id: str, result: runlog.TrainResult, seconds: float) -> Outcome:
    """A member whose run ended FINISHED, with its own time (``run_end.own_seconds``, what its run logs as
    ``train_seconds``): the sum of its share of each epoch."""
    epochs = sum(metric_names.EPOCH_TIME in metrics for metrics in result.history.values())
    return Outcome(digest, "FINISHED", run_id, seconds, result.diverged, result.best_val_accuracy,
                   train_seconds=own_seconds(result.history), epochs=epochs)


def run_task(task: Task, progress: Callable[[EpochDone], None] | None = None) -> list[Outcome]:
    """Train one group, each member a child run; an exception fails this group's unfinished members alone
    (members that had already finished, a diverged one, keep their FINISHED runs). ``progress`` gets a
    ``EpochDone`` at the end of each of the group's epochs."""
    started = time.time()
    done: dict[int, Outcome] = {}

    def finished(index: int, run_id: str, result: runlog.TrainResult) -> None:
        done[index] = finished_outcome(task.digests[index], run_id, result, time.time() - started)

    report = epoch_reporter(task, progress) if progress is not None else None
    try:
        prepared = prepare_shared(task.configs)
        runlog.run_group(task.configs, report, parent_run_id=task.parent_run_id, tags=records.process_tags(),
                         prepared=prepared, finished=finished)
    except Exception as error:  # KeyboardInterrupt and signals.Terminated pass: the sweep is stopping
        return failed_outcomes(task, error, done, started)
    return [done[index] for index in range(len(task.configs))]


def failed_outcomes(task: Task, error: Exception, done: dict[int, Outcome], started: float) -> list[Outcome]:
    """Each member's outcome once its group raised: the finished keep theirs, the others fail with the error."""
    message = describe_error(error)
    unreachable = store.no_answer(error)  # recording the failure would wait out the retries again, in vain
    outcomes = []
    for index, (config, digest) in enumerate(zip(task.configs, task.digests)):
        if index in done:
            outcomes.append(done[index])
            continue
        run_id = None
        if not unreachable:
            tags = {records.CONFIG_DIGEST_TAG: digest, **records.process_tags()}
            try:
                run_id = records.record_failure(config, task.parent_run_id, tags, started, message,
                                                traceback.format_exc())
            except Exception:  # the store itself failing: the outcome still says what happened
                run_id = None
        outcomes.append(Outcome(digest, "FAILED", run_id, time.time() - started, error=message,
                                unreachable=unreachable))
    return outcomes


def balanced_sizes(count: int, limit: int) -> list[int]:
    """``count`` members in as few groups of at most ``limit`` as hold them, their sizes differing by one at most:
    9 with a limit of 8 is 5 + 4, not 8 + 1, so that two workers finish together instead of one waiting on a
    group of eight while the other trains one member."""
    groups = -(-count // limit)
    size, larger = divmod(count, groups)
    return [size + 1] * larger + [size] * (groups - larger)


def plan_groups(configs: Sequence[TrainConfig], parent_run_id: str, group_size: int) -> list[Task]:
    """Configurations that shape the computation alike, in study order, cut into groups of at most ``group_size``
    of balanced sizes."""
    by_key: dict[tuple[Any, ...], list[TrainConfig]] = {}
    for config in configs:
        key = (*group_key(config), config.data_dir, config.download, config.experiment_name)
        by_key.setdefault(key, []).append(config)
    tasks = []
    for members in by_key.values():
        start = 0
        for size in balanced_sizes(len(members), group_size):
            chunk = tuple(members[start : start + size])
            start += size
            tasks.append(Task(chunk, tuple(config_digest(config) for config in chunk), parent_run_id))
    return tasks
