"""actopt.core.figures: the gradient-histogram images a run logs, and the heat map they share with the analysis."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from actopt.core import figures

EDGES = [float(edge) for edge in np.arange(-12.0, 2.01, 0.25)]


def counts(rng: np.random.Generator, layers: int) -> list[list[int]]:
    table = rng.integers(0, 40, size=(layers, len(EDGES) + 1))
    table[0, :5] = 0  # empty bins are drawn blank
    return table.tolist()


def test_layer_fractions_are_each_rows_share_with_empty_bins_masked():
    fractions = figures.layer_fractions([[0, 1, 3], [0, 0, 0]])
    assert fractions[0].tolist() == [None, 0.25, 0.75]  # masked, then shares of the row's 4
    assert fractions.mask[1].all()  # a row without counts has nothing to draw, and no division by zero


def test_the_open_buckets_are_one_bin_wide_beyond_each_end():
    assert figures.bin_edges([-2.0, -1.5, -1.0]) == [-2.5, -2.0, -1.5, -1.0, -0.5]


def test_the_heat_map_draws_each_rows_fractions_on_the_log_colour_scale():
    rng = np.random.default_rng(0)
    table = counts(rng, 3)
    axis = Figure().subplots()
    mesh = figures.histogram_heatmap(axis, EDGES, np.arange(4), table)
    assert mesh.get_array().shape == (3, len(EDGES) + 1)
    np.testing.assert_allclose(mesh.get_array(), figures.layer_fractions(table))
    assert mesh.norm.vmin == figures.SMALLEST_FRACTION and mesh.norm.vmax == 1.0
    assert mesh.get_cmap().name == figures.COLOUR_MAP
    assert axis.get_xlim() == (EDGES[0] - 0.25, EDGES[-1] + 0.25)


def test_one_square_rgb_image_per_step_and_nothing_left_open_or_chosen():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    histograms = {step: counts(rng, 3) for step in (2, 0, 1)}
    backend = matplotlib.rcParams._get("backend")
    images = list(figures.histogram_images(histograms, EDGES, ["layer_01", "layer_02", "layer_03"]))
    side = int(figures.SIDE_INCHES * figures.DPI)
    assert [step for step, _ in images] == [0, 1, 2]
    assert all(image.shape == (side, side, 3) and image.dtype == np.uint8 for _, image in images)
    assert not np.array_equal(images[0][1], images[1][1])  # each step's colours, not the first one's again
    assert images[0][1].min() < 50 and images[0][1].max() == 255  # drawn: dark colours on a white page
    assert plt.get_fignums() == [] and matplotlib.rcParams._get("backend") is backend


@pytest.mark.parametrize("layers, size", [(3, 9), (20, 7), (40, 6)])
def test_layer_labels_shrink_with_depth(layers, size):
    assert figures.tick_size(layers) == size
    assert figures.step_title(0).endswith("step 0 (init)") and figures.step_title(3).endswith("after epoch 3)")
