"""The depth study's theory comparison: tables, rules, report section and figures on runs logged with known values."""

from __future__ import annotations

import numpy as np
import pytest
from fake_runs import history, log_run
from mlflow.tracking import MlflowClient

from actopt.analysis import depth_section, depth_theory, propagation, tables
from actopt.analysis.analyze import write_analysis
from actopt.analysis.conclusions import conclude
from actopt.analysis.derive import Logged
from actopt.analysis.report import Source
from actopt.tracking import queries

INPUT_MOMENT = 0.92


def step_zero(activation: str, init: str, depth: int, batch_shift: dict[int, float] | None = None) -> dict:
    """Step-0 probe metrics exactly as the theory predicts, the minibatch norms shifted by ``batch_shift``
    decades at the given layers (the per-example norms stay on the prediction)."""
    prediction = propagation.predict_config(activation, init, (784, *(128,) * depth, 10), INPUT_MOMENT)
    metrics = {"probe_input_moment": INPUT_MOMENT}
    for layer in range(1, depth + 1):
        name = f"layer_{layer:02d}"
        log10 = prediction.log10_gradient[layer - 1] - 2.0
        metrics[f"probe_example_grad_norm/{name}"] = float(10 ** log10)
        metrics[f"probe_grad_norm/{name}"] = float(10 ** (log10 + (batch_shift or {}).get(layer, 0.0)))
        metrics[f"probe_preactivation_moment/{name}"] = float(prediction.q[layer - 1])
    metrics[f"probe_grad_norm/layer_{depth + 1:02d}"] = 0.3  # the output layer, which the theory leaves out
    return metrics


def log_depth_run(client: MlflowClient, experiment: str, activation: str, init: str, depth: int, best: float = 0.85,
                  batch_shift: dict[int, float] | None = None, seed: int = 0) -> str:
    table = history(activation, best=best)
    table[0].update(step_zero(activation, init, depth, batch_shift))
    return log_run(client, experiment, {"activation": activation, "init": init, "depth": depth, "seed": seed,
                                        "optimizer": "sgd", "learning_rate": 0.01}, table)


def analysed(experiment: str) -> depth_theory.Theory:
    """The theory against the experiment's runs, derived once."""
    runs = queries.load_runs(experiment)
    histories = queries.load_histories(runs)
    return depth_theory.derive_theory(tables.run_table(runs, histories), histories)


@pytest.fixture
def client(tracking_store) -> MlflowClient:
    return MlflowClient(tracking_store)


def test_configurations_measured_as_predicted_agree(client):
    for depth in (5, 8):
        for seed in (0, 1):
            log_depth_run(client, "depth", "tanh", "default", depth, seed=seed)
            log_depth_run(client, "depth", "relu", "kaiming", depth, seed=seed)
    theory = analysed("depth")
    configs = theory.configs
    assert len(configs) == 4 and configs["agrees"].all() and (configs["seeds"] == 2).all()
    tanh = configs[(configs["activation"] == "tanh") & (configs["depth"] == 8)].iloc[0]
    expected = propagation.predict_config("tanh", "default", (784, *(128,) * 8, 10), INPUT_MOMENT)
    assert tanh["measured_decay"] == pytest.approx(expected.decay, rel=1e-6)
    assert tanh["measured_span"] == pytest.approx(expected.span, rel=1e-6)
    assert tanh["rms_error"] == pytest.approx(0.0, abs=1e-9) and tanh["span_error"] == pytest.approx(0.0, abs=1e-9)
    found = depth_theory.theory_findings(theory)
    assert [item.statement for item in found if item.topic == depth_theory.TOPIC] == [
        "The mean-field prediction matches the measured gradient norms at initialisation in 4 of 4 configurations."]
    section = depth_section.theory_section(theory)
    assert not section.reason and len(section.rows) == 4
    relu = next(row for row in section.rows if row[:3] == ["relu", "kaiming", "8"])
    assert relu[7] == "yes" and relu[13] == "∞" and relu[14] == "∞ (yes)"  # χ = 1: flat, trainable at any depth


def test_the_trainable_depth_is_the_fixed_points_whatever_the_depth(client):
    """relu with nn.Linear's default init: σ_w² = 1/3, so χ* = σ_w²·E[relu′²] = 1/3 · 1/2 = 1/6 at any q*,
    ξ_c = −1/ln(1/6) = 1/ln 6 and 6 ξ_c = 6/ln 6 ≈ 3.35 layers, computed from nets of depth 5 and 20 alike."""
    for depth in (5, 20):
        log_depth_run(client, "depth", "relu", "default", depth)
    configs = analysed("depth").configs
    assert len(configs) == 2
    assert configs["chi_star"].tolist() == pytest.approx([1 / 6, 1 / 6], rel=1e-9)
    assert configs["trainable_depth"].tolist() == pytest.approx([6 / np.log(6)] * 2, rel=1e-9)
    # q* = σ_b² / (1 − σ_w²/2) with σ_b² = 1/(3·128): the biases hold q where the weights' sixth is lost.
    assert configs["q_star"].tolist() == pytest.approx([(1 / 384) / (1 - 1 / 6)] * 2, rel=1e-9)
    assert not configs["predicted_trainable"].any() and configs["smoke"].all()


def test_a_missed_profile_names_its_layers_and_the_cancellation(client):
    for depth in (5, 8):
        log_depth_run(client, "depth", "tanh", "default", depth)
    # Depth 8: the minibatch gradient loses two extra decades in layers 2 and 3 only.
    log_depth_run(client, "depth", "relu", "default", 8, batch_shift={1: -2.0, 2: -2.0, 3: -2.0})
    log_depth_run(client, "depth", "relu", "default", 5)
    theory = analysed("depth")
    found = [item for item in depth_theory.theory_findings(theory) if item.topic == depth_theory.TOPIC]
    missed = [item.statement for item in found if "misses" in item.statement]
    assert len(missed) == 1
    assert missed[0].startswith("relu · init default · depth 8: the prediction misses the measured norms by 1.31 "
                                "decades RMS, span error +2.00 decades")  # √(3 · 2² / 7); layer 1 two decades low
    assert "layers off by more than 0.5 decades: layer_01, layer_02, layer_03" in missed[0]
    assert "Each example's own gradient follows the prediction" in missed[0]
    assert "in 3 of 4 configurations" in found[0].statement


def test_trainability_is_predicted_and_checked_against_the_runs(client):
    log_depth_run(client, "depth", "sigmoid", "default", 5, best=0.9)
    log_depth_run(client, "depth", "sigmoid", "default", 20, best=0.11)
    theory = analysed("depth")
    found = [item.statement for item in depth_theory.theory_findings(theory)
             if item.topic == depth_theory.DEPTH_TOPIC]
    bound = propagation.init_fixed_point("sigmoid", "default", 128).trainable_depth()
    assert 1 < bound < 5  # χ* = 0.020: both depths predicted untrainable; depth 5 learned anyway
    assert found[0] == ("Smoke test only (one seed or a few batches of --quick): The 6 ξ_c bound agrees with whether "
                        "the runs learned in 1 of 2 configurations.")
    assert found[1:] == [f"Smoke test only (one seed): sigmoid · init default · depth 5: predicted untrainable "
                         f"(6 ξ_c = ≈ {bound:.1f} layers), yet its runs learned."]
    section = depth_section.theory_section(theory)
    assert "**Smoke test**" in section.text and section.rows[0][-1] == "**disagrees** (smoke test)"


def test_studies_that_do_not_vary_depth_say_why(client):
    log_depth_run(client, "flat", "tanh", "default", 5)
    log_depth_run(client, "flat", "relu", "kaiming", 5)
    theory = analysed("flat")
    assert depth_theory.theory_findings(theory) == []
    section = depth_section.theory_section(theory)
    assert section.reason == ("Not computed: the runs do not vary depth (the comparison belongs to depth studies such "
                              "as mnist-depth).")


def test_runs_logged_before_the_probe_norms_say_so(client):
    for depth in (5, 8):
        log_run(client, "old", {"activation": "tanh", "depth": depth}, history("tanh"))
    theory = analysed("old")
    assert "did not log probe_grad_norm and probe_input_moment" in depth_section.theory_section(theory).reason


@pytest.mark.slow
def test_the_report_carries_the_section_and_both_figures(client, tmp_path):
    for depth in (5, 20):
        for activation, init in (("tanh", "xavier"), ("tanh", "default"), ("relu", "kaiming")):
            log_depth_run(client, "depth", activation, init, depth)
    runs = queries.load_runs("depth")
    study = conclude(Logged(runs, runs.iloc[:0], queries.load_histories(runs), {}))
    result = write_analysis(study, tmp_path / "depth", Source("depth"))
    names = {path.name for path in result.figures}
    assert {"depth_theory_gradient.png", "depth_theory_q.png"} <= names
    assert all(path.stat().st_size > 10_000 for path in result.figures)
    report = result.report.read_text()
    assert "## Signal propagation at initialisation: theory against measurement" in report
    assert "| tanh | default | 20 |" in report
    assert "### Signal propagation at initialisation" in report  # the findings' topic
    assert np.isfinite(analysed("depth").configs["predicted_decay"]).all()
    assert "Smoke test" in report
