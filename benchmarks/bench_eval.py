"""The validation pass `fit` runs every epoch, timed per face against a training step, for several eval batch sizes.

    python benchmarks/bench_eval.py [--device auto] [--images 1024] [--batches 64,128,256,512,1024] [--repeats 3]
        [--no-write]

The notebook grid's two conv widths (residual 16-32-64 and 32-64-128, batch norm, max pooling) are timed as the
sweep trains them: a few training steps first (the model then has the trainer's layout: channels_last where it is
used), then `fit`'s validation pass (`train.eval_seconds_per_image`: its TTA, precision and the eval batch size
under test) over `--images` synthetic faces, best of `--repeats`. Where validation is a large part of an epoch (a
small Training slice with all 3,589 PublicTest faces validating, as the learning-curve table records), its batch
size sets much of a trial's time. Writes the section "Validation pass: eval batch size" of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, write_section
from fer_sweep.config import ModelConfig, RunConfig, TrainConfig
from fer_sweep.learn.device import pick_device, to_device
from fer_sweep.learn.models import model_for
from fer_sweep.learn.precision import resolve_amp
from fer_sweep.learn.train import eval_seconds_per_image, fit_tta, train_throughput

TITLE = "Validation pass: eval batch size"
WIDTHS = {"16-32-64": ((16, 3), (32, 3), (64, 3)), "32-64-128": ((32, 3), (64, 3), (128, 3))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=1024, help="validation faces timed per measurement")
    ap.add_argument("--batches", default="64,128,256,512,1024", help="eval batch sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="timings per batch size; the best is kept")
    ap.add_argument("--no-write", dest="write", action="store_false")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if min(batches) < 1 or args.images < 1 or args.repeats < 1:
        ap.error("--images, --repeats and every batch size must be >= 1")
    device = pick_device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (max(args.images, 512), 48, 48), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 7, (len(x),), generator=gen)
    faces = to_device(x, y, device)
    base = TrainConfig(batch_size=128, epochs=1, tta=True, aug_flip=True)  # as sweeps/residual.yaml trains
    lines = ["| model | train step, ms per face | " + " | ".join(f"val, batch {b}" for b in batches) + " |",
             "|---|---:|" + "---:|" * len(batches)]
    for name, conv in WIDTHS.items():
        cfg = RunConfig(model=ModelConfig(arch="residual", conv=conv, norm="batch", pooling="max", dropout=0.2),
                        train=base)
        model = model_for(cfg, seed=0).to(device)
        train_ms = 1000 / train_throughput(model, faces, cfg.train, steps=4, warmup=2)["train_img_per_s"]
        cells = []
        for b in batches:
            tc = dataclasses.replace(cfg.train, eval_batch_size=b)
            ms = 1000 * min(eval_seconds_per_image(model, faces, faces, tc, args.images) for _ in range(args.repeats))
            cells.append(f"{ms:.2f} ({ms / train_ms:.2f}x)")
            print(f"{name}: eval batch {b}: {ms:.2f} ms per face ({ms / train_ms:.2f}x a training step)", flush=True)
        lines.append(f"| residual {name} | {train_ms:.2f} | " + " | ".join(cells) + " |")
    dtype = resolve_amp(base.amp, device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    body = "\n".join([
        f"`fit`'s validation pass (TTA {fit_tta(base)!r}: the face and its mirror) per validation face, in ms, and "
        "as a multiple of a training step per face (batch 128, after the trainer's warm-up), by eval batch size; "
        f"{args.images} synthetic faces, best of {args.repeats}.", "", *lines, "",
        f"Machine: {machine()}; device {device}, precision {'fp32' if dtype is None else dtype}; load {load:.2f} at "
        "the end."])
    print(body)
    if args.write:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
