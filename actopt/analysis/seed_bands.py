"""Seeds drawn one by one, with the mean over seeds and its 95% Student-t interval: what the figures draw where a
configuration was run with several seeds.

A mean ± sd band hides how seeds split: over one collapsed and two learned seeds it is a wide smear that no seed
follows. Each seed is therefore a thin line of its own, a failed seed (diverged, collapsed, did not learn:
``tables.failures``) is marked so that it cannot pass for noise, and the band is the confidence interval the
report's decisions use: on the logits for accuracies (``statistics.proportion_interval``, inside [0, 1]), on log10
for values drawn on a log axis (a geometric mean whose interval stays positive), plain otherwise."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from actopt.analysis.statistics import CONFIDENCE, Interval, mean_interval, proportion_interval

# How the values are averaged and their interval made (see the module docstring).
SCALES = ("linear", "proportion", "log")
# The artist ids a test (or a reader of the figure object) finds the parts by.
SEED_GID = "seed"
MEAN_GID = "mean"
BAND_GID = "band"
# Thin and faint enough that three seeds and their mean stay apart; a failed seed is drawn darker, with hollow
# triangles at its points, so that it shows on any line style the figure already uses for something else.
SEED_STYLE = {"linewidth": 0.8, "alpha": 0.45}
FAILED_STYLE = {"linewidth": 1.0, "alpha": 0.85, "marker": "v", "markersize": 4, "markerfacecolor": "none"}
MEAN_STYLE = {"linewidth": 1.9, "marker": "o", "markersize": 3}
BAND_ALPHA = 0.18
FAILED_LABEL = "failed seed (diverged, collapsed or did not learn)"


def interval(values: pd.Series | np.ndarray, scale: str) -> Interval:
    """The mean of ``values`` over seeds with its CONFIDENCE Student-t interval, on ``scale`` (one of SCALES)."""
    if scale == "proportion":
        return proportion_interval(values)
    if scale == "log":
        array = np.asarray(values, dtype="float64")
        logs = mean_interval(np.log10(array[np.isfinite(array) & (array > 0)]))
        return Interval(*(10**value if math.isfinite(value) else math.nan
                          for value in (logs.mean, logs.low, logs.high)), logs.count)
    return mean_interval(values)


def band(values: pd.DataFrame, x: str, y: str, scale: str = "linear") -> pd.DataFrame:
    """Per value of ``x``: ``mean``, ``low``, ``high`` (NaN with fewer than 2 finite values) and ``count`` of ``y``."""
    rows = []
    for position, part in values.groupby(x, sort=True):
        found = interval(part[y], scale)
        if found.count:
            rows.append((position, found.mean, found.low, found.high, found.count))
    return pd.DataFrame(rows, columns=[x, "mean", "low", "high", "count"])


def draw(axis: Any, values: pd.DataFrame, x: str, y: str, failed: set[str], **options: Any) -> pd.DataFrame:
    """Each run of ``values`` (columns ``run_id``, ``x``, ``y``) as a thin line, marked if its id is in ``failed``,
    then the mean over runs with its band. ``options``: ``colour``, ``scale`` (SCALES), ``label`` (the mean line's
    legend entry), ``linestyle``. Returns the band drawn."""
    colour, linestyle = options.get("colour"), options.get("linestyle", "-")
    for run_id, run in values.groupby("run_id", sort=False):
        run = run.sort_values(x)
        style = FAILED_STYLE if run_id in failed else SEED_STYLE
        [line] = axis.plot(run[x], run[y], color=colour, linestyle=linestyle, **style)
        line.set_gid(SEED_GID)
    drawn = band(values, x, y, options.get("scale", "linear"))
    if drawn.empty:
        return drawn
    [mean] = axis.plot(drawn[x], drawn["mean"], color=colour, linestyle=linestyle, label=options.get("label"),
                       **MEAN_STYLE)
    mean.set_gid(MEAN_GID)
    if drawn["low"].notna().any():
        axis.fill_between(drawn[x], drawn["low"], drawn["high"], color=colour, alpha=BAND_ALPHA, linewidth=0,
                          gid=BAND_GID)
    return drawn


def fit_single_x(axis: Any, positions: pd.Series | np.ndarray, log_x: bool = False) -> None:
    """Limits around a lone x value: matplotlib otherwise warns that the low and high limits are identical."""
    distinct = np.unique(np.asarray(positions, dtype="float64")[np.isfinite(np.asarray(positions, dtype="float64"))])
    if len(distinct) != 1:
        return
    only = float(distinct[0])
    axis.set_xlim(*((only / 3, only * 3) if log_x and only > 0 else (only - 1, only + 1)))


def legend_entries(colour: str = "0.35", scale: str = "linear") -> tuple[list[Line2D], list[str]]:
    """A seed's line, a failed seed's and the mean's, for a figure's legend (on ``scale``: see ``interval``)."""
    handles = [Line2D([], [], color=colour, **SEED_STYLE), Line2D([], [], color=colour, **FAILED_STYLE),
               Line2D([], [], color=colour, **MEAN_STYLE)]
    mean = "geometric mean" if scale == "log" else "mean"
    where = " of log10" if scale == "log" else ""
    return handles, ["one seed", FAILED_LABEL, f"{mean}, {CONFIDENCE:.0%} t interval{where}"]


def caption(scale: str) -> str:
    """The sentence a caption gives the lines and bands."""
    where = {"proportion": " (on the logit scale, so that it stays inside [0, 1])",
             "log": " (geometric mean; the interval on log10, a factor)", "linear": ""}[scale]
    return (f" Thin lines: one seed each; a failed seed (diverged, collapsed or did not learn) has hollow triangles. "
            f"Thick line: the mean over seeds, failed seeds included; band: its {CONFIDENCE:.0%} Student-t "
            f"interval{where}, drawn with 2 seeds or more.")


def failed_point_style(colour: Any) -> dict[str, Any]:
    """A failed run drawn as a point (where a figure draws runs as points, not lines)."""
    return {"marker": "v", "s": 30, "facecolors": "none", "edgecolors": [colour], "linewidths": 1.2, "zorder": 4}
