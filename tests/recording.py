"""A logger that records: what training logged, for tests to check."""

from __future__ import annotations

from typing import Any

import numpy as np


class RecordingLogger:
    """A ``training.RunLogger`` that keeps every call, so tests can check what a run logged."""

    def __init__(self) -> None:
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.tags: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.dicts: dict[str, dict[str, Any]] = {}
        self.images: list[tuple[str, int, np.ndarray]] = []
        self.models: list[Any] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        self.dicts[artifact_file] = data

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self.images.append((key, step, image))

    def log_model(self, model: Any, input_example: np.ndarray) -> None:
        self.models.append((model, input_example))

    def series(self, key: str) -> dict[int | None, float]:
        """Every value logged under ``key``, by step."""
        return {step: metrics[key] for step, metrics in self.metrics if key in metrics}
