"""actopt against a real `mlflow server` over HTTP gives the same runs as against a local store."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from actopt import tracking, training

pytestmark = pytest.mark.slow


def test_training_over_http_logs_the_same_run(small_config, mlflow_server, tracking_store, monkeypatch):
    local_run_id, local_result = tracking.run_training(small_config.replace(experiment_name="local"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    remote_run_id, remote_result = tracking.run_training(small_config.replace(experiment_name="over-http"))
    local = MlflowClient(tracking_store).get_run(local_run_id)
    remote = MlflowClient(mlflow_server).get_run(remote_run_id)
    assert remote.info.status == "FINISHED"
    assert remote.data.params == {**local.data.params, "experiment_name": "over-http"}
    ignored = {"epoch_time"}
    assert {k: v for k, v in remote.data.metrics.items() if k not in ignored} == {
        k: v for k, v in local.data.metrics.items() if k not in ignored
    }
    assert remote_result.best_epoch == local_result.best_epoch
    remote_client = MlflowClient(mlflow_server)
    assert {item.path for item in remote_client.list_artifacts(remote_run_id)} >= {
        training.HISTORY_ARTIFACT, training.HISTOGRAM_ARTIFACT}
    steps = [point.step for point in remote_client.get_metric_history(remote_run_id, "probe_grad_max_abs/layer_02")]
    assert steps == [0, 1, 2, 3]
