"""The per-run rules: which training problems one run shows, decided from its per-epoch history alone.

One implementation for two readers: the end of every training run turns these checks into the run's
``diagnosis.*`` tags and description (``tracking.notes``), and the analysis report groups the same
checks into its findings (``analysis.findings``), so a run's tags and the report cannot disagree.

A history is what training logs and writes to ``history.csv``: ``{step: {metric key: value}}``, step 0
the probe at initialisation, step n the end of epoch n.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from actopt.core import metric_names
from actopt.core.metric_names import layer_name

History = Mapping[int, Mapping[str, float]]

# Vanishing gradients: in epoch 1 the first layer's weight-gradient norm is below 1% of the output
# layer's. Under SGD a layer's step is proportional to its gradient, so the first layer then moves
# two orders of magnitude more slowly than the last and barely learns in a study's few epochs.
VANISHING_RATIO = 0.01
# Exploding gradients, the mirror image: the first layer's norm above 100× the output layer's in
# epoch 1, or, in any epoch, a step whose global gradient norm is above 100× epoch 1's mean step (or
# not finite): one such step moves the weights 100 ordinary steps' worth, which is how SGD runs blow up.
EXPLODING_RATIO = 1 / VANISHING_RATIO
EXPLODING_GROWTH = 100.0
# Dead units (ReLU only, whose derivative is exactly 0 below zero): more than half of a hidden layer's
# units never active on the probe examples after the last epoch. Such a unit passes no gradient and
# cannot recover, so the layer lost half its width.
DEAD_FRACTION = 0.5
# Inactive units (leaky_relu, elu, gelu, selu, silu): more than half of a layer's units whose
# |derivative| stays below a tenth of its peak (gradstats.INACTIVE_LEVEL) on every probe example. They
# still pass some gradient and can recover, but learn at a tenth of the speed or less.
INACTIVE_FRACTION = 0.5
# Saturation: more than half of a layer's outputs within 2.5% of a bound (gradstats.SATURATION_MARGIN),
# where the derivative is below about a tenth of its peak: most of the layer passes back little gradient.
SATURATED_FRACTION = 0.5
# Overfitting: train accuracy above validation accuracy by more than 2 points at the last epoch.
GAP_THRESHOLD = 0.02

# Train accuracy measured on a fixed training subset in eval mode, when the run logged it; else the
# running accuracy of the epoch (with dropout active, which understates a dropout run's gap).
TRAIN_ACCURACY_KEYS = (metric_names.TRAIN_EVAL_ACCURACY, metric_names.TRAIN_ACCURACY)

# The rules in the order descriptions list them; each is a tag ``diagnosis.<rule>``.
RULES = ("divergence", "vanishing_gradients", "exploding_gradients", "dead_units", "inactive_units", "saturation",
         "overfitting")
TITLES = {
    "divergence": "Divergence",
    "vanishing_gradients": "Vanishing gradients",
    "exploding_gradients": "Exploding gradients",
    "dead_units": "Dead units",
    "inactive_units": "Inactive units",
    "saturation": "Saturation",
    "overfitting": "Overfitting",
}


@dataclass(frozen=True)
class Check:
    """One rule on one run: whether it holds, the number it compared (None: the run logged nothing the
    rule reads), the layer that number comes from, and the evidence in words."""

    rule: str
    holds: bool
    value: float | None = None
    layer: int | None = None
    evidence: str = ""

    @property
    def checked(self) -> bool:
        return self.value is not None


def layer_values(row: Mapping[str, float], prefix: str) -> dict[int, float]:
    """``{layer: value}`` of the ``prefix/layer_NN`` keys of one step."""
    found = {}
    for key, value in row.items():
        if key.startswith(prefix + "/layer_"):
            found[int(key.rsplit("_", 1)[-1])] = value
    return found


def last_step_with(history: History, prefix: str) -> int | None:
    steps = [step for step, row in history.items() if layer_values(row, prefix)]
    return max(steps) if steps else None


def first_to_output_ratio(history: History) -> tuple[float, int] | None:
    """Epoch 1's mean first-layer gradient norm over the output layer's, and the output layer's number; None
    without per-layer norms of two or more layers, or when both are 0 (every hidden unit dead: no ratio)."""
    norms = layer_values(history.get(1, {}), metric_names.GRAD_NORM)
    if 1 not in norms or max(norms) < 2:
        return None
    last = max(norms)
    if norms[last] == 0:
        return None if norms[1] == 0 else (math.inf, last)
    return norms[1] / norms[last], last


def vanishing_gradients(history: History) -> Check:
    found = first_to_output_ratio(history)
    if found is None:
        return Check("vanishing_gradients", False)
    ratio, last = found
    holds = ratio < VANISHING_RATIO
    evidence = (f"epoch 1: layer_01's gradient norm / output {layer_name(last)}'s = {ratio:.2g} "
                f"({'below' if holds else 'not below'} {VANISHING_RATIO:g})")
    return Check("vanishing_gradients", holds, ratio, 1, evidence)


def peak_growth(history: History) -> tuple[float, int, float, float] | None:
    """The largest step global gradient norm of any epoch over epoch 1's mean step norm (inf when a peak is
    not finite), its epoch, that peak and epoch 1's mean; None without global norms."""
    first = history.get(1, {}).get(metric_names.GRAD_GLOBAL_NORM)
    peak = metric_names.GRAD_GLOBAL_NORM_PEAK
    peaks = {step: row[peak] for step, row in history.items() if peak in row}
    if first is None or not peaks:
        return None
    usable = math.isfinite(first) and first > 0
    growth = {step: (peak / first if usable else math.nan) if math.isfinite(peak) else math.inf
              for step, peak in peaks.items()}
    growth = {step: value for step, value in growth.items() if not math.isnan(value)}
    if not growth:
        return None
    step = max(growth, key=lambda key: (growth[key], -key))
    return growth[step], step, peaks[step], first


def exploding_gradients(history: History) -> Check:
    ratio = first_to_output_ratio(history)
    if ratio is not None and ratio[0] > EXPLODING_RATIO:
        evidence = (f"epoch 1: layer_01's gradient norm / output {layer_name(ratio[1])}'s = {ratio[0]:.3g} "
                    f"(above {EXPLODING_RATIO:g})")
        return Check("exploding_gradients", True, ratio[0], 1, evidence)
    growth = peak_growth(history)
    if growth is None:
        if ratio is None:
            return Check("exploding_gradients", False)
        return Check("exploding_gradients", False, ratio[0], 1,
                     f"epoch 1: layer_01's gradient norm / output {layer_name(ratio[1])}'s = {ratio[0]:.3g} "
                     f"(not above {EXPLODING_RATIO:g})")
    value, step, peak, first = growth
    holds = value > EXPLODING_GROWTH
    size = "not finite" if not math.isfinite(peak) else f"{peak:.3g}, {value:.3g}× epoch 1's mean step norm {first:.3g}"
    evidence = (f"epoch {step}: the largest step's global gradient norm was {size} "
                f"({'above' if holds else 'not above'} {EXPLODING_GROWTH:g}×)")
    return Check("exploding_gradients", holds, value, None, evidence)


def unit_fraction(history: History, rule: str, prefix: str, threshold: float, what: str) -> Check:
    """The worst hidden layer's ``prefix`` fraction after the last epoch that measured it."""
    step = last_step_with(history, prefix)
    if step is None:
        return Check(rule, False)
    values = layer_values(history[step], prefix)
    layer = max(values, key=lambda key: (values[key], -key))
    value = values[layer]
    holds = value > threshold
    evidence = (f"{layer_name(layer)}: {value:.2f} of {what} after epoch {step} "
                f"({'above' if holds else 'not above'} {threshold:g})")
    return Check(rule, holds, value, layer, evidence)


def dead_units(history: History) -> Check:
    return unit_fraction(history, "dead_units", metric_names.DEAD_FRACTION, DEAD_FRACTION,
                         "units never active on the probe examples (zero gradient)")


def inactive_units(history: History) -> Check:
    return unit_fraction(history, "inactive_units", metric_names.INACTIVE_FRACTION, INACTIVE_FRACTION,
                         "units whose |f′| stayed below a tenth of its peak on every probe example")


def saturation(history: History) -> Check:
    return unit_fraction(history, "saturation", metric_names.SATURATED_FRACTION, SATURATED_FRACTION,
                         "outputs within 2.5% of a bound")


def divergence(diverged: bool, history: History) -> Check:
    """``diverged`` is training's verdict (the training loss became NaN or infinite); the history says when."""
    losses = {step: row[metric_names.TRAIN_LOSS] for step, row in history.items() if metric_names.TRAIN_LOSS in row}
    bad = [step for step, loss in losses.items() if not math.isfinite(loss)]
    if diverged:
        where = f"epoch {min(bad)}" if bad else "training"
        return Check("divergence", True, 1.0, None, f"the training loss became NaN or infinite in {where}")
    return Check("divergence", False, 0.0, None, "the training loss stayed finite")


def final_gap(history: History) -> tuple[float, int, str] | None:
    """Train − validation accuracy at the last epoch that has both, that epoch, and the train key used."""
    present = {key for row in history.values() for key in row}
    train_key = next((key for key in TRAIN_ACCURACY_KEYS if key in present), None)
    if train_key is None:
        return None
    steps = [step for step, row in history.items() if train_key in row and metric_names.VAL_ACCURACY in row]
    if not steps:
        return None
    step = max(steps)
    return history[step][train_key] - history[step][metric_names.VAL_ACCURACY], step, train_key


def overfitting(history: History) -> Check:
    found = final_gap(history)
    if found is None:
        return Check("overfitting", False)
    gap, step, train_key = found
    holds = gap > GAP_THRESHOLD
    evidence = (f"epoch {step}: {train_key} − val_accuracy = {100 * gap:.1f} points "
                f"({'above' if holds else 'not above'} {100 * GAP_THRESHOLD:g})")
    return Check("overfitting", holds, gap, None, evidence)


def diagnose(history: History, diverged: bool) -> dict[str, Check]:
    """Every rule on one run, keyed by rule name in ``RULES`` order."""
    checks = [
        divergence(diverged, history),
        vanishing_gradients(history),
        exploding_gradients(history),
        dead_units(history),
        inactive_units(history),
        saturation(history),
        overfitting(history),
    ]
    return {check.rule: check for check in checks}
