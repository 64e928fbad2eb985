"""The report: markdown sections rendered from the study's frames, its conclusions and the figures drawn; it computes
nothing of its own (``derive`` and ``conclusions`` do)."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from actopt.analysis import answers, depth_section, source_claims
from actopt.analysis.conclusions import Study
from actopt.analysis.frames import (
    NUISANCE,
    SCIENCE,
    Finding,
    integer,
    label_columns,
    number,
    plural,
    run_name,
    science_columns,
    sort_runs,
    text,
    varying,
)
from actopt.analysis.statistics import CONFIDENCE, proportion_interval
from actopt.analysis.tables import CHANCE_MARGIN, CONVERGENCE_LEVEL, scored
from actopt.core.metric_names import BEST_EPOCH, BEST_VAL_ACCURACY, LEARNING_RATE, TEST_ACCURACY

# A figure as the report lists it: its file, title and caption (``plotting.Figure``).
Figure = tuple[Path, str, str]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def settings_section(runs: pd.DataFrame) -> str:
    varied = varying(runs, [*SCIENCE, *NUISANCE])
    shared = [name for name in ("dataset", *SCIENCE) if name not in varied]
    lines = ["## Configurations", ""]
    for name in varied:
        values = sort_runs(runs[[name]].drop_duplicates(), [name])[name]
        lines.append(f"- varies: **{name}** — " + ", ".join(text(value) for value in values))
    lines.append("- shared: " + ", ".join(f"{name} {text(runs[name].iloc[0])}" for name in shared if name in runs))
    return "\n".join(lines)


def run_table_section(table: pd.DataFrame) -> str:
    always = ("activation", "optimizer", LEARNING_RATE)
    columns = [name for name in [*science_columns(table), *NUISANCE] if name in always or varying(table, [name])]
    header = ["run", *columns, "best val acc", "best epoch", "last val acc", "test acc", "epochs to 95%", "s / epoch",
              "learned", "failed"]
    rows = []
    for _, row in table.iterrows():
        failure = row["failure"] or "no"
        if row["diverged"]:
            failure = f"diverged (epoch {integer(row['diverged_epoch'])})"
        rows.append([f"{run_name(row)} `{row['run_id'][:8]}`", *(text(row[name]) for name in columns),
                     number(row[BEST_VAL_ACCURACY]), integer(row[BEST_EPOCH]), number(row["last_val_accuracy"]),
                     number(row[TEST_ACCURACY]), integer(row["epochs_to_95"]), number(row["time_per_epoch"], 2),
                     "yes" if row["learned"] else f"**no** (chance {row['chance']:.4f})",
                     failure if failure == "no" else f"**{failure}**"])
    return "\n".join(["## Results per run", "",
                      f"Best validation accuracy and its epoch; validation accuracy after the last epoch; test "
                      f"accuracy on the weights of the best epoch; the first epoch reaching {CONVERGENCE_LEVEL:.0%} of "
                      f"the run's best validation accuracy (whole epochs: described, never compared); seconds of "
                      f"training per epoch (a group's time shared equally among its members); whether the run learned "
                      f"(best validation accuracy more than {100 * CHANCE_MARGIN:.0f} points above the majority-class "
                      f"rate of the validation split) and whether it failed (diverged, did not learn, or collapsed: "
                      f"see 'Failed seeds').", "",
                      markdown_table(header, rows)])


def interval_section(table: pd.DataFrame) -> str:
    """Per configuration: mean over seeds with its Student-t interval, or why there is none."""
    title = f"## Mean over seeds with {CONFIDENCE:.0%} confidence intervals"
    if table["seed"].nunique() < 2:
        return "\n".join([title, "", "One seed per configuration: no interval can be computed. The comparisons below "
                                    "fall back to fixed margins (0.5 points of accuracy, one epoch of convergence)."])
    columns = [*label_columns(table, science_columns(table)), LEARNING_RATE]
    header = [*columns, "seeds", "failed", "best val acc", "last val acc", "test acc", "mean val acc over epochs",
              "epochs to 95% (mean, range)", "s / epoch (group share)"]
    rows = []
    for key, group in table.groupby(columns, sort=False, dropna=False):
        values = dict(zip(columns, key))
        kinds = group.loc[group["failed"], "failure"].value_counts()
        failed = f"{int(group['failed'].sum())} of {len(group)}" + (
            " (" + ", ".join(f"{count} {kind}" for kind, count in kinds.items()) + ")" if len(kinds) else "")
        steps = group["epochs_to_95"].dropna()
        reach = f"{steps.mean():.1f} ({steps.min():.0f}–{steps.max():.0f})" if len(steps) else "–"
        rows.append([*(text(values[name]) for name in columns), len(group), failed,
                     proportion_interval(group["val_score"]).describe(digits=4),
                     proportion_interval(group["last_val_accuracy"]).describe(digits=4),
                     proportion_interval(group["test_score"]).describe(digits=4),
                     proportion_interval(group["val_area"]).describe(digits=4), reach,
                     number(group["time_per_epoch"].mean(), 2)])
    return "\n".join([title, "",
                      f"Mean over seeds and its {CONFIDENCE:.0%} confidence interval [low, high]. Accuracies are "
                      f"proportions: their interval is Student t on the seeds' logits, mapped back, so it stays inside "
                      f"[0, 1] and is lopsided near a bound. A failed seed counts with the accuracy it reached (chance "
                      f"where it logged none), and the 'failed' column says how many did. Epochs to "
                      f"{CONVERGENCE_LEVEL:.0%} are whole epochs: their mean and range, no interval. Seconds per epoch "
                      f"are the group's time shared equally among its members, the same for every seed: one value, "
                      f"not an interval over seeds.", "", markdown_table(header, rows)])


def best_interval(runs: pd.DataFrame, row: pd.Series, columns: list[str]) -> str:
    """Mean best validation accuracy over the seeds of a configuration at its best rate, with its interval."""
    if math.isnan(row["best_learning_rate"]):
        return "–"
    same = (runs[columns] == row[columns]).all(axis=1) & (runs[LEARNING_RATE] == row["best_learning_rate"])
    return proportion_interval(scored(runs[same], BEST_VAL_ACCURACY)).describe(digits=4)


def best_rate_section(runs: pd.DataFrame, best: pd.DataFrame) -> str:
    """``best``: ``tables.best_learning_rates``."""
    if (best["grid"].map(len) < 2).all():
        return ""
    columns = label_columns(runs, science_columns(runs))
    header = [*columns, "best lr", "grid", "edge of grid", f"best val acc, mean [{CONFIDENCE:.0%} CI]", "seeds",
              "diverged runs"]
    rows = [[*(text(row[name]) for name in columns),
             "–" if math.isnan(row["best_learning_rate"]) else text(row["best_learning_rate"]),
             ", ".join(text(rate) for rate in row["grid"]), f"**{row['edge']}**" if row["edge"] else "no",
             best_interval(runs, row, columns), row["seeds"],
             row["diverged"]]
            for _, row in best.iterrows()]
    return "\n".join(["## Each configuration at its own best learning rate", "",
                      "Learning rate is a nuisance parameter, conditional on the optimizer: configurations are "
                      "compared at their own best rate, the one with the highest mean best validation accuracy over "
                      "every seed (chosen on validation only; test accuracy plays no part). A failed seed counts with "
                      "the accuracy it reached, so a rate that diverged on one seed pays for it. A best rate on the "
                      "edge of the grid means the grid should be extended.", "", markdown_table(header, rows)])


def findings_section(found: Sequence[Finding]) -> str:
    lines = ["## Findings", "",
             "Each finding is computed from the logged numbers by the rule stated with it (thresholds are constants in "
             "`actopt/analysis/findings.py`, `decisions.py` and `tables.py`; the per-run rules', shared with each "
             "run's diagnosis tags, in `actopt/core/diagnosis.py`). The comparisons between levels are the "
             "'Decisions' above."]
    sections = (("holds", None), ("undecided", "### Cannot decide"), ("absent", "### Rules checked, nothing found"))
    for kind, title in sections:
        chosen = [item for item in found if item.kind == kind]
        if not chosen:
            if kind == "holds":
                lines += ["", "No rule held on these runs."]
            continue
        if title:
            lines += ["", title]
        topic = None
        for item in chosen:
            if kind == "holds" and item.topic != topic:
                lines += ["", f"### {item.topic}"]
                topic = item.topic
            prefix = "" if kind == "holds" else f"{item.topic}: "
            lines += ["", f"- **{prefix}{item.statement}**", f"  - rule: {item.rule}"]
            if item.numbers:
                lines.append(f"  - numbers: {item.numbers}")
            if item.runs:
                lines.append(f"  - runs: {', '.join(item.runs)}")
    return "\n".join(lines)


BACKPROP = """For an MLP with pre-activations z^l = W^l a^(l−1) + b^l and activations a^l = f(z^l), the error
signal δ^l = ∂L/∂z^l obeys the recurrence

    δ^L = ∂L/∂z^L  (softmax cross-entropy: softmax(z^L) − onehot(y))
    δ^l = ((W^(l+1))ᵀ δ^(l+1)) ⊙ f′(z^l)
    ∂L/∂W^l = δ^l (a^(l−1))ᵀ,   ∂L/∂b^l = δ^l

so the first layer's gradient carries the product of every f′ on the way down: with |f′| ≤ 0.25
(sigmoid) it shrinks by at least 4× per layer unless the weights make up for it. The derivatives
below are each activation's closed form; the ranges are measured by autograd on a grid over [−{limit:g}, {limit:g}]
(step {step:g}), through the same modules training uses. The derivation is in docs/backprop.md of the
repository."""


def derivative_section(figure: Path | None) -> str:
    from actopt.core import derivatives

    rows = [[item.name, item.closed_form, item.describe()] for item in derivatives.derivative_ranges()]
    lines = ["## Activation functions, their derivatives and backpropagation", "",
             BACKPROP.format(limit=derivatives.GRID_LIMIT, step=derivatives.GRID_STEP), "",
             markdown_table(["activation", "f′(x)", "measured on the grid"], rows)]
    if figure is not None:
        lines += ["", f"![Activation functions and their derivatives]({figure.name})"]
    return "\n".join(lines)


def theory_section(section: depth_section.Section) -> str:
    if section.reason:
        return "\n".join([section.title, "", section.reason])
    return "\n".join([section.title, "", section.text, "", markdown_table(section.header, section.rows)])


def left_out_section(left_out: pd.DataFrame) -> str:
    if left_out.empty:
        return ""
    rows = [[row["run_name"], f"`{row['run_id'][:8]}`", row["status"], row["reason"]] for _, row in left_out.iterrows()]
    return "\n".join(["## Runs left out", "", markdown_table(["run", "id", "status", "reason"], rows)])


def figures_section(drawn: Sequence[Figure], skipped: dict[str, str]) -> str:
    lines = ["## Figures"]
    for path, title, caption in drawn:
        lines += ["", f"### {title}", "", f"![{title}]({path.name})", "", caption]
    if skipped:
        lines += ["", "### Not drawn", ""]
        lines += [f"- {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines)


def smoke_banner(runs: pd.DataFrame) -> str:
    """A --quick or single-seed study: its numbers test the pipeline, not the question."""
    quick = "max_batches" in runs and pd.to_numeric(runs["max_batches"], errors="coerce").fillna(0).gt(0).any()
    single = runs["seed"].nunique() < 2
    if not (quick or single):
        return ""
    why = " and ".join(part for part, present in (("runs of a few batches (--quick)", quick),
                                                   ("a single seed", single)) if present)
    return (f"> **Smoke test.** These numbers come from {why}: they show that the pipeline works, not what the study "
            f"asks. No interval or decision below can be read as a result.")


@dataclass(frozen=True)
class Source:
    """Where the analysed runs came from, as the report's opening names them."""

    experiment: str = ""
    tracking_uri: str = ""
    parent_run_id: str = ""
    filter: str = ""


@dataclass(frozen=True)
class Drawn:
    """The figures drawn for the report: the study's figures, those not drawn with the reason, the gallery."""

    figures: tuple[Figure, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)
    gallery: Path | None = None


def opening(runs: pd.DataFrame, source: Source) -> str:
    scope = [f"tracking store `{source.tracking_uri}`"]
    if source.parent_run_id:
        scope.append(f"children of run `{source.parent_run_id}`")
    if source.filter:
        scope.append(f"filter `{source.filter}`")
    study = runs["study"].fillna("").iloc[0]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([f"# Analysis of experiment `{source.experiment}`", "",
                      f"{plural(len(runs), 'finished training run')} on {runs['dataset'].iloc[0]}"
                      + (f", study `{study}`" if study else "") + f"; {', '.join(scope)}. Written {stamp} by "
                      f"`actopt analyze`."])


def render_report(study: Study, drawn: Drawn, source: Source, adaptive: str = "") -> str:
    """The report's markdown, rendered from the study's frames and conclusions and the figures drawn."""
    frames, judged = study.frames, study.judged
    runs, table = frames.runs, frames.table
    # Rendered in this order; a section that has nothing to say is the empty string and is left out.
    sections = [
        opening(runs, source),
        smoke_banner(runs),
        # After an adaptive sweep its sequential verdicts are the decisions: they come before the fixed-sample ones.
        adaptive,
        answers.answers_section(study),
        answers.decisions_section(judged.questions, judged.decisions, judged.method),
        source_claims.claims_section(table, frames.histories),
        settings_section(runs),
        left_out_section(frames.logged.left_out),
        run_table_section(table),
        interval_section(table),
        best_rate_section(runs, frames.best_rates),
        findings_section(study.found),
        theory_section(depth_section.theory_section(frames.theory)),
        figures_section(drawn.figures, drawn.skipped),
        derivative_section(drawn.gallery),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"
