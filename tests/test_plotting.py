"""actopt.analysis.plotting: saving, log ticks, group labels, the learning-curve and per-layer
figures (files written, what their axes hold), and the backend chosen only while figures are drawn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from made_frames import made_frames
from matplotlib.figure import Figure

from actopt.analysis import plotting, seed_bands
from actopt.core.metric_names import GRAD_NORM, PROBE_GRAD_NORM, VAL_ACCURACY

ROOT = Path(__file__).resolve().parents[1]
DRAWING_MODULES = ("actopt.analysis.plots", "actopt.analysis.depth_plots", "actopt.analysis.plotting",
                   "actopt.core.figures")


def backend_after_import(modules: tuple[str, ...], extra_path: str = "") -> str:
    """The backend a fresh interpreter with MPLBACKEND=svg reports after importing ``modules``."""
    code = "import matplotlib\n" + "".join(f"import {name}\n" for name in modules) + "print(matplotlib.get_backend())"
    environment = {**os.environ, "MPLBACKEND": "svg",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), extra_path]))}
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_importing_the_drawing_modules_leaves_the_backend_alone(tmp_path):
    assert backend_after_import(DRAWING_MODULES) == "svg"
    # The probe can fail: a module that chooses a backend at import is seen.
    (tmp_path / "chooses.py").write_text('import matplotlib\nmatplotlib.use("Agg")\n')
    assert backend_after_import(("chooses",), str(tmp_path)).lower() == "agg"


def test_the_backend_is_agg_while_drawing_and_given_back_after():
    before = matplotlib.rcParams._get("backend")
    with plotting.agg_backend():
        assert matplotlib.get_backend() == "agg"
    assert matplotlib.rcParams._get("backend") is before
    matplotlib.use("svg")
    try:
        with plotting.agg_backend():
            assert matplotlib.get_backend() == "agg"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.rcParams._set("backend", before)


def test_save_writes_the_file_with_whole_epochs_on_the_axis(tmp_path):
    figure = Figure()
    axis = figure.subplots()
    axis.plot([1, 2, 3], [0.5, 0.7, 0.8])
    axis.set_xlabel("epoch")
    path = plotting.save(figure, tmp_path, "curve.png")
    assert path == tmp_path / "curve.png" and path.read_bytes().startswith(b"\x89PNG")
    assert all(float(tick).is_integer() for tick in axis.get_xticks())


def test_plain_log_ticks_name_one_two_and_five_only():
    axis = Figure().subplots()
    plotting.plain_log_ticks(axis)
    formatter = axis.yaxis.get_major_formatter()
    assert [formatter(value, 0) for value in (0.2, 0.3, 1.0, 5.0)] == ["0.2", "", "1", "5"]


def test_groups_are_named_by_what_varies_and_ordered_by_the_registry():
    table = made_frames([{"activation": "relu", "optimizer": "adam"}, {"activation": "tanh"}]).table
    names = plotting.group_names(table)
    assert set(names) == {"relu · adam", "tanh · sgd"}
    assert plotting.ordered_groups(table, names) == ["tanh · sgd", "relu · adam"]
    assert list(plotting.group_names(table, exclude=("optimizer",))) == list(table["activation"])
    assert plotting.seed_caption(table, "log") == ""  # one seed: no band to explain
    assert plotting.band_title(table) == "one seed: no interval"


def test_learning_curves_draw_one_panel_per_activation_and_one_line_per_rate(tmp_path):
    frames = made_frames([{"activation": activation, "learning_rate": rate, "seed": seed}
                          for activation in ("relu", "tanh") for rate in (0.01, 0.1) for seed in (0, 1)])
    draw = plotting.learning_curves(VAL_ACCURACY, "Validation accuracy per epoch", log_y=False)
    with plotting.agg_backend():
        grid, (path, title, caption) = draw_grid(draw, frames, tmp_path)
    assert path == tmp_path / "val_accuracy_curves.png" and path.stat().st_size > 5_000
    assert title.startswith("Validation accuracy per epoch") and "colour = learning rate" in caption
    panels = {axis.get_title(): axis for axis in grid.axes.flat}
    assert set(panels) == {"activation = tanh", "activation = relu"}
    relu = panels["activation = relu"]
    means = [line for line in relu.get_lines() if line.get_gid() == seed_bands.MEAN_GID]
    assert len(means) == 2  # one mean line per learning rate
    assert sum(line.get_gid() == seed_bands.SEED_GID for line in relu.get_lines()) == 4  # and one per seed
    for line in means:
        # The mean over the two seeds, which made_frames logs alike.
        np.testing.assert_allclose(line.get_ydata(), [0.85 * (0.9 + 0.1 * epoch / 3) for epoch in (1, 2, 3)])


def draw_grid(draw, frames, folder):
    """The seaborn grid a figure function drew, caught before it is saved and closed."""
    caught = {}
    original = plotting.finish

    def keep(grid, *arguments, **keywords):
        caught["grid"] = grid
        return original(grid, *arguments, **keywords)

    plotting.finish = keep
    try:
        drawn = draw(frames, folder)
    finally:
        plotting.finish = original
    return caught["grid"], drawn


def test_learning_curves_are_skipped_when_other_factors_vary(tmp_path):
    frames = made_frames([{"activation": "relu", "depth": 5}, {"activation": "relu", "depth": 20}])
    draw = plotting.learning_curves(VAL_ACCURACY, "Validation accuracy per epoch", log_y=False)
    with pytest.raises(plotting.Skip, match="depth varies as well"):
        draw(frames, tmp_path)


def test_the_per_layer_figure_draws_a_line_per_layer_at_each_best_rate(tmp_path):
    frames = made_frames([{"activation": "relu", "learning_rate": 0.1, "best": 0.9},
                          {"activation": "relu", "learning_rate": 0.01, "best": 0.8}])
    draw = plotting.per_layer_plot(GRAD_NORM, "gradient norm", "Gradient flow", "gradient_norms.png", log_y=True,
                                   caption="Per layer.")
    with plotting.agg_backend():
        grid, (path, _, caption) = draw_grid(draw, frames, tmp_path)
    assert path == tmp_path / "gradient_norms.png" and path.is_file() and caption == "Per layer."
    [axis] = grid.axes.flat
    assert axis.get_title() == "relu" and axis.get_yscale() == "log"
    seeds = [line for line in axis.get_lines() if line.get_gid() == seed_bands.SEED_GID]
    means = [line for line in axis.get_lines() if line.get_gid() == seed_bands.MEAN_GID]
    assert len(seeds) == len(means) == 3  # layers 1, 2 and 3 of the run at its best rate 0.1 only
    assert sorted(line.get_ydata()[0] for line in means) == pytest.approx([0.5, 0.75, 1.0])
    assert not [artist for artist in axis.collections if artist.get_gid() == seed_bands.BAND_GID]  # one seed: no band
    with pytest.raises(plotting.Skip, match="no run logged probe_grad_norm/layer_NN"):
        plotting.per_layer_plot(PROBE_GRAD_NORM, "", "", "x.png", log_y=True, caption="")(frames, tmp_path)
