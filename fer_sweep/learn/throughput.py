"""`fer-sweep bench`: train images/s of one model on this machine's device, with the trainer's own loop."""

from __future__ import annotations

from typing import Any

from fer_sweep.config import ModelConfig, TrainConfig, UserError
from fer_sweep.data.splits import load_splits
from fer_sweep.learn.models import build_model
from fer_sweep.learn.precision import precision
from fer_sweep.learn.device import pick_device, to_device
from fer_sweep.learn.train import train_throughput

# The best configuration of the notebook grid found by hand (the project's seed notebooks): residual CNN,
# conv [(32,3),(64,3),(128,3)], BatchNorm, max pooling, dropout 0.3, Adam 1e-3, batch 64.
SEEDS_BEST_MODEL = ModelConfig(arch="residual", conv=((32, 3), (64, 3), (128, 3)), norm="batch", pooling="max",
                               dropout=0.3)
SEEDS_BEST_TRAIN = TrainConfig(optimizer="adam", lr=1e-3, batch_size=64)


def parse_conv(text: str) -> tuple[tuple[int, int], ...]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise UserError(f"--conv: expected comma-separated positive stage widths like 32,64,128, got {text!r}")
    return tuple((w, 3) for w in widths)


def run_bench(*, data: str = "synthetic", steps: int = 50, batch_size: int = 64, device: str = "auto",
              arch: str = "residual", conv: str = "32,64,128", norm: str = "batch", pooling: str = "max",
              warmup: int = 5, amp: str = "auto", compile: bool = False) -> dict[str, Any]:
    model_cfg = ModelConfig(**{**vars(SEEDS_BEST_MODEL), "arch": arch, "conv": parse_conv(conv), "norm": norm,
                               "pooling": pooling})
    train_cfg = TrainConfig(**{**vars(SEEDS_BEST_TRAIN), "batch_size": batch_size, "amp": amp, "compile": compile})
    dev = pick_device(device)
    policy = precision(amp, dev)  # also refuses an impossible setting (bf16 on mps) before any work
    splits = load_splits(data, synthetic_n=max(4 * batch_size, 2048))
    train = to_device(splits.train.x, splits.train.y, dev)
    model = build_model(model_cfg)
    result = train_throughput(model, train, train_cfg, steps=steps, warmup=warmup)
    name = f"{arch} conv {conv} norm {norm} pool {pooling}"
    return {"model": name, "data": data, **result, "precision_detail": policy.describe()}
