"""The MLflow UI in a real browser: a run page shows the run's description and its logged model, the address actopt
gives opens an experiment on its runs table, the study's address shows its children by name and seed, the
diagnosis tags filter runs, and the analysis run's description is whole (slow: a server, Chromium)."""

from __future__ import annotations

import html
import json

import pytest
from browser import chromium, rendered_dom
from forcing import forcing_builder
from mlflow.tracking import MlflowClient
from services import require

from actopt.analysis.analyze import analyze_experiment
from actopt.sweeps.executors import InlineExecutor
from actopt.sweeps.study import configurations, load_study
from actopt.sweeps.sweep import ensure_datasets, run_sweep
from actopt.tracking import notes

DEAD = "tags.`diagnosis.dead_units` = 'true'"


@pytest.mark.slow
def test_the_ui_shows_the_diagnosis_and_opens_on_the_runs(tmp_path, data_dir, mlflow_server, monkeypatch):
    if chromium() is None:
        require("chromium is not installed (apt-get install chromium)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    # Hidden biases −100: every ReLU unit dead, every tanh unit saturated, from the first step.
    forcing_builder(-100.0, monkeypatch)
    path = tmp_path / "ui-study.json"
    path.write_text(json.dumps({
        "description": "Two forced failures, seen in the browser.",
        "fixed": {"dataset": "mnist", "hidden_sizes": [32, 16], "epochs": 2, "batch_size": 32, "max_batches": 3,
                  "log_model": True, "device": "cpu", "optimizer": "sgd", "learning_rate": 1e-6},
        "grid": {"activation": ["relu", "tanh"]}}))
    study = load_study(str(path))
    configs = configurations(study, data_dir=str(data_dir))
    ensure_datasets(configs)
    result = run_sweep(study, configs, InlineExecutor())
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ui-study")
    dead = client.search_runs([experiment.experiment_id], DEAD)
    assert [run.info.run_name for run in dead] == ["relu-sgd-lr1e-06-seed0"]
    saturated = client.search_runs([experiment.experiment_id], "tags.\"diagnosis.saturation\" = 'true'")
    assert [run.info.run_name for run in saturated] == ["tanh-sgd-lr1e-06-seed0"]

    run_page = rendered_dom(notes.run_page_url(mlflow_server, experiment.experiment_id, dead[0].info.run_id))
    assert "Diagnosis: dead units" in run_page and "of units never active on the probe examples" in run_page
    assert "Best epoch" in run_page and "No description" not in run_page
    # Its model, logged into the run's own experiment: on the run page and the experiment's Models page.
    assert "Logged models (1)" in run_page and f"#/experiments/{experiment.experiment_id}/models/m-" in run_page

    # The study's address: its children flat (no parent row), each named with its seed, with their columns.
    study_page = rendered_dom(notes.study_page_url(mlflow_server, experiment.experiment_id))
    assert ">relu-sgd-lr1e-06-seed0<" in study_page and ">tanh-sgd-lr1e-06-seed0<" in study_page
    assert "<strong>2</strong> matching runs" in study_page  # folded under the parent, they would not show
    assert ">best_val_accuracy<" in study_page and ">seed<" in study_page
    # Its chart view opens on the headline section (a run page orders its charts itself: README).
    charts_page = rendered_dom(notes.study_page_url(mlflow_server, experiment.experiment_id, charts=True))
    assert "Headline: accuracy, loss, gradient histograms" in charts_page

    runs_page = rendered_dom(notes.runs_page_url(mlflow_server, experiment.experiment_id))
    # The runs table, not the GenAI overview: the sweep's parent, which folds its two children, and a footer
    # that counts the three runs.
    assert ">ui-study<" in runs_page and "<strong>3</strong> matching runs" in runs_page
    assert "Token usage" not in runs_page
    # Filtered in the page: the one matching child, counted with the parent that the table shows it under.
    filtered = rendered_dom(notes.runs_page_url(mlflow_server, experiment.experiment_id, DEAD))
    assert ">ui-study<" in filtered and "<strong>2</strong> matching runs" in filtered

    parent_page = rendered_dom(notes.run_page_url(mlflow_server, experiment.experiment_id, result.parent_run_id))
    assert "Two forced failures, seen in the browser." in parent_page and "Best child" in parent_page

    # The analysis run's description: whole in the page, ending where its text ends, linking the report.
    outcome = analyze_experiment("ui-study", output_dir=tmp_path / "analysis")
    description = client.get_run(outcome.run_id).data.tags[notes.DESCRIPTION_TAG]
    analysis_page = rendered_dom(notes.run_page_url(mlflow_server, experiment.experiment_id, outcome.run_id))
    last_line = description.strip().splitlines()[-1]
    last_words = last_line.rsplit("**", 1)[-1].strip(" -*.") or last_line
    assert html.escape(last_words[-60:], quote=False) in analysis_page
    assert notes.artifact_link(experiment.experiment_id, outcome.run_id, "report.md") in analysis_page
