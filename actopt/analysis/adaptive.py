"""A sweep that adds seeds until its comparisons are decided: ``actopt sweep STUDY --until-decided``.

After the study's declared seeds, each look reads the finished children, judges every comparison
of the study's declared questions (``needed_comparisons``: ``questions.comparisons_needed``'s pairs, as the
report lists them, on the measures a look can judge, ``JUDGED``; a study without questions gets the report's
default ones) with the anytime-valid rule of ``sequential``, and plans the next look: more seeds only for the
two configurations of each comparison still open. The questions' other measures are listed as not judged,
with why, in the look table and the summary. Each look is
one ordinary ``run_sweep`` of the declared and planned configurations under the same parent, so the
added seeds are child runs like the others, trained as fused groups, claimed, reaped and resumed
the same way.

The plan is a pure function of the finished runs: look k uses only the seeds planned at look k
(configuration c's first n_c(k) seeds of the seed sequence), and the comparisons and each
configuration's learning rate are fixed at the first look. A sweep stopped mid-look and started
again therefore replays the finished looks to the same decisions, continues the look it was in
with the same planned seeds, and trains no configuration and seed a second time.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from actopt.analysis import questions, sequential
from actopt.analysis.frames import CONFIG_FIELDS, text
from actopt.analysis.tables import tuned_runs
from actopt.core.config import TrainConfig, config_digest
from actopt.core.metric_names import BEST_VAL_ACCURACY, TEST_ACCURACY
from actopt.sweeps.options import SweepOptions
from actopt.sweeps.study import Study
from actopt.sweeps.sweep import DIVERGED, FINISHED, Executor, Row, SweepResult, run_sweep
from actopt.tracking import records

# The measure compared where a pair names none (as the report compares configurations).
MEASURE = TEST_ACCURACY
# The question measures a look judges: per-seed values of each run that the sweep's own rows carry (each
# child's summary metrics), so that a look needs nothing more from the store than the sweep reads anyway.
JUDGED = (TEST_ACCURACY, BEST_VAL_ACCURACY)
# Why the others are not: compared per seed by the report, but computed from each run's per-epoch history.
NOT_JUDGED_WHY = {name: "a per-seed value of each run's per-epoch history, which a look does not read; the report "
                        "compares it with fixed-sample intervals" for name in ("val_area", "gap")}
DESCRIBED_WHY = "described, not compared: no per-seed paired value to decide"
NOT_JUDGED = "not judged"
# A sweep of the declared seeds with actopt sweep's defaults, for callers that give no options.
DEFAULT_OPTIONS = SweepOptions()


@dataclass(frozen=True)
class Budget:
    """How far the sweep may go: seeds per configuration, and runs in all (None: no limit)."""

    max_seeds: int
    max_runs: int | None = None


@dataclass(frozen=True)
class Measure:
    """One measure of a question, and why the looks do not judge it (empty: they do)."""

    question: str
    measure: str
    why: str = ""


@dataclass(frozen=True)
class AdaptiveResult:
    sweep: SweepResult  # the last look's sweep
    pairs: tuple[sequential.Pair, ...]
    looks: tuple[sequential.Look, ...]
    stopped: str  # why the sweep stopped
    measures: tuple[Measure, ...] = ()  # the questions' measures, judged or not

    @property
    def exit_code(self) -> int:
        return self.sweep.exit_code


def configuration_key(config: TrainConfig) -> str:
    """A configuration without its seed."""
    return config_digest(replace(config, seed=0))


def seed_sequence(configs: Sequence[TrainConfig], count: int) -> list[int]:
    """The declared seeds in study order, then the integers after the largest, up to ``count`` seeds."""
    seeds = list(dict.fromkeys(config.seed for config in configs))
    following = itertools.count(max(seeds) + 1)
    while len(seeds) < count:
        seeds.append(next(following))
    return seeds


def sweep_table(rows: Sequence[Row]) -> pd.DataFrame:
    """One row per configuration and seed, in the columns of the analysis's run table that the questions and the
    learning-rate choice read: every option (typed), the best validation and the test accuracy its run reached,
    and whether it diverged."""
    entries = []
    for row in rows:
        run = row.run if row.status in (FINISHED, DIVERGED) else None
        entries.append({"configuration": configuration_key(row.config),
                        **{name: getattr(row.config, name) for name in CONFIG_FIELDS},
                        **{name: getattr(run, name) if run is not None else np.nan for name in JUDGED},
                        "diverged": row.status == DIVERGED, "done": row.status in (FINISHED, DIVERGED)})
    return pd.DataFrame(entries).astype(dict.fromkeys(JUDGED, "float64"))


def study_questions(study: Study, table: pd.DataFrame) -> list[questions.Question]:
    """The study's declared questions, else the report's default ones for what its runs vary."""
    return questions.from_study(study.questions) or questions.default_questions(table)


def judged_measures(asked: Sequence[questions.Question]) -> list[Measure]:
    """Each question's measures, each with why the looks do not judge it (empty: they do)."""
    return [Measure(question.id, name, "" if name in JUDGED else NOT_JUDGED_WHY.get(name, DESCRIBED_WHY))
            for question in asked for name in question.measures]


def needed_comparisons(table: pd.DataFrame, asked: Sequence[questions.Question]) -> list[sequential.Pair]:
    """The comparisons of the questions' judged measures, as ``questions.comparisons_needed`` lists them for the
    report (the questions' factors that vary, their declared contrasts else every pair of levels, within each
    group of the other varying options), each configuration at the learning rate the report chooses
    (``tuned_runs``: the best mean validation accuracy over the table's seeds; the study tunes it as a nuisance)."""
    tuned = tuned_runs(table, keep_failed=True)
    judged = [replace(question, measures=tuple(name for name in question.measures if name in JUDGED))
              for question in asked]
    pairs = []
    for contrast in questions.comparisons_needed(judged, table, tuned):
        where = ", ".join(f"{name} {text(value)}" for name, value in contrast.where)
        name = f"{contrast.factor} {text(contrast.first)} vs {text(contrast.second)}" + (f" ({where})" if where else "")
        first, second = (str(contrast.rows(tuned, level)["configuration"].iloc[0])
                         for level in (contrast.first, contrast.second))
        pairs.append(sequential.Pair(contrast.factor, first, second, name, contrast.measure, contrast.question))
    return pairs


def planned_configs(declared: Sequence[TrainConfig], counts: dict[str, int], seeds: Sequence[int]) -> list[TrainConfig]:
    """The declared configurations, then each configuration's added seeds up to its planned count."""
    bases = {configuration_key(config): config for config in declared}
    declared_seeds = {config.seed for config in declared}
    added = [replace(base, seed=seed) for key, base in bases.items()
             for seed in seeds[:counts[key]] if seed not in declared_seeds]
    return [*declared, *added]


def seed_values(table: pd.DataFrame, seeds: Sequence[int], measures: Sequence[str] = (MEASURE,)
                ) -> dict[tuple[str, str], list[float]]:
    """Each configuration's ``measures`` in seed order, by (measure, configuration): NaN where a seed has no
    usable run (none, or a diverged one: an infeasible run, not a value)."""
    usable = table[~table["diverged"]].set_index(["configuration", "seed"])
    keys = table["configuration"].drop_duplicates()
    return {(measure, key): [float(usable[measure].get((key, seed), np.nan)) for seed in seeds]
            for measure in measures for key in keys}


def sweep_until_decided(study: Study, configs: Sequence[TrainConfig], executor: Executor, budget: Budget,
                        options: SweepOptions = DEFAULT_OPTIONS,
                        report: Callable[[str], None] = lambda line: None) -> AdaptiveResult:
    """Run the declared seeds, then look, add seeds where a comparison of a question is open, and look again, until
    every comparison is decided, none can be within the cap, the budget is spent, or a look does not finish."""
    declared = list(configs)
    seeds = seed_sequence(declared, budget.max_seeds)
    counts = {configuration_key(config): len({c.seed for c in declared}) for config in declared}
    pairs: list[sequential.Pair] | None = None
    measures: tuple[Measure, ...] = ()
    looks: list[sequential.Look] = []
    while True:
        current = planned_configs(declared, counts, seeds)
        result = run_sweep(study, current, executor, options, report)
        if result.stopped_by or result.exit_code:
            stopped = (f"stopped by {result.stopped_by} during look {len(looks)}" if result.stopped_by else
                       f"look {len(looks)} did not finish (failed runs)") + ": start the same sweep again to continue"
            record(result.parent_run_id, pairs or [], looks, stopped, measures)
            return AdaptiveResult(result, tuple(pairs or ()), tuple(looks), stopped, measures)
        table = sweep_table(result.rows)
        if pairs is None:
            # The questions' comparisons and the learning rates, fixed at the first look (the declared seeds).
            asked = study_questions(study, table)
            pairs, measures = needed_comparisons(table, asked), tuple(judged_measures(asked))
        seen = look_at(table, pairs, seeds, counts, sequential.Limits(budget.max_seeds, budget.max_runs, len(current)))
        looks.append(seen)
        report(f"look {len(looks) - 1}: {seen.reason}" + ("" if seen.stopped else "; looking again after them"))
        if seen.stopped:
            record(result.parent_run_id, pairs, looks, seen.reason, measures)
            return AdaptiveResult(result, tuple(pairs), tuple(looks), seen.reason, measures)
        record(result.parent_run_id, pairs, looks, "", measures)
        counts = seen.next_counts


def look_at(table: pd.DataFrame, pairs: Sequence[sequential.Pair], seeds: Sequence[int], counts: dict[str, int],
            limits: sequential.Limits) -> sequential.Look:
    """One look's verdicts (each comparison at the family's α over their number) and the next look's seeds: a pure
    function of the finished runs, so that a resumed sweep replays it."""
    values = seed_values(table, seeds, list(dict.fromkeys(pair.measure or MEASURE for pair in pairs)))
    return sequential.look(pairs, values, counts, limits, sequential.comparison_alpha(len(pairs)))


def record(parent_run_id: str, pairs: Sequence[sequential.Pair], looks: Sequence[sequential.Look],
           stopped: str, measures: Sequence[Measure] = ()) -> None:
    records.record_looks(parent_run_id, looks_csv(pairs, looks, measures), len(looks), stopped,
                         looks_summary(pairs, looks, stopped, measures))


def looks_csv(pairs: Sequence[sequential.Pair], looks: Sequence[sequential.Look],
              measures: Sequence[Measure] = ()) -> str:
    """One row per look and comparison: its question and measure, each side's seeds, the paired seeds, the verdict
    and its sequential interval (points), and what the look decided to do; then one row per question measure the
    looks do not judge, with why."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["look", "comparison", "question", "measure", "first_seeds", "second_seeds", "paired_seeds",
                     "state", "mean_points", "low_points", "high_points", "next", "why"])
    for number, seen in enumerate(looks):
        for pair, verdict in zip(pairs, seen.verdicts):
            interval = verdict.interval
            writer.writerow([number, pair.name, pair.question, pair.measure or MEASURE, seen.counts[pair.first],
                             seen.counts[pair.second], verdict.count, verdict.state, points(interval.mean),
                             points(interval.low), points(interval.high), "stop" if seen.stopped else "go on",
                             seen.reason])
    for item in measures:
        if item.why:
            writer.writerow(["", "", item.question, item.measure, "", "", "", NOT_JUDGED, "", "", "", "", item.why])
    return buffer.getvalue()


def points(value: float) -> str:
    return f"{100 * value:.2f}" if np.isfinite(value) else ""


def looks_summary(pairs: Sequence[sequential.Pair], looks: Sequence[sequential.Look], stopped: str,
                  measures: Sequence[Measure] = ()) -> str:
    """The description's section: the rule, what it judged and did not, each look in a line, and the last look's
    verdicts."""
    if not looks:
        return f"Adaptive seeds: no look yet ({stopped})." if stopped else ""
    alpha = sequential.comparison_alpha(len(pairs))
    compared = ", ".join(dict.fromkeys(pair.measure or MEASURE for pair in pairs)) or MEASURE
    lines = [f"Adaptive seeds: {len(looks)} looks; {len(pairs)} comparisons of {compared}, each decided when its "
             f"anytime-valid mixture-t confidence sequence at level 1 − {alpha:.4g} (Bonferroni over the "
             f"{len(pairs)}) excludes zero (docs/analysis.md)."]
    lines += measures_lines(measures)
    for number, seen in enumerate(looks):
        states = [verdict.state for verdict in seen.verdicts]
        tally = ", ".join(f"{states.count(state)} {state}" for state in
                          (sequential.DECIDED, sequential.OPEN, sequential.FUTILE, sequential.CAPPED)
                          if states.count(state))
        seeds = sorted(set(seen.counts.values()))
        lines.append(f"- look {number}: {seeds[0]}–{seeds[-1]} seeds per configuration; {tally}; "
                     f"{'stopped' if seen.stopped else 'went on'}: {seen.reason}")
    lines.append(f"Stopped: {stopped}." if stopped else "Going on.")
    for pair, verdict in zip(pairs, looks[-1].verdicts):
        interval = verdict.interval
        bounds = (f"[{points(interval.low)}, {points(interval.high)}]" if np.isfinite(interval.low)
                  else "(no interval yet)")
        lines.append(f"- {pair.name}: {pair.measure or MEASURE} {verdict.state}, {points(interval.mean)} points "
                     f"{bounds}, {verdict.count} paired seeds")
    return "\n".join(lines)


def measures_lines(measures: Sequence[Measure]) -> list[str]:
    """Which question measures the looks judged, and the others grouped by why not."""
    if not measures:
        return []
    judged: dict[str, list[str]] = {}
    skipped: dict[str, list[str]] = {}
    for item in measures:
        if item.why:
            skipped.setdefault(item.why, []).append(f"{item.measure} ({item.question})")
        else:
            judged.setdefault(item.question, []).append(item.measure)
    lines = ["Judged at each look: " + ("; ".join(f"{question}: {', '.join(names)}" for question, names in
                                                   judged.items()) or "no question measure") + "."]
    lines += [f"Not judged: {', '.join(names)}: {why}." for why, names in skipped.items()]
    return lines


def report_section(looks_by_parent: dict[str, dict[str, str]]) -> str:
    """The report's account of the adaptive sweeps its runs came from: how many looks, why each stopped,
    and the sequential verdicts that decided where seeds went."""
    if not looks_by_parent:
        return ""
    lines = ["## Adaptive seeds", ""]
    for run_id, looked in looks_by_parent.items():
        summary = looked["description"]
        summary = summary[summary.index("Adaptive seeds:"):] if "Adaptive seeds:" in summary else ""
        lines += [f"Sweep parent `{run_id}` added seeds until its comparisons were decided: {looked['looks']} "
                  f"looks, stopped because {looked['stopped'] or 'it has not stopped yet'}. Its decisions use "
                  "sequential intervals (anytime-valid mixture-t confidence sequences, each at 0.05 over its "
                  "number of comparisons; docs/analysis.md), valid however often it looked: for the comparisons "
                  "listed here they are the decisions. The Answers and Decisions below use fixed-sample Student-t "
                  "intervals over all the seeds; after adaptive stopping those are narrower than their error rate "
                  "allows, so where the two disagree the sequential verdict here (and in the parent's "
                  "sweep_looks.csv) stands.", ""]
        lines += [line for line in summary.splitlines()[1:] if line.strip()] + [""]
    return "\n".join(lines).rstrip()
