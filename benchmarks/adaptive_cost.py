"""Section 9 of RESULTS.md: an adaptive sweep (``actopt sweep STUDY --until-decided``) against a fixed ten-seed sweep.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/adaptive_cost.py --experiment NAME

Reads, and never writes, the tracking store: the latest sweep parent of the experiment that recorded looks, its
looks table and its child runs. The adaptive side is measured (looks, runs, the parent's wall seconds, seeds per
configuration, each comparison's last verdict from the looks table). The fixed side is what a sweep of every
configuration at ten seeds would cost and decide: its runs are configurations × 10; its wall time is extrapolated
from the adaptive sweep's seconds per run, not measured; its decisions are the report's fixed-sample rule
(``decisions.decide``: paired Student-t, Holm-adjusted) on seeds 0–9 of the adaptive sweep's own runs, for each
comparison whose two configurations have all ten there.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import math
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import results_file  # noqa: E402

from actopt.analysis import adaptive, decisions, frames, multiplicity, questions, tables  # noqa: E402
from actopt.core.metric_names import LEARNING_RATE  # noqa: E402
from actopt.tracking import queries, records, store  # noqa: E402

SECTION = 9
FIXED_SEEDS = 10
NOT_AVAILABLE = "not available from this sweep"
NUMBER_WORDS = {10: "ten"}


@dataclass(frozen=True)
class Compared:
    """One comparison of the looks table: the adaptive sweep's last verdict, and the fixed sweep's decision
    (None where its configurations lack the fixed seeds)."""

    name: str
    measure: str
    state: str
    seeds: tuple[int, int]
    interval: tuple[str, str, str]  # mean, low, high of the sequential interval, points
    fixed: decisions.Decision | None = None
    over_all_p: float = math.nan  # the fixed decision's p-value adjusted over every comparison (others at p = 1)


@dataclass(frozen=True)
class Cost:
    parent_run_id: str
    looks: int
    stopped: str
    children: Counter  # child runs by status
    wall_seconds: float
    ended: bool  # whether the parent has an end time (else the wall runs to its last child's end)
    seeds_per_configuration: Counter  # configurations by their number of finished seeds
    configurations: int
    fixed_seeds: tuple[int, ...]  # the fixed sweep's seeds: the first of the adaptive sweep's seed sequence
    compared: tuple[Compared, ...]
    method: str

    @property
    def runs(self) -> int:
        return self.children["FINISHED"]

    @property
    def fixed_runs(self) -> int:
        return self.configurations * len(self.fixed_seeds)

    @property
    def seconds_per_run(self) -> float:
        return self.wall_seconds / self.runs


def latest_parent(client, experiment: str):
    """The newest sweep parent of ``experiment`` with looks recorded on it."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in {store.tracking_uri()}")
    parents = client.search_runs([found.experiment_id], f"tags.`{records.KIND_TAG}` = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=1000)
    for run in parents:
        if records.LOOKS_TAG in run.data.tags:
            return run
    raise SystemExit(f"experiment {experiment!r} has no sweep parent with looks (actopt sweep --until-decided)")


def last_look(client, run_id: str) -> list[dict[str, str]]:
    """The looks table's rows of the last look (one per comparison)."""
    with tempfile.TemporaryDirectory() as folder:
        rows = list(csv.DictReader(io.StringIO(
            Path(client.download_artifacts(run_id, records.LOOKS_ARTIFACT, folder)).read_text())))
    judged = [row for row in rows if row["look"] != ""]
    last = max(int(row["look"]) for row in judged)
    return [row for row in judged if int(row["look"]) == last]


def run_table(experiment: str, parent_run_id: str) -> pd.DataFrame:
    """The analysis's run table of the parent's finished training runs, each with its configuration (every option
    the report tells configurations apart by, and the learning rate) as text."""
    runs, _ = frames.select_runs(queries.load_runs(experiment, parent_run_id, None, kinds=None), experiment)
    table = tables.run_table(runs, queries.load_histories(runs))
    columns = [*frames.science_columns(table), LEARNING_RATE]
    return table.assign(configuration=table[columns].map(frames.text).agg("/".join, axis=1))


def seed_order(table: pd.DataFrame, count: int) -> tuple[list[int], list[int]]:
    """The declared seeds (those every configuration has), and the first ``count`` of the adaptive sweep's seed
    sequence: the declared seeds, then the integers after the largest."""
    declared = sorted(set.intersection(*(set(seeds) for seeds in table.groupby("configuration")["seed"].agg(list))))
    return declared, [*declared, *range(declared[-1] + 1, declared[-1] + 1 + count)][:count]


def comparisons(table: pd.DataFrame, declared: list[int], study: str
                ) -> tuple[list[adaptive.sequential.Pair], list[questions.Contrast], str]:
    """The adaptive sweep's comparisons as its first look made them (the declared seeds, the learning rates chosen
    on them), each with the report's contrast, and the study's multiplicity method. The look's table has no
    "learned" column, so no group is left out for not learning: nor here."""
    first = table[table["seed"].isin(declared)].drop(columns="learned")
    asked, method = questions.declared(study)
    asked = asked or questions.default_questions(first)
    judged = [replace(question, measures=tuple(name for name in question.measures if name in adaptive.JUDGED))
              for question in asked]
    contrasts = questions.comparisons_needed(judged, first, tables.tuned_runs(first, keep_failed=True))
    return adaptive.needed_comparisons(first, asked), contrasts, method


def fixed_decisions(table: pd.DataFrame, seeds: int, study: str, rows: list[dict[str, str]]
                    ) -> tuple[list[Compared], str, list[int]]:
    """Each comparison of the last look, with the report's fixed-sample decision on the first ``seeds`` seeds at
    the adaptive sweep's chosen learning rates where both configurations have them all."""
    declared, order = seed_order(table, seeds)
    pairs, contrasts, method = comparisons(table, declared, study)
    if len(pairs) != len(contrasts):
        raise SystemExit("the comparisons and the report's contrasts do not line up")
    chosen = {key for pair in pairs for key in (pair.first, pair.second)}
    fixed = table[table["seed"].isin(order) & table["configuration"].isin(chosen)]
    complete = {key for key, count in fixed.groupby("configuration")["seed"].nunique().items() if count == seeds}
    by_name = {(pair.name, pair.measure): (pair, contrast) for pair, contrast in zip(pairs, contrasts)}
    available = [by_name[key][1] for key in ((row["comparison"], row["measure"]) for row in rows)
                 if key in by_name and {by_name[key][0].first, by_name[key][0].second} <= complete]
    tuned = fixed[fixed["configuration"].isin(complete)]
    made = {item.contrast: item for item in decisions.decide(available, fixed, method, tuned=tuned)}
    # A fixed sweep would adjust over every comparison; the unavailable ones at p = 1 bound that from above.
    raw = [item.difference.p_value for item in made.values()]
    over_all = dict(zip(made, multiplicity.adjust(raw + [1.0] * (len(rows) - len(raw)), method)))
    compared = []
    for row in rows:
        key = (row["comparison"], row["measure"])
        contrast = by_name[key][1] if key in by_name else None
        found = made.get(contrast)
        compared.append(Compared(row["comparison"], row["measure"], row["state"],
                                 (int(row["first_seeds"]), int(row["second_seeds"])),
                                 (row["mean_points"], row["low_points"], row["high_points"]), found,
                                 float(over_all.get(contrast, math.nan))))
    return compared, method, order


def measure_cost(experiment: str, fixed_seeds: int = FIXED_SEEDS) -> Cost:
    client = store.configure()
    parent = latest_parent(client, experiment)
    run_id = parent.info.run_id
    rows = last_look(client, run_id)
    children = records.search_all(client, parent.info.experiment_id, f"tags.`{records.PARENT_RUN_TAG}` = '{run_id}'")
    ended = parent.info.end_time is not None and parent.info.status != "RUNNING"
    end = parent.info.end_time if ended else max(run.info.end_time or 0 for run in children)
    table = run_table(experiment, run_id)
    compared, method, order = fixed_decisions(table, fixed_seeds, str(table["study"].iloc[0]), rows)
    seeds = table.groupby("configuration")["seed"].nunique()
    return Cost(run_id, int(parent.data.tags[records.LOOKS_TAG]), parent.data.tags.get(records.STOPPED_TAG, ""),
                Counter(run.info.status for run in children), (end - parent.info.start_time) / 1000, ended,
                Counter(seeds.tolist()), len(seeds), tuple(order), tuple(compared), method)


def fixed_verdict(item: Compared) -> str:
    if item.fixed is None:
        return NOT_AVAILABLE
    if not item.fixed.decided:
        return "cannot decide"
    better, worse = item.fixed.winner()
    return f"decided: {better} above {worse}"


def adaptive_verdict(item: Compared) -> str:
    if item.state != adaptive.sequential.DECIDED:
        return item.state
    return "decided: first above second" if float(item.interval[0]) > 0 else "decided: second above first"


def agrees(item: Compared) -> str:
    if item.fixed is None:
        return ""
    decided = item.state == adaptive.sequential.DECIDED
    if decided != item.fixed.decided:
        return "no"
    return "yes" if not decided or (float(item.interval[0]) > 0) == (item.fixed.difference.mean > 0) else "no"


def cost_section(cost: Cost, command: str) -> list[str]:
    count = len(cost.fixed_seeds)
    words = NUMBER_WORDS.get(count, f"{count}")
    seeds = ", ".join(f"{count} with {seeds} seeds" for seeds, count in sorted(cost.seeds_per_configuration.items()))
    others = ", ".join(f"{count} {status}" for status, count in sorted(cost.children.items()) if status != "FINISHED")
    wall = "from the parent's start to its end" if cost.ended else \
        "from the parent's start to its last child's end (the parent has not ended)"
    wall += ", pauses between a stop and a restart included"
    lines = [f"## {SECTION}. Adding seeds until decided against a fixed {words}-seed sweep", "",
             f"`{command}`, {datetime.date.today().isoformat()}, from the store's sweep parent `{cost.parent_run_id}`"
             " (read only).", "",
             f"**The adaptive sweep**: {cost.looks} looks, {cost.runs} finished child runs"
             + (f" (and {others})" if others else "") + f", {cost.wall_seconds:.1f} s wall {wall}, "
             f"{cost.seconds_per_run:.2f} s per run. Configurations by their seeds at the end: {seeds}. Stopped: "
             f"{cost.stopped or 'not yet'}.", "",
             "| comparison | measure | last verdict | seeds (first, second) | first − second, points [sequential "
             "interval] |", "| --- | --- | --- | ---: | --- |"]
    lines += [f"| {item.name} | {item.measure} | {adaptive_verdict(item)} | {item.seeds[0]}, {item.seeds[1]} | "
              f"{item.interval[0]} [{item.interval[1] or '−∞'}, {item.interval[2] or '∞'}] |" for item in cost.compared]
    fixed_wall = cost.fixed_runs * cost.seconds_per_run
    short = multiplicity.SHORT_NAMES[cost.method]
    available = [item for item in cost.compared if item.fixed is not None]
    lines += ["", f"**The fixed {words}-seed alternative**: {cost.configurations} configurations × {count}"
              f" seeds = {cost.fixed_runs} runs; wall ≈ {fixed_wall:.1f} s, estimated as {cost.fixed_runs} runs × "
              f"the adaptive sweep's {cost.seconds_per_run:.2f} s per run: an extrapolation from the same sweep, not "
              f"a measurement. Its decisions are the report's fixed-sample rule (paired Student-t, {short}-adjusted,"
              f" decided at adjusted p ≤ 0.05) on seeds {seed_range(cost.fixed_seeds)} of the adaptive sweep's "
              f"runs, for the comparisons whose two configurations have all {count} there ({len(available)} of "
              f"{len(cost.compared)}), adjusted over those; the next column adjusts over all {len(cost.compared)}, "
              f"the others at p = 1 (a bound on what the fixed sweep would adjust: not smaller). They "
              f"are computed at the learning rates the adaptive sweep chose on its declared seeds: a fixed sweep "
              f"would choose each configuration's learning rate on {count} seeds of every "
              f"configuration, and the adaptive sweep has only the declared seeds of the configurations it did not "
              f"need.", "",
              f"| comparison | measure | fixed decision | first − second, points [95% CI] | {short}-adjusted p | "
              f"{short} over all | same as adaptive |", "| --- | --- | --- | --- | ---: | ---: | --- |"]
    lines += [fixed_row(item) for item in cost.compared]
    lines += ["", f"Adaptive against fixed: {cost.runs} against {cost.fixed_runs} runs "
              f"({cost.runs / cost.fixed_runs:.2f}×), {cost.wall_seconds:.1f} s against ≈ {fixed_wall:.1f} s."]
    return lines


def seed_range(seeds: tuple[int, ...]) -> str:
    """The seeds as a range where they follow each other (0–9), else listed."""
    if list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def fixed_row(item: Compared) -> str:
    if item.fixed is None:
        return f"| {item.name} | {item.measure} | {NOT_AVAILABLE} | | | | |"
    difference = item.fixed.difference
    return (f"| {item.name} | {item.measure} | {fixed_verdict(item)} | {100 * difference.mean:.2f} "
            f"[{100 * difference.low:.2f}, {100 * difference.high:.2f}] | {item.fixed.adjusted_p:.3g} | "
            f"{item.over_all_p:.3g} | {agrees(item)} |")


def replace_section(existing: str, section: str) -> str:
    """``existing`` with section ``SECTION`` replaced by ``section`` (or added), its header and the others kept."""
    header, sections = results_file.split_sections(existing)
    sections[SECTION] = section.rstrip("\n")
    return header + "\n\n" + "\n\n".join(sections[number] for number in sorted(sections)) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="the experiment the adaptive sweep logged into")
    parser.add_argument("--fixed-seeds", type=int, default=FIXED_SEEDS, help="seeds of the fixed alternative")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    arguments = parser.parse_args(argv)
    command = f"MLFLOW_TRACKING_URI={store.shown_uri()} python benchmarks/adaptive_cost.py --experiment " \
              f"{arguments.experiment}" + (
        f" --fixed-seeds {arguments.fixed_seeds}" if arguments.fixed_seeds != FIXED_SEEDS else "")
    section = "\n".join(cost_section(measure_cost(arguments.experiment, arguments.fixed_seeds), command))
    existing = arguments.output.read_text() if arguments.output.exists() else ""
    arguments.output.write_text(replace_section(existing, section))
    print(section)


if __name__ == "__main__":
    main()
