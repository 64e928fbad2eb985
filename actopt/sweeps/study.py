"""A study is a grid of training configurations written in a readable JSON file.

Presets live in ``actopt/sweeps/studies/``; a user's own file works the same way. The format::

    {
      "description": "What the study asks (required).",
      "source": "Where it comes from (optional prose).",
      "seeds": [0, 1],
      "fixed": {"dataset": "mnist", "hidden_sizes": [128, 64], "epochs": 5},
      "grid": {
        "activation": ["sigmoid", "relu"],
        "optimizer": {
          "sgd": {"learning_rate": [0.01, 0.1]},
          "adam": {"learning_rate": [0.001]}
        }
      }
    }

Keys in ``fixed`` and ``grid`` are ``TrainConfig`` fields. In the grid, a list gives the values to
try, and an object maps each value to a sub-grid that applies only with that value (the learning
rate depends on the optimizer); every key multiplies the runs. Each configuration runs once per
seed (``seeds``, default ``[0]``). A key starting with ``//`` is a comment, anywhere. ``data_dir``,
``download``, ``experiment_name`` and ``study`` belong to the sweep, not to the file.
``"until_decided": {"max_seeds": 20, "max_runs": 400}`` (both optional) makes ``actopt sweep`` add
seeds until the study's comparisons are decided, as ``--until-decided`` does (docs/studies.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from actopt.core.config import TrainConfig, config_digest, text_digest
from actopt.errors import ConfigError

STUDIES_DIR = Path(__file__).with_name("studies")
FILE_KEYS = ("description", "source", "seeds", "fixed", "grid", "until_decided")
# --until-decided: seeds per configuration at most. With the ~9 comparisons of a study such as
# fashion-activations (each at 0.05/9), the sequential rule decides a difference of 2 paired standard
# deviations with a median 10 seeds and one of 1 standard deviation with 20 (docs/analysis.md).
DEFAULT_MAX_SEEDS = 20
UNTIL_DECIDED_KEYS = ("max_seeds", "max_runs")
# Set by the sweep for every run; the seed comes from "seeds".
SWEEP_FIELDS = ("data_dir", "download", "experiment_name", "study", "seed")
STUDY_FIELDS = tuple(item.name for item in fields(TrainConfig) if item.name not in SWEEP_FIELDS)
# --quick: every configuration trains one epoch of a few batches, without logging a model.
QUICK = {"epochs": 1, "max_batches": 5, "log_model": False}
COMMENT_PREFIX = "//"


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    description: str
    digest: str  # of the file's runs, comments and prose left out
    runs: tuple[dict[str, Any], ...]  # each run's values as the file gives them, seed included
    # "until_decided" as the file gives it (None: a sweep of the declared seeds only)
    until_decided: dict[str, int] | None = None

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def preset_names() -> list[str]:
    return sorted(path.stem for path in STUDIES_DIR.glob("*.json"))


def study_path(name_or_path: str) -> Path:
    """A file when one exists there (or the argument looks like a path), else a preset's name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = f"known studies: {', '.join(preset_names())}"
    if path.suffix == ".json" or os.sep in name_or_path:
        raise ConfigError(f"study file {name_or_path} not found; {known}")
    preset = STUDIES_DIR / f"{name_or_path}.json"
    if not preset.is_file():
        raise ConfigError(f"unknown study {name_or_path!r}; {known} (or give the path of a .json study file)")
    return preset


def load_study(name_or_path: str) -> Study:
    """Read, check and expand a study file; every error is one line naming the key at fault."""
    path = study_path(name_or_path)
    where = f"study file {path}"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: cannot be read: {error}") from None
    document = without_comments(document)
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: must hold a JSON object with keys {', '.join(FILE_KEYS)}")
    unknown = [key for key in document if key not in FILE_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(FILE_KEYS)}")
    description = document.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"{where}: 'description' must be a non-empty text saying what the study asks")
    seeds = document.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
        raise ConfigError(f"{where}: 'seeds' must be a list of integers, got {json.dumps(seeds)}")
    if not seeds:
        raise ConfigError(f"{where}: 'seeds' is empty: the study expands to zero runs")
    fixed = document.get("fixed", {})
    check_fixed(fixed, where)
    grid = document.get("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: 'grid' must be an object of option: values, got {json.dumps(grid)}")
    combinations = expand(grid, "grid", where)
    for key in fixed:
        if any(key in combination for combination in combinations):
            raise ConfigError(f"{where}: fixed.{key} is also set in the grid; keep it in one place")
    runs = tuple({**fixed, **combination, "seed": seed} for combination in combinations for seed in seeds)
    until_decided = check_until_decided(document.get("until_decided"), len(set(seeds)), where)
    # The digest leaves until_decided out: the added seeds are children of the same parent as the declared ones.
    digest = text_digest({"seeds": seeds, "fixed": fixed, "grid": grid})
    study = Study(name=path.stem, path=path, description=description.strip(), digest=digest, runs=runs,
                  until_decided=until_decided)
    configurations(study)  # every run must be a valid configuration before anything starts
    return study


def check_until_decided(value: Any, declared: int, where: str) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or any(key not in UNTIL_DECIDED_KEYS for key in value):
        raise ConfigError(f"{where}: 'until_decided' must be an object with keys among "
                          f"{', '.join(UNTIL_DECIDED_KEYS)}, got {json.dumps(value)}")
    for key, number in value.items():
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise ConfigError(f"{where}: until_decided.{key} must be a positive integer, got {json.dumps(number)}")
    check_max_seeds(value.get("max_seeds", DEFAULT_MAX_SEEDS), declared, f"{where}: until_decided.max_seeds")
    return dict(value)


def check_max_seeds(max_seeds: int, declared: int, what: str) -> None:
    if max_seeds < max(declared, 2):
        raise ConfigError(f"{what} must be at least {max(declared, 2)} (the study declares {declared} seed"
                          f"{'s' if declared > 1 else ''}, and one seed has no interval), got {max_seeds}")


def without_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: without_comments(item) for key, item in value.items() if not key.startswith(COMMENT_PREFIX)}
    if isinstance(value, list):
        return [without_comments(item) for item in value]
    return value


def check_field(key: str, where: str, at: str) -> None:
    if key in SWEEP_FIELDS:
        hint = "list seeds in 'seeds'" if key == "seed" else "the sweep sets it (see actopt sweep --help)"
        raise ConfigError(f"{where}: {at}.{key} cannot be set in a study file: {hint}")
    if key not in STUDY_FIELDS:
        raise ConfigError(f"{where}: {at}.{key} is not an option; valid options: {', '.join(STUDY_FIELDS)}")


def is_value(key: str, value: Any) -> bool:
    """One value of an option: text, a number or a boolean; hidden_sizes may also be a list of integers."""
    if key == "hidden_sizes" and isinstance(value, list):
        return all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    return isinstance(value, (str, int, float, bool))


def check_fixed(fixed: Any, where: str) -> None:
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: 'fixed' must be an object of option: value, got {json.dumps(fixed)}")
    for key, value in fixed.items():
        check_field(key, where, "fixed")
        if not is_value(key, value):
            raise ConfigError(
                f"{where}: fixed.{key} must be one value, got {json.dumps(value)} (values to try belong in 'grid')"
            )


def expand(grid: dict[str, Any], at: str, where: str) -> list[dict[str, Any]]:
    """Every combination of a grid's choices, in the file's order."""
    combinations: list[dict[str, Any]] = [{}]
    for key, choices in grid.items():
        check_field(key, where, at)
        if isinstance(choices, list):
            for value in choices:
                if not is_value(key, value):
                    raise ConfigError(f"{where}: {at}.{key} lists {json.dumps(value)}, which is not one value")
            branches = [{key: value} for value in choices]
        elif isinstance(choices, dict):
            branches = []
            for value, subgrid in choices.items():
                if not isinstance(subgrid, dict):
                    raise ConfigError(
                        f"{where}: {at}.{key}.{value} must be an object (a sub-grid, {{}} for none), got "
                        f"{json.dumps(subgrid)}"
                    )
                for combination in expand(subgrid, f"{at}.{key}.{value}", where):
                    if key in combination:
                        raise ConfigError(f"{where}: {at}.{key}.{value} sets {key} again")
                    branches.append({key: value, **combination})
        else:
            raise ConfigError(
                f"{where}: {at}.{key} must be a list of values or an object of value: sub-grid, got "
                f"{json.dumps(choices)} "
                "(a single value belongs in 'fixed', or write it as a one-item list)"
            )
        if not branches:
            raise ConfigError(f"{where}: {at}.{key} is empty: the grid expands to zero runs")
        merged = []
        for combination in combinations:
            for branch in branches:
                twice = sorted(set(combination) & set(branch))
                if twice:
                    raise ConfigError(f"{where}: {at}.{key} sets {twice[0]}, which the grid already sets")
                merged.append({**combination, **branch})
        combinations = merged
    return combinations


def default_experiment(study_name: str, quick: bool) -> str:
    # Smoke runs stay out of the experiment that the analysis reads.
    return f"{study_name}-quick" if quick else study_name


def configurations(
    study: Study,
    data_dir: str | None = None,
    download: bool | None = None,
    device: str | None = None,
    experiment_name: str | None = None,
    quick: bool = False,
) -> list[TrainConfig]:
    """The study's runs as validated configs, with the sweep's own values; duplicates are refused."""
    sweep_values: dict[str, Any] = {"study": study.name,
                                    "experiment_name": experiment_name or default_experiment(study.name, quick)}
    if data_dir:
        sweep_values["data_dir"] = data_dir
    if download is not None:
        sweep_values["download"] = download
    if device:
        sweep_values["device"] = device
    if quick:
        sweep_values.update(QUICK)
    configs: list[TrainConfig] = []
    seen: dict[str, int] = {}
    for number, run in enumerate(study.runs, start=1):
        try:
            config = TrainConfig.from_mapping({**run, **sweep_values})
        except ConfigError as error:
            raise ConfigError(f"study {study.name}, run {number} ({describe_run(run)}): {error}") from None
        digest = config_digest(config)
        if digest in seen:
            mode = " with --quick" if quick else ""
            raise ConfigError(
                f"study {study.name}: runs {seen[digest]} and {number} are the same configuration{mode} "
                f"({label(config)})"
            )
        seen[digest] = number
        configs.append(config)
    return configs


def describe_run(run: dict[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in run.items())


def label(config: TrainConfig) -> str:
    """How progress lines and the summary name a configuration."""
    return f"{config.run_name} seed {config.seed}"


