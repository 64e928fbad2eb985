"""A study's frames made by hand, without a tracking store: runs as ``queries.load_runs`` gives them and their long
histories, derived as the analysis derives them (``derive.derive_frames``). For the figure tests."""

from __future__ import annotations

from typing import Any

import pandas as pd

from actopt.analysis import propagation
from actopt.analysis.derive import Frames, Logged, derive_frames
from actopt.core import metric_names as names
from actopt.core.metric_names import per_layer

INPUT_MOMENT = 0.92
WIDTH = 32


def curve(best: float, epochs: int, layers: int, ratio: float = 0.5) -> dict[int, dict[str, float]]:
    """Per-epoch values: validation accuracy climbing to ``best``, a falling loss, per-layer gradient norms with
    layer 1 at ``ratio`` × the output layer's, and each layer's largest gradient on the probe batch."""
    table: dict[int, dict[str, float]] = {0: {per_layer(names.PROBE_GRAD_MAX_ABS, layer): 0.01 * layer
                                              for layer in range(1, layers + 1)}}
    for epoch in range(1, epochs + 1):
        accuracy = best * (0.9 + 0.1 * epoch / epochs)
        table[epoch] = {names.TRAIN_LOSS: 1.0 / epoch, names.VAL_LOSS: 1.1 / epoch, names.VAL_ACCURACY: accuracy,
                        names.TRAIN_ACCURACY: accuracy + 0.01, names.EPOCH_TIME: 0.5,
                        names.EPOCH_TEST_ACCURACY: accuracy - 0.01,
                        **{per_layer(names.GRAD_NORM, layer): ratio + (1 - ratio) * (layer - 1) / (layers - 1)
                           for layer in range(1, layers + 1)},
                        **{per_layer(names.PROBE_GRAD_MAX_ABS, layer): 0.02 * layer for layer in range(1, layers + 1)}}
    return table


def theory_step_zero(activation: str, init: str, depth: int) -> dict[str, float]:
    """Step-0 probe values exactly as mean-field theory predicts them."""
    prediction = propagation.predict_config(activation, init, (784, *(WIDTH,) * depth, 10), INPUT_MOMENT)
    values = {names.PROBE_INPUT_MOMENT: INPUT_MOMENT}
    for layer in range(1, depth + 1):
        norm = float(10 ** (prediction.log10_gradient[layer - 1] - 2.0))
        values[per_layer(names.PROBE_GRAD_NORM, layer)] = norm
        values[per_layer(names.PROBE_EXAMPLE_GRAD_NORM, layer)] = norm
        values[per_layer(names.PROBE_PREACTIVATION_MOMENT, layer)] = float(prediction.q[layer - 1])
    values[per_layer(names.PROBE_GRAD_NORM, depth + 1)] = 0.3
    return values


def made_frames(configs: list[dict[str, Any]], epochs: int = 3, theory: bool = False) -> Frames:
    """One run per config (activation, optimizer, learning_rate, seed; optionally depth, init, best, diverged);
    ``theory``: the step-0 values the depth theory reads."""
    rows, long = [], []
    for index, config in enumerate(configs):
        settings = {"optimizer": "sgd", "learning_rate": 0.1, "seed": 0, "init": "default", "depth": 0,
                    "best": 0.85, "diverged": False, **config}
        depth = int(settings["depth"])
        table = curve(settings["best"], epochs, depth + 1 if depth else 3)
        if theory and depth:
            table[0].update(theory_step_zero(settings["activation"], settings["init"], depth))
        run_id = f"run{index:02d}"
        rows.append({"run_id": run_id, "run_name": f"{settings['activation']}-{settings['optimizer']}-{index}",
                     "status": "FINISHED", "kind": "training", "study": "", "dataset": "mnist",
                     "activation": settings["activation"], "optimizer": settings["optimizer"],
                     "learning_rate": settings["learning_rate"], "seed": settings["seed"], "init": settings["init"],
                     "depth": depth, "width": WIDTH, "hidden_sizes": "32,16", "dropout": 0.0, "epochs": epochs,
                     "max_batches": 0, names.BEST_VAL_ACCURACY: settings["best"],
                     names.TEST_ACCURACY: settings["best"] - 0.01, names.CHANCE_ACCURACY: 0.1,
                     "diverged": settings["diverged"], "diverged_epoch": 2 if settings["diverged"] else None})
        long += [{"run_id": run_id, "step": step, "key": key, "value": value}
                 for step, values in table.items() for key, value in values.items()]
    runs = pd.DataFrame(rows)
    return derive_frames(Logged(runs, runs.iloc[:0], pd.DataFrame(long), {}))
