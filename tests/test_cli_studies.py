"""`actopt studies`: every preset by name, with its run count and its description, as the command prints them."""

from __future__ import annotations

import json

from click.testing import CliRunner

from actopt.cli import main
from actopt.sweeps.study import STUDIES_DIR

# Run counts worked out by hand from the preset files (one seed each):
# fashion-activations: 3 activations × (4 SGD + 3 Adam learning rates); mnist-depth: 3 depths × 4 activations
# × 2 initialisations; mnist-overfitting: 2 activations × 3 dropout rates.
PRESETS = {
    "fashion-activations": (63, "How sigmoid, tanh and ReLU train a 784-256-128-10 MLP on Fashion-MNIST"),
    "mnist-depth": (72, "Whether gradients vanish or explode through 5, 20 and 40 hidden layers"),
    "mnist-overfitting": (18, "How dropout changes the gap between training and validation accuracy"),
    "mnist-overfitting-search": (24, "Where the overfitting that source 004 reports"),
}


def test_studies_lists_every_preset_with_its_run_count_and_description():
    result = CliRunner().invoke(main, ["studies"])
    assert result.exit_code == 0, result.output
    lines = result.output.rstrip("\n").split("\n")
    # A header line per preset, in name order, each followed by its indented description.
    headers = [index for index, line in enumerate(lines) if not line.startswith(" ")]
    assert [lines[index] for index in headers] == [f"{name}  ({runs} runs)" for name, (runs, _) in PRESETS.items()]
    for (name, (_, opening)), start, end in zip(PRESETS.items(), headers, [*headers[1:], len(lines)]):
        body = lines[start + 1 : end]
        assert body and all(line.startswith("    ") and len(line) <= 100 for line in body), name
        printed = " ".join(line.strip() for line in body)
        assert printed.startswith(opening)
        shipped = json.loads((STUDIES_DIR / f"{name}.json").read_text(encoding="utf-8"))["description"]
        assert printed == " ".join(shipped.split())
