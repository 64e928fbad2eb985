"""Small IDX datasets in torchvision's raw layout, made here so that no test needs the network."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# Small enough that a run takes a second, large enough that a real learning curve appears.
TRAIN_EXAMPLES = 600
TEST_EXAMPLES = 200


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (magic 0x08, then the dimension count) as the originals are."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class lights its own band of rows, plus noise: learnable in a few steps, not trivially."""
    images = rng.integers(0, 90, size=(len(labels), 28, 28))
    for index, label in enumerate(labels):
        images[index, 2 + 2 * label : 5 + 2 * label, 4:24] += 150
    return np.clip(images, 0, 255)


def write_dataset(root: Path, folder: str, seed: int) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", TRAIN_EXAMPLES), ("t10k", TEST_EXAMPLES)):
        labels = rng.integers(0, 10, size=count)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", make_images(labels, rng))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
