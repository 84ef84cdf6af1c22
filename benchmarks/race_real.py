"""A real race beside the FER learning-curve table (issue 30): `sweeps/residual.yaml` run as a user runs it (one seed
per configuration, its ASHA pruner and early stopping) on the table's data, splits and precision, then the real
`fer-sweep best --race K --race-seeds S --no-retrain`. Is the race's winner the table's best configuration?

    python benchmarks/race_real.py [--data ../shared/data/fer2013-dev.csv.gz] [--spec sweeps/residual.yaml]
        [--table benchmarks/data/fer-curves.json.gz] [--race 3] [--race-seeds 3] [--no-write]

Both steps are the real tool and resume: a stopped run goes on with the same command. The sweep draws the same
seeded configurations the table recorded (the same space and seed), so each raced configuration is looked up in the
table: its mean over all of the table's seeds (the sweep's three and a race's extra ones) and its rank there. The
table's seed 0 is the sweep's own seed: for the epochs both trained, their curves should agree (the same data,
seed and precision), which the section checks too. Writes the section "A real race beside the FER learning-curve
table" of RESULTS.md (not with --no-write). Hours of CPU on a small machine: run it in the background, alone.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
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
    write_section,
)

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "data" / "fer-curves.json.gz"
STUDY = "residual-race"
TITLE = "A real race beside the FER learning-curve table"


def race_spec(base: dict[str, Any], meta: dict[str, Any], data: str) -> dict[str, Any]:
    """The sweep as shipped (its trials, pruner, budget and space) on the table's data, splits and precision."""
    train = {**(base.get("train") or {}), "amp": AMP_OF.get(meta.get("precision"), "auto")}
    return {**base, "study": STUDY, "data": data, "splits": meta["spec"]["splits"], "wandb": {"mode": "disabled"},
            "train": train}


def slice_rows(meta: dict[str, Any]) -> int:
    """The Training rows the table's slice took (0: all), from its meta ("3000 Training rows, ...")."""
    first = str(meta.get("slice", "")).split(" ", 1)[0]
    return int(first) if first.isdigit() else 0


def table_means(table: dict[str, Any]) -> list[tuple[dict[str, Any], float, int]]:
    """(params, mean over every seed of its best validation accuracy, seeds) of each configuration, best first."""
    rows = []
    for c in table["configs"]:
        best = [run_value(r["val_acc"]) for r in c["runs"]]
        rows.append((c["params"], statistics.fmean(best), len(best)))
    return sorted(rows, key=lambda r: -r[1])


def compare(race: dict[str, Any], study_params: dict[int, dict[str, Any]], curves: dict[int, list[float]],
            table: dict[str, Any]) -> dict[str, Any]:
    """Each raced configuration beside the table: its race mean, std, seeds and p_best; its table mean and rank;
    whether the sweep's curve (seed 0) is the table's seed 0 over the epochs both trained."""
    ranked = table_means(table)
    seed0 = {json.dumps(c["params"], sort_keys=True): next((r["val_acc"] for r in c["runs"] if r["seed"] == 0), None)
             for c in table["configs"]}
    where = {json.dumps(c["params"], sort_keys=True): str((c.get("recorded") or table["meta"]).get("machine", ""))
             for c in table["configs"]}
    rows = []
    for entry in race["race"]:
        params = study_params[entry["trial"]]
        key = json.dumps(params, sort_keys=True)
        rank = next((i + 1 for i, (p, _, _) in enumerate(ranked) if json.dumps(p, sort_keys=True) == key), None)
        mine, theirs = curves.get(entry["trial"], []), seed0.get(key) or []
        both = min(len(mine), len(theirs))
        gap = max((abs(mine[i] - theirs[i]) for i in range(both) if theirs[i] is not None), default=None)
        rows.append({"trial": entry["trial"], "params": params, "sweep_value": entry.get("sweep_value"),
                     "mean": entry["mean"], "std": entry["std"], "seeds": entry["seeds"], "p_best": entry["p_best"],
                     "table_rank": rank, "table_mean": ranked[rank - 1][1] if rank else None,
                     "table_seeds": ranked[rank - 1][2] if rank else None, "same_epochs": both, "curve_gap": gap,
                     "recorded_on": where.get(key, "").split(",")[0]})
    return {"rows": rows, "table_best": ranked[0], "configs": len(ranked)}


def section(found: dict[str, Any], meta: dict[str, Any], sweep: dict[str, Any], args: argparse.Namespace) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    def short(p: dict[str, Any]) -> str:
        def one(k: str, v: Any) -> str:
            if k == "conv" and isinstance(v, list):
                return "conv " + "-".join(str(c[0]) for c in v)
            return f"{k} {v:.2f}" if isinstance(v, float) and k == "dropout" else f"{k} {v}"
        return ", ".join(one(k, v) for k, v in p.items())

    here = machine().split(",")[0]  # a CPU of another instruction set sums fp32 in another order: curves part
    lines = ["| race rank | trial | configuration | sweep's seed (%) | race mean ± std (%) | seeds | p_best | "
             "table rank | table mean (%) | same curve as the table's seed 0 |", "|---:|---:|---|---:|---:|---:|---:|"
             "---:|---:|---|"]
    for i, r in enumerate(found["rows"]):
        same = ("-" if r["curve_gap"] is None else
                f"{r['same_epochs']} epochs, largest gap {100 * r['curve_gap']:.2f} pts"
                + ("" if not r["recorded_on"] or r["recorded_on"] == here else f" (recorded on {r['recorded_on']})"))
        lines.append(f"| {i + 1} | {r['trial']} | {short(r['params'])} | {pct(r['sweep_value'])} | "
                     f"{pct(r['mean'])} ± {pct(r['std'])} | {r['seeds']} | {r['p_best']:.2f} | "
                     f"{r['table_rank'] or '-'} of {found['configs']} | {pct(r['table_mean'])} "
                     f"({r['table_seeds'] or 0} seeds) | {same} |")
    winner, (best_params, best_mean, best_seeds) = found["rows"][0], found["table_best"]
    verdict = ("the table's best configuration" if winner["table_rank"] == 1 else
               f"the table's #{winner['table_rank']}" if winner["table_rank"] else "not in the table")
    one_seed = max(found["rows"], key=lambda r: r["sweep_value"] or 0.0)
    return "\n".join([
        f"`python benchmarks/race_real.py --race {args.race} --race-seeds {args.race_seeds}`: `{Path(args.spec).name}` "
        f"as shipped ({sweep.get('trials')} trials, pruner {sweep.get('pruner')}, at most "
        f"{(sweep.get('train') or {}).get('epochs')} epochs, patience {(sweep.get('train') or {}).get('patience')}) "
        f"on the table's data ({meta.get('data')}, {meta.get('slice')}), in its precision ({meta.get('precision')}), "
        f"then the real `fer-sweep best --race {args.race} --race-seeds {args.race_seeds} --no-retrain`.", "",
        *lines, "",
        f"The race's winner (trial {winner['trial']}) is {verdict}; the table's best: {short(best_params)} at "
        f"{pct(best_mean)}% over {best_seeds} seeds. The sweep's one-seed winner (trial {one_seed['trial']}) is the "
        f"table's #{one_seed['table_rank'] or '-'}.", "",
        f"Machine: {machine()}; precision {meta.get('precision')}."])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=default_data(), help="any FER2013 layout (default: FER2013_CSV or the dev copy)")
    ap.add_argument("--table", type=Path, default=TABLE, help="the learning-curve table to compare with")
    ap.add_argument("--spec", default=str(ROOT / "sweeps" / "residual.yaml"), help="the sweep, as shipped")
    ap.add_argument("--race", type=int, default=3)
    ap.add_argument("--race-seeds", type=int, default=3)
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "race-real")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md as it is")
    args = ap.parse_args(argv)

    with gzip.open(args.table, "rt") as f:
        table = json.load(f)
    meta = table["meta"]
    args.results.mkdir(parents=True, exist_ok=True)
    data = training_slice(args.data, args.results, slice_rows(meta))
    spec = race_spec(yaml.safe_load(Path(args.spec).read_text()), meta, data)
    spec_path = args.results / f"{STUDY}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    fer_sweep = [sys.executable, "-m", "fer_sweep"]
    common = ["--device", args.device, "--wandb", "disabled"]
    code = run_forwarding_sigterm([*fer_sweep, "run", str(spec_path), "--results", str(args.results), *common])
    best = [*fer_sweep, "best", "--results", str(args.results), "--study", STUDY, "--race", str(args.race),
            "--race-seeds", str(args.race_seeds), "--no-retrain", *common]
    if code == 0:  # the race trains its seeds (resumable), then says its result again from them (trains nothing)
        code = run_forwarding_sigterm(best)
    if code != 0:
        return code
    said = subprocess.run([*best, "--json"], capture_output=True, text=True)
    if said.returncode != 0:
        print(said.stderr, file=sys.stderr, end="")
        return said.returncode
    race = json.loads(said.stdout)

    import optuna

    from fer_sweep.sweep.study import open_existing

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _, study, _ = open_existing(args.results, STUDY, None)
    trials = study.get_trials(deepcopy=False)
    found = compare(race, {t.number: plain_params(t.params) for t in trials},
                    {t.number: [t.intermediate_values[e] for e in sorted(t.intermediate_values)] for t in trials},
                    table)
    body = section(found, meta, spec, args)
    print(body)
    if not args.no_write:
        write_section(TITLE, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
