"""What one training run logs, through a recording logger (no MLflow involved)."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch

from actopt.core import device, gradstats, inputs, run_end, training
from actopt.core.optimizers import StackedOptimizer

TRAIN_KEYS = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_time",
              "grad_global_norm", "grad_global_norm_peak", "train_eval_loss", "train_eval_accuracy"}
LAYER_PREFIXES = ("grad_norm", "grad_mean_abs", "grad_max_abs", "grad_max_abs_peak")


def run(config, recorder):
    data = inputs.splits(config)
    return training.train(config, data, recorder), data


def test_per_epoch_metrics_and_their_steps(small_config, recorder):
    result, _ = run(small_config, recorder)
    epochs = [1, 2, 3]
    for key in TRAIN_KEYS:
        assert sorted(recorder.series(key)) == epochs, key
    for prefix in LAYER_PREFIXES:
        for layer in ("layer_01", "layer_02", "layer_03"):
            assert sorted(recorder.series(f"{prefix}/{layer}")) == epochs
    for layer in ("layer_01", "layer_02", "layer_03"):
        assert sorted(recorder.series(f"probe_grad_max_abs/{layer}")) == [0, *epochs]
    for layer in ("layer_01", "layer_02"):  # hidden layers only
        assert sorted(recorder.series(f"dead_fraction/{layer}")) == [0, *epochs]
    assert not any(key.startswith("saturated_fraction") for _, metrics in recorder.metrics for key in metrics)
    assert set(recorder.series("learning_rate").values()) == {small_config.learning_rate}
    # One batched call per step: each epoch is logged at once.
    assert [step for step, _ in recorder.metrics] == [0, 1, 2, 3, None]
    assert result.epochs_completed == 3


def test_training_learns_the_synthetic_task(small_config, recorder):
    result, _ = run(small_config.replace(epochs=4), recorder)
    accuracy = recorder.series("val_accuracy")
    assert accuracy[4] > 0.6  # chance is 0.1
    assert recorder.series("train_loss")[4] < recorder.series("train_loss")[1]
    assert result.test_accuracy > 0.6


def test_best_epoch_follows_the_validation_curve(small_config, recorder):
    result, data = run(small_config.replace(epochs=4, learning_rate=0.05, optimizer="sgd"), recorder)
    curve = recorder.series("val_accuracy")
    best_epoch = max(curve, key=lambda epoch: (curve[epoch], -epoch))  # the first epoch reaching the max
    assert result.best_epoch == best_epoch
    assert recorder.tags["best_epoch"] == str(best_epoch)
    final = recorder.series("best_val_accuracy")[None]
    assert final == curve[best_epoch]
    assert recorder.series("best_epoch")[None] == best_epoch
    # The test numbers come from the best weights, which the result's model holds: recomputed here from the
    # logits in one pass, in float64 (the code under test evaluates in chunks through its own evaluate).
    model = result.model.eval()
    with torch.no_grad():
        logits = model(data.test.inputs).double()
    targets = data.test.targets
    loss = float(-logits.log_softmax(dim=1).gather(1, targets.unsqueeze(1)).mean())
    accuracy = sum(int(row.argmax()) == int(target) for row, target in zip(logits, targets)) / len(targets)
    assert recorder.series("test_accuracy")[None] == pytest.approx(accuracy, abs=1e-12)
    assert recorder.series("test_loss")[None] == pytest.approx(loss, rel=1e-5)
    assert recorder.tags["diverged"] == "false"


def test_saturating_activations_log_saturation(small_config, recorder):
    run(small_config.replace(activation="sigmoid", epochs=1), recorder)
    assert sorted(recorder.series("saturated_fraction/layer_01")) == [0, 1]
    assert not any(key.startswith("dead_fraction") for _, metrics in recorder.metrics for key in metrics)


def test_histogram_artifact_and_images(small_config, recorder):
    run(small_config.replace(epochs=2), recorder)
    document = recorder.dicts[run_end.HISTOGRAM_ARTIFACT]
    assert document["steps"] == [0, 1, 2]
    assert document["layers"] == ["layer_01", "layer_02", "layer_03"]
    assert len(document["edges_log10"]) == gradstats.HISTOGRAM_BINS + 1
    sizes = [784 * 32, 32 * 16, 16 * 10]
    for step_counts in document["counts"]:
        assert [sum(layer) for layer in step_counts] == sizes
        assert all(len(layer) == gradstats.HISTOGRAM_BINS + 2 for layer in step_counts)
    expected = [(run_end.HISTOGRAM_IMAGE_KEY, step) for step in (0, 1, 2)]
    assert [(key, step) for key, step, _ in recorder.images] == expected
    key, step, image = recorder.images[0]
    assert image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
    assert image.shape[0] == image.shape[1]  # square: it fills the MLflow UI's image card


def test_history_table_holds_every_logged_value(small_config, recorder):
    result, _ = run(small_config.replace(epochs=2), recorder)
    rows = list(csv.DictReader(io.StringIO(recorder.texts[run_end.HISTORY_ARTIFACT])))
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    for step, metrics in recorder.metrics:
        if step is None:
            continue
        for key, value in metrics.items():
            assert float(rows[step][key]) == value


def test_same_seed_same_metrics(small_config, recorder):
    fresh = type(recorder)
    first, second = [], []
    for store in (first, second):
        recorder = fresh()
        run(small_config.replace(dropout=0.2, epochs=2), recorder)
        # Times are the clock's, not the seed's.
        store.extend((step, {k: v for k, v in metrics.items() if k not in ("epoch_time", "train_seconds")}) for step,
                     metrics in recorder.metrics)
    assert first == second
    recorder = fresh()
    run(small_config.replace(dropout=0.2, epochs=2, seed=1), recorder)
    assert recorder.series("val_loss") != dict((s, m["val_loss"]) for s, m in first if "val_loss" in m)


def test_divergence_stops_tags_and_keeps_what_was_logged(small_config, recorder):
    result, _ = run(small_config.replace(optimizer="sgd", learning_rate=1e6, epochs=5), recorder)
    assert result.diverged
    assert recorder.tags["diverged"] == "true"
    assert recorder.tags["diverged_epoch"] == str(result.diverged_epoch)
    losses = recorder.series("train_loss")
    assert max(losses) == result.diverged_epoch < 5  # stopped early
    assert not math.isfinite(losses[result.diverged_epoch])
    assert run_end.HISTORY_ARTIFACT in recorder.texts


def test_test_every_epoch_and_no_statistics(small_config, recorder):
    run(small_config.replace(test_every_epoch=True, gradient_statistics=False, epochs=2), recorder)
    assert sorted(recorder.series("epoch_test_accuracy")) == [1, 2]
    keys = {key for _, metrics in recorder.metrics for key in metrics}
    assert not any(key.startswith(("grad_", "probe_", "dead_")) for key in keys)
    assert run_end.HISTOGRAM_ARTIFACT not in recorder.dicts


def test_deep_net_names_every_layer(small_config, recorder):
    run(small_config.replace(depth=12, width=8, epochs=1, max_batches=2), recorder)
    assert sorted(recorder.series("probe_grad_max_abs/layer_13")) == [0, 1]
    assert "grad_norm/layer_13" in recorder.metrics[1][1]


def test_max_batches_limits_an_epoch(small_config, recorder, monkeypatch):
    steps = []
    original = StackedOptimizer.step

    def counting(self, *args, **kwargs):
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StackedOptimizer, "step", counting)
    run(small_config.replace(epochs=2, max_batches=3), recorder)
    assert len(steps) == 6


def test_cuda_request_without_cuda_is_a_config_error():
    from actopt.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="no CUDA device"):
        device.resolve_device("cuda")
    assert device.resolve_device("auto").type == "cpu"


def test_the_gap_is_measured_in_eval_mode_on_a_training_subset_and_chance_is_logged(small_config, recorder):
    config = small_config.replace(dropout=0.5, epochs=2)
    result, data = run(config, recorder)
    count = len(data.validation)
    subset = torch.utils.data.TensorDataset(data.train.inputs[:count], data.train.targets[:count])
    model = result.model  # the best epoch's weights; the last epoch's are what epoch 2 measured
    model.eval()
    with torch.no_grad():
        logits = model(subset.tensors[0])
    expected = (logits.argmax(dim=1) == subset.tensors[1]).float().mean().item()
    assert recorder.series("train_eval_accuracy")[result.best_epoch] == pytest.approx(expected, abs=1e-6)
    # Majority class of the validation split, counted by another route.
    labels = data.validation.targets.tolist()
    majority = max(labels.count(label) for label in set(labels)) / len(labels)
    summaries = [metrics for step, metrics in recorder.metrics if step is None]
    assert summaries[0]["chance_accuracy"] == pytest.approx(majority)


def test_a_run_logs_its_own_training_time_the_sum_of_its_epoch_times(small_config, recorder):
    run(small_config.replace(epochs=2, max_batches=3), recorder)
    epoch_times = recorder.series("epoch_time")
    assert sorted(epoch_times) == [1, 2]
    [summary] = [metrics for step, metrics in recorder.metrics if step is None and "train_seconds" in metrics]
    assert summary["train_seconds"] == pytest.approx(epoch_times[1] + epoch_times[2])
