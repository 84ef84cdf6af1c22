"""Real-data accuracy: a whole sweep and `best` through the real CLI, on any FER2013 layout (not run by CI).

    python benchmarks/bench_accuracy.py SPEC [--data PATH] [--trials N] [--seeds 3] [--best-epochs E]
        [--ensemble E] [--workers K] [--device D] [--gpus 0,1] [--results DIR] [--study NAME]

Runs `fer-sweep run SPEC --data PATH`, then `fer-sweep best --ensemble E` (the kept trial models combined,
no training) and `fer-sweep best --seeds K`, and writes the section
"Accuracy: <study> on <data>" of benchmarks/RESULTS.md: machine, precision, trials by state, training epochs
spent (each a pass over the sweep's train split), wall times, the winner's parameters and validation
accuracy, and `best`'s test accuracy and macro-F1 (mean ± std over seeds), with the retrain's curve.
Splits are fer-sweep's own: with the dev file (Training + PublicTest rows) validation is PublicTest and
the test split is carved from Training with a fixed seed; with the full Kaggle file, test is PrivateTest.
The section is rewritten every 3 minutes (POLL_S) while it runs (marked partial), so a stopped run still reports
what finished; running the same command again resumes the sweep (and retrains `best` if it had not ended).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import default_data, machine, write_section  # noqa: E402

POLL_S = 180  # seconds between progress rewrites (each runs `fer-sweep status`)
EPOCH_LINE = re.compile(r"best: seed (\d+) epoch (\d+)/(\d+): train/acc ([\d.]+) val/acc ([\d.]+)")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fer_sweep", *args]


def run_logged(cmd: list[str], log: Path, on_poll) -> int:
    """Run `cmd` with its output appended to `log`; call on_poll() every POLL_S seconds until it ends."""
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            try:
                proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                on_poll()
    return proc.returncode


def status(study: str, results: Path) -> dict | None:
    done = subprocess.run(cli("status", "--study", study, "--results", str(results), "--json", "--top", "3"),
                          cwd=ROOT, capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else None


def retrain_curve(log: Path) -> dict[int, list[tuple[int, float, float]]]:
    """Per seed: (epoch, train acc, val acc) of `best`'s retrain, read from its progress lines."""
    curves: dict[int, list] = {}
    if log.exists():
        for m in EPOCH_LINE.finditer(log.read_text()):
            curves.setdefault(int(m[1]), []).append((int(m[2]), float(m[4]), float(m[5])))
    return curves


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def ensemble_lines(e: dict | None) -> list[str]:
    """`best --ensemble K`'s result: the ensemble next to the single winner's kept model, on the test split."""
    if not e:
        return []
    split = e["split"]
    members = ", ".join(f"trial {m['trial']} x{m['picks']} (w {m['weight']:.2f}, val {pct(m['val/acc'])})"
                        for m in e["members"])
    return [f"- ensemble (`best --ensemble {e['max_picks']}`, kept trial models, no training, {e['seconds']:.0f} s): "
            f"**{split} acc {pct(e[split + '/acc'])}**, macro-F1 {pct(e[split + '/macro_f1'])}, val acc "
            f"{pct(e['val/acc'])}; single winner's kept model (trial {e['single']['trial']}): {split} acc "
            f"{pct(e['single'][split + '/acc'])}, val acc {pct(e['single']['val/acc'])}; "
            f"gain {100 * (e[split + '/acc'] - e['single'][split + '/acc']):+.2f} pts",
            f"- ensemble members ({e['picks']} picks from {len(e['candidates'])} kept): {members}"]


def section(args, study: str, st: dict | None, times: dict, metrics: dict | None, curves: dict, done: bool,
            ens: dict | None = None) -> str:
    from fer_sweep.learn.device import pick_device
    from fer_sweep.learn.precision import precision
    from fer_sweep.sweep.spec import load_spec

    spec = load_spec(args.spec, overrides={"data": args.data}, check_data=False)
    amp = spec.train.get("amp", "auto")
    lines = [("" if done else "**Partial: still running or stopped before the end.** ") +
             f"`{args.spec}` with `--trials {args.trials or spec.trials}`, then `best --seeds {args.seeds}`"
             + (f" `--epochs {args.best_epochs}`" if args.best_epochs else "") + f", on `{args.data}`.", "",
             f"- machine: {machine()}",
             f"- precision: {precision(amp, pick_device(args.device)).describe()}"]
    if st:
        c = st["counts"]
        lines += [f"- trials: {st['finished']} of {st['target']} finished: " +
                  ", ".join(f"{k} {v}" for k, v in c.items() if v) +
                  f"; training epochs spent {st['epochs_trained']} (passes over the sweep's train split) of an "
                  f"unpruned budget of {st['epochs_budget']}",
                  f"- wall time: sweep {times.get('sweep', time.perf_counter() - times['start']) / 60:.1f} min"
                  + (f", best {times['best'] / 60:.1f} min" if "best" in times else "")]
        if st.get("best"):
            b = st["best"]
            lines.append(f"- sweep winner: trial {b['number']}, val acc {pct(b['val_acc'])}, params "
                         f"`{json.dumps(b['params'])}`")
    if metrics:
        split = metrics["split"]
        acc, f1 = metrics[f"{split}/acc"], metrics[f"{split}/macro_f1"]
        lines += [f"- `best` ({metrics['seeds']} seed{'s' if metrics['seeds'] > 1 else ''}, "
                  f"n_{split} = {metrics['n_' + split]}): **{split} acc {pct(acc['mean'])} ± {pct(acc['std'])}**, "
                  f"{split} macro-F1 {pct(f1['mean'])} ± {pct(f1['std'])}; val acc {pct(metrics['val/acc']['mean'])}",
                  "- per seed: " + "; ".join(
                      f"seed {r['seed']}: {r['epochs']} epochs (best {r['best_epoch']}), val {pct(r['val/acc'])}"
                      + (f", test {pct(r['test/acc'])}" if "test/acc" in r else "") for r in metrics["runs"])]
        if metrics.get("seeds_ensemble"):
            e = metrics["seeds_ensemble"]
            lines.append(f"- average of the {len(e['seeds'])} retrained seeds (an ensemble of seeds): "
                         f"{split} acc {pct(e[split + '/acc'])}, macro-F1 {pct(e[split + '/macro_f1'])}")
    lines += ensemble_lines(ens)
    for seed, curve in sorted(curves.items()):
        lines.append(f"- retrain curve, seed {seed} (epoch: train acc / val acc): " +
                     ", ".join(f"{e}: {pct(tr)} / {pct(va)}" for e, tr, va in curve))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--data", default=None, help="FER2013 in any layout (default: FER2013_CSV or the shared dev file)")
    parser.add_argument("--trials", type=int, default=None, help="default: the spec's")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--best-epochs", type=int, default=None, help="epochs of the retrain (default: the sweep's)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gpus", default=None, help="GPUs for the workers, as `run --gpus` (e.g. 0)")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "bench-accuracy")
    parser.add_argument("--study", default=None, help="default: the spec's study name")
    parser.add_argument("--ensemble", type=int, default=10, help="picks of `best --ensemble` (0: skip it)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    args.data = args.data or default_data()
    study = args.study or args.spec.stem
    args.results.mkdir(parents=True, exist_ok=True)
    log = args.results / f"{study}.log"
    title = f"Accuracy: {study} on {Path(args.data).name}"
    times = {"start": time.perf_counter()}
    lock = threading.Lock()
    ens_path = args.results / f"{study}-ensemble.json"
    ens: dict = {}

    def report(metrics=None, done=False) -> None:
        with lock:
            body = section(args, study, status(study, args.results), times, metrics, retrain_curve(log), done,
                           ens.get("info"))
            print(body, flush=True)
            if not args.no_write:
                write_section(title, body)

    run = ["run", str(args.spec), "--data", args.data, "--study", study, "--results", str(args.results),
           "--wandb", "disabled", "--device", args.device, "--workers", str(args.workers)]
    if args.trials:
        run += ["--trials", str(args.trials)]
    if args.gpus:
        run += ["--gpus", args.gpus]
    if run_logged(cli(*run), log, report) != 0:
        report()
        raise SystemExit(f"the sweep failed: see {log}")
    times["sweep"] = time.perf_counter() - times["start"]
    if args.ensemble:  # seconds: the kept trial models, combined on validation, tested once
        done = subprocess.run(cli("best", "--study", study, "--results", str(args.results), "--ensemble",
                                  str(args.ensemble), "--json", "--device", args.device),
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode == 0:
            ens["info"] = json.loads(done.stdout)
            ens_path.write_text(done.stdout)
        else:
            print(f"best --ensemble failed: {done.stderr.strip()}", file=sys.stderr)
    report()
    metrics_path = args.results / f"{study}-best.json"
    best = ["best", "--study", study, "--results", str(args.results), "--seeds", str(args.seeds), "--json",
            "--wandb", "disabled", "--device", args.device]
    if args.best_epochs:
        best += ["--epochs", str(args.best_epochs)]
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ fer-sweep {' '.join(best)}\n")
    proc = subprocess.Popen(cli(*best), cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log, "a"), text=True)
    while proc.poll() is None:
        try:
            proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            report()
    if proc.returncode != 0:
        report()
        raise SystemExit(f"best failed: see {log}")
    metrics = json.loads(proc.stdout.read())
    metrics_path.write_text(json.dumps(metrics, indent=2))
    times["best"] = time.perf_counter() - t0
    report(metrics, done=True)


if __name__ == "__main__":
    main()
