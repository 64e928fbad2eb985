"""Study files: presets, grid expansion with conditional values, digests, quick mode and one-line errors."""

from __future__ import annotations

import json

import pytest

from actopt.core.config import config_digest
from actopt.errors import ConfigError
from actopt.sweeps.study import (
    QUICK,
    STUDIES_DIR,
    configurations,
    load_study,
    preset_names,
)


def write_study(tmp_path, document, name="tiny"):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


CONDITIONAL = {
    "description": "conditional learning rates",
    "fixed": {"dataset": "mnist", "hidden_sizes": [16]},
    "grid": {
        "activation": ["relu", "tanh"],
        "optimizer": {"sgd": {"learning_rate": [0.1, 0.5]}, "adam": {"learning_rate": [0.001]}},
    },
}


def test_presets_are_listed_and_expand_as_the_issue_states():
    assert preset_names() == ["fashion-activations", "mnist-depth", "mnist-overfitting", "mnist-overfitting-search"]
    fashion = configurations(load_study("fashion-activations"))
    assert len(fashion) == 3 * (4 + 3) * 3  # three seeds of each configuration
    assert {c.seed for c in fashion} == {0, 1, 2}
    rates = {(c.optimizer, c.learning_rate) for c in fashion}
    assert rates == {("sgd", lr) for lr in (0.01, 0.1, 0.5, 1.0)} | {("adam", lr) for lr in (1e-4, 1e-3, 1e-2)}
    assert {(c.dataset, c.hidden_sizes, c.batch_size, c.epochs) for c in fashion} == {("fashion-mnist", (256, 128),
                                                                                       128, 10)}

    depth = configurations(load_study("mnist-depth"))
    assert len(depth) == 3 * 4 * 2 * 3
    assert {c.epochs for c in depth} == {3}
    matched = {"relu": "kaiming", "tanh": "xavier", "sigmoid": "xavier", "lecun_tanh": "lecun"}
    for config in depth:
        assert config.init in ("default", matched[config.activation])
        assert config.test_every_epoch and config.gradient_statistics
    assert {c.depth for c in depth} == {5, 20, 40} and len({(c.width, c.optimizer,
                                                             c.learning_rate) for c in depth}) == 1

    overfitting = configurations(load_study("mnist-overfitting"))
    assert sorted((c.activation, c.dropout, c.seed) for c in overfitting) == sorted(
        (a, d, seed) for a in ("sigmoid", "relu") for d in (0.0, 0.2, 0.5) for seed in (0, 1, 2))
    assert {(c.hidden_sizes, c.optimizer, c.learning_rate, c.batch_size, c.epochs) for c in overfitting} == {
        ((128, 64), "adam", 0.001, 64, 5)}
    assert {c.input_scaling for c in overfitting} == {"unit"}  # source 004 feeds ToTensor's [0, 1]
    search = configurations(load_study("mnist-overfitting-search"))
    assert len(search) == 2 * 2 * 2 * 3 and {c.train_examples for c in search} == {500, 2000}
    assert {(c.epochs, c.input_scaling) for c in search} == {(30, "unit")}
    for name in preset_names():
        document = json.loads((STUDIES_DIR / f"{name}.json").read_text())
        assert document["description"] and document["source"].startswith("seed ")
        assert {c.study for c in configurations(load_study(name))} == {name}


def test_conditional_grid_and_seeds(tmp_path):
    study = load_study(str(write_study(tmp_path, {**CONDITIONAL, "seeds": [3, 4]})))
    configs = configurations(study)
    assert study.name == "tiny"
    got = [(c.activation, c.optimizer, c.learning_rate, c.seed) for c in configs]
    expected = [(a, o, lr, s) for a in ("relu", "tanh")
                for o, rates in (("sgd", (0.1, 0.5)), ("adam", (0.001,))) for lr in rates for s in (3, 4)]
    assert got == expected
    assert len({config_digest(c) for c in configs}) == len(configs) == 12


def test_sweep_values_and_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTOPT_DATA_DIR", "/from/env")
    study = load_study(str(write_study(tmp_path, CONDITIONAL)))
    plain = configurations(study)
    assert {(c.experiment_name, c.data_dir, c.log_model) for c in plain} == {("tiny", "/from/env", True)}
    quick = configurations(study, data_dir="/data", device="cpu", quick=True)
    assert {(c.epochs, c.max_batches, c.log_model) for c in quick} == {tuple(QUICK.values())}
    assert {(c.experiment_name, c.data_dir, c.device) for c in quick} == {("tiny-quick", "/data", "cpu")}
    assert configurations(study, experiment_name="mine")[0].experiment_name == "mine"


def test_config_digest_is_what_trains_not_where(tmp_path):
    study = load_study(str(write_study(tmp_path, CONDITIONAL)))
    first = configurations(study)[0]
    assert config_digest(first) == config_digest(first.replace(data_dir="/elsewhere", experiment_name="x",
                                                               download=False))
    assert config_digest(first) != config_digest(first.replace(learning_rate=0.2))
    assert config_digest(first) != config_digest(first.replace(seed=1))
    assert len(config_digest(first)) == 16


def test_study_digest_ignores_prose_comments_and_layout(tmp_path):
    base = load_study(str(write_study(tmp_path, CONDITIONAL, "a"))).digest
    annotated = {**CONDITIONAL, "description": "other words", "source": "seed 999", "//": "a note",
                 "grid": {"//why": "because", **CONDITIONAL["grid"]}}
    assert load_study(str(write_study(tmp_path, json.dumps(annotated, indent=4), "b"))).digest == base
    changed = {**CONDITIONAL, "grid": {**CONDITIONAL["grid"], "activation": ["relu"]}}
    assert load_study(str(write_study(tmp_path, changed, "c"))).digest != base


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not valid JSON: Expecting property name"),
        ([1, 2], "must hold a JSON object"),
        ({"description": "x", "grids": {}}, "unknown key 'grids'; valid keys: description"),
        ({"grid": {}}, "'description' must be a non-empty text"),
        ({"description": "x", "seeds": []}, "'seeds' is empty: the study expands to zero runs"),
        ({"description": "x", "seeds": [0.5]}, "'seeds' must be a list of integers"),
        ({"description": "x", "grid": {"activation": []}}, "grid.activation is empty: the grid expands to zero runs"),
        ({"description": "x", "grid": {"optimizer": {"sgd": {"learning_rate": []}}}},
         "grid.optimizer.sgd.learning_rate is empty: the grid expands to zero runs"),
        ({"description": "x", "grid": {"optimizer": {}}}, "grid.optimizer is empty"),
        ({"description": "x", "grid": {"learnin_rate": [0.1]}}, "grid.learnin_rate is not an option; valid options:"),
        ({"description": "x", "grid": {"learning_rate": 0.1}},
         "grid.learning_rate must be a list of values or an object"),
        ({"description": "x", "grid": {"optimizer": {"sgd": [0.1]}}}, "grid.optimizer.sgd must be an object"),
        ({"description": "x", "grid": {"activation": [["relu"]]}},
         "grid.activation lists [\"relu\"], which is not one value"),
        ({"description": "x", "fixed": {"data_dir": "/d"}}, "fixed.data_dir cannot be set in a study file"),
        ({"description": "x", "grid": {"seed": [1, 2]}},
         "grid.seed cannot be set in a study file: list seeds in 'seeds'"),
        ({"description": "x", "fixed": {"activation": ["relu"]}}, "fixed.activation must be one value"),
        ({"description": "x", "fixed": {"epochs": 2}, "grid": {"epochs": [1, 3]}},
         "fixed.epochs is also set in the grid"),
        ({"description": "x", "grid": {"optimizer": {"sgd": {"optimizer": ["adam"]}}}},
         "grid.optimizer.sgd sets optimizer again"),
        ({"description": "x", "grid": {"activation": ["relu", "relu"]}}, "runs 1 and 2 are the same configuration"),
        ({"description": "x", "grid": {"learning_rate": [0.1, -1]}},
         "study tiny, run 2 (learning_rate=-1, seed=0): learning_rate must be > 0"),
        ({"description": "x", "grid": {"activation": ["swish"]}}, "unknown activation 'swish'"),
        ({"description": "x", "multiplicity": "bonferroni"}, "'multiplicity' must be one of holm, fdr"),
        ({"description": "x", "questions": {}}, "'questions' must be a list of objects"),
        ({"description": "x", "questions": [{"id": "a", "question": "q", "factors": ["activation"],
                                             "measures": ["speed"]}]}, "questions[1]: 'measures' must be a non-empty"),
        ({"description": "x", "questions": [{"id": "a", "question": "q", "factors": ["colour"],
                                             "measures": ["test_accuracy"]}]}, "factor 'colour' is not an option"),
        ({"description": "x", "questions": [{"id": "a", "question": "q", "factors": ["activation"],
                                             "measures": ["gap"]}] * 2}, "questions[2]: id 'a' is used twice"),
        ({"description": "x", "questions": [{"id": "a", "question": "q", "factors": ["activation"],
                                             "measures": ["gap"], "contrasts": [["relu"]]}]},
         "'contrasts' must be a list of [level, level] pairs"),
        ({"description": "x", "questions": [{"id": "a", "question": "", "factors": ["activation"],
                                             "measures": ["gap"]}]}, "questions[1]: 'question' must be a non-empty"),
    ],
)
def test_bad_study_files_give_one_line_errors(tmp_path, document, message):
    path = write_study(tmp_path, document)
    with pytest.raises(ConfigError) as raised:
        load_study(str(path))
    text = str(raised.value)
    assert message in text
    assert "\n" not in text


def test_unknown_study_lists_the_presets(tmp_path):
    with pytest.raises(ConfigError, match="unknown study 'fashion'; known studies: fashion-activations, mnist-depth"):
        load_study("fashion")
    with pytest.raises(ConfigError, match="study file .*missing.json not found; known studies: fashion-activations"):
        load_study(str(tmp_path / "missing.json"))


def test_quick_mode_refuses_a_grid_it_would_collapse(tmp_path):
    study = load_study(str(write_study(tmp_path, {"description": "x", "grid": {"epochs": [1, 2]}})))
    assert len(configurations(study)) == 2
    with pytest.raises(ConfigError, match="runs 1 and 2 are the same configuration with --quick"):
        configurations(study, quick=True)


def test_presets_declare_their_questions_and_the_digest_ignores_them(tmp_path):
    """Questions and multiplicity are how the runs are read, not what is run: the sweep's parent stays the same."""
    asked = {name: [item["id"] for item in load_study(name).questions] for name in preset_names()}
    assert asked == {"fashion-activations": ["activations", "optimizers", "where-gradients-fail"],
                     "mnist-depth": ["trainability", "initialisation", "gradients-with-depth"],
                     "mnist-overfitting": ["relu", "dropout"], "mnist-overfitting-search": ["relu", "dropout"]}
    question = {"id": "a", "question": "Which?", "factors": ["activation"], "measures": ["test_accuracy"]}
    plain = load_study(str(write_study(tmp_path, CONDITIONAL, "plain")))
    asking = load_study(str(write_study(tmp_path, {**CONDITIONAL, "questions": [question],
                                                   "multiplicity": "fdr"}, "asking")))
    assert asking.digest == plain.digest and asking.multiplicity == "fdr" and plain.multiplicity == "holm"
