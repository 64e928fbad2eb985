"""What a running sweep tells its user: a line per finished member, optionally a line per group and epoch,
and a time left estimated from measured epoch times.

Groups report each epoch they finish (``EpochDone``, sent from wherever they train: this process, a
worker process; a Ray task sends none, and its group counts once its outcomes arrive). The estimate is
the work left, in member-epochs, at the seconds per member-epoch measured so far, spread over the
workers: it needs no run to have finished, and settles once the first epochs are measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actopt.sweeps.study import label
from actopt.sweeps.summary import format_accuracy, format_seconds
from actopt.sweeps.tasks import EpochDone, Outcome, Task


@dataclass
class GroupState:
    """One group's measured progress."""

    task: Task
    epochs_done: int = 0
    seconds: float = 0.0  # since the group started, at its last epoch
    members_left: int = 0

    @property
    def epochs(self) -> int:
        return self.task.configs[0].epochs

    @property
    def members(self) -> int:
        return len(self.task.configs)


class Progress:
    """The sweep's progress lines, through ``report``: one per finished member (``[done/total]``, its own time,
    the time left) and, with ``epoch_lines``, one per group and epoch."""

    def __init__(self, tasks: Sequence[Task], workers: int, report: Callable[[str], None],
                 epoch_lines: bool = False) -> None:
        self.groups = {task.digests[0]: GroupState(task, members_left=len(task.configs)) for task in tasks}
        self.group_of = {digest: state for state in self.groups.values() for digest in state.task.digests}
        self.configs = {digest: config for task in tasks for digest, config in zip(task.digests, task.configs)}
        self.total = sum(len(task.configs) for task in tasks)
        self.workers = max(1, workers)
        self.report, self.epoch_lines = report, epoch_lines
        self.done = 0

    def epoch(self, event: EpochDone) -> None:
        state = self.groups.get(event.task)
        if state is None:
            return
        state.epochs_done, state.seconds = max(state.epochs_done, event.epoch), event.seconds
        if self.epoch_lines:
            self.report(f"  {state.task.name}: epoch {event.epoch}/{state.epochs} after "
                        f"{format_seconds(event.seconds)} ({state.members} members){self.eta_text()}")

    def outcome(self, outcome: Outcome) -> None:
        self.done += 1
        state = self.group_of[outcome.digest]
        state.members_left -= 1
        # A group that sends no epochs (a Ray task's) is measured by its outcomes; the end of a run counts too.
        state.epochs_done = max(state.epochs_done, outcome.epochs)
        state.seconds = max(state.seconds, outcome.seconds)
        self.report(self.finished_line(outcome))

    def finished_line(self, outcome: Outcome) -> str:
        status = "diverged" if outcome.diverged else outcome.status.lower()
        line = (f"[{self.done:>{len(str(self.total))}}/{self.total}] {status:<8} val "
                f"{format_accuracy(outcome.best_val_accuracy):>6} {format_seconds(outcome.train_seconds):>7}  "
                f"{label(self.configs[outcome.digest])}")
        if outcome.error:
            line += f"  ({outcome.error})"
        return line + (self.eta_text() if self.done < self.total else "  · all done")

    def seconds_left(self) -> float | None:
        """The time left: member-epochs still to train at the measured seconds per member-epoch, over the workers
        (never less than the longest group left takes alone); None before any epoch is measured."""
        measured = [state for state in self.groups.values() if state.epochs_done]
        work_done = sum(state.epochs_done * state.members for state in measured)
        if not work_done:
            return None
        rate = sum(state.seconds for state in measured) / work_done
        left = [(state.epochs - state.epochs_done) * state.members for state in self.groups.values()
                if state.members_left and state.epochs_done < state.epochs]
        if not left:
            return 0.0
        return rate * max(sum(left) / min(self.workers, len(left)), max(left))

    def eta_text(self) -> str:
        seconds = self.seconds_left()
        return "  · eta after the first epoch" if seconds is None else f"  · eta {format_seconds(seconds)}"

