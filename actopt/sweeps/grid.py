"""A study file's grid: its options checked, its comments dropped, its choices expanded into every
combination (``study`` reads the file and makes the configurations)."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from actopt.core.config import TrainConfig
from actopt.errors import ConfigError

# Set by the sweep for every run; the seed comes from "seeds".
SWEEP_FIELDS = ("data_dir", "download", "experiment_name", "study", "seed")
STUDY_FIELDS = tuple(item.name for item in fields(TrainConfig) if item.name not in SWEEP_FIELDS)
COMMENT_PREFIX = "//"


class DuplicateKey(ValueError):
    """A JSON object that gives one key twice: json keeps the last, silently dropping the first."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: the object, or DuplicateKey naming a key given twice."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen and not key.startswith(COMMENT_PREFIX):  # comments may repeat: they are left out
            raise DuplicateKey(repr(key))
        seen[key] = value
    return seen


def count_combinations(grid: Any) -> int:
    """How many combinations ``expand`` would give, without making them; a malformed grid counts as one
    (``expand`` names its fault)."""
    if not isinstance(grid, dict):
        return 1
    count = 1
    for choices in grid.values():
        if isinstance(choices, list):
            count *= max(len(choices), 1)
        elif isinstance(choices, dict):
            count *= max(sum(count_combinations(subgrid) for subgrid in choices.values()), 1)
    return count


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


def describe_run(run: dict[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in run.items())
