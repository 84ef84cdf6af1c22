"""Kernel launches per training step, counted on the CPU: every aten compute op the step dispatches is at least
one kernel launch on a GPU. For the GPU section of RESULTS.md (where the step time goes on an H100).

    python benchmarks/bench_launches.py [--batch-size 128] [--amp bf16]

Runs one real step of the trainer (`fit`'s own `step`: slice, normalise, augment, forward under autocast, loss,
backward, clip, optimiser, stats) of the the notebooks' best residual CNN under a TorchDispatchMode that records every
aten op below autograd, i.e. what a backend executes. View and metadata ops (no kernel) are counted apart. The
CPU runs Adam as a per-parameter loop; CUDA runs it fused (`fused=True`: one multi-tensor kernel), so the
optimiser's ops are reported separately and replaced by 1 in the CUDA estimate.
"""

from __future__ import annotations

import argparse
import collections
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine
from fer_sweep.learn import train as train_mod
from fer_sweep.learn.device import to_device
from fer_sweep.learn.models import build_model
from fer_sweep.learn.throughput import NOTEBOOK_BEST_MODEL, NOTEBOOK_BEST_TRAIN

NO_KERNEL_PREFIXES = ("empty", "new_empty", "lift_fresh", "_local_scalar_dense", "is_nonzero", "set_",
                      "resolve_conj", "resolve_neg", "result_type", "sym_size", "sym_stride", "sym_numel")


class Recorder(TorchDispatchMode):
    """Counts dispatched aten ops by phase: `phase` is set by the caller around each part of the step."""

    def __init__(self):
        super().__init__()
        self.phase = "input"
        self.ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.views: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if func.is_view or name.startswith(NO_KERNEL_PREFIXES):
            self.views[name] += 1
        else:
            self.ops[self.phase][name] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--amp", default="bf16")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    split = to_device(rng.integers(0, 256, (1024, 48, 48), dtype=np.uint8), rng.integers(0, 7, 1024), "cpu")
    cfg = replace(NOTEBOOK_BEST_TRAIN, batch_size=args.batch_size, amp=args.amp)
    model = build_model(NOTEBOOK_BEST_MODEL, seed=0)
    tr = train_mod.start_training(model, split, cfg, (0.0, 255.0), total_steps=10)
    stats = torch.zeros(2)
    idx = torch.randperm(len(split))[:args.batch_size]
    train_mod.train_step(tr, split, idx, stats, measure=False)  # warm-up: optimiser state, oneDNN primitives
    rec = Recorder()
    opt_step = tr.opt.step

    def step_recorded():
        rec.phase = "optimizer"
        done = opt_step()
        rec.phase = "stats"
        return done
    tr.opt.step = step_recorded
    loss_fn = tr.loss_fn

    def loss_recorded(*a, **k):
        rec.phase = "loss and backward"
        return loss_fn(*a, **k)
    tr.loss_fn = loss_recorded
    forward = tr.net.forward

    def forward_recorded(*a, **k):
        rec.phase = "forward"
        return forward(*a, **k)
    tr.net.forward = forward_recorded
    with rec:
        train_mod.train_step(tr, split, idx, stats, measure=False)
    per = {phase: sum(c.values()) for phase, c in rec.ops.items()}
    cuda = sum(v for k, v in per.items() if k != "optimizer") + 1
    print(f"the notebooks' best residual CNN, batch {args.batch_size}, amp {args.amp}, one training step; {machine()}")
    print(f"compute ops dispatched: {sum(per.values())} (" + ", ".join(f"{k} {v}" for k, v in per.items()) +
          f"); view/metadata ops (no kernel): {sum(rec.views.values())}")
    print(f"on CUDA (fused Adam: 1 launch for the optimiser): about {cuda} kernel launches per step")
    for phase, c in rec.ops.items():
        print(f"  {phase}: " + ", ".join(f"{op} {n}" for op, n in c.most_common(14)))


if __name__ == "__main__":
    main()
