"""Datasets as whole tensors on the training device, normalized once, split once, batched by index."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from actopt.errors import DataError, choose, one_line

# The torchvision classes read (and, online, download) the raw IDX files; we only use their tensors.
DATASETS: dict[str, type[torchvision.datasets.MNIST]] = {
    "fashion-mnist": torchvision.datasets.FashionMNIST,
    "mnist": torchvision.datasets.MNIST,
}

# ToTensor then Normalize((0.5,), (0.5,)), as source 000's code: pixels in [-1, 1] ("symmetric").
NORMALIZE_MEAN = 0.5
NORMALIZE_STD = 0.5
# How pixels reach the net: symmetric [-1, 1] (source 000), unit [0, 1] (ToTensor alone, source 004),
# standardized (the training split's own pixel mean and standard deviation, one scalar each).
INPUT_SCALINGS = {"symmetric": "[-1, 1]", "unit": "[0, 1]", "standardized": "training-split mean 0, std 1"}


@dataclass(frozen=True)
class Split:
    inputs: torch.Tensor  # float32 [N, 784], normalized
    targets: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return self.targets.shape[0]


@dataclass(frozen=True)
class DatasetSplits:
    name: str
    source: str  # the folder the raw files were read from
    digest: str  # of the raw training and test bytes, so runs on different copies are told apart
    train: Split
    validation: Split
    test: Split


def raw_folder(name: str, data_dir: str | os.PathLike) -> Path:
    dataset_class = choose(DATASETS, name, "dataset")
    return Path(data_dir) / dataset_class.__name__ / "raw"


def raw_files(name: str, data_dir: str | os.PathLike) -> list[Path]:
    """The four uncompressed IDX files torchvision reads, named as its download leaves them."""
    dataset_class = choose(DATASETS, name, "dataset")
    folder = raw_folder(name, data_dir)
    return [folder / Path(url).stem for url, _ in dataset_class.resources]


# IDX, the raw format: two zero bytes, a type code, the number of dimensions, each dimension as a
# big-endian uint32, then the values. MNIST and Fashion-MNIST hold unsigned bytes.
IDX_UNSIGNED_BYTE = 0x08


def idx_problem(path: Path) -> str | None:
    """What makes one raw file unreadable, or None. Checked here because torchvision's own errors
    (a reshape that fails, a short read) do not say which of the four files is broken."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] != IDX_UNSIGNED_BYTE or head[3] not in (1, 3):
            return f"not an IDX file of unsigned bytes (it starts with {head.hex() or 'nothing'}, {size} bytes in all)"
        dimensions = handle.read(4 * head[3])
    if len(dimensions) < 4 * head[3]:
        return f"truncated inside its header ({size} bytes)"
    shape = [int.from_bytes(dimensions[index:index + 4], "big") for index in range(0, len(dimensions), 4)]
    expected = 4 + len(dimensions) + math.prod(shape)
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        values = "×".join(map(str, shape))
        return f"{state}: its header promises {values} values ({expected} bytes), the file has {size}"
    return None


def check_raw(name: str, data_dir: str | os.PathLike) -> None:
    """DataError naming the first raw file that is missing its bytes or is not IDX; reads only the headers."""
    for path in raw_files(name, data_dir):
        problem = idx_problem(path)
        if problem:
            raise DataError(f"{name}: cannot read {path}: {problem}")


def load_raw(name: str, data_dir: str | os.PathLike, download: bool) -> tuple[torch.Tensor, ...]:
    """Train images, train labels, test images, test labels as tensors, read by torchvision."""
    dataset_class = choose(DATASETS, name, "dataset")
    folder = raw_folder(name, data_dir)
    missing = [path.name for path in raw_files(name, data_dir) if not path.is_file()]
    if missing and not download:
        raise DataError(
            f"{name}: {', '.join(missing)} not found in {folder} and download is off; point --data-dir or "
            f"ACTOPT_DATA_DIR at a folder holding {dataset_class.__name__}/raw/*-ubyte"
        )
    if missing:
        try:
            dataset_class(root=str(data_dir), train=True, download=True)
        except Exception as error:  # torchvision raises several kinds; all mean the same to the user
            detail = one_line(str(error)) or type(error).__name__
            raise DataError(
                f"{name}: not found in {folder} and the download failed ({detail}); point --data-dir or "
                f"ACTOPT_DATA_DIR at a folder holding {dataset_class.__name__}/raw/*-ubyte"
            ) from None
    check_raw(name, data_dir)
    splits = []
    for train in (True, False):
        try:
            dataset = dataset_class(root=str(data_dir), train=train, download=False)
        except Exception as error:  # a truncated or foreign file fails deep inside torchvision's reader
            detail = one_line(str(error)) or type(error).__name__
            files = ", ".join(path.name for path in raw_files(name, data_dir) if ("train" in path.name) == train)
            raise DataError(f"{name}: cannot read {files} in {folder}: {detail}") from None
        images, labels = dataset.data, dataset.targets
        split = "train" if train else "test"
        if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28) or images.shape[0] != labels.shape[0]:
            raise DataError(f"{name}: {split} files in {folder} hold {tuple(images.shape)} images for "
                            f"{labels.shape[0]} labels; expected N×28×28 with N labels")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
            raise DataError(f"{name}: {split} labels in {folder} fall outside 0..9")
        splits += [images, labels]
    return tuple(splits)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] → float32 [N, 784], the same arithmetic as ToTensor + Normalize."""
    return unit_pixels(images).sub_(NORMALIZE_MEAN).div_(NORMALIZE_STD)


def unit_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] → float32 [N, 784] in [0, 1], ToTensor's arithmetic."""
    return images.reshape(images.shape[0], -1).to(torch.float32).div_(255.0)


def scaled_inputs(train_images: torch.Tensor, images: torch.Tensor, scaling: str) -> torch.Tensor:
    """``images`` as float32 [N, 784] under ``scaling``; "standardized" uses ``train_images``' statistics."""
    if scaling == "symmetric":
        return normalize(images)
    if scaling == "unit":
        return unit_pixels(images)
    if scaling != "standardized":
        raise DataError(f"unknown input scaling {scaling!r}; known: {', '.join(INPUT_SCALINGS)}")
    reference = unit_pixels(train_images).to(torch.float64)
    mean, std = float(reference.mean()), float(reference.std())
    return unit_pixels(images).sub_(mean).div_(std)


def split_indices(count: int, validation_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation cut into (train, validation) index tensors; validation gets the rounded share."""
    validation_count = max(1, round(count * validation_fraction))
    if validation_count >= count:
        raise DataError(f"validation_fraction {validation_fraction:g} leaves no training examples out of {count}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[validation_count:], order[:validation_count]


@dataclass(frozen=True)
class DataSpec:
    """Which dataset a run reads and how it is cut: everything ``load_splits`` needs but the device.

    ``train_examples`` > 0 keeps that many of the training split (its seeded order's first ones);
    the validation split is the same whatever it is.
    """

    name: str
    data_dir: str | os.PathLike
    download: bool = False
    validation_fraction: float = 0.1
    seed: int = 0
    input_scaling: str = "symmetric"
    train_examples: int = 0


def load_splits(spec: DataSpec, device: torch.device | str = "cpu") -> DatasetSplits:
    """Read, scale and split a dataset once; every tensor ends on ``device``.

    "standardized" takes the statistics of the training split that is kept, so that nothing of the
    validation or test images enters.
    """
    train_images, train_labels, test_images, test_labels = load_raw(spec.name, spec.data_dir, spec.download)
    digest = hashlib.sha256()
    for tensor in (train_images, train_labels, test_images, test_labels):
        digest.update(tensor.numpy().tobytes())
    train_indices, validation_indices = split_indices(len(train_labels), spec.validation_fraction, spec.seed)
    if spec.train_examples:
        train_indices = train_indices[:spec.train_examples]
    train_inputs = scaled_inputs(train_images[train_indices], train_images, spec.input_scaling)

    def on_device(inputs: torch.Tensor, targets: torch.Tensor) -> Split:
        return Split(inputs.to(device), targets.to(torch.int64).to(device))

    return DatasetSplits(
        name=spec.name,
        source=str(raw_folder(spec.name, spec.data_dir)),
        digest=digest.hexdigest()[:16],
        train=on_device(train_inputs[train_indices], train_labels[train_indices]),
        validation=on_device(train_inputs[validation_indices], train_labels[validation_indices]),
        test=on_device(scaled_inputs(train_images[train_indices], test_images, spec.input_scaling), test_labels),
    )


def majority_rate(split: Split) -> float:
    """The share of the most frequent class: the accuracy of always answering that class (chance level)."""
    if len(split) == 0:
        return float("nan")
    return float(torch.bincount(split.targets).max()) / len(split)


def leading(split: Split, count: int) -> Split:
    """The first ``count`` examples; the training split is already in a seeded random order, so
    they are a random subset, the same for every epoch of a run and for every run of a seed."""
    return Split(split.inputs[:count], split.targets[:count])


def batch_indices(
    count: int, batch_size: int, generator: torch.Generator, device: torch.device | str, limit: int = 0
) -> Iterator[torch.Tensor]:
    """Index tensors of one shuffled epoch; ``limit`` > 0 stops after that many batches."""
    order = torch.randperm(count, generator=generator).to(device)
    batches = order.split(batch_size)
    return iter(batches[:limit] if limit > 0 else batches)
