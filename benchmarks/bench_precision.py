"""Accuracy parity of the precision policy: the notebooks' best model trained in fp32 and in bf16 autocast.

    python benchmarks/bench_precision.py [--data PATH] [--train-rows 8000] [--epochs 10] [--seed 0]

Same data slice (--train-rows Training rows, stratified with a fixed seed; validation = the PublicTest rows,
or where the file has none, 10% of Training), same seed, same initial weights, same batch order: only
`amp` differs (off = fp32, bf16 = bf16 autocast, the policy `amp: auto` picks on CPUs with native bf16 and on
CUDA). Prints both curves and writes the section "Precision: fp32 vs bf16 accuracy" of RESULTS.md.
Target: final val accuracy within 1 point.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import default_data, machine, write_section
from fer_sweep.data.splits import load_splits
from fer_sweep.learn.device import pick_device, to_device
from fer_sweep.learn.models import build_model
from fer_sweep.learn.precision import cpu_capability
from fer_sweep.learn.throughput import NOTEBOOK_BEST_MODEL, NOTEBOOK_BEST_TRAIN
from fer_sweep.learn.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    data = args.data or default_data()
    splits = load_splits(data, val_frac=0.1, test_frac=0.1, seed=0)
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(len(splits.train.y), size=min(args.train_rows, len(splits.train.y)), replace=False))
    dev = pick_device(args.device)
    train = to_device(splits.train.x[rows], splits.train.y[rows], dev)
    val = to_device(splits.val.x, splits.val.y, dev)
    base = replace(NOTEBOOK_BEST_TRAIN, epochs=args.epochs, patience=0, seed=args.seed)
    curves, seconds = {}, {}
    for amp in ("off", "bf16"):
        model = build_model(NOTEBOOK_BEST_MODEL, seed=args.seed)
        start, curve = time.perf_counter(), []
        for r in fit(model, train, val, replace(base, amp=amp)):
            curve.append((r.metrics["train/acc"], r.metrics["val/acc"]))
            print(f"{amp} epoch {r.epoch}: train {r.metrics['train/acc']:.4f} val {r.metrics['val/acc']:.4f} "
                  f"({r.metrics['time/epoch_s']:.0f} s)", flush=True)
        curves[amp], seconds[amp] = curve, time.perf_counter() - start
    gap = 100 * (curves["bf16"][-1][1] - curves["off"][-1][1])
    lines = [f"Seeds' best model (residual 32-64-128, BatchNorm, max pool, dropout 0.3, Adam 1e-3, batch 64), "
             f"{len(rows)} rows of the train split of `{Path(data).name}` (random, seed {args.seed}), validation = "
             f"its validation split ({len(val)} faces; the PublicTest rows where the file has them), "
             f"{args.epochs} epochs, seed {args.seed}, same initial weights and batch order; device {dev} "
             f"({cpu_capability() if dev.type == 'cpu' else ''}).", "",
             "| epoch | fp32 train | fp32 val | bf16 train | bf16 val |", "|---:|---:|---:|---:|---:|"]
    for e, ((t32, v32), (t16, v16)) in enumerate(zip(curves["off"], curves["bf16"]), 1):
        lines.append(f"| {e} | {100 * t32:.2f}% | {100 * v32:.2f}% | {100 * t16:.2f}% | {100 * v16:.2f}% |")
    lines += ["", f"Final val accuracy: fp32 {100 * curves['off'][-1][1]:.2f}%, "
              f"bf16 {100 * curves['bf16'][-1][1]:.2f}% "
              f"(bf16 - fp32 = {gap:+.2f} points; target within 1 point: {'met' if abs(gap) <= 1 else 'missed'}). "
              f"Wall time: fp32 {seconds['off']:.0f} s, bf16 {seconds['bf16']:.0f} s "
              "(see Trainer throughput for speed).", "",
              f"Machine: {machine()}"]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("Precision: fp32 vs bf16 accuracy", body)


if __name__ == "__main__":
    main()
