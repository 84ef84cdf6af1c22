"""Devices (learn/device.py): device choice and DeviceSplit, MPS accumulation in float32, and which errors are
out of memory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fer_sweep.config import UserError
from fer_sweep.learn.device import DeviceSplit, accumulator_dtype, eval_batch_size, is_oom, pick_device, to_device
from fer_sweep.learn.train import input_norm

CPU, MPS = torch.device("cpu"), torch.device("mps")


def test_pick_device_and_to_device():
    assert pick_device("auto").type in ("cpu", "cuda")
    assert pick_device("cpu") == torch.device("cpu")
    for bad in ("gpu0", "tpu"):
        with pytest.raises(UserError):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA"):
            pick_device("cuda:0")
    split = to_device(np.zeros((3, 48, 48), np.uint8), np.array([0, 6, 2]), "cpu")
    assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64 and len(split) == 3
    with pytest.raises(UserError):
        to_device(np.zeros((3, 48, 48), np.float32), np.zeros(3), "cpu")
    with pytest.raises(UserError):
        to_device(np.zeros((3, 48, 48), np.uint8), np.array([0, 7, 1]), "cpu")


def test_device_split_is_frozen():
    split = DeviceSplit(torch.zeros(1, 48, 48, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64))
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'x'"):
        split.x = torch.ones(1, 48, 48, dtype=torch.uint8)
    assert int(split.x.sum()) == 0  # still the tensor it was built with


def test_mps_accumulates_in_float32():
    assert accumulator_dtype(MPS) == torch.float32 and accumulator_dtype(CPU) == torch.float64
    x = torch.arange(48 * 48 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(4, 48, 48)
    mean, std = input_norm("standard", x)
    assert (mean == pytest.approx(x.double().mean().item())
            and std == pytest.approx(x.double().std(unbiased=False).item()))


@pytest.mark.parametrize("error, oom", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.2 GB)"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 4000000000000 bytes"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),
])
def test_is_oom(error, oom):
    assert is_oom(error) is oom


def test_the_evaluation_batch_is_the_spec_s_else_the_device_s():
    assert eval_batch_size(torch.device("cpu")) == 128  # activations in cache (benchmarks/bench_eval.py)
    assert eval_batch_size(torch.device("cuda")) == eval_batch_size(torch.device("mps")) == 1024
    assert eval_batch_size(torch.device("cpu"), 2048) == 2048 and eval_batch_size(torch.device("cuda"), 64) == 64
