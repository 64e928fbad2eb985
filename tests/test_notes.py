"""What the MLflow UI shows: diagnosis tags and descriptions of runs, sweep parents, experiments and analysis runs,
system metrics; and a small synthetic study whose children's tags agree with the analysis report's findings."""

from __future__ import annotations

import json
from pathlib import Path

from forcing import forcing_builder
from mlflow.tracking import MlflowClient

from actopt.analysis import plots, tables
from actopt.analysis.analyze import analyze_experiment, findings_markdown
from actopt.core import diagnosis
from actopt.sweeps.executors import InlineExecutor
from actopt.sweeps.study import configurations, load_study
from actopt.sweeps.sweep import ensure_datasets, run_sweep
from actopt.tracking import notes, queries, runlog

TOPICS = {"divergence": "Divergence", "vanishing_gradients": "Vanishing gradients",
          "exploding_gradients": "Exploding gradients", "dead_units": "Dead units", "inactive_units": "Inactive units",
          "saturation": "Saturation"}


def test_runs_are_tagged_described_and_filterable_by_diagnosis(small_config, monkeypatch):
    healthy_id, _ = runlog.run_training(small_config.replace(activation="tanh", system_metrics=False))
    forcing_builder(-100.0, monkeypatch)  # every hidden ReLU unit dead from the start
    dead_id, result = runlog.run_training(small_config.replace(optimizer="sgd", learning_rate=1e-6,
                                                               system_metrics=False))
    client = MlflowClient()
    dead = client.get_run(dead_id).data.tags
    # Overfitting is left out: a dead net predicts one class, and its train/validation gap is the two splits'
    # difference in that class's share, whatever the synthetic data makes it.
    assert {key: dead[key] for key in dead if key.startswith("diagnosis.") and key != "diagnosis.overfitting"} == {
        "diagnosis.divergence": "false", "diagnosis.vanishing_gradients": "false",
        "diagnosis.exploding_gradients": "false", "diagnosis.dead_units": "true", "diagnosis.inactive_units": "false",
        "diagnosis.saturation": "false"}
    assert dead["diagnosis.overfitting"] in ("true", "false")
    description = dead[notes.DESCRIPTION_TAG]
    assert description.startswith("**Diagnosis: dead units")
    assert "\n**relu · sgd · lr 1e-06** · hidden 32,16 · batch 32 · 3 epochs · seed 0 · mnist\n" in description
    assert f"Best epoch {result.best_epoch} of 3: validation accuracy {result.best_val_accuracy:.4f}" in description
    assert "- **Dead units**: layer_01: 1.00 of units never active on the probe examples" in description
    assert "after epoch 3 (above 0.5)" in description
    assert "no problem found by the rules" in client.get_run(healthy_id).data.tags[notes.DESCRIPTION_TAG]
    experiment = client.get_experiment_by_name("tests")
    for filter_string, expected in [("tags.\"diagnosis.dead_units\" = 'true'", [dead_id]),
                                    ("tags.`diagnosis.dead_units` = 'false'", [healthy_id])]:
        assert [run.info.run_id for run in client.search_runs([experiment.experiment_id], filter_string)] == expected
    assert experiment.tags[notes.EXPERIMENT_KIND_TAG] == notes.EXPERIMENT_KIND


def test_system_metrics_are_logged_unless_switched_off(small_config, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")  # a run of a second gets samples
    on, _ = runlog.run_training(small_config.replace(epochs=6))
    off, _ = runlog.run_training(small_config.replace(epochs=6, system_metrics=False))
    client = MlflowClient()
    logged = {run_id: {key for key in client.get_run(run_id).data.metrics if key.startswith("system/")}
              for run_id in (on, off)}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= logged[on]
    assert logged[off] == set()
    assert client.get_run(off).data.params["system_metrics"] == "false"


def write_study(folder: Path, data_dir: Path) -> Path:
    """Eight tiny configurations, some meant to go wrong: learning rate 10⁴ diverges, saturates or kills units."""
    document = {
        "description": "Which activations survive a huge learning rate (test study).",
        "fixed": {"dataset": "mnist", "hidden_sizes": [32, 16], "epochs": 2, "batch_size": 32, "max_batches": 5,
                  "log_model": False, "device": "cpu", "system_metrics": False},
        "grid": {"activation": ["relu", "gelu", "tanh", "sigmoid"],
                 "optimizer": {"sgd": {"learning_rate": [0.05, 1e4]}}},
    }
    path = folder / "diagnosed.json"
    path.write_text(json.dumps(document))
    return path


def reference(run) -> str:
    return f"{run.info.run_name} ({run.info.run_id[:8]})"


def test_children_tags_and_descriptions_agree_with_the_report(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(plots, "draw_all", lambda *arguments: ([], {}))  # findings are the subject, not figures
    study = load_study(str(write_study(tmp_path, data_dir)))
    configs = configurations(study, data_dir=str(data_dir))
    ensure_datasets(configs)
    result = run_sweep(study, configs, InlineExecutor())
    client = MlflowClient()
    experiment = client.get_experiment_by_name("diagnosed")
    assert experiment.tags[notes.DESCRIPTION_TAG] == study.description
    assert experiment.tags[notes.EXPERIMENT_KIND_TAG] == notes.EXPERIMENT_KIND

    parent = client.get_run(result.parent_run_id)
    summary = parent.data.tags[notes.DESCRIPTION_TAG]
    best_id = parent.data.tags["best_run_id"]
    assert summary.startswith(study.description + "\n\n8 configurations: ")
    assert f"(#/experiments/{experiment.experiment_id}/runs/{best_id})" in summary
    assert summary.count("\n| ") == 10  # the header, its rule and one row per configuration

    outcome = analyze_experiment("diagnosed", parent_run_id=result.parent_run_id, output_dir=tmp_path / "analysis")
    children = {run.info.run_id: run for run in client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")}
    assert len(children) == 8
    holding = [item for item in outcome.written.findings if item.kind == "holds"]
    held_somewhere = set()
    for rule, topic in TOPICS.items():
        listed = {name for item in holding if item.topic == topic for name in item.runs}
        tagged = {reference(run) for run in children.values() if run.data.tags[f"diagnosis.{rule}"] == "true"}
        assert listed == tagged, rule
        held_somewhere |= {rule} if tagged else set()
    for run in children.values():
        for rule in diagnosis.RULES:
            shown = f"- **{diagnosis.TITLES[rule]}**" in run.data.tags[notes.DESCRIPTION_TAG]
            assert shown == (run.data.tags[f"diagnosis.{rule}"] == "true"), (run.info.run_name, rule)
    # Overfitting is judged per configuration at its best learning rate; with one seed that is one run.
    runs = queries.load_runs("diagnosed", result.parent_run_id)
    tuned = {reference(run) for run_id, run in children.items()
             if run_id in set(tables.tuned_runs(tables.run_table(runs, queries.load_histories(runs)))["run_id"])}
    listed = {name for item in holding if item.topic == "Overfitting" for name in item.runs}
    tagged = {reference(run) for run in children.values() if run.data.tags["diagnosis.overfitting"] == "true"}
    assert listed == tagged & tuned
    assert {"divergence", "dead_units"} <= held_somewhere  # the study exercises rules that hold, not only absences

    analysis = client.get_run(outcome.run_id).data.tags[notes.DESCRIPTION_TAG]
    experiment_id = client.get_run(outcome.run_id).info.experiment_id
    link = notes.artifact_link(experiment_id, outcome.run_id, "report.md")
    assert analysis.startswith(f"**The whole report, with its tables, the runs behind each finding and the figures: "
                               f"[report.md]({link}).**\n\n## Answers")
    assert "\n## Findings\n" in analysis  # after the answers, in the report's order
    assert "### Divergence" in analysis
    section = findings_markdown(outcome.written.report.read_text())
    assert section.startswith("## Answers") and "\n## Findings\n" in section and "  - runs: " not in section
    assert len(analysis) <= notes.MAX_DESCRIPTION and (section in analysis or "cut to fit" in analysis)


def long_report(findings: int) -> str:
    """A report of the shape ``report.md`` has, with many findings of long numbers."""
    items = []
    for index in range(findings):
        items += ["", f"- **finding {index}: sgd beats adam by 0.0{index:03d} (95% CI 0.0012 to 0.0{index:03d}).**",
                  f"  - rule: paired by seed, rule {index}", f"  - numbers: {'; '.join(['0.8731 ± 0.0042'] * 6)}",
                  f"  - runs: {', '.join(['relu-sgd-lr0.1-seed1 (0123abcd)'] * 5)}"]
    findings_text = "\n".join(["## Findings", "", "Each finding is computed from the logged numbers.", *items])
    table = "\n".join(["## Results per run", "", "| run | acc |", "| --- | --- |", *["| r | 0.9 |"] * 300])
    return "\n\n".join(["# Analysis of experiment `x`", "## Answers\n\n- Does dropout help? Yes, by 0.0123.",
                          table, findings_text, "## Figures\n\n![a](a.png)"]) + "\n"


def test_the_analysis_description_fits_the_real_limit_and_ends_where_its_text_ends(tracking_store):
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    from actopt.analysis.analyze import analysis_description

    assert notes.MAX_DESCRIPTION == MAX_TAG_VAL_LENGTH  # the limit MLflow enforces, not a guess
    report = long_report(60)
    description = analysis_description(report, "1", "abc")
    assert len(description) <= MAX_TAG_VAL_LENGTH < len(findings_markdown(report))
    shown, notice = description.rsplit("\n\n… (cut to fit the description; ", 1)
    assert notice == "the whole report is [report.md](#/experiments/1/runs/abc/artifacts/report.md))\n"
    # Answers first, then findings; no table, no run lists; every line whole, and the last item whole.
    assert shown.split("\n\n")[1:3] == ["## Answers", "- Does dropout help? Yes, by 0.0123."]
    assert "| r | 0.9 |" not in shown and "  - runs: " not in shown
    source_lines = set(report.splitlines())
    assert all(line in source_lines for line in shown.splitlines()[1:])
    assert shown.splitlines()[-1].startswith("  - numbers: ")
    # A short report is whole. MLflow keeps the description whole, and cuts a tag one character longer silently
    # (MLFLOW_TRUNCATE_LONG_VALUES): the limit is where MLflow itself would cut.
    assert "cut to fit" not in analysis_description(long_report(3), "1", "abc")
    client = MlflowClient(tracking_store)
    run_id = client.create_run(client.create_experiment("limit")).info.run_id
    client.set_tag(run_id, notes.DESCRIPTION_TAG, description)
    client.set_tag(run_id, "too.long", "x" * (MAX_TAG_VAL_LENGTH + 1))
    tags = client.get_run(run_id).data.tags
    assert tags[notes.DESCRIPTION_TAG] == description and len(tags["too.long"]) == MAX_TAG_VAL_LENGTH


def test_the_study_view_opens_its_chart_view_on_validation_accuracy_and_the_histograms():
    """The run page orders charts itself (prefix sections first); the study's shared view carries a chart layout
    that MLflow 3.17's chart view follows (seen in Chromium; the README's UI section)."""
    from mlflow.utils.validation import MAX_EXPERIMENT_TAG_VAL_LENGTH

    from actopt.core.run_end import HISTOGRAM_IMAGE_KEY

    varying = [f"parameter_{index:02d}" for index in range(30)]  # far more than any study varies
    text = notes.study_view("0" * 32, varying)
    view = json.loads(text)
    charts = view["compareRunCharts"]
    assert [chart.get("metricKey") for chart in charts][:2] == ["val_accuracy", "val_loss"]
    assert charts[-1]["imageKeys"] == [HISTOGRAM_IMAGE_KEY] and charts[-1]["showRunParams"] is False
    [section] = view["compareRunSections"]
    assert {chart["metricSectionId"] for chart in charts} == {section["uuid"]} and view["isAccordionReordered"]
    assert len({chart["uuid"] for chart in charts}) == len(charts)
    assert len(text) < MAX_EXPERIMENT_TAG_VAL_LENGTH
    assert notes.study_page_url("http://h:5000/", "7", charts=True).endswith(
        "viewStateShareKey=study&workflowType=machine_learning&compareRunsMode=CHART")
