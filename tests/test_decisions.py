"""Intervals over seeds and the decisions built on them, on synthetic run tables (no store)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from actopt.analysis import decisions, statistics
from actopt.analysis.tables import CHANCE_MARGIN

# Student t's 97.5% quantile with 2 degrees of freedom, from printed tables.
T_2 = 4.302653


def run_table(rows: list[dict]) -> pd.DataFrame:
    """A run table as tables.run_table makes it, with the columns the decisions read."""
    defaults = {"optimizer": "adam", "learning_rate": 0.001, "seed": 0, "diverged": False, "epochs_to_95": 2.0,
                "final_gap": 0.01, "chance": 0.1, "time_per_epoch": 1.0}
    table = pd.DataFrame([{**defaults, **row} for row in rows])
    table["best_val_accuracy"] = table.get("best_val_accuracy", table["test_accuracy"])
    table["learned"] = table["best_val_accuracy"] > table["chance"] + CHANCE_MARGIN
    table["run_id"] = [f"{index:032x}" for index in range(len(table))]
    table["run_name"] = [f"run{index}" for index in range(len(table))]
    return table


def test_mean_interval_matches_a_hand_computed_case():
    # mean 0.83; s = √((0.03² + 0.01² + 0.04²) / 2) = 0.0360555; half-width 4.302653 × s / √3 = 0.0895667
    interval = statistics.mean_interval([0.80, 0.82, 0.87])
    assert interval.mean == pytest.approx(0.83)
    assert (interval.low, interval.high) == pytest.approx((0.83 - 0.0895667, 0.83 + 0.0895667), abs=1e-6)
    assert interval.count == 3 and interval.describe(100, 1) == "83.0 [74.0, 92.0]"


def test_one_value_has_no_interval_and_nan_is_left_out():
    single = statistics.mean_interval([0.9, math.nan])
    assert single.count == 1 and not single.defined and single.describe(100, 1) == "90.0"
    assert statistics.mean_interval([]).count == 0


def test_paired_difference_pairs_by_seed_and_drops_unpaired_seeds():
    first = pd.Series({0: 0.90, 1: 0.80, 2: 0.85, 3: 0.70})
    second = pd.Series({0: 0.88, 1: 0.79, 2: 0.82})
    difference = statistics.paired_difference(first, second)
    assert difference.count == 3
    assert difference.mean == pytest.approx((0.02 + 0.01 + 0.03) / 3)
    # The unpaired interval of the same numbers is far wider: the seeds' shared luck is not removed.
    unpaired = statistics.mean_interval(first[:3]).high - statistics.mean_interval(first[:3]).low
    assert difference.high - difference.low < unpaired / 4


def comparison(delta: float, spread: float) -> decisions.Finding:
    """relu beats tanh by ``delta`` on average, the per-seed differences being delta − spread, delta, delta + spread."""
    rows = []
    for seed, base in enumerate((0.80, 0.90, 0.85)):
        rows.append({"activation": "relu", "seed": seed, "test_accuracy": base + delta + (seed - 1) * spread})
        rows.append({"activation": "tanh", "seed": seed, "test_accuracy": base})
    # Seed order differs from the spread's: seed 0 gets −spread, seed 1 0, seed 2 +spread.
    [found] = decisions.factor_decisions(run_table(rows), "activation", "Activations", decisions.TEST_ACCURACY)
    return found


@pytest.mark.parametrize("factor, verdict", [(0.99, "undecided"), (1.01, "holds")])
def test_a_paired_decision_flips_exactly_where_the_interval_leaves_zero(factor, verdict):
    spread = 0.004
    half_width = T_2 * spread / math.sqrt(3)  # the differences' s is the spread itself
    found = comparison(factor * half_width, spread)
    assert found.kind == verdict
    if verdict == "holds":
        assert found.statement.startswith("relu beats tanh on test accuracy by 1.0 points (95% CI [0.0, ")
    else:
        expected = "cannot decide between relu and tanh: relu − tanh = 1.0 points (95% CI [-0.0,"
        assert found.statement.startswith(expected)
        assert found.statement.endswith("3 seeds), an interval that includes zero.")


def test_one_seed_falls_back_to_the_fixed_margin():
    rows = [{"activation": "relu", "test_accuracy": 0.90}, {"activation": "tanh", "test_accuracy": 0.894}]
    [found] = decisions.factor_decisions(run_table(rows), "activation", "Activations", decisions.TEST_ACCURACY)
    assert found.kind == "holds" and "(1 seed: a lead of more than 0.5 points)" in found.statement


@pytest.mark.parametrize("tanh_epochs, verdict", [((5, 5, 6), "holds"), ((4, 5, 6), "undecided")])
def test_runs_at_chance_are_left_out_of_convergence_speed(tanh_epochs, verdict):
    rows = []
    for seed in range(3):
        rows.append({"activation": "relu", "seed": seed, "test_accuracy": 0.95, "epochs_to_95": 3.0})
        rows.append({"activation": "tanh", "seed": seed, "test_accuracy": 0.94, "epochs_to_95": tanh_epochs[seed]})
        # Never left chance, so its "95% of its best" came at epoch 1: not a fast run, a dead one.
        rows.append({"activation": "sigmoid", "seed": seed, "test_accuracy": 0.1135, "epochs_to_95": 1.0})
    found = decisions.convergence(run_table(rows))
    # By hand: tanh − relu = 2, 2, 3 epochs: mean 2.33, s 0.577, half-width 4.303 × 0.577 / √3 = 1.43;
    # 1, 2, 3 epochs: mean 2, s 1, half-width 2.48, an interval that includes zero.
    expected = {"holds": "relu reaches 95% of its best validation accuracy sooner than tanh by 2.3 epochs (95% CI "
                         "[0.9, 3.8], 3 seeds).",
                "undecided": "cannot decide between relu and tanh: tanh − relu = 2 epochs (95% CI [-0.5, 4.5], "
                             "3 seeds), an interval that includes zero."}
    assert [(item.kind, item.statement) for item in found] == [
        (verdict, expected[verdict]),
        ("absent", "Left out of convergence speed, as runs that did not learn: sigmoid: 3.")]
    assert [item.statement for item in decisions.chance_runs(run_table(rows))] == [
        "sigmoid: 3 of 3 runs did not learn (chance 0.1000)."]


def depth_study() -> pd.DataFrame:
    """At depth 20 the default initialisation leaves every activation at chance and the matched one
    trains all but sigmoid; at depth 5 everything trains."""
    matched = {"relu": "kaiming", "tanh": "xavier", "sigmoid": "xavier"}
    rows = []
    for depth in (5, 20):
        for activation, good in matched.items():
            for init in ("default", good):
                for seed in range(3):
                    learned = depth == 5 or (init != "default" and activation != "sigmoid")
                    accuracy = 0.96 + 0.001 * seed if learned else 0.1135
                    rows.append({"activation": activation, "depth": depth, "init": init, "optimizer": "sgd",
                                 "learning_rate": 0.01, "seed": seed, "test_accuracy": accuracy})
    return run_table(rows)


def test_the_deciding_parameter_is_named_on_a_synthetic_depth_study():
    found = decisions.deciding_factor(depth_study())
    statements = {item.statement for item in found if item.kind == "holds"}
    assert ("At depth 20, init decides whether runs learned: init default: 0 of 9 learned (mean best val 0.114); "
            "init kaiming: 3 of 3 learned (mean best val 0.961); init xavier: 3 of 6 learned (mean best val 0.537); "
            "exceptions: sigmoid · init xavier did not learn (3 runs).") in statements
    # Over the whole study depth explains most: every depth-5 run learned.
    assert any(item.startswith("Depth decides whether runs learned: depth 5: 18 of 18 learned") for item in statements)
    assert not any(item.statement.startswith("At depth 5") for item in found)  # every run learned there


def test_no_deciding_parameter_when_learning_does_not_split_by_any():
    table = depth_study()
    rng = np.random.default_rng(0)
    table["learned"] = rng.permutation(np.arange(len(table)) % 2 == 0)
    found = decisions.deciding_factor(table)
    assert found and all(item.kind == "undecided" for item in found)


def test_dropout_effect_is_reported_with_intervals_per_activation():
    rows = []
    for seed in range(3):
        for dropout, gap, accuracy in ((0.0, 0.030, 0.970), (0.5, 0.010 + 0.001 * seed, 0.972)):
            rows.append({"activation": "relu", "dropout": dropout, "seed": seed, "final_gap": gap,
                         "test_accuracy": accuracy, "best_val_accuracy": accuracy})
    [found] = decisions.dropout_effect(run_table(rows))
    # gap change −2.0, −1.9, −1.8 points: mean −1.9, s 0.1, half-width 0.248
    assert found.kind == "holds"
    assert found.statement == ("relu: dropout 0.5 narrowed the train/validation gap by 1.9 points (95% CI [-2.1, "
                               "-1.7], 3 seeds; from 3.0 to 1.1 points) and changed best validation accuracy by +0.2 "
                               "points (95% CI [0.2, 0.2], 3 seeds).")
    assert "change -1.9 points (95% CI [-2.1, -1.7], 3 seeds)" in found.numbers


def test_levels_that_all_stayed_at_chance_are_not_compared():
    """Every run at chance: the levels differ only by their splits' chance rates, so no 'cannot decide' interval."""
    rows = [{"activation": activation, "seed": seed, "test_accuracy": 0.1135, "best_val_accuracy": 0.1143}
            for activation in ("relu", "tanh") for seed in range(3)]
    rows += [{"activation": activation, "seed": seed, "test_accuracy": 0.9 + 0.01 * seed, "best_val_accuracy": 0.9,
              "optimizer": "sgd"} for activation in ("relu", "tanh") for seed in range(3)]
    found = decisions.comparisons(run_table(rows))
    at_chance = [finding for finding in found if finding.statement.startswith("adam")]
    assert [finding.statement for finding in at_chance] == [
        "adam: no activation level learned (every run within 2.0 points of chance): nothing to compare "
        "(see 'Runs that did not learn')."]
    assert any(finding.statement.startswith("sgd: cannot decide between") for finding in found)
