"""The depth study against mean-field theory: what each run measured at initialisation beside what
``propagation`` predicts for its activation, initialisation and input, per layer and per configuration, and the
rules that compare them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from actopt.analysis import propagation
from actopt.analysis.findings import Finding
from actopt.analysis.frames import layer_values, listed, metric, references, sort_runs, varying
from actopt.analysis.propagation import TRAINABLE_DEPTH_SCALES
from actopt.analysis.tables import CHANCE_MARGIN
from actopt.core.models import CLASSES, INPUT_SIZE

# Agreement of the per-layer decay (decades per layer): within 20% of the measured value, or both
# within 0.02 decades per layer of zero (a flat profile, where a relative error means nothing).
DECAY_TOLERANCE = 0.2
FLAT_DECAY = 0.02
# A layer disagrees when its measured log10 gradient norm (relative to the last hidden layer) is more
# than half a decade (a factor ≈ 3) from the predicted one; smaller gaps are finite-width noise.
LAYER_TOLERANCE = 0.5

TOPIC = "Signal propagation at initialisation"
DEPTH_TOPIC = "Trainable depth predicted by the theory"
CONFIG_COLUMNS = ["activation", "init", "depth"]


def unavailable_reason(table: pd.DataFrame, histories: pd.DataFrame) -> str:
    """Why this study gets no theory comparison, or "" when it does."""
    if "depth" not in table or not varying(table[table["depth"].fillna(0) > 0], ["depth"]):
        return "the runs do not vary depth (the comparison belongs to depth studies such as mnist-depth)"
    if metric(histories, "probe_input_moment").empty or layer_values(histories, "probe_grad_norm").empty:
        return ("the runs did not log probe_grad_norm and probe_input_moment at step 0 (logged with "
                "--gradient-statistics true since the signal-propagation comparison was added)")
    return ""


def hidden_widths(row: pd.Series) -> tuple[int, ...]:
    if pd.notna(row.get("depth")) and row["depth"] > 0:
        return (int(row["width"]),) * int(row["depth"])
    sizes = row["hidden_sizes"]
    return tuple(int(part) for part in str(sizes).strip("()").replace(" ", "").split(",") if part) if isinstance(
        sizes, str) else tuple(int(width) for width in sizes)


def predictions(table: pd.DataFrame, histories: pd.DataFrame) -> dict[str, propagation.Prediction]:
    """Each run's prediction from its own step-0 input moment (runs without one, or without a theory, are absent)."""
    moments = metric(histories, "probe_input_moment")
    moments = moments[moments["step"] == 0].set_index("run_id")["value"]
    found = {}
    for _, row in table.iterrows():
        if row["run_id"] not in moments.index or row["activation"] not in propagation.ACTIVATION_FUNCTIONS:
            continue
        sizes = (INPUT_SIZE, *hidden_widths(row), CLASSES)
        found[row["run_id"]] = propagation.predict_config(row["activation"], row["init"], sizes,
                                                          float(moments[row["run_id"]]))
    return found


def profile(values: pd.DataFrame, run_id: str, hidden: int) -> np.ndarray:
    """One run's step-0 values of hidden layers 1..hidden (NaN where not logged)."""
    chosen = values[(values["run_id"] == run_id) & (values["step"] == 0)].set_index("layer")["value"]
    return chosen.reindex(range(1, hidden + 1)).to_numpy(dtype=float)


def log10_relative(norms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log10 of norms, and the same relative to the last hidden layer."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(norms)
    return logs, logs - logs[-1]


def layer_comparison(table: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """Per run and hidden layer at step 0: measured and predicted log10 gradient norm and q.

    ``measured_log10`` is the absolute log10 of the minibatch gradient's norm (probe_grad_norm);
    ``measured_relative`` and ``predicted_relative`` are relative to the run's last hidden layer, and
    ``predicted_log10`` is the prediction anchored there (the theory fixes the profile, not the
    scale the loss sets). ``example_relative`` is the same for the RMS of each example's own
    gradient norm (probe_example_grad_norm, NaN for runs that did not log it).
    """
    predicted = predictions(table, histories)
    norms = layer_values(histories, "probe_grad_norm")
    examples = layer_values(histories, "probe_example_grad_norm")
    moments = layer_values(histories, "probe_preactivation_moment")
    frames = []
    for run_id, prediction in predicted.items():
        hidden = len(prediction.q)
        measured, relative = log10_relative(profile(norms, run_id, hidden))
        frames.append(pd.DataFrame({
            "run_id": run_id, "layer": np.arange(1, hidden + 1), "measured_log10": measured,
            "measured_relative": relative, "predicted_relative": prediction.log10_gradient,
            "predicted_log10": prediction.log10_gradient + measured[-1],
            "example_relative": log10_relative(profile(examples, run_id, hidden))[1],
            "measured_q": profile(moments, run_id, hidden), "predicted_q": prediction.q,
        }))
    columns = ["run_id", "layer", "measured_log10", "measured_relative", "predicted_relative", "predicted_log10",
               "example_relative", "measured_q", "predicted_q"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def run_comparison(table: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """Per run: measured and predicted decay (decades per layer) and span, the depth scale, and whether it trained."""
    layers = layer_comparison(table, histories)
    predicted = predictions(table, histories)
    rows = []
    for _, row in table.iterrows():
        if row["run_id"] not in predicted:
            continue
        prediction = predicted[row["run_id"]]
        measured = layers[layers["run_id"] == row["run_id"]].sort_values("layer")
        if not np.isfinite(measured["measured_relative"]).all():
            continue
        misses = measured[(measured["measured_relative"] - measured["predicted_relative"]).abs() > LAYER_TOLERANCE]
        example = measured["example_relative"].to_numpy()
        rows.append({
            **{name: row[name] for name in ["run_id", "run_name", "seed", *CONFIG_COLUMNS]},
            "measured_decay": propagation.layer_decay(measured["measured_relative"].to_numpy()),
            "example_decay": propagation.layer_decay(example) if np.isfinite(example).all() else math.nan,
            "predicted_decay": prediction.decay, "measured_span": -float(measured["measured_relative"].iloc[0]),
            "predicted_span": prediction.span, "depth_scale": prediction.depth_scale,
            "trainable_depth": prediction.trainable_depth(),
            "missed_layers": tuple(int(layer) for layer in misses["layer"]),
            "best_val_accuracy": row["best_val_accuracy"], "chance": row["chance"], "learned": bool(row["learned"]),
        })
    return pd.DataFrame(rows)


def decay_agrees(measured: float, predicted: float) -> bool:
    if abs(measured) <= FLAT_DECAY and abs(predicted) <= FLAT_DECAY:
        return True
    return abs(predicted - measured) <= DECAY_TOLERANCE * abs(measured)


def config_comparison(table: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """Per activation × init × depth: means over seeds, agreement, and predicted vs observed trainability.

    ``trained``: most of the configuration's runs learned (``tables.run_table``'s ``learned``: best
    validation accuracy more than CHANCE_MARGIN above the validation split's majority-class rate).
    """
    runs = run_comparison(table, histories)
    if runs.empty:
        return runs
    rows = []
    for key, group in sort_runs(runs, CONFIG_COLUMNS).groupby(CONFIG_COLUMNS, sort=False):
        measured, predicted = group["measured_decay"].mean(), group["predicted_decay"].mean()
        depth_scale = float(group["depth_scale"].mean())
        accuracy = group["best_val_accuracy"].mean()
        missed = sorted({layer for layers in group["missed_layers"] for layer in layers})
        rows.append({
            **dict(zip(CONFIG_COLUMNS, key)), "seeds": len(group), "measured_decay": measured,
            "example_decay": group["example_decay"].mean(),
            "predicted_decay": predicted, "measured_span": group["measured_span"].mean(),
            "predicted_span": group["predicted_span"].mean(), "depth_scale": depth_scale,
            "trainable_depth": TRAINABLE_DEPTH_SCALES * depth_scale,
            "relative_error": abs(predicted - measured) / abs(measured) if measured else math.nan,
            "agrees": decay_agrees(measured, predicted), "missed_layers": tuple(missed),
            "predicted_trainable": key[2] <= TRAINABLE_DEPTH_SCALES * depth_scale,
            "best_val_accuracy": accuracy, "chance": group["chance"].mean(),
            "trained": bool(group["learned"].mean() > 0.5),
            "runs": references(table[table["run_id"].isin(group["run_id"])]),
        })
    return pd.DataFrame(rows)


def config_label(row: pd.Series) -> str:
    return f"{row['activation']} · init {row['init']} · depth {int(row['depth'])}"


def reach(layers: float) -> str:
    return "any depth" if math.isinf(layers) else f"≈ {layers:.0f} layers"


def decay_numbers(row: pd.Series) -> str:
    return (f"decay measured {row['measured_decay']:.3f}, predicted {row['predicted_decay']:.3f} decades/layer; span "
            f"measured {row['measured_span']:.2f}, predicted {row['predicted_span']:.2f} decades ({row['seeds']} "
            f"seed{'s' if row['seeds'] > 1 else ''})")


def theory_findings(table: pd.DataFrame, histories: pd.DataFrame) -> list[Finding]:
    """Theory vs measurement per configuration, and predicted vs observed trainability; [] outside depth studies."""
    if unavailable_reason(table, histories):
        return []
    configs = config_comparison(table, histories)
    if configs.empty:
        return []
    rule = (f"per-layer decay of the step-0 weight-gradient norm (least-squares slope of log10 ‖∇W‖ over hidden layers "
            f"2..L, mean over seeds) within {DECAY_TOLERANCE:.0%} of the measured one, or both within {FLAT_DECAY:g} "
            f"decades/layer of 0; layers named where measured and predicted log10 norms (relative to the last hidden "
            f"layer) differ by more than {LAYER_TOLERANCE:g} decades")
    found = []
    agreeing = configs[configs["agrees"]]
    if len(agreeing):
        statement = (f"The mean-field prediction matches the measured gradient decay at initialisation in "
                     f"{len(agreeing)} of {len(configs)} configurations.")
        numbers = "; ".join(f"{config_label(row)}: {row['measured_decay']:.3f} vs {row['predicted_decay']:.3f}"
                            for _, row in agreeing.iterrows())
        found.append(Finding(TOPIC, statement, rule, numbers))
    for _, row in configs[~configs["agrees"]].iterrows():
        layers = ", ".join(f"layer_{layer:02d}" for layer in row["missed_layers"]) or "none beyond the tolerance"
        statement = (f"{config_label(row)}: the prediction misses the measured decay by "
                     f"{row['relative_error']:.0%} (layers off by more than {LAYER_TOLERANCE:g} decades: {layers}).")
        if pd.notna(row["example_decay"]) and decay_agrees(row["example_decay"], row["predicted_decay"]):
            statement += (f" Each example's own gradient decays as predicted ({row['example_decay']:.3f} decades per "
                          f"layer): the gap is cancellation between the examples' gradients in the minibatch mean, "
                          f"which the single-input theory does not model.")
        found.append(Finding(TOPIC, statement, rule, decay_numbers(row), listed(row["runs"])))
    depth_rule = (f"predicted untrainable when depth > {TRAINABLE_DEPTH_SCALES:g} × the depth scale ξ (layers per "
                  f"e-fold of the predicted gradient norm); a configuration trained when most of its runs learned "
                  f"(best validation accuracy more than {CHANCE_MARGIN * 100:g} points above chance)")
    for _, row in configs[~configs["predicted_trainable"]].iterrows():
        outcome = ("and its runs did not train: the theory agrees" if not row["trained"] else
                   "yet its runs trained: the theory's bound is too strict here")
        statement = (f"{config_label(row)}: predicted untrainable (ξ = {row['depth_scale']:.2g} layers, trainable to "
                     f"{reach(row['trainable_depth'])}) {outcome}.")
        numbers = f"best val accuracy {row['best_val_accuracy']:.4f}, chance {row['chance']:.4f}"
        found.append(Finding(DEPTH_TOPIC, statement, depth_rule, numbers, listed(row["runs"])))
    surprising = configs[configs["predicted_trainable"] & ~configs["trained"]]
    for _, row in surprising.iterrows():
        statement = (f"{config_label(row)}: predicted trainable (to {reach(row['trainable_depth'])}) but its runs did "
                     f"not learn: something other than the gradient's decay at initialisation holds it back (or "
                     f"training was too short).")
        numbers = f"best val accuracy {row['best_val_accuracy']:.4f}, chance {row['chance']:.4f}"
        found.append(Finding(DEPTH_TOPIC, statement, depth_rule, numbers, listed(row["runs"])))
    if configs["predicted_trainable"].all() and surprising.empty:
        found.append(Finding(DEPTH_TOPIC, "The theory predicts every configuration trainable and every one trained.",
                             depth_rule, kind="absent"))
    return found
