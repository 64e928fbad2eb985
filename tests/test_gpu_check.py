"""benchmarks/gpu_check.py: without CUDA it says so and exits 0; its comparison finds a member that differs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from actopt.core.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    name = "actopt_gpu_check"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_without_cuda_it_says_so_and_exits_zero(monkeypatch, capsys):
    gpu_check = load_gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def tiny_check(gpu_check, tmp_path):
    base = TrainConfig.from_mapping({"data_dir": str(tmp_path), "download": False, "device": "cpu", "epochs": 1,
                                     "max_batches": 2, "batch_size": 8, "hidden_sizes": "8", "log_model": False,
                                     "gradient_statistics": False})
    datas = gpu_check.splits_by_seed(base, torch.device("cpu"), synthetic_examples=64)  # no files there: random
    assert datas[0].name == "synthetic"
    return base, datas


def test_the_check_on_the_cpu_finds_every_member_equal_to_itself_alone(tmp_path):
    gpu_check = load_gpu_check()
    base, datas = tiny_check(gpu_check, tmp_path)
    results = gpu_check.run_check(base, (1, 3), torch.device("cpu"), datas, report=lambda line: None)
    assert [(check.size, check.checked, check.mismatches) for check in results] == [(1, 1, []), (3, 3, [])]
    assert results[1].examples == 2 * 8 and results[1].member_throughput > 0
    lines = gpu_check.table(results, "cpu", "synthetic")
    assert any(line.startswith("| 3 |") and "| yes |" in line for line in lines)


def test_the_check_reports_a_member_that_trains_differently_in_the_group(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()
    base, datas = tiny_check(gpu_check, tmp_path)
    original = gpu_check.training.train_group

    def skewed(configs, *arguments, **keywords):  # in a group, the last member's learning rate goes wrong
        if len(configs) > 1:
            configs = [*configs[:-1], configs[-1].replace(learning_rate=configs[-1].learning_rate * 3)]
        return original(configs, *arguments, **keywords)

    monkeypatch.setattr(gpu_check.training, "train_group", skewed)
    results = gpu_check.run_check(base, (2,), torch.device("cpu"), datas, report=lambda line: None)
    assert results[0].mismatches and all(line.startswith("member 1:") for line in results[0].mismatches)
