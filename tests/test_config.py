"""The config is the one set of names: CLI options, MLproject parameters and logged params agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from actopt.cli import main as cli_main
from actopt.core.config import TrainConfig
from actopt.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIELD_NAMES = {item.name for item in dataclasses.fields(TrainConfig)}


def test_mlproject_main_parameters_are_the_config_fields():
    project = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())
    main = project["entry_points"]["main"]
    assert set(main["parameters"]) == FIELD_NAMES
    # Each parameter reaches the command line under its own option name.
    for name in FIELD_NAMES:
        assert f"--{name.replace('_', '-')} {{{name}}}" in main["command"]


def test_mlproject_defaults_are_the_config_defaults():
    project = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())
    defaults = {name: spec["default"] for name, spec in project["entry_points"]["main"]["parameters"].items()}
    expected = TrainConfig().to_params()
    # "" means "ACTOPT_DATA_DIR, else ./data", resolved by the config itself.
    assert defaults.pop("data_dir") == ""
    expected.pop("data_dir")
    assert {name: str(value) for name, value in defaults.items()} == expected


def test_cli_options_are_the_config_fields():
    train = cli_main.commands["train"]
    assert {parameter.name for parameter in train.params if parameter.name != "help"} == FIELD_NAMES
    for parameter in train.params:
        if parameter.name in FIELD_NAMES:
            assert parameter.opts == [f"--{parameter.name.replace('_', '-')}"]


def test_params_round_trip_through_text():
    config = TrainConfig.from_mapping({"hidden_sizes": "64, 32", "learning_rate": "1e-1", "dropout": "0.2",
                                       "download": "false", "seed": "7"})
    assert config.hidden_sizes == (64, 32)
    assert config.learning_rate == 0.1
    assert config.download is False
    assert TrainConfig.from_mapping(config.to_params()) == config


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().learning_rate = 1.0  # type: ignore[misc]


def test_depth_overrides_hidden_sizes():
    config = TrainConfig.from_mapping({"depth": "20", "width": "64"})
    assert config.layer_sizes == (64,) * 20
    assert TrainConfig().layer_sizes == (256, 128)


def test_run_name_is_readable():
    assert TrainConfig().run_name == "relu-adam-lr0.001"
    config = TrainConfig.from_mapping({"activation": "tanh", "optimizer": "sgd", "learning_rate": 0.1, "depth": 5,
                                       "init": "xavier"})
    assert config.run_name == "tanh-sgd-lr0.1-depth5-xavier"
    # Configurations that differ only in momentum or weight decay do not share a name.
    named = config.replace(momentum=0.9, weight_decay=1e-4).run_name
    assert named == "tanh-sgd-lr0.1-depth5-xavier-momentum0.9-wd0.0001"


def test_data_dir_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ACTOPT_DATA_DIR", "/datasets/here")
    assert TrainConfig().data_dir == "/datasets/here"
    assert TrainConfig.from_mapping({"data_dir": ""}).data_dir == "/datasets/here"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"activation": "swish"}, "unknown activation 'swish'; valid: sigmoid, tanh"),
        ({"optimizer": "adagrad"}, "unknown optimizer 'adagrad'; valid: sgd, adam, adamw, rmsprop"),
        ({"dataset": "cifar"}, "unknown dataset 'cifar'; valid: fashion-mnist, mnist"),
        ({"init": "orthogonal"}, "unknown init 'orthogonal'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"learning_rate": "0"}, "learning_rate must be > 0"),
        ({"learning_rate": "-0.1"}, "learning_rate must be > 0"),
        ({"learning_rate": "fast"}, "learning_rate: 'fast' is not a valid finite number"),
        ({"learning_rate": "nan"}, "learning_rate: 'nan' is not a valid finite number"),
        ({"epochs": "0"}, "epochs must be >= 1"),
        ({"epochs": "2.5"}, "epochs: '2.5' is not a valid integer"),
        ({"batch_size": "0"}, "batch_size must be >= 1"),
        ({"validation_fraction": "1"}, "validation_fraction must be in (0, 1)"),
        ({"validation_fraction": "0"}, "validation_fraction must be in (0, 1)"),
        ({"hidden_sizes": "256,-1"}, "hidden_sizes: '256,-1' is not a valid list of positive integers"),
        ({"hidden_sizes": "256;128"}, "hidden_sizes: '256;128' is not a valid list"),
        ({"dropout": "1"}, "dropout must be in [0, 1)"),
        ({"dropout": "-0.1"}, "dropout must be in [0, 1)"),
        ({"download": "maybe"}, "download: 'maybe' is not a valid boolean"),
        ({"momentum": "0.9", "optimizer": "adam"}, "momentum applies to sgd and rmsprop, not adam"),
        ({"learning_rte": "0.1"}, "unknown option(s) learning_rte; valid options: dataset"),
    ],
)
def test_bad_values_give_one_line_errors(values, message):
    with pytest.raises(ConfigError) as raised:
        TrainConfig.from_mapping(values)
    text = str(raised.value)
    assert message in text
    assert "\n" not in text


def test_the_torch_free_name_lists_are_the_registries():
    from actopt.core import data, models, names, optimizers
    from actopt.core.config import DEVICES

    assert names.DATASETS == tuple(data.DATASETS) and names.OPTIMIZERS == tuple(optimizers.OPTIMIZERS)
    assert names.ACTIVATIONS == tuple(models.ACTIVATIONS) and names.INITIALIZATIONS == tuple(models.INITIALIZATIONS)
    assert names.DEVICES == tuple(DEVICES)
    assert names.INPUT_SCALINGS == tuple(data.INPUT_SCALINGS)
