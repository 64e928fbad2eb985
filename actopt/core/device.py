"""The training device: which one, how much memory it has, the CPU's subnormal mode while training,
and the members' stacked model built on it (or refused before it can exhaust the memory)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from actopt.core.config import DEVICES, TrainConfig
from actopt.core.models import build_mlp, parameter_count, repeated_parameter_count
from actopt.core.stacked import StackedMLP
from actopt.errors import ConfigError, OutOfMemory, choose

# The model's weights, their gradients and up to two optimizer states per weight, in float32.
TRAINING_BYTES_PER_PARAMETER = 4 * 4
# A float32 subnormal (the smallest normal float32 is about 1.2e-38): it survives a multiplication
# by one unless the CPU flushes subnormals to zero.
SUBNORMAL = 1e-39


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present; asking for CUDA without one is a user error, found before any run."""
    choose(DEVICES, name, "device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but torch finds no CUDA device; use --device cpu or auto")
    return torch.device(name)


def subnormals_flushed() -> bool:
    """Whether this thread's CPU flushes subnormal floats to zero now; torch can set the mode but has no getter."""
    return bool((torch.full((1,), SUBNORMAL, dtype=torch.float32) * 1.0 == 0).item())


@contextlib.contextmanager
def flushed_subnormals(device: torch.device) -> Iterator[None]:
    """Flush subnormals to zero while training on the CPU, then restore the mode found.

    Subnormal floats (a saturated net's gradients and Adam's second moments) take the CPU's slow
    path: a sigmoid + Adam 1e-2 run went from 1.3 to 3.8 s per epoch. Flushing them to zero keeps its
    speed; benchmarks/RESULTS.md measures that the logged accuracies stay the same. The mode is the
    process's (its thread's), so it is put back: code after training computes as it would have.
    """
    if device.type != "cpu":
        yield
        return
    previous = subnormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory the device has in all (None where it cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def build_stack(configs: Sequence[TrainConfig], device: torch.device) -> StackedMLP:
    """The members' stacked MLP, or ``OutOfMemory`` saying how large it is: at once when it cannot fit in
    the device's memory at all (building it layer by layer would end with the kernel killing the process),
    or when an allocation fails."""
    lead = configs[0]
    count = (repeated_parameter_count(lead.depth, lead.width) if lead.depth > 0
             else parameter_count(lead.hidden_sizes)) * len(configs)
    members = f" for {len(configs)} members" if len(configs) > 1 else ""
    failure = OutOfMemory(f"out of memory building the model ({count} parameters{members})")
    memory = device_memory(device)
    if memory is not None and count * TRAINING_BYTES_PER_PARAMETER > memory:
        raise failure
    try:
        return StackedMLP([initial_weights(config, device) for config in configs], lead.activation, lead.dropout,
                          [dropout_generator(config, device) for config in configs])
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "allocate" in str(error):
            raise failure from None
        raise


def initial_weights(config: TrainConfig, device: torch.device) -> nn.Sequential:
    """The member's own initialisation: the net ``build_mlp`` makes right after seeding with its seed."""
    torch.manual_seed(config.seed)
    return build_mlp(config.layer_sizes, config.activation, config.dropout, config.init).to(device)


def dropout_generator(config: TrainConfig, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(config.seed)
