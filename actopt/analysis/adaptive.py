"""A sweep that adds seeds until its comparisons are decided: ``actopt sweep STUDY --until-decided``.

After the study's declared seeds, each look reads the finished children, judges every comparison
the study needs (``needed_comparisons``) with the anytime-valid rule of ``sequential``, and plans
the next look: more seeds only for the configurations of the comparisons still open. Each look is
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

from actopt.analysis import sequential
from actopt.core.config import TrainConfig, config_digest
from actopt.core.metric_names import BEST_VAL_ACCURACY, LEARNING_RATE, TEST_ACCURACY
from actopt.sweeps.options import SweepOptions
from actopt.sweeps.study import Study
from actopt.sweeps.sweep import DIVERGED, FINISHED, Executor, Row, SweepResult, run_sweep
from actopt.tracking import records

# The measure compared, as the report compares configurations; the learning rate is chosen on the other.
MEASURE = TEST_ACCURACY
CHOICE = BEST_VAL_ACCURACY
# A sweep of the declared seeds with actopt sweep's defaults, for callers that give no options.
DEFAULT_OPTIONS = SweepOptions()
NUISANCE = LEARNING_RATE


@dataclass(frozen=True)
class Budget:
    """How far the sweep may go: seeds per configuration, and runs in all (None: no limit)."""

    max_seeds: int
    max_runs: int | None = None


@dataclass(frozen=True)
class AdaptiveResult:
    sweep: SweepResult  # the last look's sweep
    pairs: tuple[sequential.Pair, ...]
    looks: tuple[sequential.Look, ...]
    stopped: str  # why the sweep stopped

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


def varying_fields(configs: Sequence[TrainConfig]) -> list[str]:
    """The options whose values differ between the study's configurations (the seed left out)."""
    params = [config.to_params() for config in configs]
    return [name for name in params[0] if name != "seed" and len({row[name] for row in params}) > 1]


def sweep_table(rows: Sequence[Row], fields: Sequence[str]) -> pd.DataFrame:
    """One row per configuration and seed: the varying options, the seed, and the two accuracies of a
    finished run that did not diverge (NaN otherwise: a diverged run is infeasible, not a value)."""
    entries = []
    for row in rows:
        usable = row.status == FINISHED and row.run is not None
        params = row.config.to_params()
        entries.append({"configuration": configuration_key(row.config), "seed": row.config.seed,
                         **{name: params[name] for name in fields},
                         CHOICE: row.run.best_val_accuracy if usable else np.nan,  # type: ignore[union-attr]
                         MEASURE: row.run.test_accuracy if usable else np.nan,  # type: ignore[union-attr]
                         "done": row.status in (FINISHED, DIVERGED)})
    table = pd.DataFrame(entries)
    return table.astype({CHOICE: "float64", MEASURE: "float64"})


def needed_comparisons(table: pd.DataFrame, fields: Sequence[str]) -> list[sequential.Pair]:
    """Every pair of levels of each scientific option (a varying one other than the learning rate), within each
    combination of the other scientific options, each configuration at its chosen learning rate: the one
    with the best mean validation accuracy over the table's seeds (the study tunes it as a nuisance)."""
    science = [name for name in fields if name != NUISANCE]
    means = table.groupby("configuration", sort=False)[CHOICE].mean()
    firsts = table.drop_duplicates("configuration").set_index("configuration")
    chosen: dict[tuple[str, ...], str] = {}
    for key, mean in means.items():
        if not np.isfinite(mean):
            continue
        science_key = tuple(firsts.loc[key, name] for name in science)
        if science_key not in chosen or mean > means[chosen[science_key]]:
            chosen[science_key] = key
    pairs = []
    for index, factor in enumerate(science):
        others = science[:index] + science[index + 1:]
        groups: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        for science_key, key in chosen.items():
            values = dict(zip(science, science_key))
            groups.setdefault(tuple(values[name] for name in others), []).append((values[factor], key))
        for other_values, levels in groups.items():
            where = ", ".join(f"{name} {value}" for name, value in zip(others, other_values))
            for (first_level, first), (second_level, second) in itertools.combinations(levels, 2):
                name = f"{factor} {first_level} vs {second_level}" + (f" ({where})" if where else "")
                pairs.append(sequential.Pair(factor, first, second, name))
    return pairs


def planned_configs(declared: Sequence[TrainConfig], counts: dict[str, int], seeds: Sequence[int]) -> list[TrainConfig]:
    """The declared configurations, then each configuration's added seeds up to its planned count."""
    bases = {configuration_key(config): config for config in declared}
    declared_seeds = {config.seed for config in declared}
    added = [replace(base, seed=seed) for key, base in bases.items()
             for seed in seeds[:counts[key]] if seed not in declared_seeds]
    return [*declared, *added]


def seed_values(table: pd.DataFrame, seeds: Sequence[int], column: str = MEASURE) -> dict[str, list[float]]:
    """Each configuration's measure in seed order (NaN where a seed has no usable run)."""
    by_seed = table.set_index(["configuration", "seed"])[column]
    return {key: [float(by_seed.get((key, seed), np.nan)) for seed in seeds]
            for key in table["configuration"].drop_duplicates()}


def sweep_until_decided(study: Study, configs: Sequence[TrainConfig], executor: Executor, budget: Budget,
                        options: SweepOptions = DEFAULT_OPTIONS,
                        report: Callable[[str], None] = lambda line: None) -> AdaptiveResult:
    """Run the declared seeds, then look, add seeds where a comparison is open, and look again, until every
    comparison is decided, none can be within the cap, the budget is spent, or a look does not finish."""
    declared = list(configs)
    fields = varying_fields(declared)
    seeds = seed_sequence(declared, budget.max_seeds)
    counts = {configuration_key(config): len({c.seed for c in declared}) for config in declared}
    pairs: list[sequential.Pair] | None = None
    looks: list[sequential.Look] = []
    while True:
        current = planned_configs(declared, counts, seeds)
        result = run_sweep(study, current, executor, options, report)
        if result.stopped_by or result.exit_code:
            stopped = (f"stopped by {result.stopped_by} during look {len(looks)}" if result.stopped_by else
                       f"look {len(looks)} did not finish (failed runs)") + ": start the same sweep again to continue"
            record(result.parent_run_id, pairs or [], looks, stopped)
            return AdaptiveResult(result, tuple(pairs or ()), tuple(looks), stopped)
        table = sweep_table(result.rows, fields)
        if pairs is None:
            pairs = needed_comparisons(table, fields)
        alpha = sequential.comparison_alpha(len(pairs))
        limits = sequential.Limits(budget.max_seeds, budget.max_runs, len(current))
        seen = sequential.look(pairs, seed_values(table, seeds), counts, limits, alpha)
        looks.append(seen)
        report(f"look {len(looks) - 1}: {seen.reason}" + ("" if seen.stopped else "; looking again after them"))
        if seen.stopped:
            record(result.parent_run_id, pairs, looks, seen.reason)
            return AdaptiveResult(result, tuple(pairs), tuple(looks), seen.reason)
        record(result.parent_run_id, pairs, looks, "")
        counts = seen.next_counts


def record(parent_run_id: str, pairs: Sequence[sequential.Pair], looks: Sequence[sequential.Look],
           stopped: str) -> None:
    records.record_looks(parent_run_id, looks_csv(pairs, looks), len(looks), stopped,
                         looks_summary(pairs, looks, stopped))


def looks_csv(pairs: Sequence[sequential.Pair], looks: Sequence[sequential.Look]) -> str:
    """One row per look and comparison: each side's seeds, the paired seeds, the verdict and its sequential
    interval (points), and what the look decided to do."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["look", "comparison", "first_seeds", "second_seeds", "paired_seeds", "state", "mean_points",
                     "low_points", "high_points", "next", "why"])
    for number, seen in enumerate(looks):
        for pair, verdict in zip(pairs, seen.verdicts):
            interval = verdict.interval
            writer.writerow([number, pair.name, seen.counts[pair.first], seen.counts[pair.second], verdict.count,
                             verdict.state, points(interval.mean), points(interval.low), points(interval.high),
                             "stop" if seen.stopped else "go on", seen.reason])
    return buffer.getvalue()


def points(value: float) -> str:
    return f"{100 * value:.2f}" if np.isfinite(value) else ""


def looks_summary(pairs: Sequence[sequential.Pair], looks: Sequence[sequential.Look], stopped: str) -> str:
    """The description's section: the rule, each look in a line, and the last look's verdicts."""
    if not looks:
        return f"Adaptive seeds: no look yet ({stopped})." if stopped else ""
    alpha = sequential.comparison_alpha(len(pairs))
    lines = [f"Adaptive seeds: {len(looks)} looks; {len(pairs)} comparisons of {MEASURE}, each decided when its "
             f"anytime-valid mixture-t confidence sequence at level 1 − {alpha:.4g} (Bonferroni over the "
             f"{len(pairs)}) excludes zero (docs/analysis.md)."]
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
        lines.append(f"- {pair.name}: {verdict.state}, {points(interval.mean)} points {bounds}, "
                     f"{verdict.count} paired seeds")
    return "\n".join(lines)


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
                  "number of comparisons; docs/analysis.md), valid however often it looked. The intervals of the "
                  "findings above are fixed-sample Student-t intervals over all the seeds: after adaptive stopping "
                  "they are narrower than the error rate allows, so read the decisions from the sequential ones "
                  "here and in the parent's sweep_looks.csv.", ""]
        lines += [line for line in summary.splitlines()[1:] if line.strip()] + [""]
    return "\n".join(lines).rstrip()
