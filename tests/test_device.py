"""The device room: the CPU's subnormal mode is changed only while training and put back after."""

from __future__ import annotations

import pytest
import torch

from actopt.core import device, training
from actopt.core.inputs import splits


@pytest.fixture
def mode_found():
    """Skip where the CPU cannot flush subnormals; put back the mode this test found."""
    previous = device.subnormals_flushed()
    if not torch.set_flush_denormal(previous):
        pytest.skip("this CPU has no flush-to-zero mode")
    yield previous
    torch.set_flush_denormal(previous)


@pytest.mark.parametrize("before", [False, True])
def test_the_mode_is_read_back_as_set(mode_found, before):
    torch.set_flush_denormal(before)
    assert device.subnormals_flushed() is before
    # The oracle: a float32 subnormal survives an operation only while subnormals are kept.
    survived = float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0)) != 0.0
    assert survived is not before


@pytest.mark.parametrize("before", [False, True])
def test_flushing_lasts_for_the_block_and_the_mode_found_comes_back(mode_found, before):
    torch.set_flush_denormal(before)
    with device.flushed_subnormals(torch.device("cpu")):
        assert device.subnormals_flushed()
    assert device.subnormals_flushed() is before
    with pytest.raises(RuntimeError), device.flushed_subnormals(torch.device("cpu")):
        raise RuntimeError("training failed")
    assert device.subnormals_flushed() is before


def test_training_leaves_the_mode_as_it_found_it(mode_found, small_config, recorder):
    torch.set_flush_denormal(False)
    config = small_config.replace(epochs=1, max_batches=2)
    training.train(config, splits(config), recorder)
    assert not device.subnormals_flushed()
