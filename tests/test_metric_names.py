"""The metric-name registry against docs/metrics.md: every registry name documented, every documented name in it."""

from __future__ import annotations

import re
from pathlib import Path

from actopt.core import metric_names

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def documented(text: str) -> set[str]:
    """The backticked names in the first cell of every row of a ``| metric | meaning |`` table."""
    names: set[str] = set()
    in_table = False
    for line in text.splitlines():
        if line.startswith("| metric |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        if in_table and not line.startswith("| ---"):
            names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def test_the_docs_document_exactly_the_registry():
    names = documented(DOCS.read_text(encoding="utf-8"))
    assert set(metric_names.MEANINGS) - names == set(), "registry names missing from docs/metrics.md"
    assert names - set(metric_names.MEANINGS) == set(), "names in docs/metrics.md missing from the registry"


def test_the_check_sees_a_name_missing_from_either_side():
    text = DOCS.read_text(encoding="utf-8")
    assert "grad_norm/layer_NN" in documented(text)
    assert "val_accuracy" not in documented(text.replace("`val_loss`, `val_accuracy`", "`val_loss`"))
    extra = text.replace("`learning_rate`, `epoch_time`", "`learning_rate`, `epoch_tiem`")
    assert "epoch_tiem" in documented(extra) - set(metric_names.MEANINGS)


def test_every_meaning_is_said_and_names_are_spelt_one_way():
    assert all(meaning.strip() for meaning in metric_names.MEANINGS.values())
    assert metric_names.per_layer(metric_names.GRAD_NORM, 1) == "grad_norm/layer_01"
    assert metric_names.family_pattern(metric_names.DEAD_FRACTION) in metric_names.MEANINGS
    families = {name.split("/")[0] for name in metric_names.MEANINGS if "/" in name}
    assert families == set(metric_names.PER_LAYER_FAMILIES)
    assert {name.split("/")[0] for name in metric_names.MEANINGS} == set(metric_names.NAMES)
