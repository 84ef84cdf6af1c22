"""Record the FER2013 learning-curve table (a tabular benchmark, like HPOBench or LCBench): configurations of a
sweep's space (default `sweeps/residual.yaml`, the notebook grid), each trained with several seeds for a fixed
number of epochs, no pruning and no early stopping, every epoch's validation accuracy, loss and seconds kept.
`benchmarks/bench_search.py` replays search strategies on it at no cost.

    python benchmarks/record_curves.py --data ../shared/data/fer2013-dev.csv.gz [--slice 3000] [--configs 36]
        [--seeds 3] [--epochs 12] [--race-top 6 --race-seeds 6]

It is the real tool: `fer-sweep run` on a spec derived from the sweep's (`repeats: <seeds>`, `pruner: none`,
`patience: 0`, `dead_after: 0`, `keep: 0`, wandb off), so a stopped recording goes on with the same command (the
sweep resumes, trials at their last epoch). A recording whose results folder is gone (another machine, a lost
disk) goes on from the table itself: its configurations enter a new study as finished trials (as `run --from`
imports them: not trained again, not drawn again), in the table's precision, and the sweep records the rest.
The data: a stratified slice of `--slice` Training rows (0: all of them)
with every PublicTest row as validation (a layout without PublicTest rows validates on further Training rows); no
test split is read. With `--race-top K`, once every configuration is recorded, the real `fer-sweep best --race K
--race-seeds S --no-retrain` gives the K best configurations more seeds (S in all) at the same budget: seeds that no
replayed search trains, so a search's pick can be judged on seeds it did not select on. After the run (or with
`--export-only`, also of a partial recording) it writes the table,
gzipped JSON: {"meta": {data, slice, machine, precision, date, spec}, "configs": [{"params", "runs": [{"seed",
"val_acc", "val_loss", "seconds"}]}]}. Hours of CPU: run it in the background, alone on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (
    AMP_OF,
    default_data,
    machine,
    plain_params,
    run_forwarding_sigterm,
    run_value,
    training_slice,
)

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "data" / "fer-curves.json.gz"
STUDY = "fer-curves"


def table_spec(base: dict, data: str, configs: int, seeds: int, epochs: int) -> dict:
    """The sweep's spec made into a recording: the same space and fixed settings, every configuration `seeds` times
    for exactly `epochs` epochs (nothing pruned, stopped early or stopped as dead), validation on PublicTest."""
    train = {**(base.get("train") or {}), "epochs": epochs, "patience": 0}
    return {**{k: v for k, v in base.items() if k not in ("best", "stop")}, "study": STUDY, "data": data,
            "trials": configs, "repeats": seeds, "sampler": "random", "pruner": {"type": "none"}, "dead_after": 0,
            "keep": 0, "wandb": {"mode": "disabled"}, "splits": {"val_frac": 0.1, "test_frac": 0.0, "seed": 0},
            "train": train}


def export(results: Path, meta: dict[str, Any], out: Path) -> dict[str, Any]:
    """The table of the study recorded so far: every finished trial's seeds (complete ones, and those that
    diverged: their curves end early), then the seeds a race (`--race-top`) finished for it. Returns the table."""
    import optuna

    from fer_sweep.sweep.study import open_existing
    from fer_sweep.sweep.summary import is_finished
    from fer_sweep.sweep.trial import CURVE_KEYS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _, study, folder = open_existing(results, STUDY, None)
    raced = race_runs(folder)
    configs = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        runs = t.user_attrs.get("seed_runs")
        if is_finished(t) and runs:  # (not an attempt cut short and re-queued: its curves are partial)
            seeds = {r["seed"] for r in runs}
            runs = [*runs, *(r for r in raced.get(t.number, []) if r["seed"] not in seeds)]
            configs.append({"params": plain_params(t.params), "trial": t.number,
                            RECORDED: recorded(t.user_attrs, meta),
                            "runs": [{"seed": r["seed"], **{k: [_num(v) for v in r[k]] for k in CURVE_KEYS}}
                                     for r in runs]})
    table = {"meta": meta, "configs": configs}
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt") as f:
        json.dump(table, f, separators=(",", ":"))
    return table


SAME_TABLE = ("data", "slice", "seeds", "epochs")  # meta a continued table must share (and the spec, below)


def imported_count(results: Path) -> int | None:
    """How many of the recording's configurations came from a table (None: no study under `results` yet)."""
    from fer_sweep.sweep.store import study_dir
    if not (study_dir(results, STUDY) / "spec.yaml").is_file():
        return None
    import optuna

    from fer_sweep.sweep.study import open_existing
    from fer_sweep.sweep.summary import is_imported

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _, study, _ = open_existing(results, STUDY, None)
    return sum(is_imported(t) for t in study.get_trials(deepcopy=False))


RECORDED = "recorded"  # a configuration's provenance in the table (and an imported trial's user attr)


def recorded(config: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Where and in what precision a table's configuration was recorded: its own `recorded`, else the table's."""
    return config.get(RECORDED) or {"machine": meta.get("machine"), "precision": meta.get("precision"),
                                    "date": meta.get("date")}


def table_mismatch(table: dict[str, Any], meta: dict[str, Any], spec: dict[str, Any]) -> str:
    """Why `table` cannot be continued by a recording of `meta` and `spec` ("" when it can): other data, slice,
    seeds or epochs, or another space or fixed settings (the data file's path and the trial count may differ)."""
    old = table.get("meta") or {}
    for key in SAME_TABLE:
        if old.get(key) != meta.get(key):
            return f"its {key} is {old.get(key)!r}, not {meta.get(key)!r}"
    ignore = ("data", "trials")
    old_spec = {k: v for k, v in (old.get("spec") or {}).items() if k not in ignore}
    new_spec = {k: v for k, v in spec.items() if k not in ignore}
    old_spec["train"] = {k: v for k, v in (old_spec.get("train") or {}).items() if k != "amp"}
    new_spec["train"] = {k: v for k, v in (new_spec.get("train") or {}).items() if k != "amp"}
    changed = sorted(k for k in {*old_spec, *new_spec} if old_spec.get(k) != new_spec.get(k))
    return f"it was recorded with another {', '.join(changed)}" if changed else ""


def import_table(study, spec, table: dict[str, Any], name: str) -> int:
    """Add the table's configurations to `study` as finished trials, as the sweep would have left them (value: the
    mean of the seeds' best validation accuracies; reports: the seeds' mean per epoch; `seed_runs`: the curves), marked
    `imported_from` "<table>#<trial>" so the sweep neither trains them nor draws them again. Returns how many."""
    import statistics

    import optuna

    from fer_sweep.sweep.space import distributions
    from fer_sweep.sweep.summary import IMPORTED_FROM, OUTCOME

    dists = distributions(spec)
    choices = {p.name: p.choices for p in spec.space if p.choices}
    for c in table["configs"]:
        params = {k: next(x for x in choices[k] if plain_params({k: x})[k] == v) if k in choices else v
                  for k, v in c["params"].items()}
        runs = c["runs"]
        best = [run_value(r["val_acc"]) for r in runs]
        epochs = min(len(r["val_acc"]) for r in runs)
        mean = [statistics.fmean(r["val_acc"][e] or 0.0 for r in runs) for e in range(epochs)]
        attrs = {OUTCOME: "complete", IMPORTED_FROM: f"{name}#{c['trial']}", "seeds": len(runs),
                 "seed_values": best, "val_acc_std": round(statistics.pstdev(best), 6) if len(best) > 1 else 0.0,
                 "seed_runs": runs, "epochs": epochs, "best_epoch": mean.index(max(mean)) + 1,
                 "best_val_acc": statistics.fmean(best), RECORDED: recorded(c, table.get("meta") or {})}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params}, state=optuna.trial.TrialState.COMPLETE,
            value=statistics.fmean(best), intermediate_values=dict(enumerate(mean, start=1)), user_attrs=attrs))
    return len(table["configs"])


def continued(spec: dict[str, Any], imported: int, amp: Any) -> dict[str, Any]:
    """The recording's spec once `imported` configurations came from a table: the sweep trains the rest (imported
    trials do not count toward `trials`), in the table's precision (`amp`)."""
    return {**spec, "trials": max(spec["trials"] - imported, 0), "train": {**spec["train"], "amp": amp}}


def continue_from(table_path: Path, results: Path, spec: dict[str, Any],
                  meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Start the recording's study from the table at `table_path` (the folder that recorded it is gone); returns the
    recording's spec and the table's precision. A table of other data, slice, seeds, epochs or spec is refused: one
    line, exit code 2, nothing written."""
    from fer_sweep.sweep.spec import parse_spec
    from fer_sweep.sweep.study import prepare_study

    with gzip.open(table_path, "rt") as f:
        table = json.load(f)
    why = table_mismatch(table, meta, spec)
    if why:
        print(f"{table_path}: cannot go on from that table: {why}; pass --out to record another", file=sys.stderr)
        sys.exit(2)
    spec = continued(spec, len(table["configs"]), AMP_OF.get(table["meta"].get("precision"), "auto"))
    parsed = parse_spec(spec, str(table_path), check_data=False)
    prepare_study(parsed, results, None, before_tickets=lambda study: import_table(study, parsed, table,
                                                                                   table_path.name))
    return spec, str(table["meta"].get("precision"))


def race_runs(folder: Path) -> dict[int, list[dict[str, Any]]]:
    """Per trial number, the seeds `best --race` finished for it (race/t<N>-s<seed>/run.json), by seed, as curves
    (the rows of their history, as a trial's `seed_runs`)."""
    from fer_sweep.results.race import RUN_FILE, race_models
    from fer_sweep.sweep.trial import CURVE_KEYS

    got: dict[int, list[dict[str, Any]]] = {}
    for where in race_models(folder):
        run = json.loads((where / RUN_FILE).read_text())
        rows = [row for row in run["history"] if row["epoch"] > 0]
        got.setdefault(int(run["trial"]), []).append(
            {"seed": int(run["seed"]), **{name: [row.get(key) for row in rows] for name, key in CURVE_KEYS.items()}})
    return {n: sorted(runs, key=lambda r: r["seed"]) for n, runs in got.items()}


def _num(value: Any) -> Any:
    return None if value is None else round(float(value), 5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=default_data(), help="any FER2013 layout (default: FER2013_CSV or the dev copy)")
    ap.add_argument("--spec", default=str(ROOT / "sweeps" / "residual.yaml"), help="the sweep whose space is tabulated")
    ap.add_argument("--slice", type=int, default=3000, help="Training rows to train on, stratified (0: all)")
    ap.add_argument("--configs", type=int, default=36)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "curves")
    ap.add_argument("--out", type=Path, default=TABLE)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--race-top", type=int, default=0, help="once all are recorded: the K best configurations get "
                    "more seeds (`fer-sweep best --race K --no-retrain`; 0: none)")
    ap.add_argument("--race-seeds", type=int, default=6, help="seeds each raced configuration ends with")
    ap.add_argument("--export-only", action="store_true", help="write the table of what is recorded so far")
    args = ap.parse_args(argv)

    args.results.mkdir(parents=True, exist_ok=True)
    data = training_slice(args.data, args.results, args.slice)
    spec = table_spec(yaml.safe_load(Path(args.spec).read_text()), data, args.configs, args.seeds, args.epochs)
    meta = {"data": Path(args.data).name, "slice": (f"{args.slice} Training rows, stratified (seed 0); PublicTest "
                                                    "validates" if args.slice else "all Training rows; PublicTest "
                                                    "validates"), "seeds": args.seeds, "epochs": args.epochs}
    imported = imported_count(args.results)
    if imported is None and args.out.is_file() and not args.export_only:  # the folder is gone, the table is not
        spec, precision = continue_from(args.out, args.results, spec, meta)
        print(f"{args.out}: going on from its {args.configs - spec['trials']} configurations, in their precision "
              f"({precision})", flush=True)
    elif imported:
        saved = yaml.safe_load((args.results / STUDY / "spec.yaml").read_text())
        spec = continued(spec, imported, saved["train"].get("amp", "auto"))
    spec_path = args.results / f"{STUDY}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code = 0
    if not args.export_only and spec["trials"] == 0:
        print(f"all {args.configs} configurations are in {args.out}", flush=True)
    elif not args.export_only:  # the real tool; a rerun resumes where the last one stopped
        cmd = [sys.executable, "-m", "fer_sweep", "run", str(spec_path), "--results", str(args.results),
               "--device", args.device, "--wandb", "disabled"]
        print(" ".join(cmd), flush=True)
        code = run_forwarding_sigterm(cmd)
        if code == 0 and args.race_top:  # the sweep is done: its best configurations get seeds no search trains
            race = [sys.executable, "-m", "fer_sweep", "best", "--results", str(args.results), "--study", STUDY,
                    "--race", str(args.race_top), "--race-seeds", str(args.race_seeds), "--no-retrain",
                    "--device", args.device, "--wandb", "disabled"]
            print(" ".join(race), flush=True)
            code = run_forwarding_sigterm(race)
        if code not in (0, 130, 143):  # (Ctrl-C, SIGTERM: what is complete is exported; the same command resumes)
            return code
    meta = {**meta, "machine": machine(), "precision": _precision(spec, args.device),
            "date": dt.date.today().isoformat(), "configs_planned": args.configs, "spec": spec}
    table = export(args.results, meta, args.out)
    runs = sum(len(c["runs"]) for c in table["configs"])
    print(f"{args.out}: {len(table['configs'])} of {args.configs} configurations, {runs} runs "
          f"({args.out.stat().st_size / 1024:.0f} KB)")
    return code


def _precision(spec: dict, device: str) -> str:
    """The precision the recording trained in on this machine (the spec's `amp`, resolved as `fit` resolves it)."""
    from fer_sweep.learn.device import pick_device
    from fer_sweep.learn.precision import resolve_amp

    dtype = resolve_amp((spec.get("train") or {}).get("amp", "auto"), pick_device(device))
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


if __name__ == "__main__":
    sys.exit(main())
