"""Never training an epoch twice, measured on real data: a sweep stopped three times (SIGTERM, kill -9, `--timeout`)
against the same sweep uninterrupted (epochs redone, and what restarting each cut trial from epoch 0 would have
redone), then a retrain continued from 3 to 5 epochs against a fresh 5-epoch one (epochs, minutes, accuracy).

    python benchmarks/bench_resume.py --data ../shared/data/fer2013-dev.csv.gz [--trials 2] [--epochs 4]

Any FER2013 layout works (Kaggle's icml_face_data.csv, fer2013.csv, the image folders). Runs the real CLI in
subprocesses (CPU, wandb off, `deterministic: true`); prints progress, writes RESULTS.md's section at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, write_section

SECTION = "Resuming instead of retraining (issue 29, real FER2013)"


def spec(data: str, trials: int, epochs: int) -> dict:
    """The notebook's small CNN (16-32-64, batch norm, max pooling, Adam), two learning rates searched."""
    return {"study": "resume", "data": data, "trials": trials, "seed": 0, "sampler": "random",
            "pruner": {"type": "none"}, "wandb": {"mode": "disabled"}, "keep": 0,
            "model": {"arch": "cnn", "conv": [[16, 3], [32, 3], [64, 3]], "norm": "batch", "pooling": "max",
                      "dropout": 0.2},
            "train": {"optimizer": "adam", "epochs": epochs, "patience": 0, "batch_size": 128, "aug_flip": True,
                      "schedule": "constant", "deterministic": True},
            "space": {"lr": {"choices": [0.001, 0.003, 0.0003][:max(trials, 1)]}}}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fer_sweep", *args]


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_until(args: list[str], stop_at: str | None, how: str | None, log: Path) -> tuple[int, float]:
    """Run `fer-sweep` with `args`; when a stderr line contains `stop_at`, stop it `how` (sigterm | kill). Returns
    (exit code, seconds)."""
    t0 = time.perf_counter()
    with open(log, "a") as out:
        proc = subprocess.Popen(cli(*args), stdout=out, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count() or 1)})
        assert proc.stderr is not None
        for line in proc.stderr:
            out.write(line)
            out.flush()
            if "epoch" in line or "resumes" in line or "error" in line:
                say(line.strip()[:150])
            if stop_at and how and stop_at in line:
                if how == "kill":
                    proc.kill()
                else:
                    proc.send_signal(signal.SIGTERM)
                stop_at = None
        proc.wait()
    return proc.returncode, time.perf_counter() - t0


def status(results: Path) -> dict:
    done = subprocess.run(cli("status", "--study", "resume", "--results", str(results), "--json"),
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def trials(results: Path) -> list[dict]:
    import optuna

    backend = optuna.storages.journal.JournalFileBackend(str(results / "resume" / "journal.log"))
    study = optuna.load_study(study_name="resume", storage=optuna.storages.JournalStorage(backend))
    return [{"number": t.number, "state": t.state.name, "value": t.value, "attrs": dict(t.user_attrs),
             "reported": len(t.intermediate_values)} for t in study.get_trials()]


def best(results: Path, epochs: int, log: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    with open(log, "a") as err:
        done = subprocess.run(cli("best", "--study", "resume", "--results", str(results), "--device", "cpu",
                                  "--epochs", str(epochs), "--json", "--wandb", "disabled"),
                              stdout=subprocess.PIPE, stderr=err, text=True, check=True)
    return json.loads(done.stdout), time.perf_counter() - t0


def acc(metrics: dict) -> str:
    """The retrain's test accuracy (`best --json`: {"mean", "std"} over its seeds)."""
    a = metrics["test/acc"]
    return f"{100 * a['mean']:.2f}%" if isinstance(a, dict) else f"{100 * a:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a FER2013 file or folder (any layout)")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (the cuts land at epoch 2)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = parser.parse_args()
    if args.data != "synthetic" and not Path(args.data).exists():
        sys.exit(f"error: --data {args.data}: not found")
    out = args.out or Path(tempfile.mkdtemp(prefix="fer-resume-"))
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "resume.yaml"
    data = args.data if args.data == "synthetic" else str(Path(args.data).resolve())
    spec_path.write_text(yaml.safe_dump(spec(data, args.trials, args.epochs)))
    log = out / "bench.log"
    load0 = os.getloadavg()[0]
    say(f"work folder {out}; log {log}; load {load0:.2f}")

    def sweep(results: Path, *extra: str, stop_at: str | None = None, how: str | None = None) -> tuple[int, float]:
        return run_until(["run", str(spec_path), "--results", str(results), "--device", "cpu", *extra], stop_at,
                         how, log)

    whole = out / "uninterrupted"
    say("the sweep, uninterrupted")
    code, whole_s = sweep(whole)
    assert code == 0, f"uninterrupted sweep failed ({code}): {log}"

    cut = out / "interrupted"
    e = args.epochs
    say("the same sweep, stopped three times")
    runs = [sweep(cut, stop_at=f"trial 0 epoch 2/{e}", how="sigterm"),
            sweep(cut, stop_at=f" epoch {min(3, e)}/{e}", how="kill")]  # the cut trial, resumed, one epoch on
    s_epoch = whole_s / max(args.trials * e, 1)
    runs.append(sweep(cut, "--timeout", f"{max(int(1.5 * s_epoch) + 25, 30)}s"))  # lands mid-trial
    runs.append(sweep(cut))
    cut_s = sum(s for _, s in runs)
    assert runs[-1][0] == 0, f"the last rerun failed: {log}"

    st_whole, st_cut = status(whole), status(cut)
    rows = trials(cut)
    attempts = [r for r in rows if r["state"] == "FAIL" and r["attrs"].get("outcome") in ("interrupted", "crashed")]
    from_zero = sum(max(int(r["attrs"].get("epochs") or 0), r["reported"], int((r["attrs"].get("progress") or [0])[0]))
                    for r in attempts)  # every epoch a cut attempt had reached, lost when it starts over
    values = lambda rs: {r["attrs"].get("ticket"): r["value"] for r in rs if r["state"] == "COMPLETE"}  # noqa: E731
    same = values(trials(whole)) == values(rows)
    resumed = [r["attrs"].get("resumed_from") for r in rows if r["attrs"].get("resumed_from")]

    fresh_dir = out / "fresh"
    shutil.copytree(whole, fresh_dir)
    say("best --epochs 3, then --epochs 5 (continued); and a fresh --epochs 5 on a copy")
    m3, s3 = best(whole, 3, log)
    m5, s5 = best(whole, 5, log)
    f5, sf5 = best(fresh_dir, 5, log)

    lines = [
        f"Machine: {machine()}; load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end. "
        f"Run: `python benchmarks/bench_resume.py --data {args.data} --trials {args.trials} --epochs {args.epochs}` "
        "(CPU fp32 where the CPU has no bf16; `deterministic: true`). Spec: the notebook's CNN 16-32-64, batch "
        "norm, max pooling, Adam, batch 128, lr searched.", "",
        "| sweep | trials x epochs | interruptions | epochs redone | epochs a restart from 0 would redo | wall |",
        "|---|---:|---:|---:|---:|---:|",
        f"| uninterrupted | {args.trials} x {e} | 0 | {st_whole['epochs_redone']} | 0 | {whole_s / 60:.1f} min |",
        f"| SIGTERM, kill -9, `--timeout`, rerun each time | {args.trials} x {e} | {len(attempts)} | "
        f"{st_cut['epochs_redone']} | {from_zero} | {cut_s / 60:.1f} min |", "",
        f"Resumed attempts started at epochs {', '.join(str(r + 1) for r in resumed) or 'none'} (from their "
        f"checkpoints); final values per ticket {'equal' if same else 'NOT equal'} to the uninterrupted sweep's "
        f"({values(rows)}).", "",
        "| retrain | epochs trained | minutes | test acc | continued_from_epoch |", "|---|---:|---:|---:|---:|",
        f"| best --epochs 3 | 3 | {s3 / 60:.1f} | {acc(m3)} | - |",
        f"| then best --epochs 5 (continued) | {5 - int(m5.get('continued_from_epoch') or 0)} | {s5 / 60:.1f} | "
        f"{acc(m5)} | {m5.get('continued_from_epoch')} |",
        f"| best --epochs 5 from scratch | 5 | {sf5 / 60:.1f} | {acc(f5)} | - |",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
