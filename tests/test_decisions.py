"""The decisions built on paired intervals, on synthetic run tables (no store): all pairs, one family, failed seeds
counted, no decision without spread."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from actopt.analysis import decisions, statistics, tables
from actopt.analysis.questions import Question, comparisons_needed, default_questions
from actopt.analysis.tables import CHANCE_MARGIN

# Student t's 97.5% quantile with 2 degrees of freedom, from printed tables.
T_2 = 4.302653


def run_table(rows: list[dict]) -> pd.DataFrame:
    """A run table as tables.run_table makes it, with the columns the decisions read."""
    defaults = {"optimizer": "adam", "learning_rate": 0.001, "seed": 0, "diverged": False, "epochs_to_95": 2.0,
                "final_gap": 0.01, "chance": 0.1, "time_per_epoch": 1.0, "last_train_loss": 0.1,
                "first_train_loss": 0.5}
    table = pd.DataFrame([{**defaults, **row} for row in rows])
    if "best_val_accuracy" not in table:
        table["best_val_accuracy"] = table["test_accuracy"]
    table["best_val_accuracy"] = table["best_val_accuracy"].fillna(table["test_accuracy"])
    table["val_area"] = table.get("val_area", table["best_val_accuracy"] - 0.02)
    table["last_val_accuracy"] = table["best_val_accuracy"]
    table["learned"] = tables.learned(table["best_val_accuracy"], table["chance"])
    table["failure"] = tables.failures(table)
    table["failed"] = table["failure"] != ""
    table["val_score"] = tables.scored(table, "best_val_accuracy")
    table["test_score"] = tables.scored(table, "test_accuracy")
    table["run_id"] = [f"{index:032x}" for index in range(len(table))]
    table["run_name"] = [f"run{index}" for index in range(len(table))]
    return table


def judged(table: pd.DataFrame, measures=("test_accuracy",), factor="activation", contrasts=()):
    question = Question("q", "Which?", (factor,), tuple(measures), tuple(contrasts))
    return decisions.decide(comparisons_needed([question], table), table)


def test_mean_interval_matches_a_hand_computed_case_and_scipy_p_value():
    # mean 0.83; s = √((0.03² + 0.01² + 0.04²) / 2) = 0.0360555; half-width 4.302653 × s / √3 = 0.0895667
    interval = statistics.mean_interval([0.80, 0.82, 0.87])
    assert interval.mean == pytest.approx(0.83)
    assert (interval.low, interval.high) == pytest.approx((0.83 - 0.0895667, 0.83 + 0.0895667), abs=1e-6)
    assert interval.count == 3 and interval.describe(100, 1) == "83.0 [74.0, 92.0]"
    assert interval.p_value == pytest.approx(stats.ttest_1samp([0.80, 0.82, 0.87], 0).pvalue)


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
    assert difference.p_value == pytest.approx(stats.ttest_rel(first[:3], second).pvalue)
    # The unpaired interval of the same numbers is far wider: the seeds' shared luck is not removed.
    unpaired = statistics.mean_interval(first[:3]).high - statistics.mean_interval(first[:3]).low
    assert difference.high - difference.low < unpaired / 4


def two_levels(delta: float, spread: float) -> pd.DataFrame:
    """relu beats tanh by ``delta`` on average, the per-seed differences being delta − spread, delta, delta + spread."""
    rows = []
    for seed, base in enumerate((0.80, 0.90, 0.85)):
        rows.append({"activation": "relu", "seed": seed, "test_accuracy": base + delta + (seed - 1) * spread})
        rows.append({"activation": "tanh", "seed": seed, "test_accuracy": base})
    return run_table(rows)


@pytest.mark.parametrize("factor, decided", [(0.99, False), (1.01, True)])
def test_a_family_of_one_decides_exactly_where_the_interval_leaves_zero(factor, decided):
    spread = 0.004
    half_width = T_2 * spread / math.sqrt(3)  # the differences' s is the spread itself
    [decision] = judged(two_levels(factor * half_width, spread))
    assert decision.decided is decided
    assert decision.adjusted_p == pytest.approx(decision.difference.p_value)  # m = 1: Holm changes nothing
    sentence = decisions.verdict(decision, "holm")
    if decided:
        assert sentence.startswith("relu beats tanh on test accuracy by 1.0 points (95% CI [0.0, ")
    else:
        assert sentence.startswith("cannot decide between tanh and relu: tanh − relu = -1.0 points (95% CI [-2.0, 0.0]")
        # n = 3, s = 0.4 points: 80% power at 5% needs 3.26 s (noncentral t) = 1.3 points.
        assert "detectable at 80% power with 3 seeds: 1.3 points; the observed 1.0 points would need 4 seeds" in (
            sentence)


def test_a_difference_without_spread_decides_nothing():
    """Every seed 1 point apart: a zero-width interval, no p-value, no decision."""
    [decision] = judged(two_levels(0.01, 0.0))
    assert decision.difference.degenerate and not decision.decided
    assert "an interval of zero width" in decisions.verdict(decision, "holm")


def test_one_seed_falls_back_to_the_fixed_margin():
    rows = [{"activation": "relu", "test_accuracy": 0.90}, {"activation": "tanh", "test_accuracy": 0.894}]
    [decision] = judged(run_table(rows))
    assert decision.decided
    assert "(1 seed: a lead of more than 0.5 points, not a test)" in decisions.verdict(decision, "holm")


def three_levels(gains: dict[str, float]) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for seed in range(3):
        base = 0.85 + 0.01 * seed
        for activation, gain in gains.items():
            rows.append({"activation": activation, "seed": seed, "test_accuracy": base + gain + rng.normal(0, 0.002)})
    return run_table(rows)


def test_every_pair_of_levels_is_compared_not_the_leader_against_the_rest():
    table = three_levels({"sigmoid": 0.0, "tanh": 0.001, "relu": 0.03})
    made = judged(table)
    assert [(item.contrast.first, item.contrast.second) for item in made] == [
        ("sigmoid", "tanh"), ("sigmoid", "relu"), ("tanh", "relu")]
    # One family of three: Holm multiplies the smallest p by 3, the next by 2, the largest by 1 (monotone).
    raw = [item.difference.p_value for item in made]
    order = np.argsort(raw)
    assert made[order[0]].adjusted_p == pytest.approx(min(1, 3 * raw[order[0]]))
    assert {item.winner() for item in made if item.decided} == {("relu", "sigmoid"), ("relu", "tanh")}


def test_declared_contrasts_are_the_only_pairs_tested():
    table = three_levels({"sigmoid": 0.0, "tanh": 0.001, "relu": 0.03})
    made = judged(table, contrasts=[("relu", "sigmoid")])
    assert [(item.contrast.first, item.contrast.second) for item in made] == [("relu", "sigmoid")]


def test_a_diverged_seed_counts_with_what_it_reached_in_the_rate_choice_and_the_comparison():
    rows = []
    for seed in range(3):
        # lr 0.1 wins on two seeds but diverges on the third (no finished epoch: it scores chance).
        broken = seed == 2
        rows.append({"activation": "relu", "learning_rate": 0.1, "seed": seed, "diverged": broken,
                     "test_accuracy": math.nan if broken else 0.93, "best_val_accuracy": math.nan if broken else 0.93})
        rows.append({"activation": "relu", "learning_rate": 0.01, "seed": seed, "test_accuracy": 0.91})
        rows.append({"activation": "tanh", "learning_rate": 0.01, "seed": seed, "test_accuracy": 0.90})
    table = run_table(rows)
    best = tables.best_learning_rates(table).set_index("activation")
    assert best.loc["relu", "best_learning_rate"] == 0.01  # (0.93 + 0.93 + 0.1) / 3 < 0.91
    failed = decisions.failed_seeds(table)
    assert [item.statement for item in failed] == ["relu · lr 0.1: 1 of 3 seeds failed (1 diverged)."]


def test_a_collapsed_seed_is_a_failure_and_keeps_its_accuracy():
    rows = [{"activation": "tanh", "seed": seed, "test_accuracy": accuracy, "best_val_accuracy": accuracy}
            for seed, accuracy in enumerate((0.80, 0.81, 0.27))]
    rows.append({"activation": "relu", "seed": 0, "test_accuracy": 0.9, "last_train_loss": 22.0})
    table = run_table(rows)
    assert list(table["failure"]) == ["", "", "collapsed", "collapsed"]
    assert bool(table["learned"].iloc[2])  # learned (above chance), yet failed: the two are not the same rule
    assert table["test_score"].iloc[2] == 0.27


def test_levels_that_all_stayed_at_chance_are_not_compared():
    """Every run at chance: the levels differ only by their splits' chance rates, so no comparison is made."""
    rows = [{"activation": activation, "seed": seed, "test_accuracy": 0.1135, "best_val_accuracy": 0.1143}
            for activation in ("relu", "tanh") for seed in range(3)]
    rows += [{"activation": activation, "seed": seed, "test_accuracy": 0.9 + 0.01 * seed, "best_val_accuracy": 0.9,
              "optimizer": "sgd"} for activation in ("relu", "tanh") for seed in range(3)]
    table = run_table(rows)
    questions = default_questions(table)
    made = decisions.decide(comparisons_needed(questions, table), table)
    assert {item.contrast.where for item in made if item.contrast.factor == "activation"} == {(("optimizer", "sgd"),)}
    notes = decisions.unlearned_groups(questions, table)
    assert [item.statement for item in notes] == [
        "adam: no activation level learned (every run within 2.0 points of chance): nothing to compare "
        "(see 'Runs that did not learn')."]


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


def test_the_dropout_gap_is_compared_against_dropout_zero_with_narrower_as_better():
    rows = []
    for seed in range(3):
        for dropout, gap, accuracy in ((0.0, 0.030, 0.970), (0.5, 0.010 + 0.001 * seed, 0.972)):
            rows.append({"activation": "relu", "dropout": dropout, "seed": seed, "final_gap": gap,
                         "test_accuracy": accuracy, "best_val_accuracy": accuracy})
    table = run_table(rows)
    [gap] = judged(table, measures=("gap",), factor="dropout", contrasts=[(0.5, 0.0)])
    # gap change −2.0, −1.9, −1.8 points: mean −1.9, s 0.1, half-width 0.248
    assert gap.decided and gap.winner() == ("dropout 0.5", "dropout 0")
    assert decisions.verdict(gap, "holm").startswith(
        "dropout 0.5 has a narrower train/validation gap than dropout 0 by 1.9 points (95% CI [1.7, 2.1], 3 seeds; ")
    assert CHANCE_MARGIN == 0.02


def test_difference_intervals_stay_within_what_two_accuracies_can_differ_by():
    # relu learns on two seeds and collapses on the third: the spread makes Student t's interval reach past ±1.
    rows = [{"activation": "relu", "seed": seed, "test_accuracy": accuracy}
            for seed, accuracy in enumerate([0.95, 0.96, 0.12])]
    rows += [{"activation": "sigmoid", "seed": seed, "test_accuracy": 0.11} for seed in range(3)]
    (decision,) = judged(run_table(rows))
    raw = statistics.paired_difference(pd.Series([0.95, 0.96, 0.12]), pd.Series([0.11] * 3))
    assert raw.high > 1  # the unbounded interval the decision must not show
    for interval in (decision.difference, decision.simultaneous):
        assert -1 <= interval.low <= interval.high <= 1
    sign = 1 if decision.difference.mean > 0 else -1  # the pair may be written sigmoid − relu
    ends = sorted(sign * end for end in (decision.difference.low, decision.difference.high))
    assert ends == pytest.approx([raw.low, 1.0])
    assert decision.difference.p_value == pytest.approx(raw.p_value)
