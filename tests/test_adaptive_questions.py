"""The adaptive sweep's comparisons come from the study's declared questions: their factors, their contrasts, the
measures a look can judge (and those it cannot, said), each configuration at its chosen learning rate; an open
comparison adds seeds to its two configurations only. Built from synthetic finished rows, no training."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np

from actopt.analysis import adaptive, sequential
from actopt.analysis.adaptive import configuration_key
from actopt.core.config import config_digest
from actopt.sweeps.study import configurations, load_study
from actopt.sweeps.summary import FINISHED, Row
from actopt.tracking.records import SweepRun

# The rate each optimizer's configurations reach their best validation accuracy at, in the synthetic runs.
BEST_RATE = {"sgd": 0.1, "adam": 0.001}


def finished(config, best_val_accuracy: float, test_accuracy: float) -> Row:
    digest = config_digest(config)
    run = SweepRun(run_id=f"run-{digest[:8]}-{config.seed}", run_name=config.run_name, status="FINISHED",
                   start_time=0, end_time=1, digest=digest, host=None, pid=None, diverged=False,
                   best_val_accuracy=best_val_accuracy, test_accuracy=test_accuracy)
    return Row(config, digest, FINISHED, run)


def peaked_rows(configs, test_accuracy=lambda config: 0.8):
    """Every configuration finished, best on validation at its optimizer's BEST_RATE (0.9 there, 0.5 elsewhere)."""
    return [finished(config, 0.9 if config.learning_rate == BEST_RATE.get(config.optimizer, 0.1) else 0.5,
                     test_accuracy(config)) for config in configs]


def chosen_key(configs, **values) -> str:
    """The key of the configuration with these values at its optimizer's BEST_RATE."""
    matches = {configuration_key(config) for config in configs
               if all(getattr(config, name) == value for name, value in values.items())
               and config.learning_rate == BEST_RATE.get(config.optimizer, 0.1)}
    assert len(matches) == 1
    return matches.pop()


def comparisons_of(study, configs):
    table = adaptive.sweep_table(peaked_rows(configs))
    asked = adaptive.study_questions(study, table)
    return table, adaptive.needed_comparisons(table, asked), adaptive.judged_measures(asked)


def test_fashion_activations_questions_give_activation_pairs_per_optimizer_and_optimizer_pairs_per_activation():
    study = load_study("fashion-activations")
    configs = configurations(study)
    _, pairs, measures = comparisons_of(study, configs)
    activations, optimizers = ("sigmoid", "tanh", "relu"), ("sgd", "adam")
    # The oracle: built from the study's levels, each configuration at the rate its synthetic runs peak at.
    expected = {("activations", "activation", chosen_key(configs, activation=first, optimizer=optimizer),
                 chosen_key(configs, activation=second, optimizer=optimizer), "test_accuracy")
                for optimizer in optimizers for first, second in combinations(activations, 2)}
    expected |= {("optimizers", "optimizer", chosen_key(configs, activation=activation, optimizer="sgd"),
                  chosen_key(configs, activation=activation, optimizer="adam"), "test_accuracy")
                 for activation in activations}
    found = [(pair.question, pair.factor, pair.first, pair.second, pair.measure) for pair in pairs]
    assert len(found) == len(set(found)) == 9 and set(found) == expected
    names = {pair.name for pair in pairs}
    assert {"activation sigmoid vs relu (optimizer adam)", "optimizer sgd vs adam (activation tanh)"} <= names
    # What the looks judge of each question, and what they do not, with why.
    judged = {(item.question, item.measure) for item in measures if not item.why}
    assert judged == {("activations", "test_accuracy"), ("optimizers", "test_accuracy")}
    skipped = {(item.question, item.measure): item.why for item in measures if item.why}
    assert set(skipped) == {("activations", "val_area"), ("activations", "gradient_ratio"),
                            ("optimizers", "lr_sensitivity"), ("optimizers", "last_accuracy"),
                            ("optimizers", "failures"), ("where-gradients-fail", "vanishing_gradients"),
                            ("where-gradients-fail", "dead_units")}
    assert "per-epoch history" in skipped[("activations", "val_area")]
    assert "described, not compared" in skipped[("optimizers", "failures")]


def small_study(folder, questions, activations=("sigmoid", "tanh", "relu"), seeds=(0, 1, 2)):
    path = folder / "small.json"
    path.write_text(json.dumps({
        "description": "Three activations at two rates.", "seeds": list(seeds),
        "fixed": {"dataset": "mnist", "hidden_sizes": [16], "epochs": 1},
        "grid": {"activation": list(activations), "optimizer": {"sgd": {"learning_rate": [0.01, 0.1]}}},
        "questions": questions}))
    study = load_study(str(path))
    return study, configurations(study)


def test_declared_contrasts_restrict_the_pairs_to_those_declared(tmp_path):
    question = {"id": "relu-tanh", "question": "Is relu better than tanh?", "factors": ["activation"],
                "measures": ["test_accuracy", "best_val_accuracy", "failures"], "contrasts": [["relu", "tanh"]]}
    study, configs = small_study(tmp_path, [question])
    _, pairs, measures = comparisons_of(study, configs)
    relu, tanh = chosen_key(configs, activation="relu"), chosen_key(configs, activation="tanh")
    assert [(pair.first, pair.second, pair.measure) for pair in pairs] == [
        (relu, tanh, "test_accuracy"), (relu, tanh, "best_val_accuracy")]
    assert {pair.name for pair in pairs} == {"activation relu vs tanh"}
    assert [(item.measure, bool(item.why)) for item in measures] == [
        ("test_accuracy", False), ("best_val_accuracy", False), ("failures", True)]
    # Without the contrast the same question compares every pair of the three.
    study, configs = small_study(tmp_path, [{**question, "contrasts": None}])
    assert len(comparisons_of(study, configs)[1]) == 3 * 2


def test_an_open_comparison_adds_seeds_only_to_its_two_configurations(tmp_path):
    seeds = tuple(range(8))
    question = {"id": "activations", "question": "Which activation?", "factors": ["activation"],
                "measures": ["test_accuracy"]}
    study, configs = small_study(tmp_path, [question], seeds=seeds)
    noise = np.random.default_rng(0).normal(0, 0.02, size=len(seeds))
    # sigmoid 40 points below the others at every seed (decided against both); tanh and relu differ by noise alone.
    level = {"sigmoid": 0.5, "tanh": 0.9, "relu": 0.9}

    def test_accuracy(config):
        return level[config.activation] + (noise[config.seed] if config.activation == "relu" else 0.0)

    table = adaptive.sweep_table(peaked_rows(configs, test_accuracy))
    pairs = adaptive.needed_comparisons(table, adaptive.study_questions(study, table))
    counts = dict.fromkeys((configuration_key(config) for config in configs), len(seeds))
    cap = 40
    seen = adaptive.look_at(table, pairs, adaptive.seed_sequence(configs, cap), counts, sequential.Limits(cap))
    states = {pair.name: verdict.state for pair, verdict in zip(pairs, seen.verdicts)}
    assert states == {"activation sigmoid vs tanh": sequential.DECIDED,
                      "activation sigmoid vs relu": sequential.DECIDED, "activation tanh vs relu": sequential.OPEN}
    grown = {key for key, count in seen.next_counts.items() if count > counts[key]}
    assert grown == {chosen_key(configs, activation="tanh"), chosen_key(configs, activation="relu")}
    assert all(seen.next_counts[key] == sequential.next_count(len(seeds), cap) for key in grown)
    # The same finished runs plan the same look (a resumed sweep replays it).
    again = adaptive.look_at(adaptive.sweep_table(peaked_rows(configs, test_accuracy)), pairs,
                             adaptive.seed_sequence(configs, cap), counts, sequential.Limits(cap))
    assert again.next_counts == seen.next_counts
