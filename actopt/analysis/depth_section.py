"""The report's signal-propagation section: its text and table cells (``report`` lays them out as markdown)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from actopt.analysis import depth_theory
from actopt.analysis.depth_theory import DECAY_TOLERANCE, FLAT_DECAY
from actopt.analysis.propagation import TRAINABLE_DEPTH_SCALES

TITLE = "## Signal propagation at initialisation: theory against measurement"

INTRODUCTION = f"""Mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) predicts, from the activation φ
and the variances each initialisation draws (σ_w²/fan_in for weights, σ_b² for biases — nn.Linear's
default U(±1/√fan_in) gives σ_w² = 1/3 and σ_b² = 1/(3·fan_in)), the second moment q^l of every hidden
layer's pre-activations, q^l = σ_w²·E[φ(√q^(l−1) z)²] + σ_b², starting from the input's measured
mean square, and the factor χ^l = σ_w²·E[φ′(√q^l z)²] by which the squared error signal shrinks per
layer (quadrature against the normal density, `actopt/analysis/propagation.py`). A layer's weight gradient has norm
‖δ^l‖·‖a^(l−1)‖, so its log10 relative to the last hidden layer is ½·log10(Π χ · ‖a^(l−1)‖²/‖a^(L−1)‖²).
Measured: `probe_grad_norm/layer_NN` (the minibatch gradient's norm) and
`probe_preactivation_moment/layer_NN` at step 0, on the fixed probe minibatch, before any training;
"per-example decay" uses `probe_example_grad_norm/layer_NN` (the RMS of each example's own gradient
norm), the quantity the single-input theory describes exactly — where the two measured decays differ,
the examples' gradients cancel in the minibatch mean. Decay = decades lost per layer towards the input (least-squares
slope of log10 ‖∇W‖ over hidden layers 2..L; layer 1 is left out, its input is the image); span =
decades from the last hidden layer back to layer 1; ξ = layers per e-fold of the predicted gradient
norm. The prediction agrees when within {DECAY_TOLERANCE:.0%} of the measured decay, or when both are
within {FLAT_DECAY:g} decades/layer of 0. Predicted trainable: depth ≤ {TRAINABLE_DEPTH_SCALES:g}ξ."""


@dataclass
class Section:
    """A section as text and one table; ``reason`` alone when the runs cannot support it."""

    title: str = TITLE
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    reason: str = ""


def decimal(value: float, digits: int) -> str:
    if pd.isna(value):
        return "–"
    return "∞" if math.isinf(value) else f"{value:.{digits}f}"


def theory_section(table: pd.DataFrame, histories: pd.DataFrame) -> Section:
    reason = depth_theory.unavailable_reason(table, histories)
    if reason:
        return Section(reason=f"Not computed: {reason}.")
    configs = depth_theory.config_comparison(table, histories)
    if configs.empty:
        return Section(reason="Not computed: no run has a step-0 gradient profile that the theory covers.")
    header = ["activation", "init", "depth", "seeds", "decay measured", "decay predicted", "error", "agrees",
              "per-example decay",
              "span measured", "span predicted", "ξ (layers)", "trainable to", "best val acc", "learned"]
    rows = []
    for _, row in configs.iterrows():
        predicted = "yes" if row["predicted_trainable"] else "no"
        rows.append([row["activation"], row["init"], str(int(row["depth"])), str(row["seeds"]),
                     decimal(row["measured_decay"], 3), decimal(row["predicted_decay"], 3),
                     "–" if pd.isna(row["relative_error"]) else f"{row['relative_error']:.0%}",
                     "yes" if row["agrees"] else "**no**", decimal(row["example_decay"], 3),
                     decimal(row["measured_span"], 2),
                     decimal(row["predicted_span"], 2), decimal(row["depth_scale"], 1),
                     decimal(row["trainable_depth"], 0) + f" ({predicted})",
                     decimal(row["best_val_accuracy"], 4),
                     ("yes" if row["trained"] else "no") + f" (chance {row['chance']:.2f})"])
    return Section(text=INTRODUCTION, header=header, rows=rows)
