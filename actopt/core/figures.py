"""Images a training run logs for the MLflow UI (the analysis module draws its own comparisons)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot's import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

# MLflow 3.17's image card shows an image scaled into a square-ish box: a square image fills it, where the wide
# 8 × 2.5 inch strip of a 3-layer net was a thumbnail a few pixels high (seen in Chromium at the default card size).
SIDE_INCHES = 6.0
DPI = 90


def tick_size(layers: int) -> float:
    """Layer labels that stay apart: a 40-layer net's rows are a tenth of the square's height."""
    return 9 if layers <= 12 else 7 if layers <= 24 else 6


def step_title(step: int) -> str:
    return f"Gradient histogram on a fixed minibatch\nstep {step} ({'init' if step == 0 else f'after epoch {step}'})"


def layer_fractions(counts: Sequence[Sequence[int]]) -> np.ma.MaskedArray:
    table = np.asarray(counts, dtype=np.float64)
    fractions = table / np.maximum(table.sum(axis=1, keepdims=True), 1.0)
    return np.ma.masked_where(fractions <= 0, fractions)


def histogram_images(
    histograms: dict[int, list[list[int]]], edges: list[float], layer_names: list[str]
) -> Iterator[tuple[int, np.ndarray]]:
    """Each step's layer × log10|g| heatmap of the gradient histograms, as (step, RGB array), by step.

    One image per step, logged under the same key, lets the MLflow UI's step slider walk through
    the epochs; rows are layers so a 40-layer net reads as well as a 3-layer one. The figure is laid
    out once and only its colours and title change from step to step: laying it out is what costs
    (about 0.15 s an image against a few hundredths), and every step shares the layout.
    """
    # Open-ended buckets are drawn one bin wide beyond each end.
    width = edges[1] - edges[0]
    x_edges = [edges[0] - width, *edges, edges[-1] + width]
    steps = sorted(histograms)
    figure, axes = plt.subplots(figsize=(SIDE_INCHES, SIDE_INCHES), dpi=DPI)
    try:
        mesh = axes.pcolormesh(x_edges, np.arange(len(layer_names) + 1), layer_fractions(histograms[steps[0]]),
                               cmap="viridis", norm=LogNorm(1e-4, 1.0))
        axes.set_yticks(np.arange(len(layer_names)) + 0.5, layer_names, fontsize=tick_size(len(layer_names)))
        axes.invert_yaxis()
        axes.set_xlabel(f"log10 |weight gradient|\n(first column: < 1e{edges[0]:g} or exactly 0)")
        title = axes.set_title(step_title(steps[0]), fontsize=10)
        figure.colorbar(mesh, ax=axes, label="fraction of weights")
        figure.tight_layout()
        for step in steps:
            mesh.set_array(layer_fractions(histograms[step]))
            title.set_text(step_title(step))
            figure.canvas.draw()
            yield step, np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()
    finally:
        plt.close(figure)

