"""Figures of a depth study: test accuracy and the largest gradient per layer against depth, LeCun's tanh against
tanh, and the gradient norm and q per layer at initialisation against mean-field theory.

Deep nets split by seed (one collapses to chance while the others learn), so the accuracy and gradient figures draw
every seed and the mean with its 95% Student-t interval (``plotting.seed_grid``), never a ± sd smear; the theory
figures draw each layer's mean over seeds with the interval as a bar, on log10 (norms and q span decades)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MatplotlibFigure

from actopt.analysis import frames, seed_bands
from actopt.analysis.derive import Frames
from actopt.analysis.frames import metric
from actopt.analysis.plotting import (
    STYLE_NAME,
    WRAP,
    Figure,
    Skip,
    band_title,
    extra_factors,
    failed_runs,
    finish,
    group_names,
    save,
    seed_caption,
    seed_grid,
    with_config,
)
from actopt.analysis.statistics import CONFIDENCE
from actopt.analysis.tables import tuned_runs
from actopt.core.metric_names import EPOCH_TEST_ACCURACY, PROBE_GRAD_MAX_ABS, VAL_ACCURACY


def depth_runs(table: pd.DataFrame) -> pd.DataFrame:
    deep = table[table["depth"].fillna(0) > 0]
    if deep.empty:
        raise Skip("no run sets depth (the depth study builds --depth N layers of --width units)")
    extra = extra_factors(deep, ("activation", "depth", "init"))
    if extra:
        raise Skip(f"{', '.join(extra)} {'vary' if len(extra) > 1 else 'varies'} as well; the depth figures compare "
                   f"activation × depth × init only")
    return tuned_runs(deep)


DEPTH_TITLES = {"row_template": "{row_name}", "col_template": "depth {col_name}"}


def depth_facets(data: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """Columns: depth; rows: activation; colour (the second dict, ``seed_grid``'s hue): initialisation (each
    activation's default and matched one)."""
    inits = sorted(data["init"].unique(), key=lambda name: (name != "default", name))
    facets: dict[str, Any] = {"col": "depth", "col_order": sorted(data["depth"].unique())}
    if data["activation"].nunique() > 1:
        facets.update(row="activation", row_order=activation_order(data))
    palette = dict(zip(inits, sns.color_palette("deep", len(inits))))
    return facets, {"hue": "init", "hue_order": inits, "palette": palette}


def activation_order(data: pd.DataFrame) -> list[str]:
    return list(frames.sort_runs(data[["activation"]].drop_duplicates(), ["activation"])["activation"])


def depth_accuracy_plot(derived: Frames, folder: Path) -> Figure:
    table, histories = derived.table, derived.histories
    runs = depth_runs(table)
    values = metric(histories, EPOCH_TEST_ACCURACY)
    if values.empty:
        raise Skip("no run logged epoch_test_accuracy (train with --test-every-epoch true)")
    data = with_config(values, runs, ["activation", "depth", "init"])
    if data.empty:
        raise Skip("the depth-study runs did not log epoch_test_accuracy")
    data["depth"] = data["depth"].astype(int)
    facets, hue = depth_facets(data)
    grid = seed_grid(data, failed_runs(runs), "proportion", facets, **hue)
    caption = ("Test accuracy after every epoch; columns: depth (hidden layers), rows: activation, colour: "
               f"initialisation; each configuration at its best learning rate.{seed_caption(table, 'proportion')}")
    return finish(grid, folder / "depth_test_accuracy.png",
                  f"Depth study: test accuracy per epoch ({band_title(table)})", caption, ("epoch", "test accuracy"),
                  **DEPTH_TITLES)


# What the gradient figure's two line styles are.
WHEN_STYLES = {"at initialisation": "-", "trained (last epoch)": "--"}


def depth_gradient_plot(derived: Frames, folder: Path) -> Figure:
    table, histories = derived.table, derived.histories
    runs = depth_runs(table)
    values = frames.layer_values(histories, PROBE_GRAD_MAX_ABS)
    values = values[values["run_id"].isin(runs["run_id"])]
    if values.empty:
        raise Skip("the depth-study runs did not log probe_grad_max_abs (gradient statistics off?)")
    last = frames.last_step_values(values[values["step"] > 0]).assign(**{STYLE_NAME: "trained (last epoch)"})
    data = pd.concat([values[values["step"] == 0].assign(**{STYLE_NAME: "at initialisation"}), last],
                     ignore_index=True)
    data = with_config(data[data["value"] > 0], runs, ["activation", "depth", "init"])
    data["depth"] = data["depth"].astype(int)
    data["linestyle"] = data[STYLE_NAME].map(WHEN_STYLES)
    facets, hue = depth_facets(data)
    # Each depth has its own number of layers.
    grid = seed_grid(data, failed_runs(runs), "log", {**facets, "sharex": False}, x="layer", **hue)
    grid.set(yscale="log")
    caption = ("Max |gradient| of each Linear layer's weights on one fixed training minibatch, at initialisation "
               "(solid) and after the last epoch (dashed), log scale; columns: depth, rows: activation, colour: "
               f"initialisation. A slope down towards layer 1 is a vanishing gradient.{seed_caption(table, 'log')}")
    title = f"Depth study: largest weight gradient per layer on a fixed minibatch ({band_title(table, 'log')})"
    labels = ("layer (1 = input side)", "max |weight gradient|")
    return finish(grid, folder / "depth_max_gradient.png", title, caption, labels, **DEPTH_TITLES)


def lecun_tanh_plot(derived: Frames, folder: Path) -> Figure:
    table, histories = derived.table, derived.histories
    pair = table[table["activation"].isin(["tanh", "lecun_tanh"])]
    if pair["activation"].nunique() < 2:
        raise Skip("needs runs with both tanh and lecun_tanh")
    runs = tuned_runs(pair)
    tested = metric(histories, EPOCH_TEST_ACCURACY)["run_id"].isin(runs["run_id"]).any()
    key = EPOCH_TEST_ACCURACY if tested else VAL_ACCURACY
    names = group_names(runs, exclude=("activation",))
    data = with_config(metric(histories, key), runs.assign(group=names), ["activation", "group"])
    order = list(dict.fromkeys(names))
    grid = seed_grid(data, failed_runs(runs), "proportion",
                     dict(col="group", col_order=order, col_wrap=min(WRAP, len(order))),
                     hue="activation", hue_order=["tanh", "lecun_tanh"])
    caption = (f"{key} per epoch for tanh and LeCun's scaled tanh, each configuration at its best learning rate."
               f"{seed_caption(pair, 'proportion')}")
    return finish(grid, folder / "lecun_tanh_vs_tanh.png",
                  f"LeCun's tanh (1.7159·tanh(2x/3)) vs tanh ({band_title(pair)})", caption,
                  ("epoch", key.replace("_", " ")), template="{col_name}")


DEPTH_MARKERS = ("o", "s", "^", "D", "v", "P")


THEORY_KEYS = ["activation", "init", "depth", "layer"]
# The scale of each measurement's interval over seeds (seed_bands.SCALES): the norm is logged as log10 already; q's
# interval is of log10 q, mapped back, around the geometric mean.
THEORY_SCALES = {"measured_log10": "linear", "measured_q": "log"}


def theory_layers(derived: Frames) -> pd.DataFrame:
    """Step-0 measurements and predictions per layer, averaged over seeds, with each run's configuration, and each
    measurement's centre and 95% t interval over the seeds (``measured_log10_low`` … ``measured_q_high``; NaN with
    one seed)."""
    theory = derived.theory
    if theory.reason:
        raise Skip(theory.reason)
    if theory.layers.empty:
        raise Skip("no run has a step-0 gradient profile that the theory covers")
    data = with_config(theory.layers, derived.table, ["activation", "init", "depth"])
    data["depth"] = data["depth"].astype(int)
    means = data.groupby(THEORY_KEYS, as_index=False).mean(numeric_only=True)
    return means.merge(seed_bounds(data), on=THEORY_KEYS)


def seed_bounds(data: pd.DataFrame) -> pd.DataFrame:
    """Per activation × init × depth × layer, ``seed_bands.interval`` over its runs of each THEORY_SCALES column."""
    rows = []
    for key, group in data.groupby(THEORY_KEYS):
        row = dict(zip(THEORY_KEYS, key))
        for column, scale in THEORY_SCALES.items():
            found = seed_bands.interval(group[column], scale)
            row.update({f"{column}_centre": found.mean, f"{column}_low": found.low, f"{column}_high": found.high})
        rows.append(row)
    bounds = [f"{column}_{end}" for column in THEORY_SCALES for end in ("centre", "low", "high")]
    return pd.DataFrame(rows, columns=[*THEORY_KEYS, *bounds])


def theory_panels(data: pd.DataFrame, measured: str, predicted: str, log_y: bool,
                  bars: tuple[str, str] | None = None) -> Any:
    """One panel per activation: measured points and predicted lines, colour = init, marker = depth; ``bars``
    (the columns of each point's interval) as vertical bars where the interval exists."""
    activations = activation_order(data)
    inits = sorted(data["init"].unique(), key=lambda name: (name != "default", name))
    colours = dict(zip(inits, sns.color_palette("deep", len(inits))))
    depths = sorted(data["depth"].unique())
    columns = min(WRAP, len(activations))
    rows = -(-len(activations) // columns)
    figure = MatplotlibFigure(figsize=(3.6 * columns, 3.0 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, activation in zip(axes.flat, activations):
        for (init, depth), group in data[data["activation"] == activation].groupby(["init", "depth"]):
            group = group.sort_values("layer")
            marker = DEPTH_MARKERS[depths.index(depth) % len(DEPTH_MARKERS)]
            axis.plot(group["layer"], group[predicted], color=colours[init], linewidth=1.2)
            axis.scatter(group["layer"], group[measured], color=colours[init], marker=marker, s=14,
                         label=f"{init}, depth {depth}")
            if bars is not None:
                draw_bars(axis, group, bars, colours[init])
        axis.set_title(activation)
        axis.set_xlabel("hidden layer (1 = input side)")
        if log_y:
            axis.set_yscale("log")
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(activations):]:
        axis.set_visible(False)
    return figure, axes


def draw_bars(axis: Any, group: pd.DataFrame, bars: tuple[str, str], colour: Any) -> None:
    low, high = group[bars[0]], group[bars[1]]
    shown = np.isfinite(low) & np.isfinite(high)
    if shown.any():
        axis.vlines(group["layer"][shown], low[shown], high[shown], color=colour, linewidth=0.9, alpha=0.8)


def interval_words(derived: Frames) -> str:
    """The title's words on the bars: what they are, or that one seed gives none."""
    if derived.table["seed"].nunique() < 2:
        return "one seed: no interval"
    return f"bar: {CONFIDENCE:.0%} Student-t interval over seeds, of log10"


def theory_gradient_plot(derived: Frames, folder: Path) -> Figure:
    data = theory_layers(derived)
    figure, axes = theory_panels(data, "measured_log10", "predicted_log10", log_y=False,
                                 bars=("measured_log10_low", "measured_log10_high"))
    for axis in axes[:, 0]:
        axis.set_ylabel("log10 ‖weight gradient‖")
    title = "Depth study: gradient norm per layer at initialisation, measured and predicted"
    figure.suptitle(f"{title}\n({interval_words(derived)})", y=1.1)
    caption = ("log10 of each hidden layer's weight-gradient L2 norm on the fixed probe minibatch at step 0 "
               "(points, mean over seeds; bars, the seeds' 95% Student-t interval of that mean), and the mean-field "
               "prediction (lines, anchored at the last hidden layer's measured norm; the theory fixes the profile, "
               "not the scale). Colour: initialisation; marker: depth. A line falling towards layer 1 is a gradient "
               "vanishing at initialisation.")
    return save(figure, folder, "depth_theory_gradient.png"), title, caption


def theory_q_plot(derived: Frames, folder: Path) -> Figure:
    data = theory_layers(derived)
    data = data[data["measured_q_centre"] > 0]
    if data.empty:
        raise Skip("no run logged probe_preactivation_moment at step 0")
    figure, axes = theory_panels(data, "measured_q_centre", "predicted_q", log_y=True,
                                 bars=("measured_q_low", "measured_q_high"))
    for axis in axes[:, 0]:
        axis.set_ylabel("q = mean pre-activation²")
    title = "Depth study: forward pass at initialisation, measured q per layer and the predicted q-map"
    figure.suptitle(f"{title}\n({interval_words(derived)})", y=1.1)
    caption = ("Second moment of each hidden layer's pre-activations on the probe minibatch at step 0 (points, "
               "geometric mean over seeds; bars, the seeds' 95% Student-t interval of log10 q, mapped back) and the "
               "q-map q^l = σ_w²·E[φ(√q^(l−1) z)²] + σ_b² iterated from the input's measured mean square (lines), "
               "log scale. Colour: initialisation; marker: depth. A falling line is a signal that dies on the way "
               "forward; a flat one sits at the map's fixed point.")
    return save(figure, folder, "depth_theory_q.png"), title, caption
