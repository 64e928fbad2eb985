"""The per-run rules' checks on each run's history (``core.diagnosis``, the very rules that tagged the run when it
ended), and the run table with the values they measured."""

from __future__ import annotations

import pandas as pd

from actopt.analysis.frames import is_diverged
from actopt.core import diagnosis

Checks = dict[str, dict[str, diagnosis.Check]]


def run_checks(runs: pd.DataFrame, histories: pd.DataFrame) -> Checks:
    """Per run id: ``core.diagnosis``'s checks of its history, the very rules that tagged the run when it ended."""
    tables: dict[str, dict[int, dict[str, float]]] = {}
    for run_id, step, key, value in zip(histories["run_id"], histories["step"], histories["key"], histories["value"]):
        tables.setdefault(run_id, {}).setdefault(int(step), {})[key] = float(value)
    return {run_id: diagnosis.diagnose(tables.get(run_id, {}), bool(diverged))
            for run_id, diverged in zip(runs["run_id"], is_diverged(runs))}


def check_values(runs: pd.DataFrame, checks: Checks, rule: str) -> pd.DataFrame:
    """``runs`` with the rule's ``holds``, ``value`` and ``layer`` per run; runs the rule could not check dropped."""
    found = {run_id: checks[run_id][rule] for run_id in runs["run_id"] if checks[run_id][rule].checked}
    chosen = runs[runs["run_id"].isin(found)]
    return chosen.assign(holds=chosen["run_id"].map(lambda run_id: found[run_id].holds).astype(bool),
                         value=chosen["run_id"].map(lambda run_id: found[run_id].value).astype("float64"),
                         layer=chosen["run_id"].map(lambda run_id: found[run_id].layer),
                         evidence=chosen["run_id"].map(lambda run_id: found[run_id].evidence))


def diagnosed(table: pd.DataFrame, checks: Checks) -> pd.DataFrame:
    """``table`` with the diagnosis's per-run train − validation gap (so a run's overfitting tag and the report agree)
    and ``gradient_ratio``, epoch 1's first-layer over output-layer gradient norm (NaN where not measured)."""
    def value(rule: str) -> pd.Series:
        return table["run_id"].map(lambda run_id: checks[run_id][rule].value if run_id in checks else None)

    ratio = value("vanishing_gradients").astype("float64")
    return table.assign(final_gap=value("overfitting").astype("float64"),
                        gradient_ratio=ratio.where(ratio.abs() != float("inf")))
