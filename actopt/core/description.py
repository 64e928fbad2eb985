"""A training run's description in markdown: what the rules found, what was trained, and how it went.

Short enough to read in ten seconds on the run page: the diagnoses that hold (or that the rules found
no problem) first, because the page folds a long description after a few lines; then the configuration
in one line, the best epoch with its validation and test accuracy, and each diagnosis's evidence.
"""

from __future__ import annotations

from collections.abc import Mapping

from actopt.core.config import TrainConfig
from actopt.core.diagnosis import RULES, TITLES, Check
from actopt.core.member import TrainResult

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


def headline(checks: Mapping[str, Check], gradient_statistics: bool) -> str:
    """The first line, which the run page shows before its "Show more": what the rules found."""
    holding = [TITLES[rule].lower() for rule in RULES if checks[rule].holds]
    note = "" if gradient_statistics else " Gradient statistics were off: only divergence and overfitting were checked."
    if not holding:
        return f"**Diagnosis: no problem found by the rules** ({RULES_SOURCE}).{note}"
    return f"**Diagnosis: {', '.join(holding)}** (rules and thresholds: {RULES_SOURCE}).{note}"


def evidence_lines(checks: Mapping[str, Check]) -> list[str]:
    return [f"- **{TITLES[rule]}**: {checks[rule].evidence}" for rule in RULES if checks[rule].holds]


def run_description(config: TrainConfig, result: TrainResult, checks: Mapping[str, Check]) -> str:
    evidence = evidence_lines(checks)
    lines = [headline(checks, config.gradient_statistics), "", config_line(config), "", outcome_line(config, result),
             *(["", *evidence] if evidence else [])]
    return "\n".join(lines) + "\n"
