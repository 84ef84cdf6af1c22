"""The precision policy (learn/precision.py), exercised on a CPU-only machine: bf16 autocast runs on CPUs too
(the code path CUDA uses), and the MPS and CUDA branches are pure functions of constructed devices."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from fer_sweep.config import ModelConfig, TrainConfig, UserError
from fer_sweep.learn.evaluate import evaluate, predict_proba
from fer_sweep.learn.models import build_model
from fer_sweep.learn.precision import autocast, parse_amp, resolve_amp
from fer_sweep.learn.train import fit, input_norm, train_throughput

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
SMALL = ModelConfig(arch="cnn", conv=((8, 3), (16, 3)), fc_units=16)


@pytest.mark.parametrize("mode, device, cpu_bf16, cuda_bf16, expected", [
    ("auto", CPU, True, False, torch.bfloat16),  # AMX / AVX512-BF16 CPUs
    ("auto", CPU, False, False, None),  # no native bf16: fp32
    ("bf16", CPU, False, False, torch.bfloat16),  # asked for: emulated
    ("off", CPU, True, True, None),
    ("auto", CUDA, False, True, torch.bfloat16),  # Ampere and newer
    ("auto", CUDA, False, False, None),  # V100, T4: no bf16
    ("bf16", CUDA, False, False, torch.bfloat16),
    ("auto", MPS, True, True, None),  # MPS stays fp32 under auto
    (True, CUDA, False, True, torch.bfloat16),  # older specs: amp: true = auto
    (False, CUDA, False, True, None),
])
def test_resolve_amp(mode, device, cpu_bf16, cuda_bf16, expected):
    assert resolve_amp(mode, device, cpu_bf16=cpu_bf16, cuda_bf16=cuda_bf16) == expected


def test_bf16_on_mps_and_unknown_modes_are_refused():
    with pytest.raises(UserError, match="bf16 is not supported on mps"):
        resolve_amp("bf16", MPS)
    with pytest.raises(UserError, match="unknown amp 'fp8'"):
        parse_amp("fp8")


def test_fp32_never_builds_an_autocast_object():
    # torch.autocast("mps", enabled=False) raises on torch < 2.5: fp32 must not construct one at all
    assert isinstance(autocast(MPS, None), contextlib.nullcontext)
    assert isinstance(autocast(CPU, torch.bfloat16), torch.autocast)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_fit_evaluate_tta_predict_under_each_precision(learnable_splits, amp):
    """bf16 autocast on the CPU runs the code CUDA runs: fit, validation, TTA and predict agree."""
    train, val = learnable_splits
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-3, amp=amp, tta=True, tta_shift_px=2, patience=0)
    model = build_model(SMALL, seed=0)
    results = list(fit(model, train, val, cfg))
    assert [r.epoch for r in results] == [1, 2] and results[-1].stop == "done"
    assert all(math.isfinite(r.metrics["train/loss"]) for r in results)
    norm = input_norm(cfg.normalize, train.x)
    again = evaluate(model, val, norm, tta=True, tta_shift_px=2, amp=amp)  # `best` evaluates like this
    assert again["acc"] == pytest.approx(results[-1].best_val_acc)
    proba = predict_proba(model, val.x, norm, tta=True, tta_shift_px=2, amp=amp)  # `predict` like this
    assert proba.dtype == torch.float32 and proba.shape == (len(val), 7)
    assert torch.allclose(proba.sum(1), torch.ones(len(val)), atol=1e-5)
    assert (proba.argmax(1) == val.y).float().mean().item() == pytest.approx(again["acc"])


def test_throughput_reports_the_precision(learnable_splits):
    train, _ = learnable_splits
    out = train_throughput(build_model(SMALL, seed=0), train, TrainConfig(batch_size=32, amp="bf16"), steps=2, warmup=1)
    assert out["precision"] == "bf16 autocast" and out["channels_last"] is True
    out = train_throughput(build_model(SMALL, seed=0), train, TrainConfig(batch_size=32, amp="off"), steps=2, warmup=1)
    assert out["precision"] == "fp32"
