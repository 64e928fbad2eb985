"""The depth study against mean-field theory: what each run measured at initialisation beside what
``propagation`` predicts for its activation, initialisation and input, per layer and per configuration, and the
rules that compare them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from actopt.analysis import propagation
from actopt.analysis.frames import Finding, layer_values, listed, metric, references, sort_runs, varying
from actopt.analysis.propagation import TRAINABLE_DEPTH_SCALES
from actopt.analysis.tables import CHANCE_MARGIN
from actopt.core.metric_names import (
    BEST_VAL_ACCURACY,
    PROBE_EXAMPLE_GRAD_NORM,
    PROBE_GRAD_NORM,
    PROBE_INPUT_MOMENT,
    PROBE_PREACTIVATION_MOMENT,
)
from actopt.core.models import CLASSES, INPUT_SIZE

# Agreement is judged on the norms themselves, in decades (log10), relative to the last hidden layer:
# the root mean square over the other hidden layers of measured − predicted within 0.25 decades (a
# factor 1.8), and the span (last hidden layer to layer 1) within 0.5 decades. A slope per layer
# judged relatively has no meaning for flat profiles, and its absolute fallback passed them whatever.
RMS_TOLERANCE = 0.25
SPAN_TOLERANCE = 0.5
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
    if metric(histories, PROBE_INPUT_MOMENT).empty or layer_values(histories, PROBE_GRAD_NORM).empty:
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
    moments = metric(histories, PROBE_INPUT_MOMENT)
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


def layer_comparison(predicted: dict[str, propagation.Prediction], histories: pd.DataFrame) -> pd.DataFrame:
    """Per run and hidden layer at step 0: measured and predicted log10 gradient norm and q.

    ``measured_log10`` is the absolute log10 of the minibatch gradient's norm (probe_grad_norm);
    ``measured_relative`` and ``predicted_relative`` are relative to the run's last hidden layer, and
    ``predicted_log10`` is the prediction anchored there (the theory fixes the profile, not the
    scale the loss sets). ``example_relative`` is the same for the RMS of each example's own
    gradient norm (probe_example_grad_norm, NaN for runs that did not log it). ``predicted``: ``predictions``.
    """
    norms = layer_values(histories, PROBE_GRAD_NORM)
    examples = layer_values(histories, PROBE_EXAMPLE_GRAD_NORM)
    moments = layer_values(histories, PROBE_PREACTIVATION_MOMENT)
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


def rms_decades(measured: np.ndarray, predicted: np.ndarray) -> float:
    """Root mean square of measured − predicted log10 norms over every hidden layer but the last (the anchor)."""
    difference = (np.asarray(measured, dtype=float) - np.asarray(predicted, dtype=float))[:-1]
    return float(np.sqrt(np.mean(difference**2))) if len(difference) else 0.0


def run_comparison(table: pd.DataFrame, layers: pd.DataFrame, predicted: dict[str, propagation.Prediction]
                   ) -> pd.DataFrame:
    """Per run: measured and predicted decay and span, the RMS and span errors in decades, and whether it learned
    (``layers``: ``layer_comparison``; ``predicted``: ``predictions``)."""
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
        example_known = bool(np.isfinite(example).all())
        rows.append({
            **{name: row[name] for name in ["run_id", "run_name", "seed", *CONFIG_COLUMNS]},
            "width": hidden_widths(row)[0],
            "measured_decay": propagation.layer_decay(measured["measured_relative"].to_numpy()),
            "example_decay": propagation.layer_decay(example) if example_known else math.nan,
            "predicted_decay": prediction.decay, "measured_span": -float(measured["measured_relative"].iloc[0]),
            "predicted_span": prediction.span,
            "rms_error": rms_decades(measured["measured_relative"], measured["predicted_relative"]),
            "example_rms_error": rms_decades(example, measured["predicted_relative"]) if example_known else math.nan,
            "missed_layers": tuple(int(layer) for layer in misses["layer"]),
            "max_batches": row.get("max_batches", 0), "epochs": row.get("epochs", math.nan),
            BEST_VAL_ACCURACY: row[BEST_VAL_ACCURACY], "chance": row["chance"], "learned": bool(row["learned"]),
        })
    return pd.DataFrame(rows)


def norms_agree(rms_error: float, span_error: float) -> bool:
    return rms_error <= RMS_TOLERANCE and abs(span_error) <= SPAN_TOLERANCE


def is_smoke_test(group: pd.DataFrame) -> bool:
    """A single seed, or --quick's few batches (max_batches > 0): too little to call a net (un)trainable."""
    batches = pd.to_numeric(group["max_batches"], errors="coerce").fillna(0)
    return len(group) < 2 or bool((batches > 0).any())


def config_comparison(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per activation × init × depth: means over seeds, agreement, and predicted vs observed trainability.

    The trainable depth is Schoenholz et al.'s 6 ξ_c at the fixed point of the configuration's hidden
    layers (``propagation.init_fixed_point``): one number per activation × init × width, whatever the
    depth of the net. ``trained``: most of the configuration's runs learned (``tables.run_table``'s
    ``learned``: best validation accuracy more than CHANCE_MARGIN above the split's majority-class rate).
    ``runs``: ``run_comparison``.
    """
    if runs.empty:
        return runs
    rows = []
    for key, group in sort_runs(runs, CONFIG_COLUMNS).groupby(CONFIG_COLUMNS, sort=False):
        fixed = propagation.init_fixed_point(key[0], key[1], int(group["width"].iloc[0]))
        rms_error = float(group["rms_error"].mean())
        span_error = float((group["measured_span"] - group["predicted_span"]).mean())
        missed = sorted({layer for layers in group["missed_layers"] for layer in layers})
        rows.append({
            **dict(zip(CONFIG_COLUMNS, key)), "width": int(group["width"].iloc[0]), "seeds": len(group),
            "measured_decay": group["measured_decay"].mean(), "example_decay": group["example_decay"].mean(),
            "predicted_decay": group["predicted_decay"].mean(), "measured_span": group["measured_span"].mean(),
            "predicted_span": group["predicted_span"].mean(), "rms_error": rms_error, "span_error": span_error,
            "example_rms_error": group["example_rms_error"].mean(),
            "agrees": norms_agree(rms_error, span_error), "missed_layers": tuple(missed),
            "q_star": fixed.q_star, "chi_star": fixed.chi_star, "chi_c": fixed.chi_c,
            "gradient_scale": fixed.gradient_scale, "correlation_scale": fixed.correlation_scale,
            "trainable_depth": fixed.trainable_depth(),
            "predicted_trainable": bool(key[2] <= fixed.trainable_depth()),
            "smoke": is_smoke_test(group),
            BEST_VAL_ACCURACY: group[BEST_VAL_ACCURACY].mean(), "chance": group["chance"].mean(),
            "trained": bool(group["learned"].mean() > 0.5),
            "runs": references(table[table["run_id"].isin(group["run_id"])]),
        })
    return pd.DataFrame(rows)


def config_label(row: pd.Series) -> str:
    return f"{row['activation']} · init {row['init']} · depth {int(row['depth'])}"


def reach(layers: float) -> str:
    if math.isnan(layers):
        return "an undefined depth (ξ_c has no value here)"
    return "any depth" if math.isinf(layers) else f"≈ {layers:.1f} layers"


def profile_numbers(row: pd.Series) -> str:
    return (f"RMS error {row['rms_error']:.3f} decades, span measured {row['measured_span']:.2f}, predicted "
            f"{row['predicted_span']:.2f} decades; decay measured {row['measured_decay']:.3f}, predicted "
            f"{row['predicted_decay']:.3f} decades/layer ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})")


SMOKE = "Smoke test only ({reason}): "


def smoke_prefix(row: pd.Series) -> str:
    if not row["smoke"]:
        return ""
    reason = "one seed" if row["seeds"] < 2 else "a few batches of --quick"
    return SMOKE.format(reason=reason)


def fixed_point_numbers(row: pd.Series) -> str:
    return (f"q* = {row['q_star']:.4g}, χ* = {row['chi_star']:.4g}, χ_c = {row['chi_c']:.4g}, ξ_c = "
            f"{row['correlation_scale']:.3g} layers (width {row['width']}); best val accuracy "
            f"{row[BEST_VAL_ACCURACY]:.4f}, chance {row['chance']:.4f}")


@dataclass(frozen=True, eq=False)
class Theory:
    """The theory against the runs, computed once: why there is none (``reason``), or per layer
    (``layer_comparison``) and per configuration (``config_comparison``)."""

    reason: str = ""
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)
    configs: pd.DataFrame = field(default_factory=pd.DataFrame)


def derive_theory(table: pd.DataFrame, histories: pd.DataFrame) -> Theory:
    """Each run's prediction once, then the per-layer, per-run and per-configuration comparisons built on it."""
    reason = unavailable_reason(table, histories)
    if reason:
        return Theory(reason)
    predicted = predictions(table, histories)
    layers = layer_comparison(predicted, histories)
    return Theory("", layers, config_comparison(table, run_comparison(table, layers, predicted)))


def theory_findings(theory: Theory) -> list[Finding]:
    """Theory vs measurement per configuration, and predicted vs observed trainability; [] outside depth studies."""
    if theory.reason:
        return []
    configs = theory.configs
    if configs.empty:
        return []
    rule = (f"step-0 weight-gradient norms relative to the last hidden layer, log10, mean over seeds: RMS of "
            f"measured − predicted over the other hidden layers within {RMS_TOLERANCE:g} decades and span error within "
            f"{SPAN_TOLERANCE:g} decades; layers named where the two differ by more than {LAYER_TOLERANCE:g} decades")
    found = []
    agreeing = configs[configs["agrees"]]
    if len(agreeing):
        statement = (f"The mean-field prediction matches the measured gradient norms at initialisation in "
                     f"{len(agreeing)} of {len(configs)} configurations.")
        numbers = "; ".join(f"{config_label(row)}: RMS {row['rms_error']:.3f}, span error {row['span_error']:+.2f}"
                            for _, row in agreeing.iterrows())
        found.append(Finding(TOPIC, statement, rule, numbers))
    for _, row in configs[~configs["agrees"]].iterrows():
        layers = ", ".join(f"layer_{layer:02d}" for layer in row["missed_layers"]) or "none beyond the tolerance"
        statement = (f"{config_label(row)}: the prediction misses the measured norms by {row['rms_error']:.2f} decades "
                     f"RMS, span error {row['span_error']:+.2f} decades (layers off by more than "
                     f"{LAYER_TOLERANCE:g} decades: {layers}).")
        if pd.notna(row["example_rms_error"]) and row["example_rms_error"] <= RMS_TOLERANCE:
            statement += (f" Each example's own gradient follows the prediction "
                          f"({row['example_rms_error']:.3f} decades RMS): the gap is cancellation between the "
                          f"examples' gradients in the minibatch mean, which the single-input theory does not model.")
        found.append(Finding(TOPIC, statement, rule, profile_numbers(row), listed(row["runs"])))
    depth_rule = (f"predicted untrainable when depth > {TRAINABLE_DEPTH_SCALES:g} ξ_c, ξ_c = −1/ln χ_c the correlation "
                  f"depth scale at the fixed point of the hidden layers' q- and c-maps (Schoenholz et al. 2017's "
                  f"empirical bound for SGD/RMSProp training; this study trains with its own optimizer); a "
                  f"configuration trained when most of its runs learned (best validation accuracy more than "
                  f"{CHANCE_MARGIN * 100:g} points above chance); smoke test when one seed or --quick")
    verdicts = configs["predicted_trainable"] == configs["trained"]
    smoke = SMOKE.format(reason="one seed or a few batches of --quick") if configs["smoke"].any() else ""
    summary = (f"{smoke}The {TRAINABLE_DEPTH_SCALES:g} ξ_c bound agrees with whether the runs learned in "
               f"{int(verdicts.sum())} of {len(configs)} configurations.")
    numbers = "; ".join(f"{config_label(row)}: 6 ξ_c {reach(row['trainable_depth'])}, "
                        f"{'learned' if row['trained'] else 'did not learn'}" for _, row in configs.iterrows())
    found.append(Finding(DEPTH_TOPIC, summary, depth_rule, numbers))
    for _, row in configs[~verdicts].iterrows():
        predicted = "trainable" if row["predicted_trainable"] else "untrainable"
        outcome = "its runs learned" if row["trained"] else "its runs did not learn"
        statement = (f"{smoke_prefix(row)}{config_label(row)}: predicted {predicted} (6 ξ_c = "
                     f"{reach(row['trainable_depth'])}), yet {outcome}.")
        found.append(Finding(DEPTH_TOPIC, statement, depth_rule, fixed_point_numbers(row), listed(row["runs"])))
    return found
