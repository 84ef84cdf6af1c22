"""`fer-sweep bench`: train images/s of one model on this machine's device, with the trainer's own loop, and the
cost side: FLOPs per training image (torch's flop counter), the GFLOP/s that achieves, and the fraction of this
machine's measured matmul peak in the same precision."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fer_sweep.config import ModelConfig, TrainConfig, UserError
from fer_sweep.data.splits import load_splits
from fer_sweep.learn.device import pick_device, sync, to_device
from fer_sweep.learn.evaluate import model_input_size
from fer_sweep.learn.models import build_model, input_size_of
from fer_sweep.learn.precision import autocast, precision, resolve_amp
from fer_sweep.learn.train import train_throughput

# The best configuration of the notebook grid found by hand (the project's original notebooks): residual CNN,
# conv [(32,3),(64,3),(128,3)], BatchNorm, max pooling, dropout 0.3, Adam 1e-3, batch 64.
NOTEBOOK_BEST_MODEL = ModelConfig(arch="residual", conv=((32, 3), (64, 3), (128, 3)), norm="batch", pooling="max",
                                  dropout=0.3)
NOTEBOOK_BEST_TRAIN = TrainConfig(optimizer="adam", lr=1e-3, batch_size=64)
PEAK_N = 2048  # square matmul timed for the peak: large enough for the BLAS to reach its best rate, 17 GFLOP a call
PEAK_REPEATS = 5


def parse_conv(text: str) -> tuple[tuple[int, int], ...]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise UserError(f"--conv: expected comma-separated positive stage widths like 32,64,128, got {text!r}")
    return tuple((w, 3) for w in widths)


def train_flops_per_image(model: torch.nn.Module, cfg: TrainConfig, device: torch.device, batch: int = 8) -> float:
    """FLOPs of one training image, forward and backward, as torch's flop counter (torch.utils.flop_counter) counts
    them: convolutions and matmuls at 2 per multiply-add; normalisation, activations, pooling, the loss and the
    optimiser are not counted (memory-bound, no matmul work). Counted on a copy: the model is left as it was."""
    from torch.utils.flop_counter import FlopCounterMode

    net = copy.deepcopy(model).to(device).train()
    size = model_input_size(model)
    x = torch.zeros(batch, 1, size, size, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        with autocast(device, resolve_amp(cfg.amp, device)):
            logits = net(x)
        F.cross_entropy(logits.float(), y).backward()
    return counter.get_total_flops() / batch


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = PEAK_N, repeats: int = PEAK_REPEATS) -> float:
    """This machine's measured matmul rate in GFLOP/s: the best of `repeats` n x n x n products in `dtype` on the
    threads torch uses (the same BLAS / oneDNN kernels the convolutions reach through im2col or direct kernels)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: kernel choice, page faults
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


@dataclass(frozen=True)
class BenchOptions:
    """What one `fer-sweep bench` measures: the model (the notebooks' best, with these changes), its batch and
    precision, on which data and device, and how many steps are timed."""

    data: str = "synthetic"  # a FER2013 file/folder, or "synthetic"
    steps: int = 50  # timed training steps, after `warmup` untimed ones
    batch_size: int = 64
    device: str = "auto"
    arch: str = "residual"
    conv: str = "32,64,128"  # stage widths, kernel 3 (parse_conv)
    norm: str = "batch"
    pooling: str = "max"
    warmup: int = 5
    amp: str = "auto"
    compile: bool = False
    depth: int = 1  # convs (cnn, vgg) or residual blocks per stage
    crop: int = 0  # random crop x crop training windows; 0: the whole 48x48 face
    peak: bool = True  # also time this machine's matmul peak in the same precision


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Train images/s of the model `opts` describes, its FLOPs per training image, the GFLOP/s that makes and (with
    `opts.peak`) the fraction of this machine's matmul peak."""
    model_cfg = ModelConfig(**{**vars(NOTEBOOK_BEST_MODEL), "arch": opts.arch, "conv": parse_conv(opts.conv),
                               "norm": opts.norm, "pooling": opts.pooling, "depth": opts.depth})
    train_cfg = TrainConfig(**{**vars(NOTEBOOK_BEST_TRAIN), "batch_size": opts.batch_size, "amp": opts.amp,
                               "compile": opts.compile, "crop": opts.crop})
    dev = pick_device(opts.device)
    policy = precision(opts.amp, dev)  # also refuses an impossible setting (bf16 on mps) before any work
    splits = load_splits(opts.data, synthetic_n=max(4 * opts.batch_size, 2048))
    assert splits.train.y is not None  # a FER2013 file's training split is labelled
    train = to_device(splits.train.x, splits.train.y, dev)
    model = build_model(model_cfg, input_size=input_size_of(train_cfg))
    flops = train_flops_per_image(model, train_cfg, dev)
    result = train_throughput(model, train, train_cfg, steps=opts.steps, warmup=opts.warmup)
    name = (f"{opts.arch} conv {opts.conv}" + (f" depth {opts.depth}" if opts.depth != 1 else "")
            + f" norm {opts.norm} pool {opts.pooling}" + (f" crop {opts.crop}" if opts.crop else ""))
    achieved = flops * result["train_img_per_s"] / 1e9
    cost = {"train_flops_per_image": flops, "achieved_gflops": achieved}
    if opts.peak:
        dtype = resolve_amp(opts.amp, dev) or torch.float32
        rate = matmul_peak(dev, dtype)
        cost.update({"matmul_peak_gflops": rate, "peak_dtype": str(dtype).removeprefix("torch."), "peak_n": PEAK_N,
                     "peak_fraction": achieved / rate, "threads": torch.get_num_threads()})
    return {"model": name, "data": opts.data, **result, **cost, "precision_detail": policy.describe()}

