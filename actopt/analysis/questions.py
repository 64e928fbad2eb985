"""A study's questions and the comparisons each needs, declared before the data are seen.

A question names the factors it compares and its measures (``actopt.sweeps.study``'s COMPARED_MEASURES and
DESCRIBED_MEASURES). ``comparisons_needed`` lists, from the questions and the run table, every pair of levels a
compared measure tests: within each group of the other varying parameters, each configuration at its own best
learning rate (chosen on validation accuracy only), every pair of the factor's levels or the question's declared
contrasts. No pair is chosen by looking at test results, so the family of comparisons is fixed in advance; a study
without questions gets ``default_questions``. This is also what a helper that adds seeds until a question is
decided reads: which pairs, of which runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import pandas as pd

from actopt.analysis.frames import label_columns, order_key, science_columns, text
from actopt.analysis.tables import tuned_runs
from actopt.core.metric_names import BEST_VAL_ACCURACY, TEST_ACCURACY
from actopt.sweeps.study import COMPARED_MEASURES, MULTIPLICITY, load_study, preset_names


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    factors: tuple[str, ...]
    measures: tuple[str, ...]
    contrasts: tuple[tuple[Any, Any], ...] = ()  # declared pairs of levels; empty: every pair


@dataclass(frozen=True)
class Contrast:
    """One paired comparison: ``first`` against ``second`` of ``factor`` on ``measure``, within ``where`` (the other
    varying parameters' values), for ``question``."""

    question: str
    factor: str
    measure: str
    where: tuple[tuple[str, Any], ...]
    first: Any
    second: Any

    def rows(self, table: pd.DataFrame, level: Any) -> pd.DataFrame:
        """The runs of ``table`` in this contrast's group at ``level`` of its factor."""
        chosen = table[self.factor].astype(str) == str(level)
        for name, value in self.where:
            chosen &= table[name].astype(str) == str(value)
        return table[chosen]


def from_study(declared: Sequence[Mapping[str, Any]]) -> list[Question]:
    """The study file's checked ``questions`` as ``Question``s."""
    return [Question(item["id"], item["question"], tuple(item["factors"]), tuple(item["measures"]),
                     tuple(tuple(pair) for pair in item.get("contrasts") or ())) for item in declared]


def declared(study_name: str) -> tuple[list[Question], str]:
    """The questions and multiplicity method of the preset named ``study_name`` (the runs' ``study`` tag); none and
    the default method for a study that is not a preset."""
    if study_name not in preset_names():
        return [], MULTIPLICITY[0]
    study = load_study(study_name)
    return from_study(study.questions), study.multiplicity


def default_questions(table: pd.DataFrame) -> list[Question]:
    """Without declared questions: every varying scientific parameter on test accuracy (dropout on the validation
    accuracy and the gap it is for), activations also on the area under the validation curve."""
    questions = []
    for factor in varying_factors(table):
        measures = {"activation": (TEST_ACCURACY, "val_area"), "dropout": (BEST_VAL_ACCURACY, "gap"),
                    "optimizer": (TEST_ACCURACY, "lr_sensitivity")}.get(factor, (TEST_ACCURACY,))
        questions.append(Question(factor, f"Which {factor} does best?", (factor,), measures))
    return questions


def varying_factors(table: pd.DataFrame) -> list[str]:
    return [name for name in label_columns(table, science_columns(table)) if table[name].astype(str).nunique() > 1]


def groups(tuned: pd.DataFrame, factor: str) -> list[tuple[tuple[tuple[str, Any], ...], pd.DataFrame]]:
    """The tuned runs split by the other varying parameters, each group with its ``where``."""
    columns = [name for name in label_columns(tuned, science_columns(tuned)) if name != factor]
    if not columns:
        return [((), tuned)]
    return [(tuple(zip(columns, key if isinstance(key, tuple) else (key,))), rows)
            for key, rows in tuned.groupby(columns, sort=False, dropna=False)]


def level_pairs(levels: list[Any], declared: tuple[tuple[Any, Any], ...]) -> list[tuple[Any, Any]]:
    if not declared:
        return list(combinations(levels, 2))
    present = {text(level): level for level in levels}
    return [(present[text(first)], present[text(second)]) for first, second in declared
            if text(first) in present and text(second) in present]


def comparisons_needed(questions: Sequence[Question], table: pd.DataFrame, tuned: pd.DataFrame | None = None
                       ) -> list[Contrast]:
    """Every pair each question's compared measures test, in question order, each pair once (the first question
    that needs it owns it). Groups where no run learned are left out: their levels differ only by chance rates.
    ``tuned`` is ``tuned_runs(table, keep_failed=True)`` where the caller has it already."""
    tuned = tuned_runs(table, keep_failed=True) if tuned is None else tuned
    needed: list[Contrast] = []
    seen: set[tuple[Any, ...]] = set()
    factors = set(varying_factors(table))
    for question in questions:
        measures = [name for name in question.measures if name in COMPARED_MEASURES]
        for factor in (name for name in question.factors if name in factors):
            for where, rows in groups(tuned, factor):
                if "learned" in rows and not rows["learned"].any():
                    continue
                levels = list(rows[factor].drop_duplicates())
                levels = sorted(levels, key=lambda level: order_key(factor)(pd.Series([level])).iloc[0])
                for first, second in level_pairs(levels, question.contrasts):
                    for measure in measures:
                        key = (factor, measure, where, text(first), text(second))
                        if key not in seen:
                            seen.add(key)
                            needed.append(Contrast(question.id, factor, measure, where, first, second))
    return needed
