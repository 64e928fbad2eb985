"""Loading through torchvision, normalization, the seeded split, batching and data errors."""

from __future__ import annotations

import shutil

import pytest
import torch
import torchvision
from synthetic_data import TEST_EXAMPLES, TRAIN_EXAMPLES
from torchvision import transforms

from actopt.core.data import DATASETS, DataSpec, batch_indices, load_splits, split_indices
from actopt.errors import DataError


def test_splits_have_the_expected_sizes_and_range(data_dir):
    data = load_splits(DataSpec("fashion-mnist", data_dir, False, 0.1, seed=0))
    assert (len(data.train), len(data.validation), len(data.test)) == (TRAIN_EXAMPLES - 60, 60, TEST_EXAMPLES)
    assert data.train.inputs.shape == (TRAIN_EXAMPLES - 60, 784)
    assert data.train.inputs.dtype == torch.float32 and data.train.targets.dtype == torch.int64
    assert float(data.train.inputs.min()) >= -1.0 and float(data.train.inputs.max()) <= 1.0


def test_normalization_equals_the_seed_transforms(data_dir):
    """The whole-tensor arithmetic gives exactly what ToTensor + Normalize((0.5,), (0.5,)) give per image."""
    seed_style = torchvision.datasets.MNIST(
        root=str(data_dir), train=False, download=False,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]),
    )
    data = load_splits(DataSpec("mnist", data_dir, False, 0.1, seed=0))
    for index in (0, 17, TEST_EXAMPLES - 1):
        image, label = seed_style[index]
        assert torch.equal(data.test.inputs[index], image.reshape(-1))
        assert int(data.test.targets[index]) == label


def test_split_is_seeded_disjoint_and_complete():
    train_a, validation_a = split_indices(1000, 0.1, seed=3)
    train_b, validation_b = split_indices(1000, 0.1, seed=3)
    _, validation_c = split_indices(1000, 0.1, seed=4)
    assert torch.equal(validation_a, validation_b) and torch.equal(train_a, train_b)
    assert not torch.equal(validation_a, validation_c)
    assert len(validation_a) == 100
    assert sorted(torch.cat([train_a, validation_a]).tolist()) == list(range(1000))


def test_batches_cover_one_shuffled_epoch():
    generator = torch.Generator().manual_seed(0)
    batches = list(batch_indices(10, 4, generator, "cpu"))
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert len(list(batch_indices(10, 4, generator, "cpu", limit=2))) == 2


def test_missing_dataset_without_download_says_where_it_looked(tmp_path):
    with pytest.raises(DataError) as raised:
        load_splits(DataSpec("mnist", tmp_path / "empty", False, 0.1, 0))
    message = str(raised.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "ACTOPT_DATA_DIR" in message and "download is off" in message


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: Name or service not known")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(DataError) as raised:
        load_splits(DataSpec("mnist", tmp_path, True, 0.1, 0))
    assert "the download failed" in str(raised.value) and "Name or service not known" in str(raised.value)


def test_truncated_file_names_the_file(data_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data_dir / "MNIST", copy / "MNIST")
    images = copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(DataError) as raised:
        load_splits(DataSpec("mnist", copy, False, 0.1, 0))
    assert "train-images-idx3-ubyte" in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("file", "damage", "problem"),
    [
        ("t10k-labels-idx1-ubyte", lambda data: data[:50],
         "truncated: its header promises 200 values (208 bytes), the file has 50"),
        ("train-labels-idx1-ubyte", lambda data: data + b"\0",
         "longer than its header says: its header promises 600 values (608 bytes), the file has 609"),
        ("t10k-images-idx3-ubyte", lambda data: b"<html>Not Found</html>",
         "not an IDX file of unsigned bytes (it starts with 3c68746d, 22 bytes in all)"),
        ("train-images-idx3-ubyte", lambda data: data[:10], "truncated inside its header (10 bytes)"),
        ("train-labels-idx1-ubyte", lambda data: b"",
         "not an IDX file of unsigned bytes (it starts with nothing, 0 bytes in all)"),
    ],
)
def test_a_damaged_file_is_named_with_what_is_wrong(data_dir, tmp_path, file, damage, problem):
    copy = tmp_path / "copy"
    shutil.copytree(data_dir / "MNIST", copy / "MNIST")
    path = copy / "MNIST" / "raw" / file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as raised:
        load_splits(DataSpec("mnist", copy, False, 0.1, 0))
    assert str(raised.value) == f"mnist: cannot read {path}: {problem}"


def test_registry_names_the_two_datasets():
    assert set(DATASETS) == {"fashion-mnist", "mnist"}


def test_input_scalings_and_training_subset(data_dir):
    """symmetric = 2·unit − 1 exactly; standardized has the kept training split's mean 0 and std 1;
    train_examples keeps the first examples of the same seeded training split and no validation change."""
    splits = {scaling: load_splits(DataSpec("mnist", data_dir, False, 0.1, 0, scaling), "cpu")
              for scaling in ("symmetric", "unit", "standardized")}
    unit = splits["unit"].train.inputs
    assert float(unit.min()) >= 0.0 and float(unit.max()) <= 1.0
    assert torch.allclose(splits["symmetric"].train.inputs, 2 * unit - 1, atol=1e-6)
    standardized = splits["standardized"].train.inputs.double()
    assert float(standardized.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(standardized.std()) == pytest.approx(1.0, rel=1e-5)
    small = load_splits(DataSpec("mnist", data_dir, False, 0.1, 0, "unit", train_examples=50), "cpu")
    assert torch.equal(small.train.inputs, unit[:50])
    assert torch.equal(small.train.targets, splits["unit"].train.targets[:50])
    assert torch.equal(small.validation.inputs, splits["unit"].validation.inputs)
