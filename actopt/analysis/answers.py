"""The report's opening: each declared question answered in a few sentences computed from the decisions and the
run table, with its numbers, intervals and adjusted verdicts, and a link to the evidence below."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pandas as pd

from actopt.analysis import multiplicity
from actopt.analysis.conclusions import Study
from actopt.analysis.decisions import MEASURES, Decision, describe_level, magnitude
from actopt.analysis.frames import Finding, describe, label_columns, order_key, science_columns, text
from actopt.analysis.questions import Question, varying_factors
from actopt.core.metric_names import LEARNING_RATE


def anchor(question: Question) -> str:
    """The id of the question's evidence in the report (its decisions table)."""
    return "q-" + re.sub(r"[^a-z0-9-]+", "-", question.id.lower()).strip("-")


def where_text(decision: Decision) -> str:
    place = " · ".join(describe(name, value) for name, value in decision.contrast.where)
    return f"with {place}" if place else ""


def short_verdict(decision: Decision, adjusted: bool = True) -> str:
    """``with adam, relu beats sigmoid on test accuracy by 0.6 points [0.2, 0.9], adjusted p 0.03``: one pair as the
    answer quotes it, the bracket the raw 95% interval of the lead."""
    better, worse = decision.winner()
    measure = decision.measure
    lead = magnitude(decision.difference)
    interval = f" {measure.interval(lead)}" if lead.defined else " (1 seed)"
    where = where_text(decision)
    p_value = (f", adjusted p {decision.adjusted_p:.2g}" if adjusted and math.isfinite(decision.adjusted_p) else "")
    return (f"{where + ', ' if where else ''}{better} {measure.verb.format(other=worse)} by "
            f"{measure.amount(lead.mean)}{interval}{p_value}")


def compared_answer(question: Question, measure_name: str, made: Sequence[Decision], method: str) -> str:
    chosen = [item for item in made if item.contrast.question == question.id and item.contrast.measure == measure_name]
    measure = MEASURES[measure_name]
    if not chosen:
        return f"{measure.name.capitalize()}: no pair could be compared (no level learned, or the factor did not vary)."
    decided = [item for item in chosen if item.decided]
    open_pairs = [item for item in chosen if not item.decided]
    named = multiplicity.SHORT_NAMES[method]
    if decided:
        parts = [f"{measure.name.capitalize()}: {len(decided)} of {len(chosen)} pairs decided after {named}: "
                 + "; ".join(short_verdict(item) for item in decided)]
    else:
        parts = [f"{measure.name.capitalize()}: none of the {len(chosen)} pairs decided after {named}"]
    if open_pairs:
        detectable = [item.detectable for item in open_pairs if math.isfinite(item.detectable)]
        low, high = (f"{value * measure.scale:.1f}" for value in (min(detectable or [0]), max(detectable or [0])))
        if detectable:
            parts.append(f"with {open_pairs[0].difference.count} seeds the undecided pairs could have shown, at 80% "
                         f"power, differences of " + (low if low == high else f"{low} to {high}") + f" {measure.unit}")
        largest = max(open_pairs, key=lambda item: abs(item.difference.mean))
        parts.append(f"the largest undecided difference ({short_verdict(largest, adjusted=False)}) would need "
                     + (f"{largest.seeds_needed} seeds" if largest.seeds_needed else "more than 10,000 seeds"))
    return "; ".join(parts) + "."


def ordered(values: pd.Series, factor: str) -> list[str]:
    return [describe_level(factor, level) for level in values.sort_values().index]


def gradient_answer(table: pd.DataFrame, factor: str) -> str:
    """The order of the levels by the gradient reaching the first layer, and in how many settings it holds."""
    rows = table.dropna(subset=["gradient_ratio"]) if "gradient_ratio" in table else table.iloc[:0]
    if factor not in table or table[factor].astype(str).nunique() < 2:
        return f"Gradient propagation: {factor} does not vary in these runs, so there is no order to state."
    if rows[factor].astype(str).nunique() < 2:
        return "Gradient propagation: no per-layer gradient norms to order the levels by."
    medians = rows.groupby(factor)["gradient_ratio"].median()
    order = ordered(medians, factor)
    values = " < ".join(f"{describe_level(factor, level)} {medians[level]:.2g}"
                        for level in medians.sort_values().index)
    others = [name for name in [*label_columns(rows, science_columns(rows)), LEARNING_RATE]
              if name != factor and rows[name].astype(str).nunique() > 1]
    cells = list(rows.groupby(others, sort=False, dropna=False)) if others else [((), rows)]
    cells = [cell for _, cell in cells if cell[factor].nunique() == medians.size]
    agree = sum(ordered(cell.groupby(factor)["gradient_ratio"].median(), factor) == order for cell in cells)
    settings = " × ".join(name.replace("_", " ") for name in others) or "setting"
    shown = "the data show this order" if cells and agree == len(cells) else (
        "the data show this order in most settings" if cells and agree > len(cells) / 2 else "no consistent order")
    text_ = (f"Gradient propagation (epoch 1's first-layer over output-layer gradient norm, median over runs; above 1 "
             f"the first layer gets more than the output): {values}; the same order in {agree} of {len(cells)} "
             f"{settings} settings: {shown}.")
    if cells and agree < len(cells) and others:
        orders = []
        for key, cell in rows.groupby(others, sort=False, dropna=False):
            if cell[factor].nunique() == medians.size:
                place = " · ".join(describe(name, value) for name, value in zip(others, key if isinstance(key, tuple)
                                                                                 else (key,)))
                cell_medians = cell.groupby(factor)["gradient_ratio"].median().sort_values()
                orders.append(f"{place}: " + " < ".join(f"{describe_level(factor, level)} {value:.2g}"
                                                         for level, value in cell_medians.items()))
        text_ += " By setting: " + "; ".join(orders) + "."
    return text_


def sensitivity_answer(table: pd.DataFrame) -> str:
    """Each optimizer's spread of mean best validation accuracy over its learning-rate grid, and its failures."""
    parts = []
    for optimizer, rows in table.groupby("optimizer", sort=False):
        columns = [*label_columns(rows, science_columns(rows)), LEARNING_RATE]
        means = rows.groupby(columns, dropna=False)["val_score"].mean()
        rates = ", ".join(text(rate) for rate in sorted(rows[LEARNING_RATE].unique()))
        parts.append(f"{optimizer}: mean best validation accuracy {means.min():.3f}–{means.max():.3f} over its grid "
                     f"(rates {rates}), {int(rows['failed'].sum())} of {len(rows)} runs failed")
    return "Learning-rate sensitivity: " + "; ".join(parts) + "."


def last_epoch_answer(tuned: pd.DataFrame, factor: str) -> str:
    """``tuned``: every seed of each configuration at its best learning rate."""
    parts = []
    for level, rows in tuned.groupby(factor, sort=False):
        parts.append(f"{describe_level(factor, level)} best-epoch {rows['val_score'].mean():.3f}, last-epoch "
                     f"{rows['last_val_accuracy'].mean():.3f}")
    return ("Validation accuracy at each configuration's best rate, mean over its configurations and seeds, at the "
            "best and at the last epoch: " + "; ".join(parts) + ".")


def failures_answer(table: pd.DataFrame, factor: str) -> str:
    parts = []
    for level, rows in sorted(table.groupby(factor, sort=False),
                              key=lambda item: order_key(factor)(pd.Series([item[0]])).iloc[0]):
        kinds = rows.loc[rows["failed"], "failure"].value_counts()
        how = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        parts.append(f"{describe_level(factor, level)} {int(rows['failed'].sum())} of {len(rows)}"
                     + (f" ({how})" if how else ""))
    return f"Failed runs by {factor}: " + "; ".join(parts) + "."


def rule_answer(found: Sequence[Finding], topic: str) -> str:
    """Where a per-run rule held: each configuration with its count, or that it held nowhere."""
    held = [item for item in found if item.topic == topic and item.kind == "holds"]
    if not held:
        absent = next((item.statement for item in found if item.topic == topic), "not measured")
        return f"{topic}: nowhere ({absent[:1].lower() + absent[1:].rstrip('.')})."
    places = []
    for item in held:
        count = re.search(r"in (\d+) of (\d+) runs", item.statement)
        places.append(item.statement.split(":")[0] + (f" ({count.group(1)} of {count.group(2)})" if count else ""))
    return f"{topic}: " + "; ".join(places) + "."


def trainability_answer(found: Sequence[Finding]) -> str:
    held = [item for item in found if item.topic == "What decides whether runs learn"]
    if not held:
        return "What decides whether runs learn: every run learned, or none did, so nothing decides."
    return " ".join(item.statement.split("; exceptions")[0].rstrip(".") + "." for item in held)


def answer(question: Question, study: Study) -> list[str]:
    judged, table, found = study.judged, study.frames.table, study.found
    sentences = []
    factors = [name for name in question.factors if name in varying_factors(table)] or list(question.factors)
    for measure in question.measures:
        if measure in MEASURES:
            sentences.append(compared_answer(question, measure, judged.decisions, judged.method))
        elif measure == "gradient_ratio":
            sentences += [gradient_answer(table, factor) for factor in factors]
        elif measure == "lr_sensitivity":
            sentences.append(sensitivity_answer(table))
        elif measure == "last_accuracy":
            sentences += [last_epoch_answer(study.frames.tuned, factor) for factor in factors]
        elif measure == "failures":
            sentences += [failures_answer(table, factor) for factor in factors if factor in table]
        elif measure == "trainability":
            sentences.append(trainability_answer(found))
        elif measure in ("vanishing_gradients", "dead_units"):
            sentences.append(rule_answer(found, {"vanishing_gradients": "Vanishing gradients",
                                                 "dead_units": "Dead units"}[measure]))
    return sentences


def answers_section(study: Study) -> str:
    judged = study.judged
    lines = ["## Answers", "",
             f"Each question the study declares, answered from the decisions below: comparisons paired by seed, each "
             f"configuration at its own best learning rate (chosen on validation accuracy only), p-values adjusted "
             f"over the report's {len(judged.decisions)} comparisons by {multiplicity.METHODS[judged.method]}; a "
             f"bracket is the raw 95% interval of the difference."]
    for question in judged.questions:
        lines += ["", f"**{question.text}** ([evidence](#{anchor(question)}))", ""]
        lines += [f"- {sentence}" for sentence in answer(question, study)]
    return "\n".join(lines)


def decisions_section(questions: Sequence[Question], made: Sequence[Decision], method: str) -> str:
    """The family of comparisons: how many, how adjusted, and per question a table of its pairs."""
    size = sum(1 for item in made if math.isfinite(item.difference.p_value))
    seeds = max((item.difference.count for item in made), default=0)
    wide = multiplicity.simultaneous_confidence(0.95, size)
    lines = ["## Decisions", "",
             f"One family: the {len(made)} comparisons this report makes ({size} with a p-value), every pair of "
             f"levels of each question's factor (or the contrasts the study file declares), within each group of the "
             f"other parameters, each configuration at its own best learning rate. Learning rates are chosen on "
             f"validation accuracy only; no pair is chosen by looking at test accuracy. Each difference is taken seed "
             f"by seed (same data split and batch order); its two-sided paired Student-t p-value is adjusted over the "
             f"family by {multiplicity.METHODS[method]}, and the pair is decided when the adjusted p-value is at most "
             f"0.05. Beside the raw 95% interval stands the simultaneous one at {wide:.2%} (Bonferroni, 1 − 0.05/m), "
             f"which holds for all m pairs at once; Holm decides every pair it excludes zero from, and possibly more. "
             f"A difference that is the same on every seed has zero width and no p-value: it decides nothing. A "
             f"failed seed counts with the accuracy it reached (chance where it logged none). 'Detectable' is the "
             f"smallest true difference the test would find with 80% power at the family's strictest level 0.05/m, "
             f"with these seeds and the measured spread of the differences (noncentral t)."]
    if seeds and seeds < 6:
        lines.append(f"An exact sign-flip test instead of the t test could not decide anything here: with {seeds} "
                     f"seeds its smallest two-sided p-value is {2 / 2 ** seeds:.2g}.")
    header = ["where", "pair", "measure", "first − second [95% CI]", f"[{wide:.2%} CI]", "p", "adjusted p",
              "verdict", "detectable at 80% / seeds needed"]
    for question in questions:
        chosen = [item for item in made if item.contrast.question == question.id]
        lines += ["", f'<a id="{anchor(question)}"></a>', "", f"### {question.id}: {question.text}", ""]
        if not chosen:
            lines.append("Nothing to test: this question's measures are described from the per-run rules (see "
                         "[Findings](#findings)), or no level of its factors learned.")
            continue
        rows = [decision_row(item) for item in chosen]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(" --- " for _ in header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def decision_row(item: Decision) -> list[str]:
    measure, difference = item.measure, item.difference
    first, second = (describe_level(item.contrast.factor, level) for level in (item.contrast.first,
                                                                                item.contrast.second))
    place = " · ".join(describe(name, value) for name, value in item.contrast.where) or "all"
    raw = f"{measure.amount(difference.mean)} {measure.interval(difference)}" if difference.defined else (
        measure.amount(difference.mean) if difference.count else "–")
    wide = measure.interval(item.simultaneous) if item.simultaneous.defined else "–"
    if difference.degenerate:
        raw, wide = f"{measure.amount(difference.mean)} on every seed (zero width)", "–"
    p_value = f"{difference.p_value:.2g}" if math.isfinite(difference.p_value) else "–"
    adjusted = f"{item.adjusted_p:.2g}" if math.isfinite(item.adjusted_p) else "–"
    if item.decided:
        better, worse = item.winner()
        verdict = f"**{better} {measure.adjective}**"
    elif difference.degenerate:
        verdict = "cannot decide (no spread)"
    else:
        verdict = "cannot decide"
    power = "–"
    if not item.decided and math.isfinite(item.detectable):
        needed = f"{item.seeds_needed}" if item.seeds_needed else "> 10,000"
        power = f"{measure.amount(item.detectable)} / {needed}"
    unpaired = f" ({item.unpaired} unpaired seeds left out)" if item.unpaired else ""
    name = measure.name.split(" (")[0]
    return [place, f"{first} vs {second}", name, raw + unpaired, wide, p_value, adjusted, verdict, power]
