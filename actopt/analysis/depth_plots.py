"""Figures of a depth study: test accuracy and the largest gradient per layer against depth, and LeCun's tanh against
tanh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot's import
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from actopt.analysis import frames  # noqa: E402
from actopt.analysis.frames import metric  # noqa: E402
from actopt.analysis.plotting import (
    WRAP,
    Figure,
    Skip,
    extra_factors,
    finish,
    group_names,
    seed_note,
    with_config,
)
from actopt.analysis.tables import tuned_runs  # noqa: E402


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


def depth_facets(data: pd.DataFrame) -> dict[str, Any]:
    """Columns: depth; rows: activation; colour: initialisation (each activation's default and matched one)."""
    inits = sorted(data["init"].unique(), key=lambda name: (name != "default", name))
    facets: dict[str, Any] = {"col": "depth", "col_order": sorted(data["depth"].unique()), "hue": "init",
                              "hue_order": inits, "palette": dict(zip(inits, sns.color_palette("deep", len(inits))))}
    if data["activation"].nunique() > 1:
        facets.update(row="activation", row_order=activation_order(data))
    return facets


def activation_order(data: pd.DataFrame) -> list[str]:
    return list(frames.sort_runs(data[["activation"]].drop_duplicates(), ["activation"])["activation"])


def depth_accuracy_plot(table: pd.DataFrame, histories: pd.DataFrame, histograms: dict, folder: Path) -> Figure:
    runs = depth_runs(table)
    values = metric(histories, "epoch_test_accuracy")
    if values.empty:
        raise Skip("no run logged epoch_test_accuracy (train with --test-every-epoch true)")
    data = with_config(values, runs, ["activation", "depth", "init"])
    if data.empty:
        raise Skip("the depth-study runs did not log epoch_test_accuracy")
    data["depth"] = data["depth"].astype(int)
    grid = sns.relplot(data, x="step", y="value", kind="line",
                       errorbar="sd", marker="o", markersize=3, height=2.8, aspect=1.2,
                       facet_kws={"margin_titles": True}, **depth_facets(data))
    caption = ("Test accuracy after every epoch; columns: depth (hidden layers), rows: activation, colour: "
               f"initialisation; each configuration at its best learning rate.{seed_note(table)}")
    return finish(grid, folder, "depth_test_accuracy.png", "Depth study: test accuracy per epoch", caption,
                  ("epoch", "test accuracy"), **DEPTH_TITLES)


def depth_gradient_plot(table: pd.DataFrame, histories: pd.DataFrame, histograms: dict, folder: Path) -> Figure:
    runs = depth_runs(table)
    values = frames.layer_values(histories, "probe_grad_max_abs")
    values = values[values["run_id"].isin(runs["run_id"])]
    if values.empty:
        raise Skip("the depth-study runs did not log probe_grad_max_abs (gradient statistics off?)")
    last = frames.last_step_values(values[values["step"] > 0]).assign(when="trained (last epoch)")
    data = pd.concat([values[values["step"] == 0].assign(when="at initialisation"), last], ignore_index=True)
    data = with_config(data[data["value"] > 0], runs, ["activation", "depth", "init"])
    data["depth"] = data["depth"].astype(int)
    grid = sns.relplot(data, x="layer", y="value", style="when",
                       style_order=["at initialisation", "trained (last epoch)"], kind="line", errorbar="sd",
                       height=2.8, aspect=1.25, facet_kws={"margin_titles": True, "sharex": False},
                       **depth_facets(data))
    grid.set(yscale="log")
    caption = ("Max |gradient| of each Linear layer's weights on one fixed training minibatch, at initialisation "
               "(solid) and after the last epoch (dashed), log scale; columns: depth, rows: activation, colour: "
               f"initialisation. A slope down towards layer 1 is a vanishing gradient.{seed_note(table)}")
    title = "Depth study: largest weight gradient per layer on a fixed minibatch"
    labels = ("layer (1 = input side)", "max |weight gradient|")
    return finish(grid, folder, "depth_max_gradient.png", title, caption, labels, **DEPTH_TITLES)


def lecun_tanh_plot(table: pd.DataFrame, histories: pd.DataFrame, histograms: dict, folder: Path) -> Figure:
    pair = table[table["activation"].isin(["tanh", "lecun_tanh"])]
    if pair["activation"].nunique() < 2:
        raise Skip("needs runs with both tanh and lecun_tanh")
    runs = tuned_runs(pair)
    tested = metric(histories, "epoch_test_accuracy")["run_id"].isin(runs["run_id"]).any()
    key = "epoch_test_accuracy" if tested else "val_accuracy"
    names = group_names(runs, exclude=("activation",))
    data = with_config(metric(histories, key), runs.assign(group=names), ["activation", "group"])
    order = list(dict.fromkeys(names))
    grid = sns.relplot(data, x="step", y="value", hue="activation", hue_order=["tanh", "lecun_tanh"], col="group",
                       col_order=order, col_wrap=min(WRAP, len(order)), kind="line", errorbar="sd", marker="o",
                       markersize=3, height=2.6, aspect=1.3)
    caption = (f"{key} per epoch for tanh and LeCun's scaled tanh, each configuration at its best learning rate."
               f"{seed_note(table)}")
    return finish(grid, folder, "lecun_tanh_vs_tanh.png", "LeCun's tanh (1.7159·tanh(2x/3)) vs tanh", caption,
                  ("epoch", key.replace("_", " ")), template="{col_name}")
