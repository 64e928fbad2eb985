"""Images a training run logs for the MLflow UI, and the gradient-histogram heat map they share with the analysis's
figure (the analysis module draws its own comparisons).

Drawn on a ``matplotlib.figure.Figure`` with its own Agg canvas, never through pyplot: importing this module or
drawing an image chooses no backend and leaves no figure open in the process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

# MLflow 3.17's image card shows an image scaled into a square-ish box: a square image fills it, where the wide
# 8 × 2.5 inch strip of a 3-layer net was a thumbnail a few pixels high (seen in Chromium at the default card size).
SIDE_INCHES = 6.0
DPI = 90
# The heat map's colours: a fraction of a layer's weights per bin, on a log scale from 1e-4 (rarer is blank) to 1.
COLOUR_MAP = "viridis"
SMALLEST_FRACTION = 1e-4


def tick_size(layers: int) -> float:
    """Layer labels that stay apart: a 40-layer net's rows are a tenth of the square's height."""
    return 9 if layers <= 12 else 7 if layers <= 24 else 6


def step_title(step: int) -> str:
    return f"Gradient histogram on a fixed minibatch\nstep {step} ({'init' if step == 0 else f'after epoch {step}'})"


def layer_fractions(counts: Sequence[Sequence[int]] | np.ndarray) -> np.ma.MaskedArray:
    """Each row's counts as fractions of the row's total, empty bins masked (drawn blank)."""
    table = np.asarray(counts, dtype=np.float64)
    fractions = table / np.maximum(table.sum(axis=1, keepdims=True), 1.0)
    return np.ma.masked_where(fractions <= 0, fractions)


def bin_edges(edges: Sequence[float]) -> list[float]:
    """The x edges of the heat map: the open-ended first and last buckets drawn one bin wide beyond each end."""
    width = edges[1] - edges[0]
    return [edges[0] - width, *edges, edges[-1] + width]


def histogram_heatmap(axis: Any, edges: Sequence[float], rows: Sequence[float], counts: Any) -> Any:
    """The gradient-histogram heat map, one row per entry of ``counts`` (a layer, or a step) over log10|g| bins:
    the one drawing of it, for a run's images and the analysis's figure. ``rows`` are the ``len(counts) + 1`` row
    edges. Returns the mesh (for a colour bar)."""
    return axis.pcolormesh(bin_edges(edges), rows, layer_fractions(counts), cmap=COLOUR_MAP,
                           norm=LogNorm(SMALLEST_FRACTION, 1.0))


def histogram_images(
    histograms: dict[int, list[list[int]]], edges: list[float], layer_names: list[str]
) -> Iterator[tuple[int, np.ndarray]]:
    """Each step's layer × log10|g| heatmap of the gradient histograms, as (step, RGB array), by step.

    One image per step, logged under the same key, lets the MLflow UI's step slider walk through
    the epochs; rows are layers so a 40-layer net reads as well as a 3-layer one. The figure is laid
    out once and only its colours and title change from step to step: laying it out is what costs
    (about 0.15 s an image against a few hundredths), and every step shares the layout.
    """
    steps = sorted(histograms)
    figure = Figure(figsize=(SIDE_INCHES, SIDE_INCHES), dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots()
    mesh = histogram_heatmap(axes, edges, np.arange(len(layer_names) + 1), histograms[steps[0]])
    axes.set_yticks(np.arange(len(layer_names)) + 0.5, layer_names, fontsize=tick_size(len(layer_names)))
    axes.invert_yaxis()
    axes.set_xlabel(f"log10 |weight gradient|\n(first column: < 1e{edges[0]:g} or exactly 0)")
    title = axes.set_title(step_title(steps[0]), fontsize=10)
    figure.colorbar(mesh, ax=axes, label="fraction of weights")
    figure.tight_layout()
    for step in steps:
        mesh.set_array(layer_fractions(histograms[step]))
        title.set_text(step_title(step))
        canvas.draw()
        yield step, np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
