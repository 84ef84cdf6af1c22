"""Pruned vs. unpruned sweep over the same seeded configurations: epochs trained and the winner of each.

    python benchmarks/bench_pruning.py [--trials 20] [--epochs 15] [--patience 5] [--startup 3] [--warmup 2]

Both sweeps draw the same configurations (same seed, same space: the seeds' CNN grid) on synthetic
faces on the CPU; one prunes with the median pruner, the other runs every trial to the end (early
stopping on in both). Target: the pruned sweep trains <= 50% of the epochs and finds the
same winner.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_section  # noqa: E402
from fer_sweep.runner import run_sweep  # noqa: E402
from fer_sweep.spec import parse_spec  # noqa: E402


def spec_dict(study: str, pruner: dict, args) -> dict:
    return {
        "study": study, "data": "synthetic", "trials": args.trials, "seed": 0, "pruner": pruner,
        "splits": {"synthetic_n": args.n, "val_frac": 0.15, "test_frac": 0.15, "seed": 0},
        "wandb": {"mode": "disabled"}, "model": {"arch": "cnn", "fc_units": 64},
        "train": {"epochs": args.epochs, "patience": args.patience, "optimizer": "adam"},
        "space": {"conv": {"choices": [[[8, 3], [16, 3], [32, 3]], [[16, 3], [32, 3], [64, 3]]]},
                  "dropout": {"low": 0.1, "high": 0.3}, "norm": {"choices": ["batch", "layer", "none"]},
                  "pooling": {"choices": ["max", "avg", "none"]}, "batch_size": {"choices": [64, 128]},
                  "lr": {"choices": [0.001, 0.01, 0.05]}},
    }


def parse_pruner(text: str) -> tuple[str, dict]:
    """`S:W` = median pruner with S startup trials and W warm-up epochs; `hyperband:M:R` = min epochs, factor."""
    kind, *values = text.split(":") if text.startswith("hyperband") else ("median", *text.split(":"))
    a, b = (int(v) for v in values)
    if kind == "hyperband":
        return f"hyperband (min {a} epochs, reduction factor {b})", {"type": kind, "min_epochs": a, "reduction_factor": b}
    return f"median ({a} startup trials, {b} warm-up epochs)", {"type": kind, "startup_trials": a, "warmup_epochs": b}


def sweep(study: str, pruner: dict, args, results: Path) -> dict:
    spec = parse_spec(spec_dict(study, pruner, args), f"<{study}>")
    start = time.perf_counter()
    st = run_sweep(spec, results=results, device="cpu", wandb_mode="disabled")
    best = st["best"]
    return {"epochs": st["epochs_trained"], "budget": st["epochs_budget"], "seconds": time.perf_counter() - start,
            "best_trial": best["number"], "best_val_acc": best["val_acc"], "counts": st["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=15, help="the seeds' budget")
    parser.add_argument("--patience", type=int, default=5, help="early stopping, in both sweeps (the seeds' 5)")
    parser.add_argument("--pruners", default="3:2,3:1",
                        help="pruners to compare, comma-separated: S:W = median with S startup trials and W warm-up "
                             "epochs; hyperband:M:R = hyperband with min M epochs and reduction factor R")
    parser.add_argument("--n", type=int, default=1500, help="synthetic faces")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        full = sweep("unpruned", {"type": "none"}, args, Path(tmp))
        pruned = [(name, sweep(f"pruned-{i}", pruner, args, Path(tmp)))
                  for i, (name, pruner) in enumerate(map(parse_pruner, args.pruners.split(",")))]
    lines = [f"{args.trials} seeded configurations of the seeds' CNN grid, up to {args.epochs} epochs, early stopping "
             f"(patience {args.patience}) in every sweep, synthetic faces (n={args.n}) on the CPU; every sweep draws "
             "the same configurations.", "",
             "| sweep | epochs trained | share of unpruned | wall s | winner | winner val acc | states |",
             "|---|---|---|---|---|---|---|"]
    for name, r in [("unpruned", full), *pruned]:
        lines.append(f"| {name} | {r['epochs']} of {r['budget']} | {100 * r['epochs'] / full['epochs']:.0f}% | "
                     f"{r['seconds']:.0f} | trial {r['best_trial']} | {100 * r['best_val_acc']:.2f}% | {r['counts']} |")
    same = [f"{name}: {'yes' if r['best_trial'] == full['best_trial'] else 'no'}" for name, r in pruned]
    lines += ["", "Same winner as the unpruned sweep? " + "; ".join(same) + ".",
              "Target: <= 50% of the epochs for the same winner.", "", f"Machine: {machine()}"]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("Pruning: pruned vs. unpruned sweep", body)


if __name__ == "__main__":
    main()
