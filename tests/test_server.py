"""actopt against a real `mlflow server` over HTTP: the same runs, sweeps and analysis as against a local store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from actopt.cli import main
from actopt.core import run_end
from actopt.tracking import records, runlog

pytestmark = pytest.mark.slow


def test_training_over_http_logs_the_same_run(small_config, mlflow_server, tracking_store, monkeypatch):
    local_run_id, local_result = runlog.run_training(small_config.replace(experiment_name="local"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    remote_run_id, remote_result = runlog.run_training(small_config.replace(experiment_name="over-http"))
    local = MlflowClient(tracking_store).get_run(local_run_id)
    remote = MlflowClient(mlflow_server).get_run(remote_run_id)
    assert remote.info.status == "FINISHED"
    assert remote.data.params == {**local.data.params, "experiment_name": "over-http"}
    ignored = {"epoch_time", "group_epoch_time", "train_seconds"}

    def results(metrics: dict[str, float]) -> dict[str, float]:
        # Timings and the system monitor's readings (its first sample comes only once a run has lasted its
        # sampling interval, so a slower run has some and a faster one none) are not training results.
        return {key: value for key, value in metrics.items() if key not in ignored and not key.startswith("system/")}

    assert results(remote.data.metrics) == results(local.data.metrics)
    assert remote_result.best_epoch == local_result.best_epoch
    remote_client = MlflowClient(mlflow_server)
    assert {item.path for item in remote_client.list_artifacts(remote_run_id)} >= {
        run_end.HISTORY_ARTIFACT, run_end.HISTOGRAM_ARTIFACT}
    steps = [point.step for point in remote_client.get_metric_history(remote_run_id, "probe_grad_max_abs/layer_02")]
    assert steps == [0, 1, 2, 3]


def children_by_digest(client: MlflowClient, experiment: str) -> dict[str, object]:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    return {run.data.tags[records.CONFIG_DIGEST_TAG]: run for run in runs if records.PARENT_RUN_TAG in run.data.tags}


def findings_section(folder: Path) -> str:
    """The report's findings, with run ids (which differ between two stores) masked."""
    [report] = folder.glob("*/report.md")
    section = report.read_text().split("## Findings", 1)[1].split("\n## ", 1)[0]
    return re.sub(r"\b[0-9a-f]{8}(?:[0-9a-f]{24})?\b", "<run>", section)


def test_a_sweep_and_its_analysis_over_http_match_a_local_store(tmp_path, data_dir, mlflow_server, tracking_store,
                                                               monkeypatch, restore_signal_handlers):
    grid = {"activation": ["relu", "tanh"], "optimizer": {"sgd": {"learning_rate": [0.1]},
                                                          "adam": {"learning_rate": [0.001]}}}
    study = tmp_path / "tiny.json"
    study.write_text(json.dumps({"description": "Two activations, two optimizers.", "seeds": [0], "grid": grid,
                                 "fixed": {"dataset": "mnist", "hidden_sizes": [32, 16], "epochs": 3, "batch_size": 32,
                                           "log_model": False, "device": "cpu"}}))
    experiment = f"sweep-{tmp_path.name}"  # the session's server is shared
    for uri, name in ((tracking_store, "local"), (mlflow_server, "remote")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        swept = CliRunner().invoke(main, ["sweep", str(study), "--data-dir", str(data_dir), "--experiment-name",
                                          experiment])
        assert swept.exit_code == 0, swept.output
        analysed = CliRunner().invoke(main, ["analyze", "--experiment", experiment, "--output-dir",
                                             str(tmp_path / name)])
        assert analysed.exit_code == 0, analysed.output
        assert ": 4 run(s), " in analysed.output
    local, remote = MlflowClient(tracking_store), MlflowClient(mlflow_server)
    local_children, remote_children = children_by_digest(local, experiment), children_by_digest(remote, experiment)
    assert set(remote_children) == set(local_children) and len(local_children) == 4
    timing = {"epoch_time", "group_epoch_time", "train_seconds"}
    for digest, here in local_children.items():
        there = remote_children[digest]
        assert there.info.status == here.info.status == "FINISHED"
        assert there.data.params == here.data.params
        assert {k: v for k, v in there.data.metrics.items() if k not in timing} == {
            k: v for k, v in here.data.metrics.items() if k not in timing}
        for key in ("val_accuracy", "probe_grad_max_abs/layer_01"):
            assert [(point.step, point.value) for point in remote.get_metric_history(there.info.run_id, key)] == [
                (point.step, point.value) for point in local.get_metric_history(here.info.run_id, key)]
    parents = [client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                  f"tags.`{records.KIND_TAG}` = 'sweep'")[0] for client in (local, remote)]
    assert parents[0].data.metrics == parents[1].data.metrics  # counts per status, best accuracy
    findings = findings_section(tmp_path / "local")
    assert findings.count("\n- **") >= 3  # rules that found something, or said why not
    assert findings_section(tmp_path / "remote") == findings
    analyses = remote.search_runs([remote.get_experiment_by_name(experiment).experiment_id],
                                  f"tags.`{records.KIND_TAG}` = 'analysis'")
    assert len(analyses) == 1 and "report.md" in {item.path for item in remote.list_artifacts(analyses[0].info.run_id)}
