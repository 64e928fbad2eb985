"""actopt.analysis.depth_plots: which runs the depth figures take, the files they write and what their axes hold."""

from __future__ import annotations

import numpy as np
import pytest
from made_frames import made_frames
from matplotlib.collections import LineCollection, PathCollection
from scipy import stats

from actopt.analysis import depth_plots, plotting


def depth_study(theory: bool = True):
    return made_frames([{"activation": activation, "init": init, "depth": depth, "seed": seed,
                         "best": 0.85 if depth < 8 else 0.2}
                        for activation, init in (("tanh", "default"), ("relu", "kaiming"))
                        for depth in (3, 8) for seed in (0, 1)], theory=theory)


def test_depth_figures_need_runs_that_set_depth_and_vary_nothing_else(tmp_path):
    with pytest.raises(plotting.Skip, match="no run sets depth"):
        depth_plots.depth_runs(made_frames([{"activation": "relu"}]).table)
    mixed = made_frames([{"activation": "relu", "depth": 3}, {"activation": "relu", "depth": 8, "optimizer": "adam"}])
    with pytest.raises(plotting.Skip, match="optimizer varies as well"):
        depth_plots.depth_runs(mixed.table)
    assert len(depth_plots.depth_runs(depth_study().table)) == 8


def test_theory_layers_are_the_seed_means_of_the_derived_comparison():
    frames = depth_study()
    data = depth_plots.theory_layers(frames)
    assert len(data) == 2 * (3 + 8)  # per activation × init × depth, one row per hidden layer
    expected = frames.theory.layers.merge(frames.table[["run_id", "activation", "depth"]])
    expected = expected[(expected["activation"] == "relu") & (expected["depth"] == 8)].groupby("layer").mean(
        numeric_only=True)
    chosen = data[(data["activation"] == "relu") & (data["depth"] == 8)].set_index("layer")
    np.testing.assert_allclose(chosen["measured_log10"], expected["measured_log10"])
    # Measured exactly as predicted (made_frames logs the prediction): the lines go through the points.
    np.testing.assert_allclose(chosen["measured_log10"], chosen["predicted_log10"])
    with pytest.raises(plotting.Skip, match="did not log probe_grad_norm"):
        depth_plots.theory_layers(depth_study(theory=False))


def test_the_theory_gradient_figure_has_a_panel_per_activation_with_its_lines_and_points(tmp_path):
    frames = depth_study()
    path, title, _ = depth_plots.theory_gradient_plot(frames, tmp_path)
    assert path == tmp_path / "depth_theory_gradient.png" and path.stat().st_size > 5_000
    assert title.startswith("Depth study: gradient norm per layer")
    data = depth_plots.theory_layers(frames)
    figure, axes = depth_plots.theory_panels(data, "measured_log10", "predicted_log10", log_y=False)
    panels = {axis.get_title(): axis for axis in axes.flat if axis.get_visible()}
    assert list(panels) == ["tanh", "relu"]
    relu = panels["relu"]
    assert [len(line.get_xdata()) for line in relu.get_lines()] == [3, 8]  # a predicted line per depth
    points = [collection for collection in relu.collections if isinstance(collection, PathCollection)]
    assert sorted(len(each.get_offsets()) for each in points) == [3, 8]
    assert [text.get_text() for text in relu.get_legend().get_texts()] == ["kaiming, depth 3", "kaiming, depth 8"]


def test_the_theory_figures_bar_each_point_with_the_seeds_t_interval_of_log10(tmp_path):
    frames = depth_study()
    layers = frames.theory.layers.merge(frames.table[["run_id", "seed"]])
    # The two seeds apart by ±0.3 decades of gradient and a factor of 2 in q around the prediction.
    sign = np.where(layers["seed"] == 0, -1.0, 1.0)
    frames.theory.layers["measured_log10"] += 0.3 * sign
    frames.theory.layers["measured_q"] *= 2.0 ** sign
    data = depth_plots.theory_layers(frames)
    half = stats.t.ppf(0.975, 1) * np.std([-0.3, 0.3], ddof=1) / np.sqrt(2)
    np.testing.assert_allclose(data["measured_log10_high"] - data["measured_log10"], half)
    np.testing.assert_allclose(data["measured_log10_low"], data["predicted_log10"] - half)
    q_half = stats.t.ppf(0.975, 1) * np.std(np.log10([0.5, 2.0]), ddof=1) / np.sqrt(2)
    np.testing.assert_allclose(data["measured_q_centre"], data["predicted_q"], rtol=1e-9)  # geometric mean
    np.testing.assert_allclose(np.log10(data["measured_q_high"] / data["measured_q_centre"]), q_half)
    figure, axes = depth_plots.theory_panels(data, "measured_log10", "predicted_log10", log_y=False,
                                             bars=("measured_log10_low", "measured_log10_high"))
    relu = {axis.get_title(): axis for axis in axes.flat}["relu"]
    [bars_3, bars_8] = [collection for collection in relu.collections if isinstance(collection, LineCollection)]
    spans = [segment[1, 1] - segment[0, 1] for segment in bars_8.get_segments()]
    np.testing.assert_allclose(spans, 2 * half)
    assert len(bars_3.get_segments()) == 3 and len(spans) == 8
    path, _, caption = depth_plots.theory_q_plot(frames, tmp_path)
    assert path.is_file() and "geometric mean over seeds" in caption


def test_one_seed_draws_no_bars_and_says_so():
    frames = made_frames([{"activation": "relu", "init": "kaiming", "depth": depth, "seed": 0, "best": 0.8}
                          for depth in (3, 8)], theory=True)
    data = depth_plots.theory_layers(frames)
    assert data["measured_log10_low"].isna().all()
    figure, axes = depth_plots.theory_panels(data, "measured_log10", "predicted_log10", log_y=False,
                                             bars=("measured_log10_low", "measured_log10_high"))
    assert not [each for each in axes.flat[0].collections if isinstance(each, LineCollection)]
    assert depth_plots.interval_words(frames) == "one seed: no interval"


def test_the_depth_accuracy_figure_writes_its_file(tmp_path):
    with plotting.agg_backend():
        path, _, caption = depth_plots.depth_accuracy_plot(depth_study(), tmp_path)
    assert path == tmp_path / "depth_test_accuracy.png" and path.is_file()
    assert "columns: depth" in caption and "the mean over seeds" in caption


def test_the_lecun_figure_needs_both_tanhs(tmp_path):
    with pytest.raises(plotting.Skip, match="needs runs with both tanh and lecun_tanh"):
        depth_plots.lecun_tanh_plot(depth_study(), tmp_path)
