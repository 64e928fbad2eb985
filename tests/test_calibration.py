"""The decision rules calibrated on whole simulated studies, through the report's own code (questions →
comparisons → paired tests → the family's adjustment): where no factor matters, at most 5% of reports make one or
more false decisions with Holm (and far more without it); with a real effect, the decisions find it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from actopt.analysis import decisions, tables
from actopt.analysis.questions import Question, comparisons_needed

# A fashion-activations-like study: 3 activations × 2 optimizers × 2 learning rates each, 3 seeds; the spreads
# measured on the real runs: seeds' shared luck 0.5 points, a run's own noise 0.3 points, validation and test each
# 0.2 points more; 5% of runs collapse (to 20-60%) and 2% diverge in their first epoch (no accuracy: chance).
ACTIVATIONS = ("sigmoid", "tanh", "relu")
RATES = {"sgd": (0.1, 0.5), "adam": (0.001, 0.01)}
SHARED, OWN, MEASUREMENT = 0.005, 0.003, 0.002
COLLAPSE_RATE, DIVERGE_RATE = 0.05, 0.02
QUESTIONS = [Question("activations", "Which activation?", ("activation",), ("test_accuracy", "val_area")),
             Question("optimizers", "Which optimizer?", ("optimizer",), ("test_accuracy",))]


def simulated_study(rng: np.random.Generator, seeds: int, relu_gain: float = 0.0) -> pd.DataFrame:
    rows = []
    for seed in range(seeds):
        luck = rng.normal(0, SHARED)
        for activation in ACTIVATIONS:
            for optimizer, rates in RATES.items():
                for rate in rates:
                    quality = 0.88 + luck + rng.normal(0, OWN) + (relu_gain if activation == "relu" else 0.0)
                    diverged = rng.random() < DIVERGE_RATE
                    if rng.random() < COLLAPSE_RATE:
                        quality = rng.uniform(0.2, 0.6)
                    validation, test = (math.nan, math.nan) if diverged else (
                        quality + rng.normal(0, MEASUREMENT), quality + rng.normal(0, MEASUREMENT))
                    rows.append({"activation": activation, "optimizer": optimizer, "learning_rate": rate,
                                 "seed": seed, "diverged": diverged, "best_val_accuracy": validation,
                                 "test_accuracy": test, "chance": 0.1, "last_train_loss": 0.3,
                                 "first_train_loss": 0.6, "val_area": validation - 0.02 + rng.normal(0, MEASUREMENT)})
    table = pd.DataFrame(rows)
    table["val_area"] = table["val_area"].fillna(0.1)
    table["learned"] = tables.learned(table["best_val_accuracy"], table["chance"])
    table["failure"] = tables.failures(table)
    table["failed"] = table["failure"] != ""
    table["val_score"] = tables.scored(table, "best_val_accuracy")
    table["test_score"] = tables.scored(table, "test_accuracy")
    return table


def report_decisions(table: pd.DataFrame) -> list[decisions.Decision]:
    """What write_analysis decides (``conclusions.judge``), the tuned runs computed once."""
    tuned = tables.tuned_runs(table, keep_failed=True)
    return decisions.decide(comparisons_needed(QUESTIONS, table, tuned), table, "holm", tuned=tuned)


def test_without_any_effect_at_most_five_percent_of_reports_make_a_false_decision():
    rng = np.random.default_rng(1)
    studies = 80
    with_holm = without_correction = 0
    for _ in range(studies):
        made = report_decisions(simulated_study(rng, seeds=3))
        assert len(made) == 15  # 6 activation pairs × 2 measures + 3 optimizer pairs: the family is fixed
        with_holm += any(item.decided for item in made)
        without_correction += any(item.difference.p_value <= 0.05 for item in made)
    # Measured with this seed: 2 of 80 reports (2.5%) with Holm, 32 of 80 (40%) one interval at a time. Over 300
    # studies (seed 11): 15 (5.0%) and 147 (49%). Holm's bound is nearly reached here: 15 nearly independent tests
    # at 0.05/15 give 1 − (1 − 0.05/15)^15 = 4.9%.
    assert with_holm / studies <= 0.05
    assert without_correction / studies >= 0.25


def test_a_real_effect_is_still_found():
    """relu better by 2.5 points (5 paired standard deviations); with 5 seeds the Holm-adjusted decisions find it."""
    rng = np.random.default_rng(7)
    studies = 15
    found = wrong = 0
    for _ in range(studies):
        made = report_decisions(simulated_study(rng, seeds=5, relu_gain=0.025))
        relu_pairs = [item for item in made if "relu" in (item.contrast.first, item.contrast.second)
                      and item.contrast.measure == "test_accuracy"]
        found += sum(item.decided and item.winner()[0] == "relu" for item in relu_pairs)
        wrong += sum(item.decided for item in made if "relu" not in (item.contrast.first, item.contrast.second))
    # Measured with this seed: 50 of the 60 relu pairs (83%) decided for relu (the misses are pairs with a collapsed
    # seed, whose spread hides the lead); no decision between sigmoid and tanh or between the optimizers.
    assert found / (4 * studies) >= 0.8
    assert wrong <= 2
