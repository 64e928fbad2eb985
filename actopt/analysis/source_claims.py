"""The report's "Claims of the source": each claim a study file declares, tested on its runs.

A claim (study-file key ``claims``, checked by ``actopt.sweeps.study.check_claims``) names a metric
(a column of ``tables.run_table`` or a name of DERIVED), the configuration it is about (``where``:
option → value) and what the source says about it, in one of these forms:

- ``value`` ± ``tolerance``: reproduced when the mean over seeds lies within the tolerance;
- ``above`` / ``below`` a threshold: reproduced when the 95% interval over seeds lies wholly on the
  claimed side, not reproduced when wholly on the other, undecided when it straddles;
- ``less_than`` / ``greater_than`` another configuration (a second ``where``): the same on the
  seed-by-seed paired difference;
- ``testable: false`` with a ``reason``: not testable here.

Where several runs of one seed match (a learning-rate sweep), ``aggregate`` takes their ``mean``
(the default) or their ``best`` (largest) value. A single seed, or --quick's few batches, makes every
verdict a smoke test, and the section says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from actopt.analysis import statistics
from actopt.analysis.frames import layer_values
from actopt.core.metric_names import PROBE_GRAD_MAX_ABS


def input_gradient_decades(table: pd.DataFrame, histories: pd.DataFrame) -> pd.Series:
    """log10 of layer 1's step-0 max |gradient| over the last layer's: how far gradients shrink towards the input."""
    values = layer_values(histories, PROBE_GRAD_MAX_ABS)
    values = values[values["step"] == 0]
    found = {}
    for run_id, group in values.groupby("run_id"):
        ordered = group.sort_values("layer")["value"].to_numpy(dtype=float)
        if len(ordered) >= 2 and ordered[0] > 0 and ordered[-1] > 0:
            found[run_id] = math.log10(ordered[0] / ordered[-1])
    return table["run_id"].map(found).astype("float64")


DERIVED: dict[str, Callable[[pd.DataFrame, pd.DataFrame], pd.Series]] = {
    "step0_input_gradient_decades": input_gradient_decades,
}
SMOKE_NOTE = ("**Smoke test**: one seed or --quick's few batches; the verdicts below only show that the claims can "
              "be checked, not whether they hold.")


def matches(column: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return pd.to_numeric(column, errors="coerce").sub(float(value)).abs() < 1e-12
    return column.astype(str) == str(value).lower() if isinstance(value, bool) else column.astype(str) == str(value)


def per_seed(table: pd.DataFrame, values: pd.Series, where: dict[str, Any], aggregate: str) -> pd.Series:
    """The claim's metric per seed for the runs matching ``where`` (empty when a key is no column)."""
    chosen = pd.Series(True, index=table.index)
    for key, value in where.items():
        if key not in table:
            return pd.Series(dtype="float64")
        chosen &= matches(table[key], value)
    picked = values[chosen].groupby(table.loc[chosen, "seed"])
    return (picked.max() if aggregate == "best" else picked.mean()).astype("float64")


def condition(where: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in where.items()) or "every run"


def side(interval: statistics.Interval, threshold: float, above: bool) -> str:
    """reproduced / not reproduced / undecided for "above threshold" (or below, with ``above`` false)."""
    low, high = (interval.low, interval.high) if interval.defined else (interval.mean, interval.mean)
    if above:
        return "reproduced" if low > threshold else "not reproduced" if high < threshold else "undecided"
    return "reproduced" if high < threshold else "not reproduced" if low > threshold else "undecided"


def judge(claim: dict[str, Any], table: pd.DataFrame, histories: pd.DataFrame) -> dict[str, str]:
    """One claim's row: what was claimed, what was measured (mean [95% interval], seeds) and the verdict."""
    where = claim.get("where", {})
    row = {"claim": claim["claim"], "source": claim["source"], "condition": condition(where)}
    if claim.get("testable", True) is False:
        return {**row, "claimed": "–", "measured": "–", "verdict": f"not testable here: {claim['reason']}"}
    name = claim["metric"]
    if name in DERIVED:
        values = DERIVED[name](table, histories)
    elif name in table:
        values = pd.to_numeric(table[name], errors="coerce").astype("float64")
    else:
        return {**row, "claimed": "–", "measured": "–", "verdict": f"not testable here: no run logged {name}"}
    aggregate = claim.get("aggregate", "mean")
    first = per_seed(table, values, where, aggregate)
    if "less_than" in claim or "greater_than" in claim:
        other = claim.get("less_than", claim.get("greater_than"))
        interval = statistics.paired_difference(first, per_seed(table, values, other, aggregate))
        claimed = f"{name} {'<' if 'less_than' in claim else '>'} that of {condition(other)}"
        verdict = side(interval, 0.0, "greater_than" in claim) if interval.count else "not testable here: no runs"
        measured = f"difference {interval.describe(digits=4)} ({interval.count} seeds)"
        return {**row, "claimed": claimed, "measured": measured, "verdict": verdict}
    interval = statistics.mean_interval(first)
    measured = f"{interval.describe(digits=4)} ({interval.count} seeds)"
    if not interval.count:
        return {**row, "claimed": "–", "measured": "–", "verdict": "not testable here: no run matches"}
    if "value" in claim:
        tolerance = float(claim.get("tolerance", 0.0))
        claimed = f"{name} = {claim['value']:g} ± {tolerance:g}"
        verdict = "reproduced" if abs(interval.mean - float(claim["value"])) <= tolerance else "not reproduced"
        return {**row, "claimed": claimed, "measured": measured, "verdict": verdict}
    above = "above" in claim
    threshold = float(claim["above"] if above else claim["below"])
    claimed = f"{name} {'>' if above else '<'} {threshold:g}"
    return {**row, "claimed": claimed, "measured": measured, "verdict": side(interval, threshold, above)}


def claim_rows(claims: list[dict[str, Any]], table: pd.DataFrame, histories: pd.DataFrame) -> list[dict[str, str]]:
    return [judge(claim, table, histories) for claim in claims]


def is_smoke(table: pd.DataFrame) -> bool:
    batches = pd.to_numeric(table.get("max_batches", pd.Series(0, index=table.index)), errors="coerce").fillna(0)
    return table["seed"].nunique() < 2 or bool((batches > 0).any())


def study_claims(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The claims the runs' study declares, when the study is a preset (its file is then known here)."""
    from actopt.sweeps import study

    names = table["study"].dropna().unique() if "study" in table else []
    return study.declared_claims(str(names[0])) if len(names) == 1 else []


def claims_section(table: pd.DataFrame, histories: pd.DataFrame, claims: list[dict[str, Any]] | None = None) -> str:
    """The markdown section, or "" when the study declares no claims."""
    claims = study_claims(table) if claims is None else claims
    if not claims:
        return ""
    rows = claim_rows(claims, table, histories)
    lines = ["## Claims of the source", "",
             "Each claim the study file declares, tested on these runs: a value is reproduced when the mean over "
             "seeds lies within its tolerance; a bound or a comparison when the 95% interval over seeds (Student t; "
             "for a comparison, of the seed-by-seed difference) lies wholly on the claimed side, not reproduced when "
             "wholly on the other, undecided when it straddles.", ""]
    if is_smoke(table):
        lines += [SMOKE_NOTE, ""]
    header = ["claim", "source", "condition", "claimed", "measured", "verdict"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[key].replace("|", "\\|") for key in header) + " |" for row in rows]
    counts = pd.Series([row["verdict"].split(":")[0] for row in rows]).value_counts()
    lines += ["", "; ".join(f"{verdict}: {count}" for verdict, count in counts.items()) + "."]
    return "\n".join(lines)
