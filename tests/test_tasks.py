"""Group planning: configurations alike cut into groups of balanced sizes, in study order."""

from __future__ import annotations

import pytest

from actopt.core.member import group_key
from actopt.sweeps.study import configurations, load_study
from actopt.sweeps.tasks import balanced_sizes, plan_groups


@pytest.mark.parametrize(("count", "limit", "sizes"), [
    (9, 8, [5, 4]), (12, 8, [6, 6]), (8, 8, [8]), (17, 8, [6, 6, 5]), (1, 8, [1]), (5, 1, [1] * 5), (4, 3, [2, 2]),
])
def test_balanced_sizes_hold_everything_in_as_few_groups_as_the_limit_allows(count, limit, sizes):
    assert balanced_sizes(count, limit) == sizes


def test_balanced_sizes_for_every_count_and_limit():
    for limit in range(1, 10):
        for count in range(1, 40):
            sizes = balanced_sizes(count, limit)
            assert sum(sizes) == count and max(sizes) <= limit
            assert len(sizes) == -(-count // limit) and max(sizes) - min(sizes) <= 1


def test_the_flagship_study_plans_groups_two_workers_finish_together(tmp_path):
    configs = configurations(load_study("fashion-activations"), data_dir=str(tmp_path), download=False, device="cpu")
    tasks = plan_groups(configs, "parent", 8)
    # Per activation: SGD's 4 rates × 3 seeds as 6 + 6, Adam's 3 rates × 3 seeds as 5 + 4 (not 8 + 4 and 8 + 1).
    assert [len(task.configs) for task in tasks] == [6, 6, 5, 4] * 3
    assert [config for task in tasks for config in task.configs] == list(configs)  # study order, each once
    for task in tasks:
        assert len({group_key(config) for config in task.configs}) == 1


def test_the_epoch_of_a_training_line_alone_or_named_in_a_group():
    from actopt.sweeps.tasks import epoch_of

    assert epoch_of("epoch 3/10  train_loss 0.5000  train_acc 0.8000  val_loss 0.6  val_acc 0.7  0.12s") == 3
    assert epoch_of("relu-sgd-lr0.1 seed 2: epoch 12/20  train_loss 0.5  ...") == 12
    assert epoch_of("run abc left RUNNING by process 12: marked FAILED") is None


def test_a_group_reports_each_epoch_once_timed_from_its_start(tmp_path):
    from actopt.sweeps.tasks import EpochDone, epoch_reporter

    configs = configurations(load_study("fashion-activations"), data_dir=str(tmp_path), download=False, device="cpu")
    task = plan_groups(configs, "parent", 8)[0]
    sent: list[EpochDone] = []
    report = epoch_reporter(task, sent.append)
    for line in ("a seed 0: epoch 1/10  x", "b seed 1: epoch 1/10  x", "a seed 0: epoch 2/10  x", "other"):
        report(line)
    assert [(event.task, event.epoch) for event in sent] == [(task.digests[0], 1), (task.digests[0], 2)]
    assert all(0 <= event.seconds < 5 for event in sent)


def test_a_members_own_time_is_its_share_of_each_epoch_not_the_groups_time():
    from actopt.core.training import TrainResult
    from actopt.sweeps.tasks import finished_outcome

    # Step 0 is the measurement before training (no epoch_time); two members shared epochs of 3 s and 2 s.
    result = TrainResult(history={0: {"grad_norm": 1.0}, 1: {"epoch_time": 1.5}, 2: {"epoch_time": 1.0}},
                         best_val_accuracy=0.8)
    outcome = finished_outcome("digest", "run", result, seconds=9.0)
    assert (outcome.status, outcome.train_seconds, outcome.epochs, outcome.seconds) == ("FINISHED", 2.5, 2, 9.0)
    assert outcome.best_val_accuracy == 0.8 and not outcome.diverged
