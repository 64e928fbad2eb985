"""The one training configuration: CLI options, MLproject parameters and MLflow params share its names.

Every field carries a one-line help text (shown by ``actopt train --help``) and a default chosen
to reproduce the Fashion-MNIST study. ``TrainConfig.from_mapping`` is the only way in from the
outside: it refuses unknown keys, converts strings (MLflow params and MLproject arguments are
strings) and validates every value, raising ``ConfigError`` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from actopt.core import names
from actopt.core.names import ACTIVATIONS, DATASETS, INITIALIZATIONS, INPUT_SCALINGS, OPTIMIZERS
from actopt.errors import ConfigError, choose

# "auto" picks CUDA when present; everything (data, statistics) then lives on that device.
DEVICES = {"auto": None, "cpu": "cpu", "cuda": "cuda"}
# The named fields and the names each takes: checked here, offered as choices by the CLI.
CHOICES: dict[str, tuple[str, ...]] = {"dataset": DATASETS, "activation": ACTIVATIONS, "init": INITIALIZATIONS,
                                       "optimizer": OPTIMIZERS, "device": names.DEVICES,
                                       "input_scaling": INPUT_SCALINGS}


# torch and numpy take seeds as unsigned 32- or 64-bit numbers, and the gradient probe seeds with seed + 1:
# the 32-bit range fits every one of them.
SEED_LIMIT = 2**32 - 1
# Sizes and counts reach torch as 64-bit integers (shapes, slices, ranges); a value above a signed 32-bit integer
# is never a real setting, and far below where torch would overflow.
INTEGER_LIMIT = 2**31 - 1
# MLflow refuses longer experiment names (mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH).
EXPERIMENT_NAME_LIMIT = 500


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def default_data_dir() -> str:
    # The environment variable lets a lab point every run at one shared offline copy.
    return os.environ.get("ACTOPT_DATA_DIR", "./data")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how one run trains; logged verbatim as the run's params."""

    dataset: str = field(default="fashion-mnist", metadata=_help(f"Dataset: {', '.join(DATASETS)}."))
    data_dir: str = field(
        default_factory=default_data_dir,
        metadata=_help("Folder holding torchvision's raw dataset layout (env ACTOPT_DATA_DIR)."),
    )
    # Real users have internet; offline machines fail fast and say where the files were sought.
    download: bool = field(default=True, metadata=_help("Download the dataset if it is missing."))
    hidden_sizes: tuple[int, ...] = field(
        default=(256, 128), metadata=_help("Hidden layer widths, comma separated (784-256-128-10).")
    )
    # depth > 0 builds `depth` hidden layers of `width` units and overrides hidden_sizes (depth study).
    depth: int = field(default=0, metadata=_help("If > 0: number of hidden layers of --width units."))
    width: int = field(default=128, metadata=_help("Hidden layer width used with --depth."))
    activation: str = field(default="relu", metadata=_help(f"Hidden activation: {', '.join(ACTIVATIONS)}."))
    init: str = field(default="default", metadata=_help(f"Weight initialisation: {', '.join(INITIALIZATIONS)}."))
    dropout: float = field(default=0.0, metadata=_help("Dropout probability after each activation, in [0, 1)."))
    optimizer: str = field(default="adam", metadata=_help(f"Optimizer: {', '.join(OPTIMIZERS)}."))
    learning_rate: float = field(default=1e-3, metadata=_help("Learning rate (> 0)."))
    momentum: float = field(default=0.0, metadata=_help("SGD/RMSprop momentum in [0, 1)."))
    weight_decay: float = field(default=0.0, metadata=_help("Weight decay (L2; decoupled for adamw), >= 0."))
    batch_size: int = field(default=128, metadata=_help("Minibatch size."))
    epochs: int = field(default=10, metadata=_help("Number of training epochs."))
    validation_fraction: float = field(
        default=0.1, metadata=_help("Share of the training set held out for validation, in (0, 1).")
    )
    # Source 000 normalizes to [-1, 1]; source 004 feeds ToTensor's [0, 1]. The scaling decides how
    # many ReLU units die in the first epoch, so it is a studied setting, not a fixed step.
    input_scaling: str = field(default="symmetric", metadata=_help(
        f"Pixel scaling: {', '.join(INPUT_SCALINGS)} ([-1, 1], [0, 1], training-split mean 0 and std 1)."))
    # A small training set is where an MLP overfits within a few epochs; 0 keeps the whole split.
    train_examples: int = field(default=0, metadata=_help(
        "Keep only this many examples of the training split (0 = all); validation is unchanged."))
    seed: int = field(default=0, metadata=_help("Seed for initialisation, split and batch order."))
    device: str = field(default="auto", metadata=_help(f"Device: {', '.join(DEVICES)}."))
    # 0 means the whole epoch; small values make smoke runs and tests take seconds.
    max_batches: int = field(default=0, metadata=_help("Stop each epoch after this many batches (0 = all)."))
    gradient_statistics: bool = field(
        default=True, metadata=_help("Collect per-layer gradient statistics, unit fractions and histograms.")
    )
    # The depth study (seed 001) reports test accuracy every epoch; selection still uses validation.
    test_every_epoch: bool = field(default=False, metadata=_help("Also evaluate the test set after every epoch."))
    log_model: bool = field(default=True, metadata=_help("Log the best model with mlflow.pytorch.log_model."))
    # MLflow's monitor thread samples every 10 s; docs/diagnosis.md gives its measured cost per epoch.
    system_metrics: bool = field(
        default=True, metadata=_help("Log MLflow system metrics (CPU, memory; GPU where present) during the run.")
    )
    experiment_name: str = field(default="actopt", metadata=_help("MLflow experiment to log into."))
    study: str = field(default="", metadata=_help("Study name recorded as a tag (set by sweeps)."))

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Hidden widths actually built: depth × width when depth is set, hidden_sizes otherwise."""
        if self.depth > 0:
            return (self.width,) * self.depth
        return self.hidden_sizes

    @property
    def run_name(self) -> str:
        """The configuration's name, e.g. ``relu-adam-lr0.001``; its MLflow run adds the seed (``records.run_name``)."""
        parts = [self.activation, self.optimizer, f"lr{self.learning_rate:g}"]
        if self.depth > 0:
            parts.append(f"depth{self.depth}")
        if self.init != "default":
            parts.append(self.init)
        if self.dropout > 0:
            parts.append(f"dropout{self.dropout:g}")
        if self.input_scaling != "symmetric":
            parts.append(self.input_scaling)
        if self.train_examples:
            parts.append(f"train{self.train_examples}")
        # Two configurations that differ only here would otherwise share a name in the UI's table.
        if self.momentum > 0:
            parts.append(f"momentum{self.momentum:g}")
        if self.weight_decay > 0:
            parts.append(f"wd{self.weight_decay:g}")
        return "-".join(parts)

    def to_params(self) -> dict[str, str]:
        """Every field as an MLflow param, in the same text form ``from_mapping`` reads back."""
        return {item.name: format_value(getattr(self, item.name)) for item in fields(self)}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a validated config from user values (strings or typed); unknown keys are refused."""
        known = {item.name: item for item in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(known)}")
        # An empty data_dir (MLproject's default) means "ACTOPT_DATA_DIR, else ./data".
        values = {name: value for name, value in values.items() if not (name == "data_dir" and value == "")}
        converted = {name: parse_value(known[name], value) for name, value in values.items()}
        config = cls(**converted)
        validate(config)
        return config

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed, validated like any other config."""
        return TrainConfig.from_mapping({**dataclasses.asdict(self), **changes})


def format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_boolean(value: Any) -> bool:
    """``true``/``false`` and their usual spellings (1/0, yes/no, on/off); ValueError for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{value!r} is not true or false")


def parse_value(item: dataclasses.Field, value: Any) -> Any:
    """Convert one user value to the field's type, or raise a ConfigError naming the field."""
    kind = item.type
    name = item.name
    if value is None:
        raise ConfigError(f"{name}: a value is required")
    try:
        if kind == "bool":
            return parse_boolean(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if kind == "tuple[int, ...]":
            return parse_sizes(value)
        return str(value).strip()
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a valid {describe_type(kind)}") from None


def describe_type(kind: str) -> str:
    return {
        "bool": "boolean (true/false)",
        "int": "integer",
        "float": "finite number",
        "tuple[int, ...]": "list of positive integers like 256,128",
    }.get(kind, "text")


def parse_sizes(value: Any) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        sizes = tuple(int(item) for item in value)
    else:
        text = str(value).strip()
        # An empty list is a valid architecture: logistic regression, no hidden layer.
        sizes = tuple(int(part) for part in text.split(",")) if text else ()
    if any(size < 1 for size in sizes):
        raise ValueError
    return sizes


@dataclass(frozen=True)
class Range:
    """The values a numeric field takes; ``validate`` checks the same bounds in its own words (a test holds the two
    equal), and the CLI's options are typed and range-checked by click with these."""

    minimum: float | None = None
    maximum: float | None = None
    minimum_open: bool = False
    maximum_open: bool = False


RANGES: dict[str, Range] = {
    "depth": Range(0, INTEGER_LIMIT), "width": Range(1, INTEGER_LIMIT),
    "dropout": Range(0, 1, maximum_open=True), "learning_rate": Range(0, minimum_open=True),
    "momentum": Range(0, 1, maximum_open=True), "weight_decay": Range(0),
    "batch_size": Range(1, INTEGER_LIMIT), "epochs": Range(1, INTEGER_LIMIT),
    "validation_fraction": Range(0, 1, minimum_open=True, maximum_open=True),
    "seed": Range(0, SEED_LIMIT), "max_batches": Range(0, INTEGER_LIMIT), "train_examples": Range(0, INTEGER_LIMIT),
}


def validate(config: TrainConfig) -> None:
    """Raise ConfigError for the first value that cannot train."""
    for name, choices in CHOICES.items():
        choose(dict.fromkeys(choices), getattr(config, name), name)
    checks = [
        (config.learning_rate > 0, f"learning_rate must be > 0, got {config.learning_rate:g}"),
        (0 <= config.momentum < 1, f"momentum must be in [0, 1), got {config.momentum:g}"),
        (config.weight_decay >= 0, f"weight_decay must be >= 0, got {config.weight_decay:g}"),
        (config.batch_size >= 1, f"batch_size must be >= 1, got {config.batch_size}"),
        (config.epochs >= 1, f"epochs must be >= 1, got {config.epochs}"),
        (
            0 < config.validation_fraction < 1,
            f"validation_fraction must be in (0, 1), got {config.validation_fraction:g}",
        ),
        (0 <= config.dropout < 1, f"dropout must be in [0, 1), got {config.dropout:g}"),
        (config.depth >= 0, f"depth must be >= 0, got {config.depth}"),
        (config.width >= 1, f"width must be >= 1, got {config.width}"),
        (config.max_batches >= 0, f"max_batches must be >= 0, got {config.max_batches}"),
        (config.train_examples >= 0, f"train_examples must be >= 0, got {config.train_examples}"),
        (bool(config.experiment_name), "experiment_name must not be empty"),
        (len(config.experiment_name) <= EXPERIMENT_NAME_LIMIT,
         f"experiment_name must be at most {EXPERIMENT_NAME_LIMIT} characters, got {len(config.experiment_name)}"),
        (bool(config.data_dir), "data_dir must not be empty"),
    ]
    checks += integer_checks(config)
    for holds, message in checks:
        if not holds:
            raise ConfigError(message)
    if config.optimizer in ("adam", "adamw") and config.momentum:
        raise ConfigError(f"momentum applies to sgd and rmsprop, not {config.optimizer}")


# Digits past which an integer is shown in floating-point form: a study file's 1e308 is int(1e308), 309 digits.
SHOWN_DIGITS = 24


def shown_integer(value: int) -> str:
    return str(value) if len(str(abs(value))) <= SHOWN_DIGITS else f"{float(value):g}"


def integer_checks(config: TrainConfig) -> list[tuple[bool, str]]:
    """Every integer within what torch takes: the seed in its range, sizes and counts below INTEGER_LIMIT."""
    checks = [(0 <= config.seed <= SEED_LIMIT, f"seed must be in [0, {SEED_LIMIT}], got {config.seed}")]
    for name in ("batch_size", "epochs", "depth", "width", "max_batches", "train_examples"):
        value = getattr(config, name)
        checks.append((value <= INTEGER_LIMIT, f"{name} must be <= {INTEGER_LIMIT}, got {shown_integer(value)}"))
    largest = max(config.hidden_sizes, default=0)
    checks.append((largest <= INTEGER_LIMIT, f"hidden_sizes must each be <= {INTEGER_LIMIT}, got {largest}"))
    return checks


# Where a run reads its data and logs its results (and what it logs besides), not what it trains: left out
# of the config digest, so that a study resumed from another data copy still finds its finished runs.
LOCATION_FIELDS = ("data_dir", "download", "experiment_name", "system_metrics")


def text_digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


LATER_DEFAULTS = {"input_scaling": "symmetric", "train_examples": "0"}


def config_digest(config: TrainConfig) -> str:
    """Stable over processes and machines: what a run trains, not where its data and results live."""
    params = {key: value for key, value in config.to_params().items() if key not in LOCATION_FIELDS}
    # Runs logged before these fields existed trained with their defaults: leaving them out at the
    # default keeps those runs' digests, so a resumed sweep still finds them.
    for name, default in LATER_DEFAULTS.items():
        if params.get(name) == default:
            del params[name]
    return text_digest(params)
