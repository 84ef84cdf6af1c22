"""Pruned vs. unpruned sweep over the same seeded configurations: epochs trained and the winner of each.

    python benchmarks/bench_pruning.py [--trials 12] [--epochs 8] [--n 1500]

Both sweeps draw the same configurations (same seed, same space: the seeds' CNN grid) on synthetic
faces on the CPU; one prunes with the median pruner, the other runs every trial to the end (early
stopping on, patience 3, in both). Target: the pruned sweep trains <= 50% of the epochs and finds the
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


def spec_dict(study: str, pruner: dict, trials: int, epochs: int, n: int) -> dict:
    return {
        "study": study, "data": "synthetic", "trials": trials, "seed": 0, "pruner": pruner,
        "splits": {"synthetic_n": n, "val_frac": 0.15, "test_frac": 0.15, "seed": 0},
        "wandb": {"mode": "disabled"}, "model": {"arch": "cnn", "fc_units": 64},
        "train": {"epochs": epochs, "patience": 3, "optimizer": "adam"},
        "space": {"conv": {"choices": [[[8, 3], [16, 3], [32, 3]], [[16, 3], [32, 3], [64, 3]]]},
                  "dropout": {"low": 0.1, "high": 0.3}, "norm": {"choices": ["batch", "layer", "none"]},
                  "pooling": {"choices": ["max", "avg", "none"]}, "batch_size": {"choices": [64, 128]},
                  "lr": {"choices": [0.001, 0.01, 0.05]}},
    }


def sweep(study: str, pruner: dict, args, results: Path) -> dict:
    spec = parse_spec(spec_dict(study, pruner, args.trials, args.epochs, args.n), f"<{study}>")
    start = time.perf_counter()
    st = run_sweep(spec, results=results, device="cpu", wandb_mode="disabled")
    best = st["best"]
    return {"epochs": st["epochs_trained"], "budget": st["epochs_budget"], "seconds": time.perf_counter() - start,
            "best_trial": best["number"], "best_val_acc": best["val_acc"], "counts": st["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n", type=int, default=1500, help="synthetic faces")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        full = sweep("unpruned", {"type": "none"}, args, Path(tmp))
        pruned = sweep("pruned", {"type": "median", "startup_trials": 3, "warmup_epochs": 2}, args, Path(tmp))
    share = pruned["epochs"] / full["epochs"]
    same = pruned["best_trial"] == full["best_trial"]
    lines = [f"{args.trials} seeded configurations of the seeds' CNN grid, up to {args.epochs} epochs, early stopping "
             f"(patience 3) in both, synthetic faces (n={args.n}) on the CPU.", "",
             "| sweep | epochs trained | of budget | wall s | winner | winner val acc | states |",
             "|---|---|---|---|---|---|---|"]
    for name, r in (("unpruned", full), ("median pruner (3 startup trials, 2 warm-up epochs)", pruned)):
        lines.append(f"| {name} | {r['epochs']} | {r['budget']} | {r['seconds']:.0f} | trial {r['best_trial']} | "
                     f"{100 * r['best_val_acc']:.2f}% | {r['counts']} |")
    lines += ["", f"Pruned sweep trained {100 * share:.0f}% of the unpruned sweep's epochs; "
              f"same winner: {'yes' if same else 'no'}. Target: <= 50% for the same winner.", "",
              f"Machine: {machine()}"]
    body = "\n".join(lines)
    print(body)
    write_section("Pruning: pruned vs. unpruned sweep", body)


if __name__ == "__main__":
    main()
