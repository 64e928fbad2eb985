"""What every figure shares: saving, facet grids and their captions, labels, and ``Skip`` for a figure the data cannot
support."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from actopt.analysis import frames, seed_bands
from actopt.analysis.derive import Frames
from actopt.analysis.frames import label, label_columns, metric, science_columns
from actopt.analysis.statistics import CONFIDENCE
from actopt.core.metric_names import LEARNING_RATE

GALLERY_FILE = "activation_derivatives.png"


DPI = 110


# Facet panels in one row before wrapping.
WRAP = 4


DIVERGED_STYLE = {"marker": "x", "color": "crimson", "s": 60, "linewidths": 2, "zorder": 5}


Figure = tuple[Path, str, str]


class Skip(Exception):
    """The data cannot support this figure; the message says why."""


@contextlib.contextmanager
def agg_backend() -> Iterator[None]:
    """Draw with Agg (files only: servers and CI have no display, and a desktop session must not get windows), and
    hand the process back the backend it had: chosen here, where the figures are drawn, never at import.

    seaborn's grids make their figures through pyplot, so pyplot's backend is switched for the drawing. Where
    nothing was chosen yet, matplotlib's own "choose on first use" is put back (``rcParams._get``/``_set``, what
    pyplot itself uses: assigning that marker through ``rcParams[...]`` is ignored).
    """
    chosen = matplotlib.rcParams._get("backend")
    default = matplotlib.rcParamsDefault._get("backend")
    plt.switch_backend("agg")
    try:
        yield
    finally:
        if isinstance(chosen, str) and chosen.lower() != "agg":
            plt.switch_backend(chosen)
        matplotlib.rcParams._set("backend", chosen)
        matplotlib.rcParamsDefault._set("backend", default)


def save(figure: Any, folder: Path, name: str) -> Path:
    for axis in figure.axes:
        if axis.get_xlabel().startswith(("epoch", "layer")):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    path = folder / name
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return path


def plain_log_ticks(axis: Any) -> None:
    """Tick labels 0.2, 0.3, 1, 2 instead of 2×10⁻¹ on a log axis spanning about a decade."""
    def plain(value: float, _: Any) -> str:
        mantissa = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
        return f"{value:g}" if mantissa in (1, 2, 5) else ""

    axis.yaxis.set_major_formatter(FuncFormatter(plain))
    axis.yaxis.set_minor_formatter(FuncFormatter(plain))


def finish(grid: Any, path: Path, title: str, caption: str, labels: tuple[str, str], **titles: str) -> Figure:
    """Label and title a seaborn grid, save it at ``path``, and return what the report lists."""
    grid.set_axis_labels(*labels)
    if titles:
        grid.set_titles(**titles)
    grid.figure.suptitle(title, y=1.03)
    return save(grid.figure, path.parent, path.name), title, caption


def rate_label(value: float) -> str:
    return f"{value:g}"


def with_config(values: pd.DataFrame, table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return values.merge(table[["run_id", *dict.fromkeys(columns)]], on="run_id")


def extra_factors(table: pd.DataFrame, allowed: tuple[str, ...]) -> list[str]:
    return [name for name in frames.varying(table, frames.SCIENCE) if name not in allowed]


def group_names(table: pd.DataFrame, exclude: tuple[str, ...] = ()) -> pd.Series:
    columns = [name for name in label_columns(table, science_columns(table)) if name not in exclude]
    return table.apply(lambda row: label(row, columns) if columns else "all runs", axis=1)


def ordered_groups(table: pd.DataFrame, names: pd.Series) -> list[str]:
    return list(dict.fromkeys(names.loc[frames.sort_runs(table, science_columns(table)).index]))


def learning_curves(key: str, title: str, log_y: bool) -> Callable[..., Figure]:
    name = f"{key}_curves.png"
    scale = "log" if log_y else "proportion" if key.endswith("accuracy") else "linear"

    def draw(derived: Frames, folder: Path) -> Figure:
        table, histories = derived.table, derived.histories
        extra = extra_factors(table, ("activation", "optimizer"))
        if extra:
            raise Skip(f"{', '.join(extra)} {'vary' if len(extra) > 1 else 'varies'} as well; activation × optimizer "
                       f"facets would mix them (see the depth-study and overfitting figures)")
        values = metric(histories, key)
        if values.empty:
            raise Skip(f"no run logged {key}")
        data = with_config(values, table, ["activation", "optimizer", LEARNING_RATE])
        data["value"] = data["value"].where(np.isfinite(data["value"]) & ((data["value"] > 0) | (not log_y)))
        rates = sorted(data[LEARNING_RATE].unique())
        data["learning rate"] = data[LEARNING_RATE].map(rate_label)
        optimizers = frames.sort_runs(table, ["optimizer"])["optimizer"].unique()
        activations = frames.sort_runs(table, ["activation"])["activation"].unique()
        if len(optimizers) > 1:
            facets = dict(row="activation", col="optimizer", row_order=activations, col_order=optimizers)
        else:
            facets = dict(col="activation", col_wrap=min(WRAP, len(activations)), col_order=activations)
        grid = seed_grid(data, failed_runs(table), scale, facets, hue="learning rate",
                         hue_order=[rate_label(r) for r in rates], palette="viridis")
        mark_divergence(grid, table, facets)
        if log_y:
            grid.set(yscale="log")
        caption = (f"{key} after each epoch, one panel per activation × optimizer, colour = learning rate. Red × at "
                   "the top of a panel: a run diverged in that epoch (its later values are missing)."
                   f"{seed_bands.caption(scale)}")
        return finish(grid, folder / name, f"{title} ({band_title(table, scale)})", caption, ("epoch", key))

    draw.__name__ = name
    return draw


def failed_runs(table: pd.DataFrame) -> set[str]:
    return set(table.loc[table["failed"], "run_id"]) if "failed" in table else set()


def band_title(table: pd.DataFrame, scale: str = "linear") -> str:
    """What a figure's lines and bands are, for its title; on a log axis (``scale`` "log") the interval is of log10,
    so the thick line is a geometric mean."""
    if table["seed"].nunique() < 2:
        return "one seed: no interval"
    if scale == "log":
        return f"thin: each seed; thick: geometric mean, band {CONFIDENCE:.0%} t interval of log10"
    return f"thin: each seed; thick: mean, band {CONFIDENCE:.0%} t interval"


def seed_caption(table: pd.DataFrame, scale: str) -> str:
    """The caption's sentence on the lines and bands, where seeds were repeated."""
    return seed_bands.caption(scale) if table["seed"].nunique() > 1 else ""


# A column of a seed grid's data naming what each line style stands for ("at initialisation"), for the legend.
STYLE_NAME = "linestyle_name"


def seed_grid(data: pd.DataFrame, failed: set[str], scale: str, facets: dict[str, Any], x: str = "step",
              **hue: Any) -> Any:
    """A facet grid of ``data`` (``run_id``, ``x``, ``value`` and the facet columns) with every seed and the mean with
    its interval (``seed_bands.draw``), per ``hue`` level (``hue``, ``hue_order``, ``palette``), and a legend that
    says which line is which. ``data`` may carry a ``linestyle`` column: the runs' lines of each style drawn apart,
    and named in the legend by a ``STYLE_NAME`` column where it has one."""
    grid = sns.FacetGrid(data, height=2.3, aspect=1.35, sharey=True, margin_titles="row" in facets, **facets, **hue)
    grid.map_dataframe(draw_facet, failed=failed, scale=scale, x=x)
    for axis in grid.axes.flat:
        seed_bands.fit_single_x(axis, data[x])
    found: dict[str, Any] = {}
    for axis in grid.axes.flat:
        for handle, text in zip(*axis.get_legend_handles_labels()):
            found.setdefault(text, handle)
    entries = {str(level): found[str(level)] for level in hue.get("hue_order") or found if str(level) in found}
    if STYLE_NAME in data:
        styles = data[["linestyle", STYLE_NAME]].drop_duplicates()
        entries.update({name: Line2D([], [], color="0.35", linestyle=linestyle)
                        for linestyle, name in styles.itertuples(index=False)})
    handles, texts = seed_bands.legend_entries(scale=scale)
    legend = {**entries, **dict(zip(texts, handles))}
    grid.add_legend(legend_data=legend, label_order=list(legend), title=hue["hue"])
    return grid


def draw_facet(data: pd.DataFrame, failed: set[str], scale: str, x: str, **level: Any) -> None:
    """One hue level of one facet (FacetGrid.map_dataframe's call, which gives the level's ``color`` and
    ``label``)."""
    styles = data.groupby("linestyle", sort=False) if "linestyle" in data else [("-", data)]
    for index, (linestyle, part) in enumerate(styles):
        seed_bands.draw(plt.gca(), part, x, "value", failed, colour=level.get("color"), scale=scale,
                        label=level.get("label") if index == 0 else None, linestyle=linestyle)


def mark_divergence(grid: Any, table: pd.DataFrame, facets: dict[str, Any]) -> None:
    diverged = table[table["diverged"]]
    for _, run in diverged.iterrows():
        if "row" in facets:
            axes = grid.axes_dict.get((run["activation"], run["optimizer"]))
        else:
            axes = grid.axes_dict.get(run["activation"])
        if axes is None or pd.isna(run["diverged_epoch"]):
            continue
        axes.scatter([int(run["diverged_epoch"])], [0.97], transform=axes.get_xaxis_transform(), **DIVERGED_STYLE)


def per_layer_plot(prefix: str, ylabel: str, title: str, file: str, log_y: bool, caption: str) -> Callable[..., Figure]:
    """Each layer's ``prefix/layer_NN`` per epoch, a panel per configuration at its best learning rate, colour =
    layer: every seed and the mean with its interval (on log10 with ``log_y``: the norms span decades)."""
    scale = "log" if log_y else "linear"

    def draw(derived: Frames, folder: Path) -> Figure:
        table, histories = derived.table, derived.histories
        values = frames.layer_values(histories, prefix)
        if values.empty:
            raise Skip(f"no run logged {prefix}/layer_NN")
        chosen = derived.curves
        chosen = chosen.assign(group=group_names(chosen) if len(chosen) else [])
        data = values.merge(chosen[["run_id", "group"]], on="run_id")
        if data.empty:
            raise Skip(f"no run at its best learning rate logged {prefix}")
        if log_y:
            data = data[data["value"] > 0]
        order = ordered_groups(chosen, chosen["group"])
        order = [name for name in order if name in set(data["group"])]
        grid = seed_grid(data, failed_runs(chosen), scale, dict(col="group", col_order=order,
                                                                col_wrap=min(WRAP, len(order))),
                         hue="layer", hue_order=sorted(data["layer"].unique()), palette="viridis")
        if log_y:
            grid.set(yscale="log")
        xlabel = "epoch (0 = initialisation)" if data["step"].min() == 0 else "epoch"
        return finish(grid, folder / file, f"{title} ({band_title(table, scale)})",
                      caption + seed_caption(table, scale), (xlabel, ylabel), template="{col_name}")

    draw.__name__ = file
    return draw
