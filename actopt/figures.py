"""Images a training run logs for the MLflow UI (the analysis module draws its own comparisons)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot's import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402


def histogram_image(counts: list[list[int]], edges: list[float], layer_names: list[str], step: int) -> np.ndarray:
    """A layer × log10|g| heatmap of one step's gradient histograms, as an RGB array.

    One image per step, logged under the same key, lets the MLflow UI's step slider walk through
    the epochs; rows are layers so a 40-layer net reads as well as a 3-layer one.
    """
    table = np.asarray(counts, dtype=np.float64)
    fractions = table / np.maximum(table.sum(axis=1, keepdims=True), 1.0)
    # Open-ended buckets are drawn one bin wide beyond each end.
    width = edges[1] - edges[0]
    x_edges = [edges[0] - width, *edges, edges[-1] + width]
    height = max(2.5, 0.9 + 0.22 * len(layer_names))
    figure, axes = plt.subplots(figsize=(8, height), dpi=80)
    masked = np.ma.masked_where(fractions <= 0, fractions)
    mesh = axes.pcolormesh(x_edges, np.arange(len(layer_names) + 1), masked, cmap="viridis", norm=LogNorm(1e-4, 1.0))
    axes.set_yticks(np.arange(len(layer_names)) + 0.5, layer_names, fontsize=7 if len(layer_names) > 12 else 9)
    axes.invert_yaxis()
    axes.set_xlabel("log10 |weight gradient|  (first column: < 1e%g or exactly 0)" % edges[0])
    axes.set_title(f"Gradient histogram on a fixed minibatch, step {step} ({'init' if step == 0 else f'after epoch {step}'})")
    figure.colorbar(mesh, ax=axes, label="fraction of weights")
    figure.tight_layout()
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(figure)
    return image
