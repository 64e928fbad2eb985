"""The adaptive sweep against a real sqlite store: seeds added only where a comparison is open, the looks
recorded on the parent, and a sweep stopped mid-look continuing the same plan without training twice."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from actopt.analysis.adaptive import Budget, configuration_key, report_section, sweep_until_decided
from actopt.cli import main as cli_main
from actopt.sweeps.executors import InlineExecutor
from actopt.sweeps.study import configurations, load_study
from actopt.sweeps.sweep import ensure_datasets
from actopt.tracking import notes, records

TINY = {"dataset": "mnist", "hidden_sizes": [16], "epochs": 1, "max_batches": 2, "batch_size": 32,
        "gradient_statistics": False, "log_model": False, "device": "cpu"}
# Two activations, each at two learning rates: one comparison, each side at its chosen rate.
GRID = {"activation": ["relu", "tanh"], "optimizer": {"sgd": {"learning_rate": [0.05, 0.5]}}}


class StopAfter:
    """Runs tasks in this process and raises KeyboardInterrupt once ``count`` outcomes have come, as Ctrl-C
    between two groups would."""

    def __init__(self, count: int) -> None:
        self.left = count

    def starting(self, tasks):
        return None

    def run(self, tasks, progress=lambda event: None):
        for outcome in InlineExecutor().run(tasks, progress):
            yield outcome
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


def adaptive(folder: Path, data_dir: Path, executor, lines: list[str], max_seeds: int = 4):
    path = folder / "tiny.json"
    path.write_text(json.dumps({"description": "A tiny study for tests.", "seeds": [0, 1], "fixed": TINY,
                                "grid": GRID}))
    study = load_study(str(path))
    configs = configurations(study, data_dir=str(data_dir))
    ensure_datasets(configs)
    return configs, sweep_until_decided(study, configs, executor, Budget(max_seeds), report=lines.append)


def children(parent_run_id: str) -> list:
    return [run for run in records.sweep_children(parent_run_id)]


def test_stopped_mid_look_it_continues_the_same_plan_and_trains_no_seed_twice(tmp_path, data_dir):
    first_lines: list[str] = []
    # 8 declared runs (look 0), then 2 of look 1's 4 added runs: stopped between two groups of look 1.
    configs, stopped = adaptive(tmp_path, data_dir, StopAfter(10), first_lines)
    assert stopped.sweep.stopped_by == "SIGINT" and stopped.exit_code == 130
    assert "stopped by SIGINT during look 1" in stopped.stopped
    assert len(stopped.looks) == 1 and not stopped.looks[0].stopped
    planned = stopped.looks[0].next_counts
    parent = stopped.sweep.parent_run_id
    done_before = {run.run_id for run in children(parent) if run.status == "FINISHED"}
    assert len(done_before) == 10

    lines: list[str] = []
    _, resumed = adaptive(tmp_path, data_dir, InlineExecutor(), lines)
    assert resumed.sweep.parent_run_id == parent and resumed.exit_code == 0
    # The same look 0 (replayed from the finished runs), the same seeds planned for look 1.
    assert resumed.looks[0].next_counts == planned
    assert [line for line in lines if line.startswith("look 0")] == [line for line in first_lines
                                                                      if line.startswith("look 0")]
    finished = [run for run in children(parent) if run.status == "FINISHED"]
    assert max(Counter(run.digest for run in finished).values()) == 1
    assert len(finished) == 8 + 4 and len(finished) - len(done_before) == 2
    # Seeds were added to the chosen learning rate of each activation only, up to the cap of 4.
    grown = {key for key, count in planned.items() if count == 4}
    assert len(grown) == 2 and sorted(planned.values()) == [2, 2, 4, 4]
    chosen = {configuration_key(config): config for config in configs if configuration_key(config) in grown}
    assert {config.activation for config in chosen.values()} == {"relu", "tanh"}
    assert len(resumed.looks) == 2 and resumed.looks[1].stopped

    tags = MlflowClient().get_run(parent).data.tags
    assert tags[records.LOOKS_TAG] == "2" and tags[records.STOPPED_TAG] == resumed.stopped
    assert "Adaptive seeds: 2 looks; 1 comparisons of test_accuracy" in tags[notes.DESCRIPTION_TAG]
    table = MlflowClient().download_artifacts(parent, records.LOOKS_ARTIFACT, str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(table).read_text())))
    # The study declares no questions: the report's default one for activation, judged on test accuracy; its
    # validation-area measure is listed as not judged.
    assert [(row["look"], row["first_seeds"], row["second_seeds"], row["next"]) for row in rows] == [
        ("0", "2", "2", "go on"), ("1", "4", "4", "stop"), ("", "", "", "")]
    assert rows[0]["comparison"] == "activation tanh vs relu" and rows[0]["measure"] == "test_accuracy"
    assert (rows[-1]["question"], rows[-1]["measure"], rows[-1]["state"]) == ("activation", "val_area", "not judged")
    # What the report says of it.
    section = report_section(records.sweep_looks([parent]))
    assert f"Sweep parent `{parent}` added seeds until its comparisons were decided: 2 looks" in section
    assert "sequential intervals" in section and "- activation tanh vs relu: test_accuracy " in section
    assert "Judged at each look: activation: test_accuracy." in section
    assert "Not judged: val_area (activation)" in section

    # The analysis of these runs leads with the sequential verdicts, in the report and in the UI's description.
    result = CliRunner().invoke(cli_main, ["analyze", "--experiment", configs[0].experiment_name,
                                           "--output-dir", str(tmp_path / "analysis")])
    assert result.exit_code == 0, result.output
    report = next((tmp_path / "analysis").glob("*/report.md")).read_text()
    assert report.index("## Adaptive seeds") < report.index("## Answers") < report.index("## Decisions")
    assert "where the two disagree the sequential verdict here" in report
    analysis_run = next(run for run in MlflowClient().search_runs([children(parent)[0].experiment_id])
                        if run.data.tags.get("actopt.kind") == "analysis")
    description = analysis_run.data.tags[notes.DESCRIPTION_TAG]
    assert description.index("## Adaptive seeds") < description.index("## Answers")
