"""Tables, findings, figures and the report, on runs logged with known values and on tiny real runs."""

from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner
from fake_runs import history, log_run
from mlflow.tracking import MlflowClient

from actopt.analysis import conclusions, decisions, findings, plots, tables
from actopt.analysis.analyze import write_analysis
from actopt.analysis.derive import Frames, Logged, derive_frames
from actopt.analysis.report import Source
from actopt.cli import main
from actopt.tracking import queries, records, runlog, store


def analysed(experiment: str = "study") -> tuple:
    runs = queries.load_runs(experiment)
    histories = queries.load_histories(runs)
    table = tables.run_table(runs, histories)
    return table, histories


def derived(experiment: str = "study") -> Frames:
    """The experiment's frames, derived once as the analysis derives them."""
    runs = queries.load_runs(experiment)
    return derive_frames(Logged(runs, runs.iloc[:0], queries.load_histories(runs), {}))


def written(experiment: str, folder):
    """``write_analysis`` on every run of the experiment, with its default questions."""
    runs = queries.load_runs(experiment)
    study = conclusions.conclude(Logged(runs, runs.iloc[:0], queries.load_histories(runs), {}))
    return write_analysis(study, folder, Source(experiment))


def statements(found: list[findings.Finding], topic: str, kind: str = "holds") -> list[str]:
    return [item.statement for item in found if item.topic == topic and item.kind == kind]


@pytest.fixture
def client(tracking_store) -> MlflowClient:
    return MlflowClient(tracking_store)


# --- tables --------------------------------------------------------------------------------------------


def test_run_table_derives_convergence_time_and_gap(client):
    run_id = log_run(client, "study", {"activation": "relu"}, history("relu", epochs=5, best=0.8, reach=3, gap=0.05))
    table, _ = analysed()
    row = table.set_index("run_id").loc[run_id]
    assert row["epochs_to_95"] == 3  # 0.9 × best before epoch 3, 0.97 × best from there
    assert row["time_per_epoch"] == pytest.approx(0.5 + 0.3)  # mean of 0.5 + epoch / 10 over epochs 1..5
    assert row["final_gap"] == pytest.approx(0.05)
    assert row["last_val_accuracy"] == pytest.approx(0.8)


def test_best_learning_rate_counts_a_diverged_run_with_what_it_reached_and_flags_the_edge(client):
    for rate, best in ((0.01, 0.80), (0.1, 0.85), (1.0, 0.9)):
        log_run(client, "study", {"activation": "relu", "optimizer": "sgd", "learning_rate": rate},
                history("relu", best=best), diverged_epoch=2 if rate == 1.0 else None)
    table, _ = analysed()
    best = tables.best_learning_rates(table).iloc[0]
    # The run at 1.0 reached 0.9 before it diverged: it keeps that score, and its failure is counted.
    assert best["best_learning_rate"] == 1.0 and best["edge"] == "largest" and best["diverged"] == 1
    assert best["grid"] == (0.01, 0.1, 1.0)
    assert list(table.loc[table["failed"], "failure"]) == ["diverged"]
    assert list(tables.tuned_runs(table, keep_failed=True)["learning_rate"]) == [1.0]
    assert tables.tuned_runs(table).empty  # the figures leave diverged runs out


# --- findings: present when the rule holds, absent when it does not -------------------------------------


@pytest.mark.parametrize("ratio, holds", [(0.001, True), (0.5, False)])
def test_vanishing_gradient_finding(client, ratio, holds):
    log_run(client, "study", {"activation": "sigmoid"}, history("sigmoid", ratio=ratio))
    log_run(client, "study", {"activation": "relu"}, history("relu", ratio=0.5))
    found = findings.findings(derived())
    found_now = statements(found, "Vanishing gradients")
    if holds:
        assert found_now == ["sigmoid: the first layer's gradient norm was below 0.01 × the output layer's in epoch 1 "
                             "in 1 of 1 runs (median ratio 0.001)."]
    else:
        assert found_now == []
        assert statements(found, "Vanishing gradients", "absent")[0].startswith("No run's first/output-layer")


@pytest.mark.parametrize("fraction, holds", [(0.8, True), (0.3, False)])
def test_dead_and_saturated_unit_findings(client, fraction, holds):
    log_run(client, "study", {"activation": "relu", "optimizer": "sgd", "learning_rate": 0.5},
            history("relu", unit_fraction=fraction))
    log_run(client, "study", {"activation": "tanh", "optimizer": "sgd", "learning_rate": 0.5},
            history("tanh", unit_fraction=fraction))
    found = findings.findings(derived())
    dead, saturated = statements(found, "Dead units"), statements(found, "Saturation")
    if holds:
        assert dead == ["relu: more than 50% of a hidden layer's units were dead after the last epoch in 1 of 1 runs "
                        "(learning rates 0.5)."]
        assert saturated == ["tanh: more than 50% of a hidden layer's outputs were saturated after the last epoch in "
                             "1 of 1 runs (learning rates 0.5)."]
        numbers = next(item.numbers for item in found if item.topic == "Dead units")
        assert numbers == "relu-sgd-lr0.5-seed0: layer_01 0.80"
    else:
        assert dead == [] and saturated == []
        assert len(statements(found, "Dead units", "absent")) == 1


@pytest.mark.parametrize("diverges, holds", [(True, True), (False, False)])
def test_divergence_finding(client, diverges, holds):
    for rate in (0.01, 0.1, 1.0):
        for activation in ("relu", "tanh"):
            log_run(client, "study", {"activation": activation, "optimizer": "sgd", "learning_rate": rate},
                    history(activation), diverged_epoch=2 if diverges and rate == 1.0 else None)
    found = findings.findings(derived())
    if holds:
        finding = next(item for item in found if item.topic == "Divergence")
        assert finding.statement == ("sgd diverged in every run at learning rate ≥ 1 (2 runs: tanh, relu) and in none "
                                     "below (4 runs).")
        assert finding.numbers == "lr 0.01: 0 of 2; lr 0.1: 0 of 2; lr 1: 2 of 2"
        assert len(finding.runs) == 2 and all("lr1-seed0 (" in name for name in finding.runs)
    else:
        assert statements(found, "Divergence") == []
        assert statements(found, "Divergence", "absent") == ["No run diverged (largest learning rate tried: sgd 1)."]


@pytest.mark.parametrize("best_rate, holds", [(0.01, True), (0.001, False)])
def test_learning_rate_edge_finding(client, best_rate, holds):
    for rate in (0.0001, 0.001, 0.01):
        log_run(client, "study", {"activation": "relu", "optimizer": "adam", "learning_rate": rate},
                history("relu", best=0.9 if rate == best_rate else 0.8))
    found = statements(findings.findings(derived()), "Learning-rate grid")
    if holds:
        assert found == ["relu: the best learning rate 0.01 is the largest tried (0.0001, 0.001, 0.01); the optimum "
                         "may lie beyond the grid."]
    else:
        assert found == []


def verdicts(experiment: str = "study", measure: str | None = None) -> list[str]:
    """The report's decisions on the experiment's runs (its default questions), as sentences."""
    judged = conclusions.judge(derived(experiment))
    return [decisions.verdict(item, judged.method) for item in judged.decisions
            if measure is None or item.contrast.measure == measure]


@pytest.mark.parametrize("sigmoid_reach, decided", [(4, True), (1, False)])
def test_convergence_speed_is_the_area_under_the_validation_curve(client, sigmoid_reach, decided):
    log_run(client, "study", {"activation": "relu"}, history("relu", epochs=5, reach=1))
    log_run(client, "study", {"activation": "sigmoid"}, history("sigmoid", epochs=5, reach=sigmoid_reach))
    [found] = verdicts(measure="val_area")
    if decided:
        assert found.startswith("relu beats sigmoid on mean validation accuracy over the epochs by ")
        assert found.endswith("(1 seed: a lead of more than 0.5 points, not a test)")
    else:
        assert found.startswith("cannot decide between sigmoid and relu: they differ by ")


def test_a_run_at_chance_is_named_and_counted_as_failed(client):
    log_run(client, "study", {"activation": "relu"}, history("relu", epochs=5, reach=3))
    log_run(client, "study", {"activation": "sigmoid"}, history("sigmoid", epochs=5, best=0.112, reach=1))
    found = findings.findings(derived())
    assert statements(found, "Runs that did not learn") == ["sigmoid: 1 of 1 runs did not learn (chance 0.1000)."]
    assert statements(found, "Failed seeds") == ["sigmoid · lr 0.001: 1 of 1 seeds failed (1 did not learn)."]


def test_overfitting_and_dropout_findings(client):
    log_run(client, "study", {"activation": "relu", "dropout": 0.0}, history("relu", gap=0.08))
    log_run(client, "study", {"activation": "relu", "dropout": 0.5}, history("relu", gap=0.01))
    found = findings.findings(derived())
    assert statements(found, "Overfitting") == [
        "relu · dropout 0: train accuracy exceeded validation accuracy by 8.0 points after the last epoch."]
    assert "dropout 0.5 has a narrower train/validation gap than dropout 0 by 7.0 points (1 seed: a lead of more " \
        "than 0.5 points, not a test)" in verdicts(measure="gap")


def test_dropout_effect_is_undecided_without_dropout_runs_and_gap_absent_when_small(client):
    log_run(client, "study", {"activation": "relu"}, history("relu", gap=0.08))
    assert verdicts(measure="gap") == []  # dropout does not vary: no question asked
    log_run(client, "other", {"activation": "relu"}, history("relu", gap=0.005))
    found = findings.findings(derived("other"))
    assert statements(found, "Overfitting") == []
    assert statements(found, "Overfitting", "absent")[0].startswith("No configuration's gap exceeded 2.0 points")


@pytest.mark.parametrize("sgd_test, verdict", [(0.85, "holds"), (0.878, "undecided")])
def test_optimizer_comparison_with_one_seed_uses_the_fixed_margin(client, sgd_test, verdict):
    log_run(client, "study", {"activation": "relu", "optimizer": "adam"}, history("relu", best=0.88),
            test_accuracy=0.88)
    log_run(client, "study", {"activation": "relu", "optimizer": "sgd", "learning_rate": 0.1},
            history("relu", best=0.86), test_accuracy=sgd_test)
    found = verdicts(measure="test_accuracy")
    if verdict == "holds":
        assert found == ["adam beats sgd on test accuracy by 3.0 points (1 seed: a lead of more than 0.5 points, not a "
                         "test)"]
    else:
        assert found == ["cannot decide between sgd and adam: they differ by -0.2 points, not more than 0.5 points "
                         "(1 seed, no interval)"]


def test_repeated_seeds_are_compared_seed_by_seed(client):
    # adam leads sgd by about 1 point on every seed although the seeds themselves differ by 4 points:
    # pairing removes the seeds' shared luck, so the lead is decided.
    for seed, test in ((0, 0.86), (1, 0.90), (2, 0.88)):
        log_run(client, "study", {"activation": "relu", "optimizer": "adam", "seed": seed}, history("relu"),
                test_accuracy=test)
        log_run(client, "study", {"activation": "relu", "optimizer": "sgd", "learning_rate": 0.1, "seed": seed},
                history("relu"), test_accuracy=test - 0.01 + 0.001 * seed)
    # By hand: differences 1.0, 0.9, 0.8 points; mean 0.9, s = 0.1, t(0.975, 2) = 4.303,
    # half-width 4.303 × 0.1 / √3 = 0.248: [0.652, 1.148]; t = 0.9 / (0.1 / √3) = 15.6, p = 0.0041 (one comparison).
    assert verdicts(measure="test_accuracy") == [
        "adam beats sgd on test accuracy by 0.9 points (95% CI [0.7, 1.1], 3 seeds; Holm-adjusted p 0.0041)"]


# --- bad input -----------------------------------------------------------------------------------------


def one_line_error(arguments: list[str]) -> str:
    result = CliRunner().invoke(main, ["analyze", *arguments, "--output-dir", "out"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


def test_unknown_experiment_is_one_line(client):
    client.create_experiment("fashion")
    assert "unknown experiment 'nope'" in one_line_error(["--experiment", "nope"])


def test_experiment_without_finished_runs_is_one_line(client):
    client.create_experiment("empty")
    assert "experiment 'empty' has no finished training runs (no runs at all)" in one_line_error(["--experiment",
                                                                                                  "empty"])
    log_run(client, "broken", {"activation": "relu"}, history("relu"), status="FAILED")
    message = one_line_error(["--experiment", "broken"])
    assert "has no finished training runs (1 run: 1 FAILED)" in message


def test_runs_of_two_studies_are_refused_with_a_filter_to_choose(client):
    log_run(client, "mixed", {"activation": "relu", "study": "fashion-activations"}, history("relu"))
    log_run(client, "mixed", {"activation": "relu", "study": "mnist-depth"}, history("relu"))
    message = one_line_error(["--experiment", "mixed"])
    assert "mixes runs of several study values (fashion-activations: 1 run, mnist-depth: 1 run)" in message
    assert "--filter \"tags.study = 'fashion-activations'\"" in message


def test_unreachable_store_is_one_line_within_seconds(monkeypatch):
    for name in [*store.HTTP_LIMITS["read"], store.APPLIED_LIMITS_VARIABLE]:
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    started = time.perf_counter()
    assert "cannot read the tracking store http://127.0.0.1:1" in one_line_error(["--experiment", "x"])
    assert time.perf_counter() - started < 15


# --- the whole analysis: report, figures, analysis run ---------------------------------------------------


def report_rows(report: str) -> dict[str, dict[str, str]]:
    """The per-run table's cells by column name, by run id prefix."""
    section = report.split("## Results per run", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[re.search(r"`([0-9a-f]{8})`", cells[0]).group(1)] = dict(zip(header, cells))
    return rows


def log_small_study(config, client) -> list[str]:
    """Two tiny real runs and a diverged run logged by hand without history.csv, in experiment "study"."""
    config = config.replace(experiment_name="study", epochs=2)
    real = [runlog.run_training(config)[0],
            runlog.run_training(config.replace(activation="tanh", optimizer="sgd", learning_rate=0.1))[0]]
    log_run(client, "study", {"activation": "relu", "optimizer": "sgd", "learning_rate": 10.0, "epochs": 2,
                              "batch_size": 32, "log_model": False, "download": False, "device": "cpu"},
            history("relu", epochs=2), diverged_epoch=1, with_history_csv=False)
    return real


def analysis_runs(client: MlflowClient, experiment: str = "study") -> list:
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              f"tags.`{records.KIND_TAG}` = 'analysis'")


def test_the_report_table_holds_the_store_values(small_config, client, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "FIGURES", {})  # figures are checked by the slow test below
    real = log_small_study(small_config, client)
    result = CliRunner().invoke(main, ["analyze", "--experiment", "study", "--output-dir", "out"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "out" / "study" / "report.md").read_text()
    rows = report_rows(report)
    runs = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    runs = [run for run in runs if records.KIND_TAG not in run.data.tags]
    assert len(rows) == len(runs) == 3 and set(real) <= {run.info.run_id for run in runs}
    for run in runs:
        cell = rows[run.info.run_id[:8]]
        metrics = run.data.metrics
        assert cell["learning_rate"] == f"{float(run.data.params['learning_rate']):g}"
        if run.data.tags["diverged"] == "true":
            assert cell["failed"] == f"**diverged (epoch {run.data.tags['diverged_epoch']})**"
            continue
        assert cell["failed"] == "no"
        assert cell["best val acc"] == f"{metrics['best_val_accuracy']:.4f}"
        assert cell["test acc"] == f"{metrics['test_accuracy']:.4f}"
        assert cell["best epoch"] == run.data.tags["best_epoch"]
        times = [point.value for point in client.get_metric_history(run.info.run_id, "epoch_time")]
        assert cell["s / epoch"] == f"{sum(times) / len(times):.2f}"
        accuracies = [point.value for point in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert cell["epochs to 95%"] == str(next(epoch for epoch, value in enumerate(accuracies, start=1)
                                                 if value >= 0.95 * max(accuracies)))
    assert "## Findings" in report and "sgd diverged in 1 of 2 runs at learning rate ≥ 10" not in report
    assert report.index("## Answers") < report.index("## Decisions") < report.index("## Results per run")
    assert "| sigmoid | σ(x)·(1 − σ(x)) | f′ ∈ [0.0025, 0.2500], peak at x = 0.00 |" in report
    assert "| relu | 1 if x > 0, else 0 | f′ ∈ {0, 1} |" in report
    assert "f′ ∈ [0.0015, 1.1439]" in report
    [logged] = analysis_runs(client)
    assert logged.info.run_name == "analysis" and f"analysis run {logged.info.run_id}" in result.output
    assert [item.path for item in client.list_artifacts(logged.info.run_id)] == ["report.md"]
    # A second analysis leaves the first analysis run out of its tables.
    again = CliRunner().invoke(main, ["analyze", "--experiment", "study", "--output-dir", "out", "--log=false"])
    assert again.exit_code == 0 and ": 3 run(s)," in again.output and "analysis run" not in again.output
    assert len(analysis_runs(client)) == 1


@pytest.mark.slow
def test_every_figure_is_written_listed_and_logged(small_config, client, tmp_path):
    log_small_study(small_config, client)
    result = CliRunner().invoke(main, ["analyze", "--experiment", "study", "--output-dir", "out"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "study"
    report = (folder / "report.md").read_text()
    figures = sorted(path.name for path in folder.glob("*.png"))
    assert set(figures) == {"train_loss_curves.png", "val_accuracy_curves.png", "best_val_accuracy_heatmap.png",
                            "optimizers_vs_learning_rate.png", "gradient_norms.png", "gradient_histograms.png",
                            "unit_fractions.png", plots.GALLERY_FILE}
    assert all((folder / name).stat().st_size > 10_000 for name in figures)
    for name in figures:
        assert f"]({name})" in report
    assert "- depth study: test accuracy: no run sets depth" in report
    assert ("- optimizers at their best learning rates: no configuration was run at more than one learning rate"
            in report)
    [logged] = analysis_runs(client)
    assert {item.path for item in client.list_artifacts(logged.info.run_id)} == {"report.md", *figures}


@pytest.mark.slow
def test_depth_and_overfitting_studies_get_their_figures(client, tmp_path):
    for depth in (5, 20):
        pairs = (("tanh", "xavier"), ("lecun_tanh", "lecun"), ("tanh", "default"), ("lecun_tanh", "default"))
        for activation, init in pairs:
            log_run(client, "depth", {"activation": activation, "depth": depth, "init": init, "optimizer": "sgd",
                                      "learning_rate": 0.01, "test_every_epoch": True},
                    history(activation, ratio=0.001 if depth == 20 else 0.5, test_every_epoch=True))
    result = written("depth", tmp_path / "depth")
    names = {path.name for path in result.figures}
    assert {"depth_test_accuracy.png", "depth_max_gradient.png", "lecun_tanh_vs_tanh.png"} <= names
    assert "training loss curves" in result.skipped and "depth, init vary as well" in result.skipped["training loss "
                                                                                                     "curves"]
    report = result.report.read_text()
    assert "tanh · depth 20 · init xavier: the first layer's gradient norm was below 0.01" in report

    for activation in ("relu", "sigmoid"):
        for dropout in (0.0, 0.2):
            log_run(client, "overfit", {"activation": activation, "dropout": dropout},
                    history(activation, gap=0.05 - dropout / 5))
    result = written("overfit", tmp_path / "overfit")
    assert "overfitting.png" in {path.name for path in result.figures}
    assert all(path.stat().st_size > 10_000 for path in result.figures)
    text = result.report.read_text()
    assert text.startswith("# Analysis of experiment `overfit`")
    assert "> **Smoke test.**" in text and text.index("## Answers") < text.index("## Decisions") < text.index(
        "## Configurations")
    assert "| relu | dropout 0 vs dropout 0.2 | train/validation gap | 4.0 points (1 seed)" not in text
    assert "| relu | dropout 0 vs dropout 0.2 | train/validation gap | 4.0 points |" in text


@pytest.mark.slow
def test_mlflow_run_analyze_entry_point(client, tmp_path):
    """`mlflow run . -e analyze`: the report and figures become the artifacts of the run mlflow run made."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    log_run(client, "study", {"activation": "relu"}, history("relu"))
    log_run(client, "study", {"activation": "tanh", "optimizer": "sgd", "learning_rate": 0.1}, history("tanh"))
    project = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "mlflow", "run", str(project), "-e", "analyze", "--env-manager", "local",
               "--experiment-name", "study", "-P", "experiment=study", "-P", f"output_dir={tmp_path / 'out'}",
               "-P", "filter=params.optimizer = 'adam'"]
    environment = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    [run] = analysis_runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "analysis"
    logged = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert "report.md" in logged and plots.GALLERY_FILE in logged
    report = (tmp_path / "out" / "study" / "report.md").read_text()
    assert "filter `params.optimizer = 'adam'`" in report
    assert "| relu-adam-lr0.001" in report and "tanh-sgd" not in report


def test_mlproject_analyze_parameters_are_the_cli_options():
    from pathlib import Path

    import yaml

    project = yaml.safe_load((Path(__file__).resolve().parents[1] / "MLproject").read_text())
    entry = project["entry_points"]["analyze"]
    options = {parameter.name: parameter for parameter in main.commands["analyze"].params if parameter.name != "help"}
    # --log stays on under mlflow run: the analysis goes to the run mlflow run made.
    names = {"filter_string": "filter"}
    assert {names.get(name, name) for name in options} - {"log"} == set(entry["parameters"])
    for name, parameter in options.items():
        if name != "log":
            declared = entry["parameters"][names.get(name, name)]
            assert f"{parameter.opts[0]} {{{names.get(name, name)}}}" in entry["command"]
            assert declared.get("default") == (None if parameter.required else parameter.default)
