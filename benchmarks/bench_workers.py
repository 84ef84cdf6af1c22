"""Trials/hour and aggregate train images/s of one sweep with 1 vs. K worker processes, and the per-trial overhead.

    python benchmarks/bench_workers.py [--workers 1,2] [--trials 8] [--epochs 3] [--n 1200] [--wandb disabled]
        [--device cpu|cuda] [--gpus 0] [--model small|seeds]

The same seeded configurations run once per worker count, through `run_sweep` exactly as
`fer-sweep run --workers K [--gpus ...]` does. On a GPU machine: `--device cuda --gpus 0 --workers 1,2,4,8
--model seeds --n 28709` gives the aggregate images/s of K concurrent trials of the notebooks' best model on one
GPU. Per-trial overhead is a trial's wall time minus its epochs (model build, wandb run, storage writes,
trials.csv), read from the study. Aggregate images/s = training images of all trials / wall time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_section
from fer_sweep.sweep.launch import LaunchPlan, run_sweep
from fer_sweep.sweep.spec import parse_spec
from fer_sweep.sweep.study import open_study
from fer_sweep.sweep.trial import load_data


def make_spec(study: str, args) -> object:
    return parse_spec({
        "study": study, "data": "synthetic", "trials": args.trials, "seed": 0, "pruner": {"type": "none"},
        "splits": {"synthetic_n": args.n, "val_frac": 0.15, "test_frac": 0.15, "seed": 0},
        "wandb": {"mode": args.wandb, "project": "fer-sweep-bench"}, **MODELS[args.model],
    }, f"<{study}>")


MODELS = {  # model, train and space sections: a small CNN grid, or the notebooks' best model with 2 dropouts
    "small": {"model": {"arch": "cnn", "fc_units": 64}, "train": {"epochs": 3, "patience": 0},
              "space": {"conv": {"choices": [[[8, 3], [16, 3], [32, 3]], [[16, 3], [32, 3], [64, 3]]]},
                        "dropout": {"low": 0.1, "high": 0.3}, "norm": {"choices": ["batch", "none"]},
                        "lr": {"choices": [0.001, 0.003]}}},
    "seeds": {"model": {"arch": "residual", "conv": [[32, 3], [64, 3], [128, 3]], "norm": "batch", "pooling": "max"},
              "train": {"epochs": 3, "patience": 0, "batch_size": 128, "lr": 0.001},
              "space": {"dropout": {"low": 0.1, "high": 0.3}}},
}


def measure(workers: int, args, results: Path, n_train: int) -> dict:
    spec = make_spec(f"w{workers}", args)
    start = time.perf_counter()
    run_sweep(LaunchPlan(spec, results, workers=workers, gpus=tuple(args.gpus) if args.gpus else None,
                         device=args.device, wandb_mode=args.wandb))
    wall = time.perf_counter() - start
    study = open_study(spec, results / spec.study, None)
    done = [t for t in study.get_trials() if "train_seconds" in t.user_attrs]
    overhead = [t.user_attrs["seconds"] - t.user_attrs["train_seconds"] for t in done]
    images = sum(t.user_attrs["epochs"] for t in done) * n_train
    return {"wall": wall, "per_hour": 3600 * args.trials / wall, "overhead": statistics.median(overhead),
            "img_per_s": images / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2,4,8")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n", type=int, default=1200, help="synthetic faces")
    parser.add_argument("--wandb", default="disabled", choices=("disabled", "offline"))
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--gpus", default=None, help="GPUs for the workers, e.g. 0 (as `run --gpus`)")
    parser.add_argument("--model", default="small", choices=tuple(MODELS))
    args = parser.parse_args()
    args.gpus = [g for g in args.gpus.split(",") if g] if args.gpus else None
    MODELS[args.model]["train"]["epochs"] = args.epochs
    splits = load_data(make_spec("warm", args))  # generate once so no run pays a first-time cost
    counts = [int(k) for k in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = {k: measure(k, args, Path(tmp), len(splits.train.y)) for k in counts}
    where = f"GPUs {','.join(args.gpus)}" if args.gpus else args.device
    lines = [f"{args.trials} trials x {args.epochs} epochs, {args.model} model(s) on synthetic faces (n={args.n}), "
             f"{where}, wandb {args.wandb}. Workers are processes sharing the journal-file study.", "",
             "| workers | wall s | trials/hour | aggregate train img/s | median per-trial overhead s |",
             "|---|---|---|---|---|"]
    lines += [f"| {k} | {r['wall']:.1f} | {r['per_hour']:.0f} | {r['img_per_s']:.0f} | {r['overhead']:.2f} |"
              for k, r in rows.items()]
    lines += ["", f"Machine: {machine()}"]
    body = "\n".join(lines)
    print(body)
    write_section(f"Workers: trials/hour, {args.workers} workers ({where}, wandb {args.wandb})", body)


if __name__ == "__main__":
    main()
