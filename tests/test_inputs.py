"""Preparing data: one key says which configurations share their tensors, one cache holds them."""

from __future__ import annotations

import pytest

from actopt.core import data, inputs


@pytest.fixture
def loads(monkeypatch):
    """Every (spec, device) that reached ``load_splits``."""
    calls = []
    original = inputs.load_splits

    def counting(spec, device="cpu"):
        calls.append((spec, str(device)))
        return original(spec, device)

    monkeypatch.setattr(inputs, "load_splits", counting)
    return calls


def test_the_key_holds_every_field_that_changes_the_tensors(small_config):
    changes = {"dataset": "fashion-mnist", "data_dir": "elsewhere", "download": True, "validation_fraction": 0.2,
               "seed": 5, "device": "auto", "input_scaling": "unit", "train_examples": 10}
    keys = {inputs.data_key(small_config)} | {inputs.data_key(small_config.replace(**{name: value}))
                                              for name, value in changes.items()}
    assert len(keys) == len(changes) + 1
    # What only the training changes (rate, optimizer, init, widths) shares the data.
    assert inputs.data_key(small_config.replace(learning_rate=0.5, optimizer="sgd", init="xavier",
                                                hidden_sizes="8")) == inputs.data_key(small_config)
    assert inputs.data_spec(small_config) == data.DataSpec(
        "mnist", small_config.data_dir, False, small_config.validation_fraction, small_config.seed, "symmetric", 0)


def test_a_group_loads_each_distinct_split_once(small_config, loads):
    group = [small_config, small_config.replace(learning_rate=0.1), small_config.replace(seed=1)]
    device, datas = inputs.prepare_group(group)
    assert device.type == "cpu" and len(loads) == 2
    assert datas[0] is datas[1] and datas[2] is not datas[0]


def test_the_cache_keeps_what_the_next_group_shares_and_drops_the_rest(small_config, loads):
    cache = inputs.DataCache()
    _, first = cache.prepare([small_config, small_config.replace(seed=1)])
    _, second = cache.prepare([small_config.replace(seed=1, learning_rate=0.1), small_config.replace(seed=2)])
    assert second[0] is first[1] and len(loads) == 3  # seed 1 was reused, seed 2 loaded
    assert set(cache.prepared) == {inputs.data_key(small_config.replace(seed=seed)) for seed in (1, 2)}
    _, third = cache.prepare([small_config])
    assert third[0] is not first[0] and len(loads) == 4  # seed 0 had been dropped
