"""The analysis figures: DataFrames in, PNG files out, each readable without the report.

Every figure function takes the study's frames (``derive.Frames``: the run table, the long histories, the
gradient histograms and what is derived from them once) and returns ``(path, title, caption)``, or raises ``Skip``
saying why the data cannot support it, so that the report never shows a placeholder. Where seeds were repeated, every
figure over epochs or layers (learning curves, learning rates, gradient norms, unit fractions, overfitting, the depth
study) draws every seed and the mean with its 95% Student-t interval (``seed_bands``), on log10 on a log axis; the
theory figures draw the seeds' mean at initialisation as points against the prediction."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from actopt.analysis import frames, seed_bands, tables
from actopt.analysis.depth_plots import (
    depth_accuracy_plot,
    depth_gradient_plot,
    lecun_tanh_plot,
    theory_gradient_plot,
    theory_q_plot,
)
from actopt.analysis.derive import Frames
from actopt.analysis.frames import label, label_columns, science_columns
from actopt.analysis.plotting import (
    DIVERGED_STYLE,
    GALLERY_FILE,
    STYLE_NAME,
    WRAP,
    Figure,
    Skip,
    agg_backend,
    band_title,
    failed_runs,
    finish,
    group_names,
    learning_curves,
    ordered_groups,
    per_layer_plot,
    plain_log_ticks,
    rate_label,
    save,
    seed_grid,
)
from actopt.analysis.statistics import CONFIDENCE, mean_interval
from actopt.core.figures import histogram_heatmap
from actopt.core.metric_names import (
    DEAD_FRACTION,
    GRAD_NORM,
    INACTIVE_FRACTION,
    LEARNING_RATE,
    SATURATED_FRACTION,
    TEST_ACCURACY,
    TRAIN_ACCURACY,
    TRAIN_EVAL_ACCURACY,
    TRAIN_EVAL_LOSS,
    TRAIN_LOSS,
    VAL_ACCURACY,
    VAL_LOSS,
)
from actopt.errors import describe_error


def rate_heatmap(derived: Frames, folder: Path) -> Figure:
    table = derived.table
    rates = derived.rates
    if len(rates) < 2:
        raise Skip("a single configuration and learning rate: nothing to compare")
    best = derived.best_rates
    names = group_names(table, exclude=("optimizer",))
    rows = ordered_groups(table, names)
    optimizers = list(frames.sort_runs(table, ["optimizer"])["optimizer"].unique())
    row_columns = [name for name in label_columns(table, science_columns(table)) if name != "optimizer"]
    feasible = rates["mean"].dropna()
    low, high = (feasible.min(), feasible.max()) if len(feasible) else (0.0, 1.0)
    widths = [max(2, rates.loc[rates["optimizer"] == name, LEARNING_RATE].nunique()) for name in optimizers]
    figure, axes = plt.subplots(1, len(optimizers), figsize=(1.1 * sum(widths) + 2.5, 0.45 * len(rows) + 1.6),
                                gridspec_kw={"width_ratios": widths}, squeeze=False)
    for axis, optimizer in zip(axes[0], optimizers):
        part = rates[rates["optimizer"] == optimizer]
        grid = sorted(part[LEARNING_RATE].unique())
        values = np.full((len(rows), len(grid)), np.nan)
        texts = [["" for _ in grid] for _ in rows]
        for _, cell in part.iterrows():
            i = rows.index(label(cell, row_columns) if row_columns else "all runs")
            j = grid.index(cell[LEARNING_RATE])
            values[i, j] = cell["mean"]
            text = "" if pd.isna(cell["mean"]) else f"{cell['mean']:.3f}"
            if cell["diverged"]:
                text += f"\n{cell['diverged']} div." if text else "diverged"
            texts[i][j] = text
        image = axis.imshow(values, cmap="viridis", vmin=low, vmax=high, aspect="auto")
        for i, row in enumerate(texts):
            for j, text in enumerate(row):
                dark = not np.isnan(values[i, j]) and values[i, j] < low + 0.6 * (high - low)
                axis.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        for _, choice in best[best["optimizer"] == optimizer].dropna(subset=["best_learning_rate"]).iterrows():
            i = rows.index(label(choice, row_columns) if row_columns else "all runs")
            j = grid.index(choice["best_learning_rate"])
            colour = "crimson" if choice["edge"] else "black"
            axis.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=colour, linewidth=2.5,
                                     clip_on=False))
        axis.set_xticks(range(len(grid)), [rate_label(rate) for rate in grid])
        axis.set_yticks(range(len(rows)), rows if axis is axes[0][0] else [""] * len(rows))
        axis.set_xlabel("learning rate")
        axis.set_title(optimizer)
        axis.grid(False)
    figure.colorbar(image, ax=axes[0].tolist(), label="best validation accuracy", shrink=0.9)
    figure.suptitle("Best validation accuracy per configuration and learning rate", y=1.02 + 0.25 / len(rows))
    caption = ("Mean best validation accuracy over seeds; empty cells were not run. A box marks each row's best "
               "learning "
               "rate for that optimizer: black inside the grid, red on its edge (the optimum may lie beyond). "
               "'div.' counts diverged runs, which count in the mean with the accuracy they reached.")
    return save(figure, folder, "best_val_accuracy_heatmap.png"), "Best validation accuracy by learning rate", caption


def best_rate_plot(derived: Frames, folder: Path) -> Figure:
    table = derived.table
    best = derived.best_rates.dropna(subset=["best_learning_rate"])
    if best.empty:
        raise Skip("every run diverged: no configuration has a feasible learning rate")
    if (best["grid"].map(len) < 2).all():
        raise Skip("no configuration was run at more than one learning rate")
    row_columns = [name for name in label_columns(table, science_columns(table)) if name != "optimizer"]
    names = best.apply(lambda row: label(row, row_columns) if row_columns else "all runs", axis=1)
    rows = list(dict.fromkeys(names))
    optimizers = list(dict.fromkeys(best["optimizer"]))
    tuned = derived.curves
    figure, axis = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) * max(1, len(optimizers)) ** 0.5 + 2), 4.2))
    spread = 0.7 / max(len(optimizers), 1)
    colours = sns.color_palette("deep", len(optimizers))
    shown: list[float] = []
    for index, (optimizer, colour) in enumerate(zip(optimizers, colours)):
        part = best[best["optimizer"] == optimizer]
        x = np.array([rows.index(name) for name in names[part.index]]) + (index - (len(optimizers) - 1) / 2) * spread
        for position, (_, row) in zip(x, part.iterrows()):
            keys = [name for name in science_columns(table) if name in row.index]
            seeds = tuned[(tuned[keys] == row[keys]).all(axis=1)][TEST_ACCURACY].dropna()
            # Every seed drawn: where outcomes split (one collapsed, two learned) the mean alone would mislead.
            axis.scatter(np.full(len(seeds), position - 0.08), seeds, s=12, color=colour, alpha=0.55, linewidths=0)
            interval = mean_interval(seeds)
            if interval.count:
                low, high = (interval.low, interval.high) if interval.defined else (interval.mean, interval.mean)
                axis.errorbar([position], [interval.mean], yerr=[[interval.mean - low], [high - interval.mean]],
                              fmt="o", color=colour, capsize=3, label=optimizer if position == x[0] else None)
                shown += [*seeds, low, high]
                text = f"lr {row['best_learning_rate']:g}" + (" (edge!)" if row["edge"] else "")
                axis.annotate(text, (position, high), textcoords="offset points", xytext=(4, 6), fontsize=7,
                              rotation=60, color="crimson" if row["edge"] else "0.2")
    if not shown:
        plt.close(figure)
        raise Skip("no run at its best learning rate logged a test accuracy")
    axis.set_xticks(range(len(rows)), rows, rotation=30 if len(rows) > 4 else 0,
                    ha="right" if len(rows) > 4 else "center")
    axis.set_ylabel("test accuracy at the best lr")
    # The axis spans what is drawn, every seed included: the differences of interest fill it.
    low, high = min(shown), max(shown)
    axis.set_ylim(low - 0.1 * (high - low + 0.002), high + 0.35 * (high - low + 0.002))
    axis.legend(title="optimizer", loc="lower right")
    axis.grid(axis="x", visible=False)
    axis.set_title("Each optimizer at its own best learning rate")
    caption = ("Each optimizer compared at the learning rate that is best for it on each configuration (chosen on "
               "validation accuracy; learning rate is a nuisance parameter conditional on the optimizer); the label "
               "names that rate, 'edge!' when it is the smallest or largest tried. Test accuracy, as the decisions "
               f"use it: the small dots are the seeds, the bars the mean with its {CONFIDENCE:.0%} Student-t "
               "interval over seeds (none with one seed).")
    return save(figure, folder, "best_learning_rate.png"), "Optimizers at their best learning rates", caption


def optimizer_rate_plot(derived: Frames, folder: Path) -> Figure:
    table = derived.table
    if table.groupby("optimizer")[LEARNING_RATE].nunique().max() < 2:
        raise Skip("no optimizer was run at more than one learning rate")
    names = group_names(table, exclude=("optimizer",))
    columns = ordered_groups(table, names)
    # A seed's line joins its runs across learning rates (same seed: same split and batch order).
    data = table.assign(group=names, seed_line=table["optimizer"] + " seed " + table["seed"].astype(str))
    figure, axes = plt.subplots(2, len(columns), figsize=(3.2 * len(columns) + 1, 6.2), squeeze=False, sharex=True)
    optimizers = list(frames.sort_runs(table, ["optimizer"])["optimizer"].unique())
    colours = dict(zip(optimizers, sns.color_palette("deep", len(optimizers))))
    finite_loss = data.loc[~data["diverged"] & np.isfinite(data["last_train_loss"]), "last_train_loss"]
    for j, group in enumerate(columns):
        part = data[data["group"] == group]
        for i, (column, ylabel) in enumerate((("last_train_loss", "final train loss"),
                                               ("val_score", "best val accuracy"))):
            axis = axes[i][j]
            rate_panel(axis, part, column, colours)
            axis.set_xscale("log")
            axis.set_ylabel(ylabel if j == 0 else "")
            axis.set_xlabel("learning rate" if i == 1 else "")
            if column == "last_train_loss" and len(finite_loss):
                axis.set_yscale("log")
                axis.set_ylim(finite_loss.min() * 0.8, finite_loss.max() * 1.5)
                plain_log_ticks(axis)
            if i == 0:
                axis.set_title(group)
    seed_bands.fit_single_x(axes[0][0], data[LEARNING_RATE], log_x=True)
    handles = [Line2D([], [], color=colours[name], **seed_bands.MEAN_STYLE) for name in optimizers]
    handles.append(axes[0][0].scatter([], [], **DIVERGED_STYLE))
    texts = [*optimizers, "diverged"]
    more, more_texts = seed_bands.legend_entries()
    figure.legend([*handles, *more], [*texts, *more_texts], loc="upper right", bbox_to_anchor=(1.0, 1.02),
                  ncol=min(4, len(texts) + len(more_texts)), fontsize=8)
    figure.suptitle(f"Optimizers across learning rates ({band_title(table)})", y=1.06)
    figure.tight_layout()
    caption = ("Top: training loss of the last epoch (diverged runs left out of the mean, marked with a red × on the "
               "top edge); bottom: best validation accuracy, a diverged run counted, as in the decisions, with the "
               "accuracy it reached before diverging, or the chance rate (red ×); x: learning rate (log). A seed's "
               "thin line joins its runs across learning rates; a failed run (collapsed or did not learn) is a "
               "hollow triangle."
               f"{seed_bands.caption('proportion') if table['seed'].nunique() > 1 else ''}")
    return save(figure, folder, "optimizers_vs_learning_rate.png"), "Optimizers across learning rates", caption


def rate_panel(axis: Any, part: pd.DataFrame, column: str, colours: dict[str, Any]) -> None:
    """One panel of ``optimizer_rate_plot``: per optimizer, each seed across learning rates and the mean."""
    loss = column == "last_train_loss"
    usable = part[~part["diverged"] & np.isfinite(part[column])] if loss else part
    for optimizer, colour in colours.items():
        runs = usable[usable["optimizer"] == optimizer]
        if runs.empty:
            continue
        lines = runs[["seed_line", LEARNING_RATE, column]].rename(columns={"seed_line": "run_id"})
        seed_bands.draw(axis, lines, LEARNING_RATE, column, set(), colour=colour,
                        scale="log" if loss else "proportion")
        failed = runs[runs["failed"] & ~runs["diverged"]]
        axis.scatter(failed[LEARNING_RATE], failed[column], **seed_bands.failed_point_style(colour))
    bad = part[part["diverged"]]
    if not bad.empty:
        if loss:
            # Diverged losses are NaN, inf or huge: marked on the top edge.
            axis.scatter(bad[LEARNING_RATE], np.full(len(bad), 0.95), transform=axis.get_xaxis_transform(),
                         **DIVERGED_STYLE)
        else:
            axis.scatter(bad[LEARNING_RATE], bad[column], **DIVERGED_STYLE)


# ReLU units die (zero derivative); other rectifiers' units go inactive; bounded activations saturate.
UNIT_FRACTIONS = ((DEAD_FRACTION, "dead"), (INACTIVE_FRACTION, "inactive"), (SATURATED_FRACTION, "saturated"))


def unit_fraction_plot(derived: Frames, folder: Path) -> Figure:
    table, histories = derived.table, derived.histories
    parts = [frames.layer_values(histories, prefix).assign(kind=kind) for prefix, kind in UNIT_FRACTIONS]
    values = pd.concat(parts, ignore_index=True)
    if values.empty:
        raise Skip("no run logged dead, inactive or saturated fractions (gradient statistics off?)")
    data = values.merge(table[["run_id", LEARNING_RATE]].assign(group=group_names(table)), on="run_id")
    data["panel"] = data["group"] + "\n" + data["kind"]
    order = [f"{group}\n{kind}" for group in ordered_groups(table, group_names(table)) for _, kind in UNIT_FRACTIONS]
    order = [name for name in order if name in set(data["panel"])]
    rates = sorted(data[LEARNING_RATE].unique())
    if len(rates) > 1:
        # Colour shows the learning rate, so only the first and the last hidden layer are drawn (solid, dashed).
        edge = data.groupby("run_id")["layer"].transform("max")
        data = data[(data["layer"] == 1) | (data["layer"] == edge)]
        data["linestyle"] = np.where(data["layer"] == 1, "-", "--")
        data[STYLE_NAME] = np.where(data["layer"] == 1, "first hidden layer", "last hidden layer")
        data["learning rate"] = data[LEARNING_RATE].map(rate_label)
        style = dict(hue="learning rate", hue_order=[rate_label(rate) for rate in rates], palette="viridis")
        legend = "colour = learning rate; solid: first hidden layer, dashed: last hidden layer"
    else:
        style = dict(hue="layer", hue_order=sorted(data["layer"].unique()), palette="viridis")
        legend = "colour = hidden layer (1 = nearest the input)"
    grid = seed_grid(data, failed_runs(table), "linear", dict(col="panel", col_order=order,
                                                               col_wrap=min(WRAP, len(order))), **style)
    grid.set(ylim=(-0.03, 1.03))
    caption = ("Dead: share of a layer's units never active on 2,048 validation examples; saturated: share of outputs "
               "within 2.5% of the activation's bounds, where its derivative is below about a tenth of its peak; "
               f"{legend}.{seed_bands.caption('linear')}")
    return finish(grid, folder / "unit_fractions.png",
                  f"Dead (ReLU family) and saturated (sigmoid, tanh) units per layer ({band_title(table)})",
                  caption, ("epoch (0 = initialisation)", "fraction of units"), template="{col_name}")


def histogram_plot(derived: Frames, folder: Path) -> Figure:
    table, histograms = derived.table, derived.histograms
    chosen = [run_id for run_id in tables.histogram_runs(table) if run_id in histograms]
    if not chosen:
        raise Skip("no run has a gradient_histograms.json artifact (gradient statistics off?)")
    rows = table.set_index("run_id")
    activations = list(dict.fromkeys(rows.loc[chosen, "activation"]))
    figure, axes = plt.subplots(len(activations), 4, figsize=(15, 3.0 * len(activations) + 0.8), squeeze=False,
                                layout="constrained")
    for i, activation in enumerate(activations):
        ids = [run_id for run_id in chosen if rows.loc[run_id, "activation"] == activation]
        for k, role in enumerate(("best", "worst")):
            if k >= len(ids):
                for axis in axes[i][2 * k : 2 * k + 2]:
                    axis.axis("off")
                axes[i][2 * k].text(0.5, 0.5, f"{activation}: one run only", ha="center", va="center",
                                    transform=axes[i][2 * k].transAxes)
                continue
            document = histograms[ids[k]]
            for m, layer in enumerate((0, len(document["layers"]) - 1)):
                axis = axes[i][2 * k + m]
                mesh = histogram_panel(axis, document, layer)
                note = " (diverged)" if rows.loc[ids[k], "diverged"] else ""
                axis.set_title(f"{role}: {rows.loc[ids[k], 'run_name']}{note}\n{document['layers'][layer]}"
                               f" ({'first' if layer == 0 else 'output'} layer)", fontsize=8)
    figure.colorbar(mesh, ax=axes.ravel().tolist(), label="fraction of weights", shrink=0.6)
    figure.suptitle("Weight-gradient magnitudes over epochs: best and worst run of each activation")
    caption = ("Histogram of log10|weight gradient| on a fixed training minibatch at initialisation (epoch 0) and "
               "after "
               "each epoch, for the first and the output layer. Best/worst: highest/lowest best validation accuracy "
               "(diverged runs count as worst). Mass drifting left in the first layer is a vanishing gradient.")
    return save(figure, folder, "gradient_histograms.png"), "Gradient histograms", caption


def histogram_panel(axis: Any, document: dict[str, Any], layer: int) -> Any:
    steps = document["steps"]
    counts = [step_counts[layer] for step_counts in document["counts"]]
    mesh = histogram_heatmap(axis, document["edges_log10"], np.asarray([*steps, steps[-1] + 1]) - 0.5, counts)
    axis.set_xlabel("log10 |g|", fontsize=8)
    axis.set_ylabel("epoch", fontsize=8)
    axis.set_yticks(steps if len(steps) <= 12 else steps[:: math.ceil(len(steps) / 12)])
    axis.set_ylim(steps[-1] + 0.5, steps[0] - 0.5)
    axis.grid(False)
    return mesh


def overfitting_plot(derived: Frames, folder: Path) -> Figure:
    table, histories = derived.table, derived.histories
    if table["dropout"].nunique() < 2:
        raise Skip("dropout does not vary in these runs (the overfitting study varies it); each configuration's "
                   "train/validation gap is under Findings → Overfitting")
    # Every seed, failed ones included (marked): a figure without them would show only the seeds that trained.
    runs = derived.tuned
    names = group_names(runs, exclude=("dropout",))
    runs = runs.assign(group=names)
    # The train side as the gap measures it: eval mode on a fixed training subset, where the runs logged it.
    evaluated = {TRAIN_EVAL_ACCURACY, TRAIN_EVAL_LOSS} <= set(histories["key"].unique())
    train = "train_eval" if evaluated else "train"
    keys = [f"{train}_accuracy", VAL_ACCURACY, f"{train}_loss", VAL_LOSS]
    wide = histories[histories["key"].isin(keys)].pivot_table(index=["run_id", "step"], columns="key", values="value")
    wide = wide.reset_index().rename(columns={f"{train}_accuracy": TRAIN_ACCURACY, f"{train}_loss": TRAIN_LOSS})
    wide = wide.merge(runs[["run_id", "group", "dropout"]], on="run_id")
    wide["gap"] = wide[TRAIN_ACCURACY] - wide[VAL_ACCURACY]
    order = list(dict.fromkeys(names))
    rates = sorted(wide["dropout"].unique())
    palette = dict(zip(rates, sns.color_palette("flare", len(rates))))
    figure, axes = plt.subplots(len(order), 3, figsize=(13, 3.0 * len(order) + 0.5), squeeze=False)
    failed = failed_runs(runs)
    for i, group in enumerate(order):
        part = wide[wide["group"] == group]
        for j, measure in enumerate(("accuracy", "loss", "gap")):
            overfitting_panel(axes[i][j], part, measure, palette, failed)
            axes[i][j].set_title(f"{group}: {measure}", fontsize=9)
            seed_bands.fit_single_x(axes[i][j], part["step"])
    handles = [Line2D([], [], color=colour, **seed_bands.MEAN_STYLE) for colour in palette.values()]
    texts = [f"dropout {rate:g}" for rate in palette]
    handles += [Line2D([], [], color="0.35", linestyle=style) for style in ("-", "--")]
    texts += ["train", "validation"]
    more, more_texts = seed_bands.legend_entries()
    figure.legend([*handles, *more], [*texts, *more_texts], loc="center left", bbox_to_anchor=(0.8, 0.5), fontsize=8)
    figure.suptitle(f"Overfitting: train vs validation, and dropout's effect on the gap ({band_title(table)})",
                    y=1.0)
    figure.tight_layout(rect=(0, 0, 0.79, 1))
    measured = ("measured after each epoch in eval mode on a fixed training subset as large as the validation split"
                if evaluated else "averages over the epoch with dropout active, which understate the gap")
    caption = ("Per epoch, train (solid) and validation (dashed) accuracy and loss, and their accuracy gap, coloured "
               f"by dropout; each configuration at its best learning rate. Train values are {measured}."
               f"{seed_bands.caption('linear')} Accuracy intervals are on the logit scale.")
    return save(figure, folder, "overfitting.png"), "Overfitting and dropout", caption


def overfitting_panel(axis: Any, part: pd.DataFrame, measure: str, palette: dict[float, Any], failed: set[str]) -> None:
    """One panel of ``overfitting_plot``: per dropout rate, each seed and the mean, of train and validation (solid,
    dashed) or of their gap."""
    splits = (("gap", "-"),) if measure == "gap" else ((f"train_{measure}", "-"), (f"val_{measure}", "--"))
    for dropout, colour in palette.items():
        rows = part[part["dropout"] == dropout]
        for column, linestyle in splits:
            seed_bands.draw(axis, rows, "step", column, failed, colour=colour, linestyle=linestyle,
                            scale="proportion" if measure == "accuracy" else "linear")
    if measure == "gap":
        axis.axhline(0, color="0.6", linewidth=0.8)
    axis.set_ylabel("train − val accuracy" if measure == "gap" else measure)
    axis.set_xlabel("epoch")


def activation_gallery(derived: Frames, folder: Path) -> Figure:
    table = derived.table
    from actopt.core import derivatives

    ranges = derivatives.derivative_ranges()
    columns = 2
    rows = math.ceil(len(ranges) / columns)
    figure, axes = plt.subplots(rows, 2 * columns, figsize=(13, 2.3 * rows), squeeze=False)
    used = set(table["activation"])
    for index, item in enumerate(ranges):
        x, y, slope = derivatives.curve(item.name)
        row, column = divmod(index, columns)
        left, right = axes[row][2 * column], axes[row][2 * column + 1]
        weight = "bold" if item.name in used else "normal"
        left.plot(x, y, color="tab:blue")
        left.set_title(f"{item.name}: f(x)", fontsize=9, fontweight=weight)
        right.plot(x, slope, color="tab:orange")
        right.axhline(item.maximum, color="0.5", linestyle=":", linewidth=0.8)
        right.set_title(f"{item.name}: {item.describe()}", fontsize=8, fontweight=weight)
        for axis in (left, right):
            axis.axhline(0, color="0.8", linewidth=0.6)
            axis.axvline(0, color="0.8", linewidth=0.6)
            axis.tick_params(labelsize=7)
    for axis in axes.ravel()[2 * len(ranges):]:
        axis.axis("off")
    figure.suptitle("Activation functions (blue) and their derivatives (orange, by autograd); bold: used in these runs")
    figure.tight_layout()
    caption = ("Each activation next to its derivative; the range printed over each derivative is measured on the "
               "plotted grid.")
    return save(figure, folder, GALLERY_FILE), "Activation functions and derivatives", caption


FIGURES: dict[str, Callable[..., Figure]] = {
    "training loss curves": learning_curves(TRAIN_LOSS, "Training loss per epoch", log_y=True),
    "validation accuracy curves": learning_curves(VAL_ACCURACY, "Validation accuracy per epoch", log_y=False),
    "learning-rate heatmap": rate_heatmap,
    "optimizers at their best learning rates": best_rate_plot,
    "optimizers across learning rates": optimizer_rate_plot,
    "gradient norms per layer": per_layer_plot(
        GRAD_NORM, "weight-gradient L2 norm", "Gradient flow: per-layer gradient norm per epoch",
        "gradient_norms.png",
        log_y=True, caption="Mean over each epoch's steps of each Linear layer's weight-gradient L2 norm (log scale), "
        "colour = layer (1 = input side, the highest = output layer); each configuration at its best learning rate, "
        "diverged seeds left out. The norms span decades, so the seeds' mean and interval are taken on log10."),
    "gradient histograms": histogram_plot,
    "dead and saturated units": unit_fraction_plot,
    "depth study: test accuracy": depth_accuracy_plot,
    "depth study: gradient per layer": depth_gradient_plot,
    "depth study: gradient at initialisation against theory": theory_gradient_plot,
    "depth study: q-map at initialisation against theory": theory_q_plot,
    "LeCun tanh vs tanh": lecun_tanh_plot,
    "overfitting": overfitting_plot,
    "activation gallery": activation_gallery,
}


def draw_all(derived: Frames, folder: Path) -> tuple[list[Figure], dict[str, str]]:
    """Every figure the data supports, and for each other one the reason it was not drawn (a figure that fails
    unexpectedly is listed with its error, so that the report is still written)."""
    drawn: list[Figure] = []
    skipped: dict[str, str] = {}
    with agg_backend(), sns.axes_style("whitegrid"):
        for name, draw in FIGURES.items():
            try:
                drawn.append(draw(derived, folder))
            except Skip as reason:
                skipped[name] = str(reason)
            except OSError:  # the folder cannot be written (a full disk): no figure can be, nor the report
                raise
            except Exception as error:  # noqa: BLE001 - one figure's failure must not cost the report
                skipped[name] = f"drawing failed ({describe_error(error)})"
            finally:
                plt.close("all")
    return drawn, skipped
