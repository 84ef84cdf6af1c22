"""Trials/hour of one sweep with 1 vs. K worker processes on this machine, and the per-trial overhead.

    python benchmarks/bench_workers.py [--workers 2] [--trials 8] [--epochs 3] [--n 1200] [--wandb disabled]

The same seeded configurations (a small CNN grid, synthetic faces, CPU) run once with one worker and
once with K; per-trial overhead is a trial's wall time minus its epochs (model build, wandb run,
storage writes, trials.csv), read from the study.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_section  # noqa: E402
from fer_sweep.runner import load_data, run_sweep  # noqa: E402
from fer_sweep.spec import parse_spec  # noqa: E402
from fer_sweep.sweep import open_study  # noqa: E402


def make_spec(study: str, args) -> object:
    return parse_spec({
        "study": study, "data": "synthetic", "trials": args.trials, "seed": 0, "pruner": {"type": "none"},
        "splits": {"synthetic_n": args.n, "val_frac": 0.15, "test_frac": 0.15, "seed": 0},
        "wandb": {"mode": args.wandb, "project": "fer-sweep-bench"}, "model": {"arch": "cnn", "fc_units": 64},
        "train": {"epochs": args.epochs, "patience": 0},
        "space": {"conv": {"choices": [[[8, 3], [16, 3], [32, 3]], [[16, 3], [32, 3], [64, 3]]]},
                  "dropout": {"low": 0.1, "high": 0.3}, "norm": {"choices": ["batch", "none"]},
                  "lr": {"choices": [0.001, 0.003]}},
    }, f"<{study}>")


def measure(workers: int, args, results: Path) -> dict:
    spec = make_spec(f"w{workers}", args)
    start = time.perf_counter()
    run_sweep(spec, results=results, workers=workers, device="cpu", wandb_mode=args.wandb)
    wall = time.perf_counter() - start
    study = open_study(spec, results / spec.study, None)
    overhead = [t.user_attrs["seconds"] - t.user_attrs["train_seconds"] for t in study.get_trials()
                if "train_seconds" in t.user_attrs]
    return {"wall": wall, "per_hour": 3600 * args.trials / wall, "overhead": statistics.median(overhead)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n", type=int, default=1200)
    parser.add_argument("--wandb", default="disabled", choices=("disabled", "offline"))
    args = parser.parse_args()
    load_data(make_spec("warm", args))  # generate once so neither run pays a first-time cost
    with tempfile.TemporaryDirectory() as tmp:
        rows = {k: measure(k, args, Path(tmp)) for k in (1, args.workers)}
    lines = [f"{args.trials} trials x {args.epochs} epochs, small CNNs on synthetic faces (n={args.n}), CPU, "
             f"wandb {args.wandb}. Workers are processes sharing the journal-file study.", "",
             "| workers | wall s | trials/hour | median per-trial overhead s |", "|---|---|---|---|"]
    lines += [f"| {k} | {r['wall']:.1f} | {r['per_hour']:.0f} | {r['overhead']:.2f} |" for k, r in rows.items()]
    lines += ["", f"Machine: {machine()}"]
    body = "\n".join(lines)
    print(body)
    write_section(f"Workers: trials/hour, 1 vs. {args.workers} (CPU, wandb {args.wandb})", body)


if __name__ == "__main__":
    main()
