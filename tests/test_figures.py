"""What the seed figures hold: one thin line per seed, failed seeds marked, and the mean's band equal to a Student-t
interval computed here with scipy alone (on log10 for gradient norms); the same for the gradient-norm and depth
figures; and a figure with one x value draws without a warning."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from fake_runs import history, log_run
from made_frames import made_frames
from scipy import special, stats

from actopt.analysis import depth_plots, plots, plotting, seed_bands
from actopt.analysis.derive import Frames, Logged, derive_frames
from actopt.core.metric_names import EPOCH_TEST_ACCURACY, GRAD_NORM, PROBE_GRAD_MAX_ABS
from actopt.tracking import queries


def t_oracle(values: list[float], scale: str = "linear") -> tuple[float, float, float]:
    """scipy's t interval of the mean, on the logits for proportions and on log10 for the log scale."""
    array = np.asarray(values, dtype=float)
    forward, back = {"linear": (lambda v: v, lambda v: v), "log": (np.log10, lambda v: 10**v),
                     "proportion": (special.logit, special.expit)}[scale]
    moved = forward(array)
    low, high = stats.t.interval(0.95, len(moved) - 1, loc=moved.mean(), scale=stats.sem(moved))
    centre = array.mean() if scale != "log" else back(moved.mean())
    return float(centre), float(back(low)), float(back(high))


@pytest.mark.parametrize("scale", seed_bands.SCALES)
def test_the_band_is_scipys_t_interval(scale):
    values = pd.DataFrame({"run_id": list("abcabc"), "step": [1, 1, 1, 2, 2, 2],
                           "value": [0.80, 0.86, 0.30, 0.84, 0.88, 0.41]})
    band = seed_bands.band(values, "step", "value", scale).set_index("step")
    for step in (1, 2):
        mean, low, high = t_oracle(values.loc[values["step"] == step, "value"].tolist(), scale)
        assert band.loc[step, ["mean", "low", "high"]].tolist() == pytest.approx([mean, low, high], rel=1e-9)
        assert band.loc[step, "count"] == 3


def test_one_value_has_a_mean_and_no_band():
    band = seed_bands.band(pd.DataFrame({"run_id": ["a"], "step": [1], "value": [0.5]}), "step", "value")
    assert band["mean"].tolist() == [0.5] and math.isnan(band["low"].iloc[0]) and band["count"].tolist() == [1]


@pytest.fixture
def captured(monkeypatch) -> list:
    """The figure objects the figure functions save (closing a figure keeps its artists)."""
    figures: list = []

    def keep(figure, folder, name):
        figures.append(figure)
        return original(figure, folder, name)

    original = plotting.save
    monkeypatch.setattr(plotting, "save", keep)
    monkeypatch.setattr(plots, "save", keep)
    return figures


def framed(runs: pd.DataFrame, histories: pd.DataFrame) -> Frames:
    """The frames the figures read, derived as the analysis derives them."""
    return derive_frames(Logged(runs, runs.iloc[:0], histories, {}))


def three_seeds(collapsed_best: float = 0.3, **config) -> Frames:
    """Three seeds of relu-adam, the third collapsed far below the others (a bimodal outcome), logged and read back."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for seed, best in ((1, 0.85), (2, 0.87), (3, collapsed_best)):
        log_run(client, "seeds", {"activation": "relu", "seed": seed, **config}, history("relu", best=best))
    runs = queries.load_runs("seeds")
    return framed(runs, queries.load_histories(runs))


def parts(axis, gid: str) -> list:
    return [artist for artist in [*axis.lines, *axis.collections] if artist.get_gid() == gid]


def test_validation_curves_draw_each_seed_the_failed_one_marked_and_the_t_band(captured, tmp_path):
    frames = three_seeds()
    table, histories = frames.table, frames.histories
    assert sorted(table["failure"]) == ["", "", "collapsed"]
    path, title, caption = plots.FIGURES["validation accuracy curves"](frames, tmp_path)
    assert path.exists() and "95% t interval" in title and "Student-t" in caption
    [axis] = [axis for axis in captured[0].axes if axis.lines]
    seeds = parts(axis, seed_bands.SEED_GID)
    assert len(seeds) == 3  # one line per seed
    assert sorted(line.get_marker() for line in seeds) == ["None", "None", "v"]  # the collapsed seed is marked
    [mean] = parts(axis, seed_bands.MEAN_GID)
    [band] = parts(axis, seed_bands.BAND_GID)
    values = {(run_id, step): value for run_id, step, value in
              histories.loc[histories["key"] == "val_accuracy", ["run_id", "step", "value"]].itertuples(index=False)}
    vertices = band.get_paths()[0].vertices
    for step, drawn in zip(mean.get_xdata(), mean.get_ydata()):
        seeds_at = [values[(run_id, step)] for run_id in table["run_id"]]
        centre, low, high = t_oracle(seeds_at, "proportion")
        assert drawn == pytest.approx(centre)
        at_step = vertices[np.isclose(vertices[:, 0], step), 1]
        assert at_step.min() == pytest.approx(low) and at_step.max() == pytest.approx(high)
    legend = [text.get_text() for text in captured[0].legends[0].get_texts()]
    assert seed_bands.FAILED_LABEL in legend and "mean, 95% t interval" in legend


def test_unit_fractions_draw_one_line_per_seed_and_layer(captured, tmp_path):
    plots.unit_fraction_plot(three_seeds(), tmp_path)
    [axis] = [axis for axis in captured[0].axes if axis.lines]
    assert len(parts(axis, seed_bands.SEED_GID)) == 3 * 2  # three seeds × two hidden layers
    assert len(parts(axis, seed_bands.MEAN_GID)) == 2 and len(parts(axis, seed_bands.BAND_GID)) == 2


def test_unit_fractions_over_learning_rates_name_the_layer_each_line_style_is(captured, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for rate in (0.01, 0.1):
        log_run(client, "rates", {"activation": "relu", "seed": 1, "learning_rate": rate}, history("relu"))
    runs = queries.load_runs("rates")
    plots.unit_fraction_plot(framed(runs, queries.load_histories(runs)), tmp_path)
    legend = [text.get_text() for text in captured[0].legends[0].get_texts()]
    # Colour is the learning rate there, so the legend must say which layer is solid and which dashed.
    assert {"first hidden layer", "last hidden layer"} <= set(legend)


def test_overfitting_keeps_the_failed_seed_and_draws_every_seed(captured, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for dropout in (0.0, 0.5):
        for seed, best in ((1, 0.85), (2, 0.87), (3, 0.3 if dropout == 0.5 else 0.86)):
            log_run(client, "overfit", {"activation": "relu", "dropout": dropout, "seed": seed},
                    history("relu", best=best, gap=0.05))
    runs = queries.load_runs("overfit")
    histories = queries.load_histories(runs)
    plots.overfitting_plot(framed(runs, histories), tmp_path)
    accuracy, loss, gap = captured[0].axes[:3]
    for axis, splits in ((accuracy, 2), (loss, 2), (gap, 1)):
        seeds = parts(axis, seed_bands.SEED_GID)
        assert len(seeds) == 2 * 3 * splits  # two dropout rates × three seeds × (train, validation)
        assert sum(line.get_marker() == "v" for line in seeds) == splits  # the collapsed seed, not left out
    [gap_mean, _] = parts(gap, seed_bands.MEAN_GID)
    assert gap_mean.get_ydata() == pytest.approx([0.05] * len(gap_mean.get_ydata()))


def test_a_learning_rate_figure_with_one_rate_in_a_panel_draws_without_a_warning(captured, tmp_path):
    """The layout of test_analysis's small study, where matplotlib warned of identical low and high x limits."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    log_run(client, "rates", {"activation": "relu", "optimizer": "sgd", "learning_rate": 0.1}, history("relu"))
    log_run(client, "rates", {"activation": "tanh", "optimizer": "sgd", "learning_rate": 0.1}, history("tanh"))
    log_run(client, "rates", {"activation": "relu", "optimizer": "adam", "learning_rate": 0.001}, history("relu"))
    log_run(client, "rates", {"activation": "relu", "optimizer": "sgd", "learning_rate": 10.0}, history("relu"),
            diverged_epoch=1)
    runs = queries.load_runs("rates")
    histories = queries.load_histories(runs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.optimizer_rate_plot(framed(runs, histories), tmp_path)
        first_epoch = histories[histories["step"] <= 1]  # one x value: epoch 1
        plots.FIGURES["validation accuracy curves"](framed(runs, first_epoch), tmp_path)
    panels = {axis.get_title(): axis for axis in captured[0].axes[:2]}
    relu_loss, tanh_loss = panels["relu"], panels["tanh"]
    assert relu_loss.get_xlim()[0] < 0.001 and relu_loss.get_xlim()[1] > 10
    # tanh: one sgd run, its seed line and its mean; relu: adam's and sgd's non-diverged run.
    assert len(parts(tanh_loss, seed_bands.SEED_GID)) == 1 and len(parts(relu_loss, seed_bands.SEED_GID)) == 2
    curves = [axis for axis in captured[1].axes if axis.lines]
    assert curves and all(axis.get_xlim()[0] < 1 < axis.get_xlim()[1] for axis in curves)


# Per seed: how far its gradients sit from the others', decades apart, as trained nets' norms are (seed 2 collapsed).
NORM_FACTORS = {0: 1.0, 1: 4.0, 2: 0.01}


def seeds_apart(configs: list[dict], prefix: str, epochs: int = 3) -> Frames:
    """``made_frames``'s runs (seeds 0, 1 and 2 in ``configs``) with each ``prefix/layer_NN`` value scaled by its
    seed's NORM_FACTORS, so that the seeds' values spread and their interval has a width to check."""
    made = made_frames(configs, epochs=epochs)
    histories = made.histories.merge(made.runs[["run_id", "seed"]], on="run_id")
    scaled = histories["key"].str.startswith(prefix + "/")
    histories.loc[scaled, "value"] *= histories.loc[scaled, "seed"].map(NORM_FACTORS)
    return framed(made.runs, histories.drop(columns="seed"))


def layer_oracles(frames: Frames, prefix: str, runs: list[str], steps: list[int]) -> dict[int, list[tuple]]:
    """Per layer, scipy's t interval on log10 of the ``runs``' values at each of ``steps``."""
    values = frames.histories[frames.histories["run_id"].isin(runs) & frames.histories["key"].str.startswith(prefix)]
    found = {}
    for key, part in values.groupby("key"):
        by_step = part.set_index(["step", "run_id"])["value"]
        found[int(key.rsplit("_", 1)[1])] = [t_oracle(by_step.loc[step].tolist(), "log") for step in steps]
    return found


def check_bands(axis, oracles: dict[int, list[tuple]]) -> None:
    """Each mean line and band of ``axis`` is one layer's oracle: the geometric mean and the t interval on log10."""
    means, bands = parts(axis, seed_bands.MEAN_GID), parts(axis, seed_bands.BAND_GID)
    assert len(means) == len(bands) == len(oracles)
    drawn = []
    for mean, band in zip(means, bands):
        vertices = band.get_paths()[0].vertices
        for step, centre in zip(mean.get_xdata(), mean.get_ydata()):
            at_step = vertices[np.isclose(vertices[:, 0], step), 1]
            drawn.append((float(step), centre, at_step.min(), at_step.max()))
    expected = [(float(step), *oracle) for layer in oracles for step, oracle in
                zip(sorted({row[0] for row in drawn}), oracles[layer])]
    np.testing.assert_allclose(sorted(drawn), sorted(expected), rtol=1e-9)


def test_gradient_norms_draw_each_seed_and_the_t_band_on_log10(captured, tmp_path):
    frames = seeds_apart([{"activation": "relu", "seed": seed, "best": best}
                          for seed, best in ((0, 0.85), (1, 0.87), (2, 0.3))], GRAD_NORM)
    assert sorted(frames.table["failure"]) == ["", "", "collapsed"]
    path, title, caption = plots.FIGURES["gradient norms per layer"](frames, tmp_path)
    assert path.name == "gradient_norms.png" and "t interval of log10" in title and "geometric mean" in title
    assert "Student-t" in caption
    [axis] = [axis for axis in captured[0].axes if axis.lines]
    assert axis.get_yscale() == "log"
    seeds = parts(axis, seed_bands.SEED_GID)
    assert len(seeds) == 3 * 3  # three seeds × three layers
    assert sum(line.get_marker() == "v" for line in seeds) == 3  # the collapsed seed, on every layer
    run_ids = frames.table["run_id"].tolist()
    norms = frames.histories[frames.histories["key"].str.startswith(GRAD_NORM + "/")]
    # Each seed's own values on each layer, the collapsed seed's two decades below the others among them.
    own = [tuple(part.sort_values("step")["value"]) for _, part in norms.groupby(["run_id", "key"])]
    np.testing.assert_allclose(sorted(tuple(line.get_ydata()) for line in seeds), sorted(own))
    # The t interval of 3 seeds is t(0.975, 2)/√3 ≈ 2.5 sd of log10 wide each side: ± 1 sd would fail here.
    check_bands(axis, layer_oracles(frames, GRAD_NORM, run_ids, [1, 2, 3]))
    legend = [text.get_text() for text in captured[0].legends[0].get_texts()]
    assert "geometric mean, 95% t interval of log10" in legend and seed_bands.FAILED_LABEL in legend


def depth_seeds(best_of_seed_2: float = 0.2) -> list[dict]:
    """tanh at depths 3 and 8, three seeds each; at depth 8 seed 2 collapses while the others learn."""
    return [{"activation": "tanh", "depth": depth, "seed": seed,
             "best": best_of_seed_2 if (depth, seed) == (8, 2) else 0.85 + 0.01 * seed}
            for depth in (3, 8) for seed in (0, 1, 2)]


def test_the_depth_accuracy_figure_shows_the_split_seeds_and_the_t_band(captured, tmp_path):
    frames = made_frames(depth_seeds())
    path, title, caption = depth_plots.depth_accuracy_plot(frames, tmp_path)
    assert path.name == "depth_test_accuracy.png" and "95% t interval" in title and "Student-t" in caption
    panels = {axis.get_title(): axis for axis in captured[0].axes}
    deep = panels["depth 8"]
    seeds = parts(deep, seed_bands.SEED_GID)
    assert len(seeds) == 3 and sorted(line.get_marker() for line in seeds) == ["None", "None", "v"]
    tested = frames.histories[frames.histories["key"] == EPOCH_TEST_ACCURACY]
    runs = frames.table.loc[frames.table["depth"] == 8, "run_id"].tolist()
    np.testing.assert_allclose(sorted(tuple(line.get_ydata()) for line in seeds), sorted(
        tuple(tested[tested["run_id"] == run_id].sort_values("step")["value"]) for run_id in runs))
    [mean], [band] = parts(deep, seed_bands.MEAN_GID), parts(deep, seed_bands.BAND_GID)
    vertices = band.get_paths()[0].vertices
    for step, centre in zip(mean.get_xdata(), mean.get_ydata()):
        at_step = tested[(tested["step"] == step) & tested["run_id"].isin(runs)]["value"].tolist()
        expected = t_oracle(at_step, "proportion")
        on_band = vertices[np.isclose(vertices[:, 0], step), 1]
        assert (centre, on_band.min(), on_band.max()) == pytest.approx(expected)


def test_the_depth_gradient_figure_draws_each_seed_at_initialisation_and_trained(captured, tmp_path):
    frames = seeds_apart(depth_seeds(), PROBE_GRAD_MAX_ABS)
    _, title, _ = depth_plots.depth_gradient_plot(frames, tmp_path)
    assert "t interval of log10" in title
    panels = {axis.get_title(): axis for axis in captured[0].axes}
    deep = panels["depth 8"]
    seeds = parts(deep, seed_bands.SEED_GID)
    assert len(seeds) == 3 * 2  # three seeds × (at initialisation, trained)
    assert sorted(line.get_linestyle() for line in seeds) == ["-"] * 3 + ["--"] * 3
    assert sum(line.get_marker() == "v" for line in seeds) == 2  # the collapsed seed, both times
    runs = frames.table.loc[frames.table["depth"] == 8, "run_id"].tolist()
    values = frames.histories[frames.histories["key"].str.startswith(PROBE_GRAD_MAX_ABS) &
                              frames.histories["run_id"].isin(runs)]
    means, bands = parts(deep, seed_bands.MEAN_GID), parts(deep, seed_bands.BAND_GID)
    assert len(means) == len(bands) == 2
    for mean, band in zip(means, bands):
        step = 0 if mean.get_linestyle() == "-" else 3
        vertices = band.get_paths()[0].vertices
        for layer, centre in zip(mean.get_xdata(), mean.get_ydata()):
            key = f"{PROBE_GRAD_MAX_ABS}/layer_{int(layer):02d}"
            expected = t_oracle(values[(values["key"] == key) & (values["step"] == step)]["value"].tolist(), "log")
            on_band = vertices[np.isclose(vertices[:, 0], layer), 1]
            assert (centre, on_band.min(), on_band.max()) == pytest.approx(expected, rel=1e-9)
    legend = [text.get_text() for text in captured[0].legends[0].get_texts()]
    assert {"at initialisation", "trained (last epoch)"} <= set(legend)


def test_the_lecun_figure_draws_each_seed_of_both_tanhs(captured, tmp_path):
    configs = [{"activation": activation, "seed": seed, "best": 0.3 if (activation, seed) == ("tanh", 2) else 0.85}
               for activation in ("tanh", "lecun_tanh") for seed in (0, 1, 2)]
    _, title, _ = depth_plots.lecun_tanh_plot(made_frames(configs), tmp_path)
    assert "95% t interval" in title
    [axis] = [axis for axis in captured[0].axes if axis.lines]
    seeds = parts(axis, seed_bands.SEED_GID)
    assert len(seeds) == 6 and sum(line.get_marker() == "v" for line in seeds) == 1
    assert len(parts(axis, seed_bands.MEAN_GID)) == len(parts(axis, seed_bands.BAND_GID)) == 2
