"""Real-data accuracy: a whole sweep and `best` through the real CLI, on any FER2013 layout (not run by CI).

    python benchmarks/bench_accuracy.py SPEC [--data PATH] [--trials N] [--seeds 3] [--best-epochs E]
        [--ensemble E] [--workers K] [--device D] [--gpus 0,1] [--results DIR] [--study NAME]
        [--no-write | --results-md PATH]
    python benchmarks/bench_accuracy.py --recipe [--data PATH] [--device D] [--results DIR] [--trials N]
                                                 [--best-epochs E] [--seeds K] [--long-epochs E] [--report-only]
                                                 [--no-write | --results-md PATH]

--recipe runs issue 20's whole recipe as resumable stages (see `Recipe.run_all`), in the order that answers the most
if it is cut short: sweeps/strong-sgd.yaml and its `best` (its spec's epochs and seeds), sweeps/resnet.yaml, the
cross-study ensemble of everything kept so far, the ablation of each recipe element against the strong winner's
recipe at a fixed budget, then resnet's `best` and the cross-study ensemble of everything (with `--long-epochs E`,
strong-sgd's winner retrained for E epochs with 2 seeds before it: the ensemble pools both retrains). `--trials N`
caps each sweep (a smaller budget than the specs', said in the report); it writes "Accuracy: the issue-20 recipe on
<data>" as it goes (results in results/recipe/ by default) and picks up where it stopped when run again, with the
same flags.

Runs `fer-sweep run SPEC --data PATH`, then `fer-sweep best --ensemble E` (the kept trial models combined,
no training) and `fer-sweep best --seeds K`, and writes the section
"Accuracy: <study> on <data>" of benchmarks/RESULTS.md: machine, precision, trials by state, training epochs
spent (each a pass over the sweep's train split), wall times, the winner's parameters and validation
accuracy, and `best`'s test accuracy and macro-F1 (mean ± std over seeds), with the retrain's curve.
Splits are fer-sweep's own: with the dev file (Training + PublicTest rows) validation is PublicTest and
the test split is carved from Training with a fixed seed; with the full Kaggle file, test is PrivateTest.
The section is rewritten every 3 minutes (POLL_S) while it runs (marked partial), so a stopped run still reports
what finished; running the same command again resumes the sweep (and retrains `best` if it had not ended).

Every number comes from the CLI's JSON: `status --json` (trials, epochs, the winner), `best --json` (test accuracy,
macro-F1, and each seed's per-epoch `history`, the retrain curve) and `best --ensemble E --json`; each is also kept
as <results>/<study>-{status,best,ensemble}.json. The commands' progress lines (stderr) go to <results>/<study>.log
for a person to follow and are never parsed. `--results-md PATH` writes the section into PATH instead of
benchmarks/RESULTS.md; `--no-write` only prints it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, default_data, machine, write_section

POLL_S = 180  # seconds between progress rewrites (each runs `fer-sweep status`)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fer_sweep", *args]


def run_logged(cmd: list[str], log: Path, on_poll, capture: bool = False) -> tuple[int, str]:
    """Run `fer-sweep CMD` with its progress lines (stderr, and stdout unless `capture`) appended to `log` for a
    person to follow (never parsed); call on_poll() every POLL_S seconds until it ends. Returns the exit code and,
    with `capture`, its stdout (the JSON of a `--json` command)."""
    with open(log, "a") as f:
        f.write(f"\n$ fer-sweep {' '.join(cmd)}  ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        f.flush()
        proc = subprocess.Popen(cli(*cmd), cwd=ROOT, stdout=subprocess.PIPE if capture else f, stderr=f, text=True)
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
        if capture:  # read stdout on a thread: the JSON may exceed the pipe's buffer
            reader.start()
        while proc.poll() is None:
            try:
                proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                on_poll()
        if capture:
            reader.join()
    return proc.returncode, "".join(chunks)


def publish(args, title: str, body: str) -> None:
    """The section into --results-md (default benchmarks/RESULTS.md), unless --no-write."""
    if not args.no_write:
        write_section(title, body, args.results_md)


def status(study: str, results: Path) -> dict | None:
    done = subprocess.run(cli("status", "--study", study, "--results", str(results), "--json", "--top", "3"),
                          cwd=ROOT, capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else None


def retrain_curves(metrics: dict | None) -> dict[int, list[tuple[int, float, float | None]]]:
    """Per seed: (epoch, train acc, val acc) of `best`'s retrain, from `best --json`'s per-epoch history (val acc
    None for a refit's epochs, which have no validation). Empty where the JSON carries no history."""
    return {r["seed"]: [(h["epoch"], h["train/acc"], h.get("val/acc")) for h in r["history"]]
            for r in (metrics or {}).get("runs", []) if r.get("history")}


def curve_text(curve: list[tuple[int, float, float | None]]) -> str:
    return ", ".join(f"{e}: {pct(tr)} / {'refit' if va is None else pct(va)}" for e, tr, va in curve)


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


def section(args, study: str, st: dict | None, times: dict, metrics: dict | None, done: bool,
            ens: dict | None = None, running: str | None = None) -> str:
    """The section "Accuracy: <study> on <data>" from `status --json`, `best --json` and the ensemble's JSON."""
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
    if running:
        lines.append(f"- running: {running}")
    for seed, curve in sorted(retrain_curves(metrics).items()):
        lines.append(f"- retrain curve, seed {seed} (epoch: train acc / val acc): {curve_text(curve)}")
    return "\n".join(lines)


# ================================================================================================== the recipe
# `--recipe`: the whole issue-20 recipe as resumable stages (sweeps of two architectures, their `best`, the
# cross-study ensemble, and the ablation of each recipe element at a fixed budget). Each finished stage leaves
# <results>/stages/<name>.json; a rerun of the same command skips those, resumes an interrupted sweep where its
# study stopped (`run` resumes) and restarts an interrupted `best` from its first epoch.
RECIPE_TITLE = "Accuracy: the issue-20 recipe on {data}"
STUDIES = (("strong-sgd", "sweeps/strong-sgd.yaml"), ("resnet", "sweeps/resnet.yaml"))
ENSEMBLE_PICKS = 12
LONG_SEEDS = 2  # `--long-epochs`: the seeds of the longer retrain (the single-model target is a mean of 2 seeds)
ABLATION_EPOCHS = 15
# The strong sweep's winner (benchmarks/RESULTS.md, "Accuracy: strong": trial 3), the ablation's baseline recipe.
STRONG_WINNER = {"schedule": "onecycle", "lr": 0.001151959200854397, "weight_decay": 0.01617620924717979,
                 "dropout": 0.24839285536549888, "label_smoothing": 0.0, "mixup_alpha": 0.0, "aug_translate_px": 2,
                 "aug_rotate_deg": 0.0, "aug_scale": 0.1, "aug_erase_p": 0.0}
ABLATION = (  # (name, what it changes, train settings changed, refit too)
    ("base", "the strong winner's recipe: AdamW, one-cycle, whole 48x48 faces, flip TTA", {}, True),
    ("sgd-plateau", "SGD + Nesterov (lr 0.02, momentum 0.9, weight decay 5e-4) and reduce-on-plateau (x0.5 after 2 "
     "epochs without a gain) instead of AdamW + one-cycle",
     {"optimizer": "sgd", "nesterov": True, "momentum": 0.9, "lr": 0.02, "weight_decay": 5e-4,
      "schedule": "plateau"}, False),
    ("crops", "random 40x40 crops and ten-crop TTA instead of whole faces and flip TTA",
     {"crop": 40, "tta": "tencrop"}, False),
    ("ema", "a weight average (EMA, decay 0.999) validated and kept", {"ema": 0.999}, False),
)


def ablation_spec(folder: Path, data: str, name: str, changes: dict) -> Path:
    """A one-configuration spec: strong.yaml with its searched keys fixed at its winner's values, `changes` on top,
    and a 1-epoch, 1-trial sweep (it only gives `best` a study to read; `best --epochs` is the budget)."""
    import yaml

    from fer_sweep.sweep.spec import MODEL_FIELDS

    raw = yaml.safe_load((ROOT / "sweeps" / "strong.yaml").read_text())
    fixed = {**STRONG_WINNER, **changes}
    raw.update(study=f"abl-{name}", data=data, trials=1, keep=0, pruner={"type": "none"}, space={},
               wandb={"project": "fer-sweep", "mode": "disabled"}, best={"epochs": ABLATION_EPOCHS, "seeds": 1})
    raw["model"] = {**raw["model"], **{k: v for k, v in fixed.items() if k in MODEL_FIELDS}}
    raw["train"] = {**raw["train"], **{k: v for k, v in fixed.items() if k not in MODEL_FIELDS}, "epochs": 1}
    path = folder / f"abl-{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class Recipe:
    """The stages, their markers, and the RESULTS.md section rewritten as they go."""

    def __init__(self, args):
        self.args, self.results = args, args.results
        self.stages = self.results / "stages"
        self.stages.mkdir(parents=True, exist_ok=True)
        self.title = RECIPE_TITLE.format(data=Path(args.data).name)
        self.running: str | None = None
        self.started = time.time()
        self.lock = threading.Lock()

    # ---------------------------------------------------------------- markers
    def done(self, name: str) -> dict | None:
        path = self.stages / f"{name.replace(':', '-')}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def mark(self, name: str, output, seconds: float) -> None:
        path = self.stages / f"{name.replace(':', '-')}.json"
        path.write_text(json.dumps({"stage": name, "seconds": round(seconds, 1), "finished": time.time(),
                                    "output": output}, indent=2))

    def seconds(self, name: str, marker: dict | None) -> float:
        """A finished stage's wall time, its interrupted attempts included (`.partial`); for a sweep at least the sum
        of its trials' seconds (trials.csv: work an interruption cut short counts too, and markers written before
        `.partial` existed hold only the last attempt)."""
        if not marker:
            return 0.0
        spent = marker["seconds"]
        if name.startswith("sweep:") or name.startswith("ablation-sweep:"):
            import csv

            study = name.split(":", 1)[1]
            table = self.results / (study if name.startswith("sweep:") else f"abl-{study}") / "trials.csv"
            if table.is_file():
                with open(table, newline="") as f:
                    spent = max(spent, sum(float(r["seconds"] or 0) for r in csv.DictReader(f)))
        return spent

    def log(self, name: str) -> Path:
        return self.results / f"{name.replace(':', '-')}.log"

    # ---------------------------------------------------------------- running
    def stage(self, name: str, cmd: list[str], parse_json: bool) -> dict | None:
        """Run one stage's command unless its marker says it is done; its JSON stdout is the stage's output."""
        if self.done(name):
            print(f"[recipe] {name}: done before, skipped", flush=True)
            return self.done(name)["output"]
        self.running = name
        print(f"[recipe] {name}: fer-sweep {' '.join(cmd)}", flush=True)
        partial = self.stages / f"{name.replace(':', '-')}.partial"  # seconds of earlier, interrupted attempts
        before = float(partial.read_text()) if partial.is_file() else 0.0
        t0 = time.perf_counter() - before

        def poll() -> None:
            partial.write_text(f"{time.perf_counter() - t0:.1f}")
            self.report()

        code, out = run_logged(cmd, self.log(name), poll, capture=parse_json)
        self.running = None
        if code != 0:
            poll()
            raise SystemExit(f"[recipe] {name} failed (exit {code}): see {self.log(name)}; rerun the same command "
                             "to resume")
        output = json.loads(out) if parse_json else None
        self.mark(name, output, time.perf_counter() - t0)
        partial.unlink(missing_ok=True)
        self.report()
        return output

    def run_all(self) -> None:
        """The stages in the order that answers the most if the run is cut short: the first family's sweep and its
        retrained seeds (the single-model target), the second family's sweep, an ensemble of everything kept so far
        (already two architectures), the ablation (its own target), then the second family's seeds and the final
        ensemble (which improve a figure already measured)."""
        a, res = self.args, str(self.results)
        common = ["--results", res, "--device", a.device]
        budget = [*(["--trials", str(a.trials)] if a.trials else [])]
        best_budget = [*(["--epochs", str(a.best_epochs)] if a.best_epochs else []),
                       *(["--seeds", str(a.seeds)] if a.seeds else [])]
        pooled = [x for study, _ in STUDIES for x in ("--study", study)]

        def sweep(study: str, spec: str) -> None:
            self.stage(f"sweep:{study}", ["run", spec, "--data", a.data, "--study", study, "--wandb", "disabled",
                                          *budget, *common], parse_json=False)
            self.mark_status(f"sweep:{study}", study)

        def best(study: str) -> None:
            self.stage(f"best:{study}", ["best", "--study", study, "--json", "--wandb", "disabled", *best_budget,
                                         *common], parse_json=True)

        (first, first_spec), (second, second_spec) = STUDIES
        sweep(first, first_spec)
        best(first)
        sweep(second, second_spec)
        self.stage("ensemble:trials", ["best", "--ensemble", str(ENSEMBLE_PICKS), *pooled, "--json", *common],
                   parse_json=True)
        for name, _, changes, refit in ABLATION:
            spec = ablation_spec(self.results, a.data, name, changes)
            self.stage(f"ablation-sweep:{name}", ["run", str(spec), "--wandb", "disabled", *common], parse_json=False)
            self.stage(f"ablation:{name}", ["best", "--study", f"abl-{name}", "--epochs", str(ABLATION_EPOCHS),
                                            "--seeds", "1", "--json", "--wandb", "disabled", *common,
                                            *(["--refit"] if refit else [])], parse_json=True)
        best(second)
        if a.long_epochs:  # the first family retrained longer (its earlier retrain moves to final/earlier/1/)
            self.stage(f"best-long:{first}", ["best", "--study", first, "--epochs", str(a.long_epochs), "--seeds",
                                              str(LONG_SEEDS), "--json", "--wandb", "disabled", *common],
                       parse_json=True)
        self.stage("ensemble:final", ["best", "--ensemble", str(ENSEMBLE_PICKS), *pooled, "--json", *common],
                   parse_json=True)
        self.report(final=True)

    def mark_status(self, name: str, study: str) -> None:
        """Keep the finished sweep's status (trials, epochs, winner) in its marker, for the report."""
        marker = self.done(name)
        if marker and marker.get("output") is None:
            marker["output"] = status(study, self.results)
            (self.stages / f"{name.replace(':', '-')}.json").write_text(json.dumps(marker, indent=2))

    # ---------------------------------------------------------------- the report
    def report(self, final: bool = False) -> None:
        import os

        with self.lock:
            with open(self.results / "load.log", "a") as f:  # how busy the shared machine was, for the report
                f.write(f"{time.time():.0f} {os.getloadavg()[1]:.2f}\n")
            body = self.section(final)
            publish(self.args, self.title, body)
            if self.args.no_write and self.args.report_only:
                print(body)

    def section(self, final: bool) -> str:
        from fer_sweep.learn.device import pick_device
        from fer_sweep.learn.precision import precision

        a = self.args
        names = ([f"sweep:{s}" for s, _ in STUDIES] + ["ensemble:trials"] + [f"best:{s}" for s, _ in STUDIES]
                 + ["ensemble:final"] + [f"{k}:{n}" for n, *_ in ABLATION for k in ("ablation-sweep", "ablation")]
                 + ([f"best-long:{STUDIES[0][0]}"] if a.long_epochs or self.done(f"best-long:{STUDIES[0][0]}")
                    else []))
        markers = {n: self.done(n) for n in names}
        spent = sum(self.seconds(n, m) for n, m in markers.items())
        head = ("" if final else "**Partial: still running or stopped before the end** (rerun "
                "`benchmarks/bench_accuracy.py --recipe` to resume; finished stages are kept). ")
        lines = [head + f"`benchmarks/bench_accuracy.py --recipe` on `{a.data}` (validation = PublicTest, test carved "
                 "from Training and read once per model).", "",
                 f"- machine: {machine()}",
                 f"- precision: {precision('auto', pick_device(a.device)).describe()}",
                 "- budget: " + self.budget(markers)
                 + (f", `best --epochs {a.best_epochs}`" if a.best_epochs else ", each spec's `best` epochs")
                 + (f", `best --seeds {a.seeds}` (for the `best` stages run by that invocation)" if a.seeds
                    else ", each spec's seeds")
                 + f"; ablation {ABLATION_EPOCHS} epochs per line",
                 f"- stages done: {sum(1 for m in markers.values() if m)} of {len(names)}"
                 + (f"; running: {self.running}" if self.running else "")
                 + f"; wall time of the finished stages {spent / 3600:.2f} h"]
        lines += self.study_lines(markers) + self.ensemble_lines(markers) + self.ablation_lines(markers)
        lines += self.compute_lines(markers) + self.target_lines(markers)
        if self.running and self.running.startswith(("best:", "best-long:")):  # its JSON comes at the end
            lines.append(f"- {self.running} in progress: its per-epoch progress is in `{self.log(self.running)}`")
        if self.running and self.running.startswith("sweep:"):
            st = status(self.running.split(":", 1)[1], self.results)
            if st:
                lines.append(f"- {self.running} in progress: {st['finished']} of {st['target']} trials finished, "
                             f"{st['epochs_trained']} epochs trained"
                             + (f", best val acc so far {pct(st['best']['val_acc'])}" if st.get("best") else "")
                             + "".join(f"; trial {r['number']} at epoch {r['epoch']} of {r['epochs']} (val acc "
                                       f"{pct(r['val_acc'])}, "
                                       f"{r['progress'][1] / max(r['progress'][0], 1):.0f} s an epoch)"
                                       for r in st.get("running", []) if r.get("epoch") and r.get("progress")))
        return "\n".join(lines)

    def budget(self, markers: dict) -> str:
        """Each sweep's trials (a finished sweep's from its marker: `--trials` may differ between invocations)."""
        import yaml

        parts = []
        for study, spec in STUDIES:
            st = (markers.get(f"sweep:{study}") or {}).get("output")
            planned = yaml.safe_load((ROOT / spec).read_text())["trials"]
            n = st["target"] if st else (self.args.trials or planned)
            parts.append(f"{study} {n} trials" + (f" (its spec: {planned})" if n != planned else ""))
        return "sweeps: " + ", ".join(parts)

    def study_lines(self, markers: dict) -> list[str]:
        out = []
        for study, spec in STUDIES:
            sweep = markers.get(f"sweep:{study}")
            st = sweep and sweep.get("output")
            if st:
                c = st["counts"]
                ended = ", ".join(f"{k} {c[k]}" for k in ("complete", "pruned") if c.get(k))
                cut = ", ".join(f"{k} {c[k]}" for k in ("interrupted", "crashed", "failed") if c.get(k))
                out.append(f"- `{spec}` sweep: {st['finished']} trials finished ({ended})"
                           + (f"; {cut} cut short by earlier stops, each re-queued and rerun" if cut else "")
                           + f"; {st['epochs_trained']} epochs of an unpruned {st['epochs_budget']}, "
                           f"{self.seconds(f'sweep:{study}', sweep) / 60:.0f} min; winner trial "
                           f"{st['best']['number']}, val acc {pct(st['best']['val_acc'])}, params "
                           f"`{json.dumps(st['best']['params'])}`")
            for stage in (f"best:{study}", f"best-long:{study}"):
                best = markers.get(stage)
                if not (best and best.get("output")):
                    continue
                m = best["output"]
                split = m["split"]
                acc = m[f"{split}/acc"]
                how = f" --epochs {m['runs'][0]['epochs']}" if stage.startswith("best-long") else ""
                out.append(f"- `best --study {study}{how}` ({m['seeds']} seed{'s' if m['seeds'] > 1 else ''}, "
                           f"{self.seconds(stage, best) / 60:.0f} min): **{split} "
                           f"acc {pct(acc['mean'])}"
                           + (f" ± {pct(acc['std'])}** (mean of the seeds)" if m["seeds"] > 1 else "**")
                           + f", macro-F1 {pct(m[split + '/macro_f1']['mean'])}, val acc "
                           f"{pct(m['val/acc']['mean'])}; per seed: "
                           + "; ".join(f"seed {r['seed']}: {r['epochs']} epochs (best {r['best_epoch']}), val "
                                       f"{pct(r['val/acc'])}, {split} {pct(r[split + '/acc'])}" for r in m["runs"])
                           + (f"; the seeds' average: {split} acc {pct(m['seeds_ensemble'][split + '/acc'])}"
                              if m.get("seeds_ensemble") else ""))
        return out

    def ensemble_lines(self, markers: dict) -> list[str]:
        out = []
        for name, what in (("ensemble:trials", f"kept trial models of both sweeps and {STUDIES[0][0]}'s retrained "
                                               "seeds"),
                           ("ensemble:final", "kept trial models and retrained seeds of both studies, every retrain "
                                              "(final/ and final/earlier/*)")):
            e = (markers.get(name) or {}).get("output")
            if not e:
                continue
            split, s = e["split"], e["single"]
            archs = sorted({m["arch"] for m in e["members"]})
            out.append(f"- cross-study ensemble (`best --ensemble {e['max_picks']} --study "
                       + " --study ".join(e["studies"]) + f"`, {what}, {len(e['candidates'])} candidates, "
                       f"{e['seconds']:.0f} s): **{split} acc {pct(e[split + '/acc'])}**, macro-F1 "
                       f"{pct(e[split + '/macro_f1'])}, val acc {pct(e['val/acc'])}; {len(e['members'])} members of "
                       f"{len(archs)} architecture(s) ({', '.join(archs)}): " +
                       ", ".join(f"{m['name']} w {m['weight']:.2f}" for m in e["members"])
                       + f"; best single candidate ({s['trial']}): {split} acc {pct(s[split + '/acc'])}, gain "
                       f"{100 * (e[split + '/acc'] - s[split + '/acc']):+.2f} pts")
        return out

    def ablation_lines(self, markers: dict) -> list[str]:
        rows, base = [], None
        for name, what, _, refit in ABLATION:
            m = (markers.get(f"ablation:{name}") or {}).get("output")
            if not m:
                continue
            split = m["split"]
            if refit:  # the selection run is the baseline itself; the refit is its own line
                sel = m["refit"]["selection"]
                base = sel[split + "/acc"]
                rows.append((what, sel["val/acc"], base, sel["epochs"], True))
                rows.append(("the baseline refit on train + validation for the epochs its selection run chose "
                             f"({m['refit']['epochs']}); val not held out", m["val/acc"]["mean"],
                             m[split + "/acc"]["mean"], m["refit"]["epochs"], False))
            else:
                rows.append(("baseline + " + what, m["val/acc"]["mean"], m[split + "/acc"]["mean"],
                             m["runs"][0]["epochs"], False))
        if not rows:
            return []
        out = ["", f"Ablation at a fixed budget of {ABLATION_EPOCHS} epochs, 1 seed each (one run's noise: about "
               "±0.8 points of test accuracy, so a line within that of the baseline is no measured effect):", "",
               "| recipe | val acc | test acc | vs baseline | epochs |", "|---|---:|---:|---:|---:|"]
        for what, val, test, epochs, is_base in rows:
            delta = "" if is_base or base is None else f"{round(100 * (test - base), 2) + 0.0:+.2f}"
            out.append(f"| {what} | {pct(val)} | {pct(test)} | {delta} | {epochs} |")
        return out + [""]

    def target_lines(self, markers: dict) -> list[str]:
        """Issue 20's accuracy targets, met or missed, once the numbers are in."""
        out = []
        singles = {name: (markers.get(stage) or {}).get("output") for s, _ in STUDIES
                   for stage, name in ((f"best:{s}", s), (f"best-long:{s}", f"{s} (longer retrain)"))}
        got = {s: (m[m["split"] + "/acc"]["mean"], m["seeds"]) for s, m in singles.items() if m}
        if got:
            out.append("- target, best single model (mean of 2 seeds) >= 69.5%: " + ", ".join(
                f"{s} {pct(v)} (" + ("met" if v >= 0.695 and n >= 2 else "missed" if n >= 2 else
                                    f"{n} seed: not a test of the target") + ")" for s, (v, n) in got.items()))
        e = (markers.get("ensemble:final") or {}).get("output")
        if e:
            acc, archs = e[e["split"] + "/acc"], sorted({m["arch"] for m in e["members"]})
            out.append(f"- target, ensemble across at least two architectures >= 71.5%: {pct(acc)} with members of "
                       f"{len(archs)} architecture(s) ({'met' if acc >= 0.715 and len(archs) >= 2 else 'missed'})")
        return out

    def compute_lines(self, markers: dict) -> list[str]:
        epochs = 0
        for study, _ in STUDIES:
            st = (markers.get(f"sweep:{study}") or {}).get("output")
            epochs += st["epochs_trained"] if st else 0
            for stage in (f"best:{study}", f"best-long:{study}"):
                m = (markers.get(stage) or {}).get("output")
                epochs += sum(r["epochs"] for r in m["runs"]) if m else 0
        for name, *_ in ABLATION:
            epochs += 1 if markers.get(f"ablation-sweep:{name}") else 0
            m = (markers.get(f"ablation:{name}") or {}).get("output")
            if m:
                epochs += sum(r["epochs"] for r in m["runs"]) + (m["refit"]["selection"]["epochs"] if "refit" in m
                                                                 else 0)
        spent = sum(self.seconds(n, m) for n, m in markers.items())
        loads = []
        if (self.results / "load.log").is_file():
            loads = [float(line.split()[1]) for line in (self.results / "load.log").read_text().split("\n") if line]
        busy = (f"; the machine is shared: 5-minute load average {sum(loads) / len(loads):.1f} on average over "
                f"{len(loads)} samples, {max(loads):.1f} at most (2 cores: above 2 the recipe's share shrinks)"
                if loads else "")
        ablation = sum(self.seconds(n, m) for n, m in markers.items() if n.startswith("ablation"))
        return [f"- compute of the finished stages: {epochs} training epochs (passes over a train split of ~25,800 "
                f"faces, or ~29,400 for a refit), {spent / 3600:.2f} h of wall time on this machine in bf16 autocast"
                f" (the ablation, a measurement rather than a step of the recipe, {ablation / 3600:.2f} h of it; the "
                f"recipe itself, sweeps, retrains and ensembles, {(spent - ablation) / 3600:.2f} h)" + busy]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, nargs="?", help="a sweep spec (or --recipe)")
    parser.add_argument("--recipe", action="store_true", help="the issue-20 recipe: two architectures' sweeps, "
                        "their best, the cross-study ensemble, the ablation (resumable stages)")
    parser.add_argument("--data", default=None,
                        help="FER2013 in any layout (default: FER2013_CSV or the shared dev file)")
    parser.add_argument("--trials", type=int, default=None, help="default: the spec's (--recipe: each sweep's)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds of each retrain (default: 3; --recipe: "
                        "each study's, and a `best` already done keeps its own)")
    parser.add_argument("--best-epochs", type=int, default=None,
                        help="epochs of the retrain (default: the sweep's; --recipe: each study's)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gpus", default=None, help="GPUs for the workers, as `run --gpus` (e.g. 0)")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "bench-accuracy")
    parser.add_argument("--study", default=None, help="default: the spec's study name")
    parser.add_argument("--ensemble", type=int, default=10, help="picks of `best --ensemble` (0: skip it)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    where.add_argument("--results-md", type=Path, default=RESULTS, help="write the section into this Markdown file "
                       "(default: benchmarks/RESULTS.md)")
    parser.add_argument("--long-epochs", type=int, default=None, help="--recipe: before the final ensemble, retrain "
                        f"the first family's winner for this many epochs with {LONG_SEEDS} seeds (its earlier retrain "
                        "moves to final/earlier/1/; the ensemble pools both)")
    parser.add_argument("--report-only", action="store_true", help="--recipe: rewrite its RESULTS.md section from "
                        "the finished stages and run nothing")
    args = parser.parse_args()
    args.data = args.data or default_data()
    if args.recipe:
        if args.results == ROOT / "results" / "bench-accuracy":
            args.results = ROOT / "results" / "recipe"
        args.results.mkdir(parents=True, exist_ok=True)
        return Recipe(args).report() if args.report_only else Recipe(args).run_all()
    if args.spec is None:
        parser.error("give a SPEC, or --recipe")
    args.seeds = args.seeds or 3
    args.results.mkdir(parents=True, exist_ok=True)
    run_spec(args)


def run_spec(args) -> None:
    """SPEC's sweep, then `best --ensemble E` and `best --seeds K`, through the CLI; every number read from their
    JSON (also kept as <results>/<study>-{status,ensemble,best}.json), the section rewritten as it goes."""
    study = args.study or args.spec.stem
    log = args.results / f"{study}.log"
    title = f"Accuracy: {study} on {Path(args.data).name}"
    times = {"start": time.perf_counter()}
    got: dict = {}  # the commands' JSON: "status" (the finished sweep), "ensemble", "best"
    lock = threading.Lock()

    def report(done: bool = False, running: str | None = None) -> None:
        with lock:
            st = got.get("status") or status(study, args.results)  # a finished sweep's does not change
            body = section(args, study, st, times, got.get("best"), done, got.get("ensemble"), running)
            print(body, flush=True)
            publish(args, title, body)

    def keep(key: str, value: dict) -> None:
        got[key] = value
        (args.results / f"{study}-{key}.json").write_text(json.dumps(value, indent=2))

    run = ["run", str(args.spec), "--data", args.data, "--study", study, "--results", str(args.results),
           "--wandb", "disabled", "--device", args.device, "--workers", str(args.workers)]
    if args.trials:
        run += ["--trials", str(args.trials)]
    if args.gpus:
        run += ["--gpus", args.gpus]
    if run_logged(run, log, report)[0] != 0:
        report()
        raise SystemExit(f"the sweep failed: see {log}")
    times["sweep"] = time.perf_counter() - times["start"]
    keep("status", status(study, args.results) or {})
    if args.ensemble:  # seconds: the kept trial models, combined on validation, tested once
        code, out = run_logged(["best", "--study", study, "--results", str(args.results), "--ensemble",
                                str(args.ensemble), "--json", "--device", args.device], log, report, capture=True)
        if code == 0:
            keep("ensemble", json.loads(out))
        else:
            print(f"best --ensemble failed (exit {code}): see {log}", file=sys.stderr)
    report()
    best = ["best", "--study", study, "--results", str(args.results), "--seeds", str(args.seeds), "--json",
            "--wandb", "disabled", "--device", args.device]
    if args.best_epochs:
        best += ["--epochs", str(args.best_epochs)]
    t0 = time.perf_counter()
    code, out = run_logged(best, log, lambda: report(running=f"`best` (its per-epoch progress is in `{log}`)"),
                           capture=True)
    if code != 0:
        report()
        raise SystemExit(f"best failed: see {log}")
    times["best"] = time.perf_counter() - t0
    keep("best", json.loads(out))
    report(done=True)

if __name__ == "__main__":
    main()
