"""Pruners compared on one recorded sweep: epochs trained and the winner found, for none / median / hyperband / asha.

    python benchmarks/bench_pruning.py [--spec sweeps/residual.yaml] [--data PATH|synthetic]
        [--train-rows 6000] [--val-rows 1200] [--trials 30] [--pruners none,median:5:2,hyperband:1:3,asha:1:3]
        [--verify asha:1:3] [--out results/bench-pruning]

1. Record: the spec's sweep runs unpruned through the real CLI (`fer-sweep run`, pruner none, early stopping
   as in the spec) on a slice of the data: --train-rows Training rows (stratified, fixed seed; 10% of them
   are carved off as test, unread) and --val-rows PublicTest rows as validation. Every trial's validation
   accuracy per epoch is in the study. The study lives under --out, so a stopped run resumes where it was.
2. Replay: each pruner is shown the recorded curves in ticket order exactly as a 1-worker sweep would show
   them (report each epoch, ask should_prune before every epoch but a trial's last). CPU training is
   deterministic for a given seed, so a pruned sweep trains each trial identically up to its prune point,
   and the replay gives that sweep's epochs and winner without training it again.
3. Verify (--verify): the sweep with that pruner runs for real on the same slice; its epochs and winner
   must equal the replay's, which checks the replay itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import default_data, machine, write_icml_slice, write_section
from fer_sweep.sweep.policies import pruner_for
from fer_sweep.sweep.spec import PrunerSpec, load_spec
from fer_sweep.sweep.summary import TICKET, outcome

optuna.logging.set_verbosity(optuna.logging.WARNING)


def parse_pruner(text: str) -> tuple[str, PrunerSpec]:
    """none | median:S:W (S startup trials, W warm-up epochs) | hyperband:M:R | asha:M:R (min epochs, factor)."""
    kind, *values = text.split(":")
    if kind == "none":
        return "none", PrunerSpec(type="none")
    a, b = (int(v) for v in values)
    if kind == "median":
        return f"median (startup {a}, warm-up {b})", PrunerSpec(type="median", startup_trials=a, warmup_epochs=b)
    if kind in ("hyperband", "asha"):
        return f"{kind} (min {a} epochs, factor {b})", PrunerSpec(type=kind, min_epochs=a, reduction_factor=b)
    raise SystemExit(f"--pruners: unknown pruner {text!r}")


def run_cli(args: list[str], log: Path) -> None:
    with open(log, "a") as f:
        subprocess.run([sys.executable, "-m", "fer_sweep", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                       check=True)


def sweep(spec_path: Path, pruner: PrunerSpec, study: str, data: str, trials: int, out: Path) -> dict:
    """Run (or resume) the spec's sweep with `pruner` through the real CLI; return its recorded trials."""
    raw = yaml.safe_load(spec_path.read_text())
    raw["pruner"] = {k: v for k, v in vars(pruner).items()}
    raw["wandb"] = {"mode": "disabled"}
    tmp_spec = out / f"{study}.yaml"
    tmp_spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    start = time.perf_counter()
    run_cli(["run", str(tmp_spec), "--data", data, "--study", study, "--trials", str(trials), "--results", str(out),
             "--wandb", "disabled"], out / f"{study}.log")
    return {"seconds": time.perf_counter() - start, "trials": recorded(out, study)}


def recorded(out: Path, study: str) -> list[dict]:
    """Finished trials of a study in ticket order: curve (epoch -> val acc), epochs trained, outcome."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / study / "journal.log")))
    st = optuna.load_study(study_name=study, storage=storage)
    rows = {}
    for t in st.get_trials(deepcopy=False):
        state = outcome(t)
        if state in ("complete", "pruned", "diverged", "oom", "error"):
            rows[t.user_attrs[TICKET]] = {"ticket": t.user_attrs[TICKET], "number": t.number, "state": state,
                                          "curve": sorted(t.intermediate_values.items()),
                                          "epochs": int(t.user_attrs.get("epochs", 0)), "params": dict(t.params)}
    return [rows[k] for k in sorted(rows)]


def replay(trials: list[dict], pruner: PrunerSpec, max_epochs: int) -> dict:
    """What a 1-worker sweep with `pruner` does with the recorded (unpruned) trials."""
    study = optuna.create_study(direction="maximize", pruner=pruner_for(pruner, max_epochs))
    epochs, outcomes, best = 0, {}, None
    for rec in trials:
        trial, pruned = study.ask(), False
        last = rec["epochs"]
        for epoch, acc in rec["curve"]:
            trial.report(acc, epoch)
            epochs += 1
            if epoch < last and trial.should_prune():  # run_trial asks before every epoch but the last
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            outcomes[rec["ticket"]] = "pruned"
            continue
        epochs += last - len(rec["curve"])  # a diverged epoch trains but reports nothing
        if rec["state"] == "complete":
            value = max(acc for _, acc in rec["curve"])
            study.tell(trial, value)
            if best is None or value > best[1]:
                best = (rec["ticket"], value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        outcomes[rec["ticket"]] = rec["state"]
    counts = {s: list(outcomes.values()).count(s) for s in sorted(set(outcomes.values()))}
    return {"epochs": epochs, "winner": best[0] if best else None, "winner_val": best[1] if best else None,
            "counts": counts, "outcomes": outcomes}


def real_outcome(trials: list[dict]) -> dict:
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: (max(a for _, a in t["curve"]), -t["number"]))
    return {"epochs": sum(t["epochs"] for t in trials), "winner": best["ticket"],
            "winner_val": max(a for _, a in best["curve"]),
            "counts": {s: sum(t["state"] == s for t in trials) for s in sorted({t["state"] for t in trials})}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "sweeps" / "residual.yaml")
    parser.add_argument("--data", default=None, help="FER2013 in any layout (default: FER2013_CSV or the shared "
                                                      "dev file), or 'synthetic'")
    parser.add_argument("--train-rows", type=int, default=6000)
    parser.add_argument("--val-rows", type=int, default=1200)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--pruners", default="none,median:5:2,median:3:1,hyperband:1:3,asha:1:3,asha:1:4,asha:2:3")
    parser.add_argument("--verify", default="", help="a pruner of --pruners to run for real as well")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-pruning")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data or default_data()
    desc = "synthetic faces"
    if data != "synthetic":
        slice_path = args.out / f"slice-{args.train_rows}-{args.val_rows}.csv.gz"
        if not slice_path.exists():
            counts = write_icml_slice(data, slice_path, args.train_rows, args.val_rows)
            print(f"slice: {counts} -> {slice_path}", flush=True)
        desc = (f"a slice of {Path(data).name}: {args.train_rows} Training rows (stratified, seed 0; 10% carved off "
                f"as an unread test split) and {args.val_rows} PublicTest rows as validation")
        data = str(slice_path)
    spec = load_spec(args.spec, check_data=False)
    max_epochs = spec.max_epochs
    print(f"recording the unpruned sweep ({args.trials} trials); log: {args.out / 'record.log'}", flush=True)
    rec = sweep(args.spec, PrunerSpec(type="none"), "record", data, args.trials, args.out)
    (args.out / "record.json").write_text(json.dumps(rec, indent=1))
    base = replay(rec["trials"], PrunerSpec(type="none"), max_epochs)
    rows = []
    for text in args.pruners.split(","):
        name, p = parse_pruner(text)
        r = replay(rec["trials"], p, max_epochs)
        rows.append((text, name, r))
        print(f"{name}: {r['epochs']} epochs, winner ticket {r['winner']} ({r['winner_val']:.4f}), {r['counts']}",
              flush=True)
    lines = [f"`{args.spec.relative_to(ROOT) if args.spec.is_relative_to(ROOT) else args.spec}`, {args.trials} seeded "
             f"configurations, up to {max_epochs} epochs, early stopping as in the spec, on {desc}; CPU, precision "
             "amp auto. The unpruned sweep ran through the real CLI "
             f"({rec['seconds'] / 60:.0f} min); each pruner is replayed on its recorded curves "
             "(see the script's doc).",
             "", "| pruner | epochs trained | share of unpruned | winner (ticket) | winner val acc | same winner "
             "| states |",
             "|---|---:|---:|---:|---:|---|---|"]
    for _, name, r in rows:
        lines.append(f"| {name} | {r['epochs']} | {100 * r['epochs'] / base['epochs']:.0f}% | {r['winner']} | "
                     f"{100 * r['winner_val']:.2f}% | {'yes' if r['winner'] == base['winner'] else 'no'} | "
                     f"{r['counts']} |")
    if args.verify:
        name, p = parse_pruner(args.verify)
        print(f"verifying {name} with a real sweep", flush=True)
        real = sweep(args.spec, p, "verify-" + args.verify.replace(":", "-"), data, args.trials, args.out)
        got, want = real_outcome(real["trials"]), replay(rec["trials"], p, max_epochs)
        same = got["epochs"] == want["epochs"] and got["winner"] == want["winner"]
        lines += ["", f"Check of the replay: the {name} sweep run for real on the same slice trained {got['epochs']} "
                  f"epochs (replay: {want['epochs']}) and found ticket {got['winner']} at "
                  f"{100 * got['winner_val']:.2f}% (replay: ticket {want['winner']}); states {got['counts']} "
                  f"({real['seconds'] / 60:.0f} min). {'Identical.' if same else 'They differ: see the logs.'}"]
    lines += ["", f"Machine: {machine()}"]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("Pruning: pruners compared on real data", body)


if __name__ == "__main__":
    main()
