"""The report's signal-propagation section: its text and table cells (``report`` lays them out as markdown)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from actopt.analysis import depth_theory
from actopt.analysis.depth_theory import RMS_TOLERANCE, SPAN_TOLERANCE
from actopt.analysis.propagation import TRAINABLE_DEPTH_SCALES
from actopt.core.metric_names import BEST_VAL_ACCURACY

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
decades from the last hidden layer back to layer 1. The prediction agrees when the root mean square of
measured − predicted log10 norms (relative to the last hidden layer, over the other hidden layers) is
within {RMS_TOLERANCE:g} decades and the span within {SPAN_TOLERANCE:g} decades.

Trainable depth, from the fixed point of the hidden layers' maps (one number per activation × init ×
width, whatever the net's depth): q* where the q-map settles, χ* = σ_w²·E[φ′(√q* z)²], the gradient
depth scale ξ_∇ = −1/ln χ* (layers per e-fold of ‖δ‖²) and the correlation depth scale ξ_c = −1/ln χ_c,
χ_c = σ_w²·E[φ′(u₁)φ′(u₂)] at the correlation map's stable fixed point c* (c* = 1 and χ_c = χ* when
χ* < 1). Schoenholz et al. 2017 ("Deep Information Propagation") found fully connected nets trainable
with SGD and RMSProp up to about {TRAINABLE_DEPTH_SCALES:g} ξ_c layers: an empirical bound, tested here
against whether each configuration's runs learned (with this study's own optimizer)."""


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


def theory_section(theory: depth_theory.Theory) -> Section:
    if theory.reason:
        return Section(reason=f"Not computed: {theory.reason}.")
    configs = theory.configs
    if configs.empty:
        return Section(reason="Not computed: no run has a step-0 gradient profile that the theory covers.")
    header = ["activation", "init", "depth", "seeds", "RMS error (decades)", "span measured", "span predicted",
              "agrees", "per-example RMS", "decay measured", "decay predicted", "q*", "χ*", "ξ_c (layers)",
              "6 ξ_c", "best val acc", "learned", "bound"]
    rows = []
    for _, row in configs.iterrows():
        predicted = "yes" if row["predicted_trainable"] else "no"
        verdict = "agrees" if row["predicted_trainable"] == row["trained"] else "**disagrees**"
        rows.append([row["activation"], row["init"], str(int(row["depth"])), str(row["seeds"]),
                     decimal(row["rms_error"], 3), decimal(row["measured_span"], 2), decimal(row["predicted_span"], 2),
                     "yes" if row["agrees"] else "**no**", decimal(row["example_rms_error"], 3),
                     decimal(row["measured_decay"], 3), decimal(row["predicted_decay"], 3),
                     f"{row['q_star']:.3g}", f"{row['chi_star']:.3g}", decimal(row["correlation_scale"], 2),
                     decimal(row["trainable_depth"], 1) + f" ({predicted})",
                     decimal(row[BEST_VAL_ACCURACY], 4),
                     ("yes" if row["trained"] else "no") + f" (chance {row['chance']:.2f})",
                     verdict + (" (smoke test)" if row["smoke"] else "")])
    text = INTRODUCTION
    if configs["smoke"].any():
        text += ("\n\n**Smoke test**: these runs are a single seed or --quick's few batches, so the \"learned\" "
                 "column and every verdict of the bound only show that the pipeline runs; they say nothing about "
                 "trainability.")
    return Section(text=text, header=header, rows=rows)
