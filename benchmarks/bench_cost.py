"""The cost side of training on this machine: FLOPs per training image, achieved GFLOP/s, the fraction of the
measured matmul peak in the same precision, and where the rest of the step time goes (not run by CI).

    python benchmarks/bench_cost.py [--data PATH|synthetic] [--steps 30] [--profile-steps 10] [--repeats 3] [--no-write]

For the reference model (the original notebooks' residual 32-64-128, batch 64) in fp32 and in bf16 autocast, and for
the two models of the issue-20 recipe (sweeps/strong-sgd.yaml's VGG and sweeps/resnet.yaml's ResNet, 40x40 crops, batch
128, bf16), runs `fer-sweep bench`'s own measurement (`learn.throughput.run_bench`: the trainer's real step, torch's
flop counter, a 2048^3 matmul in the same precision for the peak). Then profiles the reference model's step with
torch.profiler and sorts each operator's own CPU time into classes (convolutions forward, backward, matmuls,
BatchNorm, activations and pooling, the optimiser, casts and copies, augmentation and the rest), so the gap between
the achieved rate and the matmul peak is accounted for by measurement rather than guessed. Writes the section
"Cost: FLOPs, GFLOP/s and the matmul peak" of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import default_data, machine, write_section

TITLE = "Cost: FLOPs, GFLOP/s and the matmul peak"
MODELS = (  # (label, BenchOptions keyword arguments)
    ("reference model (residual 32-64-128, 48x48), fp32", dict(arch="residual", conv="32,64,128", amp="off",
                                                                batch_size=64)),
    ("reference model (residual 32-64-128, 48x48), bf16", dict(arch="residual", conv="32,64,128", amp="auto",
                                                                batch_size=64)),
    ("strong-sgd.yaml's VGG (32-64-128-256 x2, 40x40 crops), bf16",
     dict(arch="vgg", conv="32,64,128,256", depth=2, crop=40, amp="auto", batch_size=128)),
    ("resnet.yaml's ResNet (32-64-128-256, 40x40 crops), bf16",
     dict(arch="residual", conv="32,64,128,256", crop=40, amp="auto", batch_size=128)),
)
CLASSES = (  # (class, aten op names: exact, or prefixes ending in "*"), first match wins
    ("conv backward", ("convolution_backward*", "mkldnn_convolution_backward*")),
    ("conv forward", ("convolution", "_convolution", "mkldnn_convolution", "conv2d", "_mkldnn_convolution*")),
    ("matmul (linear layers)", ("addmm", "mm", "matmul", "linear", "bmm")),
    ("BatchNorm", ("*batch_norm*",)),
    ("ReLU, pooling, dropout", ("relu", "relu_", "threshold_backward", "max_pool2d*", "avg_pool2d*", "dropout",
                                "native_dropout*", "bernoulli_", "adaptive_avg_pool2d*")),
    ("optimiser (Adam, per parameter)", ("_foreach_*", "_fused_adam*", "addcdiv_", "addcmul_", "lerp_", "sqrt",
                                         "add_", "mul_", "div_", "zero_")),
    ("casts, copies, layout", ("to", "_to_copy", "copy_", "contiguous", "clone", "empty", "empty_like",
                               "empty_strided", "as_strided", "view", "reshape", "permute", "transpose", "t",
                               "detach", "resize_", "_reshape_alias", "expand", "unsqueeze", "slice", "select")),
    ("augmentation and batches", ("grid_sampler*", "affine_grid*", "flip", "index", "randperm", "rand", "where",
                                  "gather", "sub", "mul", "div", "float", "ones_like", "zeros_like")),
    ("loss", ("cross_entropy*", "log_softmax*", "_log_softmax*", "nll_loss*", "softmax", "_softmax*")),
)


def classify(name: str) -> str:
    if "Optimizer" in name:  # the optimiser's own Python around its aten ops (torch's record_function)
        return "optimiser (Adam, per parameter)"
    op = name.removeprefix("aten::")
    for label, names in CLASSES:
        if any(op == n or (n.endswith("*") and (op.startswith(n[:-1].lstrip("*")) if not n.startswith("*")
                                                  else n.strip("*") in op)) for n in names):
            return label
    return "other (sums, norms, small ops)"


def profile_step(amp: str, data: str, steps: int) -> dict[str, float]:
    """Self CPU time per class over `steps` real training steps of the reference model (after 3 warm-up steps)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fer_sweep.data.splits import load_splits
    from fer_sweep.learn.device import pick_device, to_device
    from fer_sweep.learn.models import build_model
    from fer_sweep.learn.throughput import NOTEBOOK_BEST_MODEL, NOTEBOOK_BEST_TRAIN
    from fer_sweep.learn.train import epoch_batches, input_norm, start_training, train_step

    dev = pick_device("cpu")
    splits = load_splits(data, synthetic_n=2048)
    train = to_device(splits.train.x, splits.train.y, dev)
    cfg = NOTEBOOK_BEST_TRAIN.__class__(**{**vars(NOTEBOOK_BEST_TRAIN), "amp": amp})
    tr = start_training(build_model(NOTEBOOK_BEST_MODEL, seed=0), train, cfg, input_norm(cfg.normalize, train.x),
                       total_steps=steps + 3)
    tr.net.train()
    stats = torch.zeros(2)
    batches = epoch_batches(len(train), cfg.batch_size, dev)
    for _ in range(3):
        train_step(tr, train, next(batches), stats, measure=False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(tr, train, next(batches), stats, measure=False)
        wall_us = (time.perf_counter() - t0) * 1e6
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::") or "Optimizer" in event.key:
            shares[classify(event.key)] += event.self_cpu_time_total
    total = sum(shares.values())
    out = {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}
    out["(operators' share of the step's wall time)"] = min(total / wall_us, 1.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None,
                        help="FER2013 (default: FER2013_CSV or the shared dev file), or synthetic")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="measure each model this many times, interleaving the "
                        "training rate and the peak; keep the best of each (a shared machine's load comes and goes)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    data = args.data or default_data()
    if data != "synthetic" and not Path(data).exists():
        data = "synthetic"
    import os

    import torch

    from fer_sweep.learn.throughput import BenchOptions, run_bench

    rows = []
    for label, kw in MODELS:
        tries = [run_bench(BenchOptions(data=data, steps=args.steps, **kw)) for _ in range(args.repeats)]
        r = dict(max(tries, key=lambda t: t["train_img_per_s"]))
        r["matmul_peak_gflops"] = max(t["matmul_peak_gflops"] for t in tries)
        r["achieved_gflops"] = r["train_flops_per_image"] * r["train_img_per_s"] / 1e9
        r["peak_fraction"] = r["achieved_gflops"] / r["matmul_peak_gflops"]
        rows.append((label, r))
        print(label, {k: r[k] for k in ("train_img_per_s", "train_flops_per_image", "achieved_gflops",
                                        "matmul_peak_gflops", "peak_fraction")}, flush=True)
    profiles = {amp: profile_step(amp, data, args.profile_steps) for amp in ("off", "auto")}
    load = os.getloadavg()
    lines = [f"`python benchmarks/bench_cost.py --steps {args.steps} --repeats {args.repeats}` (`fer-sweep bench`'s "
             "measurement: the trainer's own step, FLOPs from torch's flop counter, the peak from a 2048^3 matmul in "
             f"the same precision on the same {torch.get_num_threads()} threads; each model measured {args.repeats} "
             "times, the training rate and the peak interleaved, the best of each kept).", "",
             "| model | precision | train img/s | MFLOP per training image | achieved GFLOP/s | matmul peak GFLOP/s "
             "| of peak |", "|---|---|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        lines.append(f"| {label.rsplit(', ', 1)[0]} | {r['peak_dtype']} | {r['train_img_per_s']:.0f} | "
                     f"{r['train_flops_per_image'] / 1e6:.0f} | {r['achieved_gflops']:.1f} | "
                     f"{r['matmul_peak_gflops']:.1f} | {100 * r['peak_fraction']:.0f}% |")
    lines += ["", "Where the reference model's step time goes (torch.profiler, self CPU time of each operator over "
              f"{args.profile_steps} steps, batch 64):", "",
              "| operators | fp32 | bf16 autocast |", "|---|---:|---:|"]
    for key in sorted(set(profiles["off"]) | set(profiles["auto"]), key=lambda k: -profiles["off"].get(k, 0)):
        lines.append(f"| {key} | {100 * profiles['off'].get(key, 0):.0f}% | "
                     f"{100 * profiles['auto'].get(key, 0):.0f}% |")
    lines += ["", f"- machine: {machine()}; load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} at the end",
              f"- data: {data}; {time.strftime('%Y-%m-%d')}"]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
