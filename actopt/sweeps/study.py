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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actopt.core import metric_names
from actopt.core.config import TrainConfig, config_digest, text_digest
from actopt.errors import ConfigError
from actopt.sweeps.grid import (
    STUDY_FIELDS,
    DuplicateKey,
    check_fixed,
    count_combinations,
    describe_run,
    expand,
    is_value,
    unique_keys,
    without_comments,
)

STUDIES_DIR = Path(__file__).with_name("studies")
FILE_KEYS = ("description", "source", "seeds", "fixed", "grid", "questions", "multiplicity", "until_decided", "claims")
# "multiplicity": how the report adjusts its family of comparisons: Holm's family-wise error (the default) or
# Benjamini–Hochberg's false-discovery rate ("fdr").
MULTIPLICITY = ("holm", "fdr")
# What a question may measure. Compared seed by seed between levels, each pair a decision of the report's family:
COMPARED_MEASURES = (metric_names.TEST_ACCURACY, metric_names.BEST_VAL_ACCURACY, "val_area", "gap")
# Described, not tested (orders, counts and ranges the report states with its numbers):
DESCRIBED_MEASURES = ("gradient_ratio", "trainability", "lr_sensitivity", "last_accuracy", "vanishing_gradients",
                      "dead_units", "failures")
QUESTION_KEYS = ("id", "question", "factors", "measures", "contrasts")
# A claim's forms (actopt.analysis.source_claims judges them); exactly one per claim.
CLAIM_FORMS = ("value", "above", "below", "less_than", "greater_than", "testable")
# --until-decided: seeds per configuration at most. With the ~9 comparisons of a study such as
# fashion-activations (each at 0.05/9), the sequential rule decides a difference of 2 paired standard
# deviations with a median 10 seeds and one of 1 standard deviation with 20 (docs/analysis.md).
DEFAULT_MAX_SEEDS = 20
UNTIL_DECIDED_KEYS = ("max_seeds", "max_runs")
# --quick: every configuration trains one epoch of a few batches, without logging a model.
QUICK = {"epochs": 1, "max_batches": 5, "log_model": False}
# The most runs a study may expand to, counted before they are expanded: at a few seconds a run, 10 000 runs
# are days of training; a grid of millions is a mistake, and expanding it would take minutes and gigabytes.
MAX_RUNS = 10_000


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    description: str
    digest: str  # of the file's runs, comments and prose left out
    runs: tuple[dict[str, Any], ...]  # each run's values as the file gives them, seed included
    questions: tuple[dict[str, Any], ...] = ()  # as the file gives them, checked (see check_questions)
    multiplicity: str = MULTIPLICITY[0]
    # "until_decided" as the file gives it (None: a sweep of the declared seeds only)
    until_decided: dict[str, int] | None = None
    text: str = ""  # the file as it was read: a file changed or deleted during the sweep is not read again


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
        text = path.read_text(encoding="utf-8")
        document = without_comments(json.loads(text, object_pairs_hook=unique_keys))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except DuplicateKey as error:
        raise ConfigError(f"{where}: the key {error} is given twice in one object (the second would replace the "
                          "first); give it once") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a study (a study needs a few levels)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: cannot be read: {error}") from None
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
    count = count_combinations(grid)
    if count * len(seeds) > MAX_RUNS:
        raise ConfigError(f"{where}: the grid expands to {count * len(seeds)} runs ({count} configurations × "
                          f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'}); a sweep takes at most {MAX_RUNS}")
    combinations = expand(grid, "grid", where)
    for key in fixed:
        if any(key in combination for combination in combinations):
            raise ConfigError(f"{where}: fixed.{key} is also set in the grid; keep it in one place")
    check_claims(document.get("claims", []), where)
    runs = tuple({**fixed, **combination, "seed": seed} for combination in combinations for seed in seeds)
    until_decided = check_until_decided(document.get("until_decided"), len(set(seeds)), where)
    # The digest leaves until_decided out: the added seeds are children of the same parent as the declared ones.
    digest = text_digest({"seeds": seeds, "fixed": fixed, "grid": grid})
    questions = check_questions(document.get("questions", []), where)
    multiplicity = document.get("multiplicity", MULTIPLICITY[0])
    if multiplicity not in MULTIPLICITY:
        raise ConfigError(f"{where}: 'multiplicity' must be one of {', '.join(MULTIPLICITY)}, got "
                          f"{json.dumps(multiplicity)}")
    study = Study(name=path.stem, path=path, description=description.strip(), digest=digest, runs=runs,
                  questions=questions, multiplicity=multiplicity, until_decided=until_decided, text=text)
    configurations(study)  # every run must be a valid configuration before anything starts
    return study


def check_questions(questions: Any, where: str) -> tuple[dict[str, Any], ...]:
    """The declared questions: each an object with a unique "id", the "question" in words, the "factors" (options)
    it compares, the "measures" (COMPARED_MEASURES and DESCRIBED_MEASURES) and optionally, for one factor, the
    "contrasts" to test (pairs of levels, declared before the data are seen; by default every pair of levels)."""
    if not isinstance(questions, list):
        raise ConfigError(f"{where}: 'questions' must be a list of objects, got {json.dumps(questions)}")
    seen: set[str] = set()
    for number, question in enumerate(questions, start=1):
        at = f"{where}: questions[{number}]"
        if not isinstance(question, dict):
            raise ConfigError(f"{at} must be an object with keys {', '.join(QUESTION_KEYS)}")
        unknown = [key for key in question if key not in QUESTION_KEYS]
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r}; valid keys: {', '.join(QUESTION_KEYS)}")
        for key in ("id", "question"):
            if not isinstance(question.get(key), str) or not question[key].strip():
                raise ConfigError(f"{at}: {key!r} must be a non-empty text")
        if question["id"] in seen:
            raise ConfigError(f"{at}: id {question['id']!r} is used twice")
        seen.add(question["id"])
        factors, measures = question.get("factors"), question.get("measures")
        if not isinstance(factors, list) or not factors or not all(isinstance(name, str) for name in factors):
            raise ConfigError(f"{at}: 'factors' must be a non-empty list of options, got {json.dumps(factors)}")
        for name in factors:
            if name not in STUDY_FIELDS:
                raise ConfigError(f"{at}: factor {name!r} is not an option; valid options: {', '.join(STUDY_FIELDS)}")
        known = (*COMPARED_MEASURES, *DESCRIBED_MEASURES)
        if not isinstance(measures, list) or not measures or any(name not in known for name in measures):
            raise ConfigError(f"{at}: 'measures' must be a non-empty list of {', '.join(known)}, got "
                              f"{json.dumps(measures)}")
        contrasts = question.get("contrasts")
        if contrasts is not None and (len(factors) != 1 or not isinstance(contrasts, list) or not all(
                isinstance(pair, list) and len(pair) == 2 and all(is_value(factors[0], value) for value in pair)
                for pair in contrasts)):
            raise ConfigError(f"{at}: 'contrasts' must be a list of [level, level] pairs of its one factor, got "
                              f"{json.dumps(contrasts)}")
    return tuple(questions)


def check_claims(claims: Any, where: str) -> None:
    """Each claim: an object with its text, its source and one form; ``where`` an object of options."""
    if not isinstance(claims, list):
        raise ConfigError(f"{where}: 'claims' must be a list of objects, got {json.dumps(claims)}")
    for number, claim in enumerate(claims, start=1):
        at = f"{where}: claims[{number}]"
        if not isinstance(claim, dict) or not all(isinstance(claim.get(key), str) for key in ("claim", "source")):
            raise ConfigError(f"{at} must be an object with text fields 'claim' and 'source'")
        forms = [form for form in CLAIM_FORMS if form in claim]
        if len(forms) != 1:
            raise ConfigError(f"{at} needs exactly one of {', '.join(CLAIM_FORMS)}, got {forms or 'none'}")
        if forms == ["testable"] and (claim["testable"] is not False or not isinstance(claim.get("reason"), str)):
            raise ConfigError(f"{at}: 'testable' may only be false, with a 'reason'")
        if forms != ["testable"] and not isinstance(claim.get("metric"), str):
            raise ConfigError(f"{at} needs a 'metric' (a run-table column)")
        for key in ("where", "less_than", "greater_than"):
            if key in claim and not isinstance(claim[key], dict):
                raise ConfigError(f"{at}: '{key}' must be an object of option: value")


def declared_claims(name: str) -> list[dict[str, Any]]:
    """The claims of the preset called ``name`` ([] for a study that is no preset, or declares none)."""
    path = STUDIES_DIR / f"{name}.json"
    if not path.is_file():
        return []
    return list(without_comments(json.loads(path.read_text(encoding="utf-8"))).get("claims", []))


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


def label(config: TrainConfig) -> str:
    """How progress lines and the summary name a configuration."""
    return f"{config.run_name} seed {config.seed}"


