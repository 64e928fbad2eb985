"""The study's frames, derived once from what its runs logged.

``derive_frames`` builds the run table, the per-run diagnosis checks, the learning-rate tables, the tuned runs (each
configuration at its own best learning rate) and the depth theory's comparison once; the findings, the decisions,
the figures and the report all read these frames instead of computing them again (``conclusions.conclude`` adds the
judged questions and the findings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from actopt.analysis import depth_theory
from actopt.analysis.checks import Checks, diagnosed, run_checks
from actopt.analysis.frames import is_diverged
from actopt.analysis.tables import best_learning_rates, learning_rate_table, run_table, tuned_runs


@dataclass(frozen=True, eq=False)
class Logged:
    """What the store holds for the runs to analyse: the runs, those left out (and why), their histories and the
    gradient histograms of the runs ``tables.histogram_runs`` picks."""

    runs: pd.DataFrame
    left_out: pd.DataFrame
    histories: pd.DataFrame
    histograms: dict[str, dict[str, Any]]


@dataclass(frozen=True, eq=False)
class Frames:
    """The frames every part of the analysis reads, each computed once.

    ``table``: ``tables.run_table`` with the diagnosis's gap and gradient ratio (``checks.diagnosed``);
    ``checks``: the per-run rules' checks; ``rates``: ``tables.learning_rate_table``; ``best_rates``:
    ``tables.best_learning_rates``; ``tuned``: every seed of each configuration at its best learning rate (what the
    decisions compare); ``curves``: the same without the diverged seeds (what the figures draw); ``theory``: the
    depth study's measurements against mean-field theory.
    """

    logged: Logged
    table: pd.DataFrame
    checks: Checks
    rates: pd.DataFrame
    best_rates: pd.DataFrame
    tuned: pd.DataFrame
    curves: pd.DataFrame
    theory: depth_theory.Theory

    @property
    def runs(self) -> pd.DataFrame:
        return self.logged.runs

    @property
    def histories(self) -> pd.DataFrame:
        return self.logged.histories

    @property
    def histograms(self) -> dict[str, dict[str, Any]]:
        return self.logged.histograms


def derive_frames(logged: Logged) -> Frames:
    table = run_table(logged.runs, logged.histories)
    checks = run_checks(table, logged.histories)
    table = diagnosed(table, checks)
    tuned = tuned_runs(table, keep_failed=True)
    # tuned_runs(table) without keep_failed: the same runs less the diverged ones.
    curves = tuned[~is_diverged(tuned)].reset_index(drop=True)
    return Frames(logged, table, checks, learning_rate_table(table), best_learning_rates(table), tuned, curves,
                  depth_theory.derive_theory(table, logged.histories))
