"""Every metric name a run (and the analysis run) logs, with what it means: the one place a name is spelt.

A name typed as a literal in several modules turns a typo into a missing finding rather than an error; a constant
from here turns it into a NameError. ``MEANINGS`` maps each name to its meaning; a per-layer family is one entry,
written ``family/layer_NN``, and ``per_layer(family, layer)`` spells a member. ``docs/metrics.md`` documents exactly
these names (``tests/test_metric_names.py`` holds the two in step), and ``tests/test_architecture.py`` checks that
no module of ``actopt/analysis`` types one of them as a string literal.
"""

from __future__ import annotations

# --- per epoch (MLflow step = epoch) ---------------------------------------------------------------------------
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
TRAIN_EVAL_LOSS = "train_eval_loss"
TRAIN_EVAL_ACCURACY = "train_eval_accuracy"
# Also the name of the config field and MLflow param: the analysis reads the param under this name.
LEARNING_RATE = "learning_rate"
EPOCH_TIME = "epoch_time"
GROUP_EPOCH_TIME = "group_epoch_time"
EPOCH_TEST_LOSS = "epoch_test_loss"
EPOCH_TEST_ACCURACY = "epoch_test_accuracy"
GRAD_GLOBAL_NORM = "grad_global_norm"
GRAD_GLOBAL_NORM_PEAK = "grad_global_norm_peak"
# Per-layer families (``family/layer_NN``).
GRAD_NORM = "grad_norm"
GRAD_MEAN_ABS = "grad_mean_abs"
GRAD_MAX_ABS = "grad_max_abs"
GRAD_MAX_ABS_PEAK = "grad_max_abs_peak"

# --- at initialisation (step 0) and after every epoch, on the fixed probe batches ----------------------------
PROBE_INPUT_MOMENT = "probe_input_moment"
PROBE_GRAD_MAX_ABS = "probe_grad_max_abs"
PROBE_GRAD_NORM = "probe_grad_norm"
PROBE_EXAMPLE_GRAD_NORM = "probe_example_grad_norm"
PROBE_PREACTIVATION_MOMENT = "probe_preactivation_moment"
DEAD_FRACTION = "dead_fraction"
INACTIVE_FRACTION = "inactive_fraction"
SATURATED_FRACTION = "saturated_fraction"

# --- once, at the end of a run (step 0) ------------------------------------------------------------------------
BEST_EPOCH = "best_epoch"
BEST_VAL_ACCURACY = "best_val_accuracy"
TEST_ACCURACY = "test_accuracy"
TEST_LOSS = "test_loss"
CHANCE_ACCURACY = "chance_accuracy"
TRAIN_SECONDS = "train_seconds"

# --- the analysis run ------------------------------------------------------------------------------------------
RUNS_ANALYZED = "runs_analyzed"
FINDINGS = "findings"

# How a per-layer name ends: layers are counted from 1 in forward order, zero-padded so the MLflow UI sorts them.
LAYER_PLACEHOLDER = "layer_NN"


def layer_name(layer: int) -> str:
    """``layer_01`` for the first Linear layer."""
    return f"layer_{layer:02d}"


def per_layer(family: str, layer: int) -> str:
    """A per-layer metric's name: ``per_layer(GRAD_NORM, 1) == "grad_norm/layer_01"``."""
    return f"{family}/{layer_name(layer)}"


def family_pattern(family: str) -> str:
    """How the registry and the docs write a whole family: ``grad_norm/layer_NN``."""
    return f"{family}/{LAYER_PLACEHOLDER}"


PER_EPOCH = {
    TRAIN_LOSS: "training loss over the epoch's batches",
    TRAIN_ACCURACY: "training accuracy over the epoch's batches",
    VAL_LOSS: "loss on the validation split after the epoch",
    VAL_ACCURACY: "accuracy on the validation split after the epoch",
    TRAIN_EVAL_LOSS: "loss in eval mode on a fixed training subset as large as the validation split",
    TRAIN_EVAL_ACCURACY: "accuracy in eval mode on that fixed training subset: the train side of the gap",
    LEARNING_RATE: "the rate the optimizer used",
    EPOCH_TIME: "seconds of training in the epoch (a group member's share of the group's epoch)",
    GROUP_EPOCH_TIME: "seconds of the whole group's epoch (members of a group of two or more)",
    EPOCH_TEST_LOSS: "test loss after the epoch (--test-every-epoch)",
    EPOCH_TEST_ACCURACY: "test accuracy after the epoch (--test-every-epoch)",
    GRAD_GLOBAL_NORM: "L2 norm over all parameters' gradients, mean over the epoch's steps",
    GRAD_GLOBAL_NORM_PEAK: "L2 norm over all parameters' gradients, largest of the epoch's steps",
}
PER_LAYER_PER_EPOCH = {
    GRAD_NORM: "weight-gradient L2 norm of a Linear layer, mean over the epoch's steps",
    GRAD_MEAN_ABS: "mean |g| of a layer's weight gradient, mean over steps",
    GRAD_MAX_ABS: "max |g| of a layer's weight gradient, mean over steps",
    GRAD_MAX_ABS_PEAK: "the largest |g| of any step in the epoch",
}
PROBE = {
    PROBE_INPUT_MOMENT: "mean of the squared input values of the fixed probe minibatch",
}
PER_LAYER_PROBE = {
    PROBE_GRAD_MAX_ABS: "max |g| per layer on the fixed probe minibatch",
    PROBE_GRAD_NORM: "L2 norm of a layer's weight gradient on the probe minibatch",
    PROBE_EXAMPLE_GRAD_NORM: "root mean square over the probe minibatch of each example's own gradient norm",
    PROBE_PREACTIVATION_MOMENT: "mean squared pre-activation of a hidden layer on the probe minibatch (q^l)",
    DEAD_FRACTION: "relu: share of a hidden layer's units with pre-activation ≤ 0 on every probe image",
    INACTIVE_FRACTION: "other rectifiers: share of units whose |f′| stays below a tenth of its peak",
    SATURATED_FRACTION: "bounded activations: share of outputs within 2.5% of the output range of a bound",
}
AT_THE_END = {
    BEST_EPOCH: "the epoch of the best validation accuracy",
    BEST_VAL_ACCURACY: "the best validation accuracy over the epochs",
    TEST_ACCURACY: "test accuracy on the best-validation weights",
    TEST_LOSS: "test loss on the best-validation weights",
    CHANCE_ACCURACY: "share of the validation split's most frequent class",
    TRAIN_SECONDS: "the run's own seconds of training: the sum of its epoch_time (a group member's share)",
}
ANALYSIS_RUN = {
    RUNS_ANALYZED: "the analysis run: how many training runs it analysed",
    FINDINGS: "the analysis run: how many findings and decisions hold",
}

PER_LAYER_FAMILIES = (*PER_LAYER_PER_EPOCH, *PER_LAYER_PROBE)
# Every name the code spells, each family as one name (``family_pattern``), with its meaning.
MEANINGS: dict[str, str] = {
    **PER_EPOCH,
    **{family_pattern(name): meaning for name, meaning in PER_LAYER_PER_EPOCH.items()},
    **PROBE,
    **{family_pattern(name): meaning for name, meaning in PER_LAYER_PROBE.items()},
    **AT_THE_END,
    **ANALYSIS_RUN,
}
# The names a module may spell: each plain name and each family's prefix.
NAMES = frozenset({*PER_EPOCH, *PER_LAYER_FAMILIES, *PROBE, *AT_THE_END, *ANALYSIS_RUN})
# Logged once at the end (step 0): run summaries, not part of a history.
SUMMARY_METRICS = (BEST_EPOCH, BEST_VAL_ACCURACY, TEST_ACCURACY, TEST_LOSS, CHANCE_ACCURACY, TRAIN_SECONDS)
