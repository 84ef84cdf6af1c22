"""Sweep commands: `run`, `status`, `best`, `bench` and `data info` (thin: parse, call one library function, render)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence

import typer

from fer_sweep.cli.common import (
    Device,
    Json,
    Results,
    Storage,
    Study,
    Wandb,
    app,
    check_choice,
    check_device,
    data_app,
    err,
    flags_named,
    out,
    show,
    user_errors,
)
from fer_sweep.config import UserError

if TYPE_CHECKING:
    from fer_sweep.sweep.launch import LaunchPlan


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec, e.g. sweeps/residual.yaml.")],
    trials: Annotated[Optional[int], typer.Option("--trials", min=1,
                                                  help="Finished trials the study ends with.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="FER2013 file/folder, or 'synthetic'.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name (default: the spec's).")] = None,
    storage: Storage = None,
    device: Device = "auto",
    wandb: Wandb = None,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Seed of the random search.")] = None,
    results: Results = Path("results"),
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes sharing the study.")] = 1,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPUs for the workers, round-robin, e.g. 0,1.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="optuna | wandb (W&B's own sweep controller and a local "
                                         "`wandb agent` loop; online only).")] = "optuna",
    timeout: Annotated[Optional[str], typer.Option("--timeout", help="Stop this long after the start (20s, 90m, 2h): "
                                                   "no trial starts after it, the running one is re-queued, exit 0; "
                                                   "the same command resumes.")] = None,
    db_wait: Annotated[Optional[str], typer.Option("--db-wait", help="How long workers wait for a --storage database "
                                                   "that stops answering (30s, 5m; 0: not at all) before they end "
                                                   "with one line; default 5m.")] = None,
    no_stop: Annotated[bool, typer.Option("--no-stop", help="Ignore the spec's `stop:` (stop on a plateau): run to "
                                          "--trials, e.g. to go on after a plateau.")] = False,
    from_: Annotated[Optional[list[str]], typer.Option("--from", help="Warm start: import the finished trials of "
                                                       "this earlier study (same data and splits, same --results or "
                                                       "--storage) that fit the spec; repeatable.")] = None,
) -> None:
    """Run (or resume) a sweep: random search, weak trials pruned, one wandb run per trial."""
    from fer_sweep.cli import render
    from fer_sweep.sweep.launch import run_sweep
    from fer_sweep.sweep.signals import interrupting

    with user_errors(), interrupting(signal.SIGTERM):  # preemption (SIGTERM) is handled like Ctrl-C
        plan = _check_run_flags(spec_path, {"trials": trials, "data": data, "study": study, "seed": seed},
                                storage=storage, device=device, wandb=wandb, results=results, workers=workers,
                                gpus=gpus, backend=backend, timeout=timeout, db_wait=db_wait, no_stop=no_stop,
                                sources=from_ or [])
        if backend == "wandb":
            return _run_wandb(plan)
        show(render.pruner_warning(plan.spec, workers), err)
        shown, on_update, on_epoch = render.sweep_progress(err, plan.spec)
        with shown:
            snap = run_sweep(plan, on_update=on_update, on_epoch=on_epoch,
                             on_start=lambda snap: err.print(render.run_header(plan, snap), highlight=False),
                             on_import=lambda done: show(render.import_lines(done), err))
        show(render.sweep_end(snap, plan, timeout))


def _check_run_flags(spec_path: Path, flags: dict[str, Any], *, storage: Optional[str], device: str,
                     wandb: Optional[str], results: Path, workers: int, gpus: Optional[str], backend: str,
                     timeout: Optional[str], db_wait: Optional[str], no_stop: bool = False,
                     sources: Sequence[str] = ()) -> LaunchPlan:
    """Every flag of `run` parsed and checked before the study folder is written (the spec loaded with the flags
    that override it): the launch plan they make."""
    import dataclasses
    import time

    from fer_sweep.sweep import tracking
    from fer_sweep.sweep.dbfaults import DB_WAIT_S
    from fer_sweep.sweep.launch import LaunchPlan
    from fer_sweep.sweep.signals import parse_duration
    from fer_sweep.sweep.spec import WANDB_MODES, load_spec

    deadline = time.time() + parse_duration(timeout) if timeout is not None else None
    db_wait_s = parse_duration(db_wait, "--db-wait", zero=True) if db_wait is not None else DB_WAIT_S
    with flags_named(str(spec_path), flags):
        spec = load_spec(spec_path, overrides=flags)
    if no_stop:  # saved so (spec.yaml), every worker of this run reads it
        spec = dataclasses.replace(spec, stop=None, resolved={**spec.resolved, "stop": None})
    mode = tracking.resolve_mode(check_choice(wandb or spec.wandb.mode, WANDB_MODES, "--wandb"))
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus is not None else None
    if check_choice(backend, ("optuna", "wandb"), "--backend") == "wandb":
        if workers > 1 or gpus or storage or timeout or db_wait or sources:
            raise UserError("--workers, --gpus, --storage, --timeout, --db-wait and --from apply to --backend optuna "
                            "(with W&B, start more agents)")
        gpu_list, storage = None, None
    if gpu_list is not None and not gpu_list:
        raise UserError("--gpus: expected GPU indices such as 0,1")
    check_device("cuda" if gpu_list else device, "--gpus" if gpu_list else "--device")
    if results.exists() and not results.is_dir():
        raise UserError(f"--results {results}: not a folder")
    if storage:
        from fer_sweep.sweep.store import open_storage

        try:  # a URL storage writes nothing here; a bad URL or an unreachable server ends the command
            open_storage(results, storage)
        except UserError as e:
            raise UserError(f"--{e}") from None  # "--storage postgresql://fer:***@host/db: cannot open (...)"
    return LaunchPlan(spec, results, storage_url=storage, workers=max(workers, len(gpu_list or [])),
                      gpus=tuple(gpu_list) if gpu_list is not None else None, device=device, wandb_mode=mode,
                      deadline=deadline, db_wait_s=db_wait_s, sources=_sources(spec, results, storage, sources))


def _sources(spec, results: Path, storage: Optional[str], names: Sequence[str]) -> tuple:
    """`--from`: each earlier study opened (from the same --results, or --storage) and checked against the spec
    (same data and splits) before anything is written."""
    from fer_sweep.sweep.study import open_existing
    from fer_sweep.sweep.warmstart import Source, check_source

    found = []
    for name in dict.fromkeys(names):
        try:
            old_spec, old_study, folder = open_existing(results, name, storage)
        except UserError as e:
            raise UserError(f"--from {name}: {e}") from None
        found.append(Source(name, old_spec, old_study, folder))
        check_source(spec, found[-1])
    return tuple(found)


def _run_wandb(plan: LaunchPlan) -> None:
    """`run --backend wandb`: W&B's own sweep controller and a local `wandb agent` loop."""
    from fer_sweep.cli import render
    from fer_sweep.sweep.wandb_backend import run_wandb_sweep

    done = run_wandb_sweep(plan.spec, results=plan.results, wandb_mode=plan.wandb_mode, device=plan.device)
    out.print(render.wandb_sweep_line(done))


@app.command()
def status(study: Study = None, results: Results = Path("results"), storage: Storage = None, as_json: Json = False,
           top: Annotated[int, typer.Option("--top", min=1, help="Rows in the leaderboard.")] = 10) -> None:
    """Leaderboard of a running or finished sweep, counts by state, epochs saved by pruning, importances."""
    from fer_sweep.cli import render
    from fer_sweep.results.retrains import saved
    from fer_sweep.sweep import summary
    from fer_sweep.sweep.study import open_existing

    with user_errors():
        spec, st, folder = open_existing(results, study, storage)
        data = summary.status(st, spec.trials, spec.max_epochs, top=top, pruner=spec.pruner, stop=spec.stop)
        data["saved"] = saved(folder)  # what `best` saved: retrains (latest first) and the ensemble
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        out.print(render.status_view(data))


@app.command()
def best(
    study: Annotated[Optional[list[str]], typer.Option("--study", help="Study name (default: the only or most recent "
                                                       "one); with --ensemble, repeat it to pool several studies "
                                                       "on the same data and splits.")] = None,
    results: Results = Path("results"), storage: Storage = None,
    retrain: Annotated[bool, typer.Option("--retrain/--no-retrain", help="Retrain and test the winner.")] = True,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs for the retrain (default: the "
                                                  "spec's best.epochs, else the sweep's).")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Retrain with K seeds and report mean ± std "
                                                 "(default: the spec's best.seeds, else 1).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Data for the retrain (default: the sweep's).")] = None,
    device: Device = "auto", wandb: Wandb = None, as_json: Json = False,
    ensemble: Annotated[Optional[int], typer.Option("--ensemble", min=1, help="Instead of the retrain: combine the "
                                                    "kept trial models and retrained models, up to K picks chosen on "
                                                    "validation (greedy, with replacement), test once, save to "
                                                    "final/ensemble.json.")] = None,
    refit: Annotated[bool, typer.Option("--refit", help="After a selection run (validation held out, it picks the "
                                        "epoch count), refit each seed on train + validation for that many epochs; "
                                        "test once. Validation is then not held out.")] = False,
    race: Annotated[Optional[int], typer.Option("--race", help="Before the retrain: the top K complete trials get "
                                                "more seeds at the sweep's own budget (--race-seeds); the winner is "
                                                "the best mean (validation only). Resumable; its models are "
                                                "ensemble candidates.")] = None,
    race_seeds: Annotated[Optional[int], typer.Option("--race-seeds", help="Seeds each raced configuration ends "
                                                      "with, the sweep's own included (default 3).")] = None,
) -> None:
    """Print the winner; retrain it, test it once on the test split, save it to <results>/<study>/final/."""
    from fer_sweep.cli import render_results
    from fer_sweep.results.best import pick_winner, retrain_best, winner_info
    from fer_sweep.sweep.trial import load_data

    with user_errors():
        names = _check_best_flags(study, wandb=wandb, retrain=retrain, epochs=epochs, seeds=seeds, device=device,
                                  ensemble=ensemble, refit=refit, race=race, race_seeds=race_seeds, data=data)
        opened = _open_studies(results, names, storage, data if retrain or ensemble else None)
        spec, st, folder = opened[0]
        mode = _wandb_mode(wandb, spec) if (retrain and ensemble is None) or race is not None else "disabled"
        splits = load_data(spec) if race is not None else None  # once: the race and the retrain read it
        raced = _best_race(opened[0], splits, race, race_seeds, device, mode, as_json) if race is not None else None
        winner = pick_winner(st) if raced is None else raced["trial"]  # once: the retrain is given it
        record = _race_record(raced)
        if not as_json:
            out.print(render_results.winner_panel(winner_info(winner), race=raced["entry"] if raced else None))
        if ensemble is not None:
            return _best_ensemble(opened, ensemble, device, as_json)
        if not retrain:
            if as_json:
                print(json.dumps({"winner": winner_info(winner), **record}, indent=2))
            return
        metrics = retrain_best(spec, st, folder, splits or load_data(spec), device=device, epochs=epochs,
                               seeds=seeds, wandb_mode=mode, on_epoch=_retrain_progress, refit=refit, winner=winner,
                               record=record)
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        show(render_results.retrain_lines(metrics, folder))


def _check_best_flags(study: Optional[list[str]], *, wandb: Optional[str], retrain: bool, epochs: Optional[int],
                      seeds: Optional[int], device: str, ensemble: Optional[int], refit: bool,
                      race: Optional[int] = None, race_seeds: Optional[int] = None,
                      data: Optional[str] = None) -> list[Optional[str]]:
    """Every rule between `best`'s flags, checked before a study is opened; returns the study names (None: the only
    or most recent one), each once."""
    from fer_sweep.sweep.spec import WANDB_MODES

    if wandb is not None:
        check_choice(wandb, WANDB_MODES, "--wandb")
    if ensemble is not None and (epochs or seeds or refit):
        raise UserError("--ensemble combines the kept trial models without training: --epochs, --seeds and "
                        "--refit belong to the retrain (run `best` without --ensemble)")
    _check_race_flags(race, race_seeds, ensemble=ensemble, data=data)
    names: list[Optional[str]] = list(dict.fromkeys(study)) if study else [None]
    if len(names) > 1 and ensemble is None:
        raise UserError(f"--study given {len(names)} times: several studies only go together in an ensemble "
                        "(add --ensemble K)")
    if refit and not retrain:
        raise UserError("--refit belongs to the retrain: drop --no-retrain")
    if retrain or ensemble or race is not None:
        check_device(device)
    return names


def _check_race_flags(race: Optional[int], race_seeds: Optional[int], *, ensemble: Optional[int],
                      data: Optional[str]) -> None:
    """`--race K` and `--race-seeds S`: K >= 2, S >= 2, S only with a race; no race with --ensemble (it trains
    nothing: its models are pooled by a later `best --ensemble`) or --data (the race adds seeds to the sweep's own
    runs, on the sweep's data)."""
    if race_seeds is not None and race is None:
        raise UserError(f"--race-seeds {race_seeds}: the seeds of a race; add --race K")
    if race is None:
        return
    if race < 2:
        raise UserError(f"--race {race}: nothing to race (a race compares at least 2 configurations; the winner "
                        "alone: run `best` without --race)")
    if race_seeds is not None and race_seeds < 2:
        raise UserError(f"--race-seeds {race_seeds}: a race compares means over seeds: at least 2")
    if ensemble is not None:
        raise UserError("--race trains before the retrain and --ensemble trains nothing: run `best --race K` "
                        "(or with --no-retrain) first, then `best --ensemble K`, which pools the race's models")
    if data:
        raise UserError("--race adds seeds to the sweep's own runs, on the sweep's data: drop --data")


def _best_race(opened: tuple, splits, k: int, seeds: Optional[int], device: str, mode: str,
               as_json: bool) -> dict[str, Any]:
    """`best --race K`: the race run (or resumed), its table shown (not with --json); returns the race with its
    winning trial ("trial") and that trial's entry ("entry")."""
    from fer_sweep.cli import render_results
    from fer_sweep.results.race import SEEDS, race, trial_by_number

    spec, st, folder = opened
    raced = race(spec, st, folder, splits, k=k, seeds=seeds or SEEDS, device=device, wandb_mode=mode,
                 on_epoch=_race_progress)
    if not as_json:
        show(render_results.race_lines(raced))
    entry = next(e for e in raced["race"] if e["trial"] == raced["winner"])
    return {**raced, "trial": trial_by_number(st, raced["winner"]), "entry": entry}


def _race_record(raced: Optional[dict[str, Any]]) -> dict[str, Any]:
    """What `best --race` adds to `--json` and metrics.json: "race" (best mean first) and its notes, if any."""
    if raced is None:
        return {}
    return {"race": raced["race"], **({"race_notes": raced["notes"]} if raced["notes"] else {})}


def _open_studies(results: Path, names: list[Optional[str]], storage: Optional[str], data: Optional[str]) -> list:
    """(spec, study, folder) of each study named; with `data` (`best --data`), each spec trains on it instead. Several
    studies (an ensemble's) on other data or splits are refused here, before `best` prints anything."""
    from fer_sweep.sweep.spec import parse_spec
    from fer_sweep.sweep.study import open_existing

    opened = [open_existing(results, name, storage) for name in names]
    if data:
        for i, (spec, st, folder) in enumerate(opened):
            with flags_named(spec.path, {"data": data}):
                opened[i] = (parse_spec({**spec.resolved, "data": data}, spec.path), st, folder)
    if len(opened) > 1:
        from fer_sweep.results.ensemble import check_same_data

        check_same_data(opened)  # before the data is read
    return opened


def _wandb_mode(wandb: Optional[str], spec) -> str:
    """The W&B mode of `best`'s retrain: --wandb, else the spec's; `auto` resolved."""
    from fer_sweep.sweep import tracking
    from fer_sweep.sweep.spec import WANDB_MODES

    return tracking.resolve_mode(check_choice(wandb or spec.wandb.mode, WANDB_MODES, "--wandb"))


def _best_ensemble(opened: list, picks: int, device: str, as_json: bool) -> None:
    """`best --ensemble K`: the kept trial models and retrained models of one study or several (on the same data and
    splits) combined (no training), tested once, saved into the first study's final/."""
    from fer_sweep.cli import render_results
    from fer_sweep.results import ensemble
    from fer_sweep.sweep.trial import load_data

    spec, st, folder = opened[0]
    built = ensemble.build_ensemble(spec, st, folder, load_data(spec), picks=picks, device=device,
                                    others=opened[1:])
    path = ensemble.save_ensemble(folder / "final", built)
    if as_json:
        print(json.dumps(built["info"], indent=2))
    else:
        show(render_results.ensemble_lines(built["info"], path))


def _race_progress(trial: int, seed: int, r, epochs: int) -> None:
    """One stderr line per race epoch (cli/render_results.py: race_epoch_line)."""
    from fer_sweep.cli import render_results

    err.print(render_results.race_epoch_line(trial, seed, r, epochs))


def _retrain_progress(seed: int, r, epochs: int) -> None:
    """One stderr line per retrain epoch (cli/render_results.py: retrain_epoch_line)."""
    from fer_sweep.cli import render_results

    err.print(render_results.retrain_epoch_line(seed, r, epochs))


@app.command()
def bench(
    data: Annotated[str, typer.Option("--data", help="FER2013 file/folder, or 'synthetic'.")] = "synthetic",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Timed training steps after the warm-up.")] = 50,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    device: Device = "auto", as_json: Json = False,
    arch: Annotated[str, typer.Option("--arch", help="cnn | residual | vgg")] = "residual",
    conv: Annotated[str, typer.Option("--conv", help="Stage widths, kernel 3, e.g. 32,64,128.")] = "32,64,128",
    norm: Annotated[str, typer.Option("--norm", help="batch | layer | none")] = "batch",
    pooling: Annotated[str, typer.Option("--pooling", help="max | avg | none")] = "max",
    amp: Annotated[str, typer.Option("--amp", help="Precision: auto (bf16 on CUDA and on CPUs with native bf16) "
                                     "| bf16 | off (fp32).")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the training step "
                                           "(the warm-up then includes compile time).")] = False,
    depth: Annotated[int, typer.Option("--depth", min=1, max=8, help="Convs (cnn, vgg) or residual blocks per "
                                       "stage.")] = 1,
    crop: Annotated[int, typer.Option("--crop", min=0, max=48, help="Train on random crop x crop windows (the model "
                                      "takes that input; 0 = the whole 48x48 face).")] = 0,
    peak: Annotated[bool, typer.Option("--peak/--no-peak", help="Also time this machine's matmul peak in the same "
                                       "precision (a few seconds) and report the fraction reached.")] = True,
) -> None:
    """Train images/s of one model (default: the seeds' best residual CNN) on this machine, its FLOPs per training
    image, the GFLOP/s that makes and the fraction of this machine's measured matmul peak."""
    from fer_sweep.cli import render
    from fer_sweep.learn.throughput import BenchOptions, run_bench

    with user_errors():
        result = run_bench(BenchOptions(data=data, steps=steps, batch_size=batch_size, device=device, arch=arch,
                                        conv=conv, norm=norm, pooling=pooling, amp=amp, compile=compile_, depth=depth,
                                        crop=crop, peak=peak))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        show(render.bench_lines(result))


@data_app.command("info")
def data_info(path: Annotated[str, typer.Argument(help="FER2013 file or folder (any supported layout).")],
              as_json: Json = False) -> None:
    """The detected layout and the counts per split x class."""
    from fer_sweep.cli import render
    from fer_sweep.data import splits

    with user_errors():
        info = splits.info(path)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        out.print(render.data_table(info))


@app.command()
def repair(study: Study = None, results: Results = Path("results"), as_json: Json = False) -> None:
    """Rewrite a study's journal without its damaged records (a backup is kept); run it with the sweep stopped."""
    from fer_sweep.cli import render
    from fer_sweep.sweep.study import repair_journal

    with user_errors():
        done = repair_journal(results, study)
    if as_json:
        print(json.dumps(done, indent=2))
    else:
        out.print(render.repair_line(done))
