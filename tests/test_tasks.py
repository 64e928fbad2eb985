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
