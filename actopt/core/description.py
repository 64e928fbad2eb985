"""A training run's description in markdown: what was trained, how it went, and what the rules found.

Short enough to read in ten seconds on the run page: the configuration in one line, the best epoch
with its validation and test accuracy, then each diagnosis that holds with its evidence, or that the
rules found no problem.
"""

from __future__ import annotations

from collections.abc import Mapping

from actopt.core.config import TrainConfig
from actopt.core.diagnosis import RULES, TITLES, Check
from actopt.core.training import TrainResult

# The rules' home, named in every description so that a reader can look up a threshold.
RULES_SOURCE = "actopt/core/diagnosis.py"


def config_line(config: TrainConfig) -> str:
    """``**relu · adam · lr 0.001** · hidden 256,128 · batch 128 · 10 epochs · seed 0 · fashion-mnist``."""
    sizes = ",".join(str(size) for size in config.layer_sizes) or "none"
    extras = [f"init {config.init}" if config.init != "default" else "",
              f"dropout {config.dropout:g}" if config.dropout else "",
              f"momentum {config.momentum:g}" if config.momentum else "",
              f"weight decay {config.weight_decay:g}" if config.weight_decay else ""]
    parts = [f"**{config.activation} · {config.optimizer} · lr {config.learning_rate:g}**", f"hidden {sizes}",
             *filter(None, extras), f"batch {config.batch_size}", f"{config.epochs} epochs", f"seed {config.seed}",
             config.dataset]
    return " · ".join(parts)


def outcome_line(config: TrainConfig, result: TrainResult) -> str:
    diverged = f"Diverged in epoch {result.diverged_epoch}. " if result.diverged else ""
    if result.best_epoch is None:
        return diverged + "No epoch ended with a finite loss, so there is no best epoch."
    return (f"{diverged}Best epoch {result.best_epoch} of {config.epochs}: validation accuracy "
            f"{result.best_val_accuracy:.4f}, test accuracy {result.test_accuracy:.4f} (on that epoch's weights).")


def diagnosis_lines(checks: Mapping[str, Check], gradient_statistics: bool) -> list[str]:
    holding = [checks[rule] for rule in RULES if checks[rule].holds]
    note = "" if gradient_statistics else " Gradient statistics were off: only divergence and overfitting were checked."
    if not holding:
        return [f"**Diagnosis:** no problem found by the rules ({RULES_SOURCE}).{note}"]
    lines = [f"**Diagnosis** (rules and thresholds: {RULES_SOURCE}):", ""]
    lines += [f"- **{TITLES[check.rule]}**: {check.evidence}" for check in holding]
    return lines + ([note.strip()] if note else [])


def run_description(config: TrainConfig, result: TrainResult, checks: Mapping[str, Check]) -> str:
    lines = [config_line(config), "", outcome_line(config, result), "",
             *diagnosis_lines(checks, config.gradient_statistics)]
    return "\n".join(lines) + "\n"
