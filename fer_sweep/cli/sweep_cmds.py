"""Sweep commands: `run`, `status`, `best`, `bench` and `data info` (thin: parse, call one library function, render)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from fer_sweep.cli.common import (
    Device, Json, Results, Storage, Study, Wandb, app, check_choice, check_device, data_app, err, flags_named,
    out, user_errors,
)
from fer_sweep.config import UserError

def _check_run_flags(device: str, gpus: Optional[list[str]], results: Path, storage: Optional[str]) -> None:
    """Every flag of `run` that the spec does not check, checked before the study folder is written."""
    if gpus is not None and not gpus:
        raise UserError("--gpus: expected GPU indices such as 0,1")
    check_device("cuda" if gpus else device, "--gpus" if gpus else "--device")
    if results.exists() and not results.is_dir():
        raise UserError(f"--results {results}: not a folder")
    if storage:
        from fer_sweep.sweep.store import open_storage

        try:  # a URL storage writes nothing here; a bad URL or an unreachable server ends the command
            open_storage(results, storage)
        except UserError as e:
            raise UserError(f"--{e}") from None  # "--storage postgresql://fer:***@host/db: cannot open (...)"


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec, e.g. sweeps/residual.yaml.")],
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Finished trials the study ends with.")] = None,
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
) -> None:
    """Run (or resume) a sweep: random search, weak trials pruned, one wandb run per trial."""
    import contextlib
    import time

    from rich.live import Live

    from fer_sweep.cli import render
    from fer_sweep.sweep import launch as runner
    from fer_sweep.sweep import tracking
    from fer_sweep.sweep.spec import WANDB_MODES, load_spec
    from fer_sweep.sweep.signals import interrupting, parse_duration
    from fer_sweep.sweep.store import DB_WAIT_S

    with user_errors(), interrupting(signal.SIGTERM):  # preemption (SIGTERM) is handled like Ctrl-C
        deadline = time.time() + parse_duration(timeout) if timeout is not None else None
        db_wait_s = parse_duration(db_wait, "--db-wait", zero=True) if db_wait is not None else DB_WAIT_S
        flags = {"trials": trials, "data": data, "study": study, "seed": seed}
        with flags_named(str(spec_path), flags):
            spec = load_spec(spec_path, overrides=flags)
        mode = tracking.resolve_mode(check_choice(wandb or spec.wandb.mode, WANDB_MODES, "--wandb"))
        gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus is not None else None
        if check_choice(backend, ("optuna", "wandb"), "--backend") == "wandb":
            from fer_sweep.sweep.wandb_backend import run_wandb_sweep

            if workers > 1 or gpus or storage or timeout or db_wait:
                raise UserError("--workers, --gpus, --storage, --timeout and --db-wait apply to --backend optuna (with "
                                "W&B, start more agents)")
            _check_run_flags(device, None, results, None)
            done = run_wandb_sweep(spec, results=results, wandb_mode=mode, device=device)
            out.print(f"W&B sweep {done['sweep_id']} ({done['project']}): {done['runs']} runs; config {done['config']}")
            return
        _check_run_flags(device, gpu_list, results, storage)
        if workers > 1 and spec.pruner.type == "median" and spec.pruner.startup_trials < workers:
            err.print(f"[yellow]warning:[/yellow] pruner.startup_trials={spec.pruner.startup_trials} is below "
                      f"--workers {workers}: early trials will be pruned against too few finished trials")
        if err.is_terminal:  # the live view; elsewhere (a Slurm log, nohup) one line per epoch and per trial
            view = render.LiveView(spec.study, spec.trials)
            shown, on_update, on_epoch = Live(view, console=err, refresh_per_second=2, transient=True,
                                              redirect_stdout=False), view.update, view.epoch
        else:
            lines = render.ProgressLines(lambda line: err.print(line, highlight=False, soft_wrap=True),
                                         int(spec.train.get("epochs", 15)))
            shown, on_update, on_epoch = contextlib.nullcontext(), lines.update, lines.epoch
        with shown:
            snap = runner.run_sweep(spec, results=results, storage_url=storage, workers=max(workers, len(gpu_list or [])),
                                    gpus=gpu_list, device=device, wandb_mode=mode, on_update=on_update,
                                    on_epoch=on_epoch, deadline=deadline, db_wait_s=db_wait_s,
                                    on_start=lambda: err.print(render.run_header(spec, device, gpu_list, workers),
                                                               highlight=False))
        if snap.get("deadline_reached"):
            out.print(render.deadline_line(snap, timeout), highlight=False)
            return
        folder = results / spec.study
        out.print(render.leaderboard(snap["leaderboard"], f"{spec.study}: top trials"))
        out.print(render.counts_line(snap))
        out.print(render.best_line(snap), highlight=False)
        out.print(f"results: {folder}/ (trials.csv, spec.yaml); next: fer-sweep best --study {spec.study} --results {results}")
        if mode == "offline":
            out.print(tracking.sync_hint(folder))


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
        data = summary.status(st, spec.trials, int(spec.train.get("epochs", 15)), top=top, pruner=spec.pruner)
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
) -> None:
    """Print the winner; retrain it, test it once on the test split, save it to <results>/<study>/final/."""
    from fer_sweep.cli import render
    from fer_sweep.results import best as final
    from fer_sweep.sweep import launch as runner
    from fer_sweep.sweep import tracking
    from fer_sweep.sweep.spec import WANDB_MODES, parse_spec
    from fer_sweep.sweep.study import open_existing

    with user_errors():
        if wandb is not None:
            check_choice(wandb, WANDB_MODES, "--wandb")
        if ensemble is not None and (epochs or seeds or refit):
            raise UserError("--ensemble combines the kept trial models without training: --epochs, --seeds and "
                            "--refit belong to the retrain (run `best` without --ensemble)")
        names = list(dict.fromkeys(study or [None]))
        if len(names) > 1 and ensemble is None:
            raise UserError(f"--study given {len(names)} times: several studies only go together in an ensemble "
                            "(add --ensemble K)")
        if refit and not retrain:
            raise UserError("--refit belongs to the retrain: drop --no-retrain")
        if retrain or ensemble:
            check_device(device)
        opened = [open_existing(results, name, storage) for name in names]
        if data and (retrain or ensemble):
            for i, (spec, st, folder) in enumerate(opened):
                with flags_named(spec.path, {"data": data}):
                    opened[i] = (parse_spec({**spec.resolved, "data": data}, spec.path), st, folder)
        spec, st, folder = opened[0]
        info = final.winner_info(final.pick_winner(st))
        if not as_json:
            out.print(render.winner_panel(info))
        if ensemble is not None:
            return _best_ensemble(spec, st, folder, ensemble, device, as_json, opened[1:])
        if not retrain:
            if as_json:
                print(json.dumps({"winner": info}, indent=2))
            return
        mode = tracking.resolve_mode(check_choice(wandb or spec.wandb.mode, WANDB_MODES, "--wandb"))
        metrics = final.retrain_best(spec, st, folder, runner.load_data(spec), device=device, epochs=epochs,
                                     seeds=seeds, wandb_mode=mode, on_epoch=_retrain_progress, refit=refit)
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        out.print(render.final_view(metrics))
        if "seeds_ensemble" in metrics:
            out.print(render.seeds_ensemble_line(metrics), highlight=False)
        if "refit" in metrics:
            out.print(_refit_line(metrics), highlight=False)
        out.print(f"saved: {folder / 'final'}/ (model.pt, config.json, metrics.json, confusion.png"
                  f"{'; seeds/: every seed, an ensemble folder' if 'seeds_ensemble' in metrics else ''})")


def _refit_line(m: dict) -> str:
    """`best --refit`: the selection run beside the refit (which trained on validation: its val is not held out)."""
    r, split = m["refit"], m["split"]
    sel = r["selection"]
    return (f"refit on train + val ({r['faces']} faces) for {r['epochs']} epochs, chosen by the selection run "
            f"(seed {sel['seed']}, validation held out: val acc {100 * sel['val/acc']:.2f}%"
            + (f", {split} acc {100 * sel[split + '/acc']:.2f}%" if split + "/acc" in sel else "")
            + f"; saved in final/{sel['path']}/); the val figures above are not held out")


def _best_ensemble(spec, st, folder: Path, picks: int, device: str, as_json: bool, others: list) -> None:
    """`best --ensemble K`: the kept trial models and retrained models of one study or several (on the same data and
    splits) combined (no training), tested once, saved into the first study's final/."""
    from fer_sweep.results import ensemble
    from fer_sweep.cli import render
    from fer_sweep.sweep import launch as runner

    if others:
        ensemble.check_same_data([(spec, st, folder), *others])  # before the data is read
    built = ensemble.build_ensemble(spec, st, folder, runner.load_data(spec), picks=picks, device=device,
                                    others=others)
    path = ensemble.save_ensemble(folder / "final", built)
    if as_json:
        print(json.dumps(built["info"], indent=2))
        return
    out.print(render.ensemble_view(built["info"]))
    info = built["info"]
    if info["single"].get("source", "trial") != "trial":
        out.print(f"the single model above is the best retrained model ({info['single']['trial']}, "
                  f"{info['single']['source']}), where the selection started", highlight=False)
    if len(info["studies"]) > 1:
        by = {s: [m["name"] for m in info["members"] if m["study"] == s] for s in info["studies"]}
        out.print("pooled studies: " + "; ".join(f"{s}: {', '.join(n) or 'no member'}" for s, n in by.items()),
                  highlight=False)
    out.print(f"saved: {path.parent}/ (ensemble.json, members/, ensemble-confusion.png); "
              f"predict with: fer-sweep predict {path.parent} --data ...", highlight=False)


def _retrain_progress(seed: int, r, epochs: int) -> None:
    """One stderr line per retrain epoch (a CPU retrain can take an hour; benchmarks parse these lines); a refit's
    epochs (no validation) read `refit`."""
    import math

    m = r.metrics
    val = f"val/acc {m['val/acc']:.4f}" if math.isfinite(m["val/acc"]) else "refit (no validation)"
    err.print(f"best: seed {seed} epoch {r.epoch}/{epochs}: train/acc {m['train/acc']:.4f} "
              f"{val} ({m['time/epoch_s']:.0f} s)" + (f"; {r.message}" if r.stop else ""), highlight=False)


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
    from fer_sweep.learn.throughput import run_bench

    with user_errors():
        result = run_bench(data=data, steps=steps, batch_size=batch_size, device=device, arch=arch, conv=conv,
                           norm=norm, pooling=pooling, amp=amp, compile=compile_, depth=depth, crop=crop, peak=peak)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        out.print(f"{result['model']} on {result['device']}, batch {result['batch_size']}, {result['steps']} steps: "
                  f"[bold]{result['train_img_per_s']:,.0f} train images/s[/bold] ({result['step_ms']:.2f} ms/step)")
        out.print(f"precision: {result['precision_detail']}; channels_last: {result['channels_last']}", highlight=False)
        line = (f"cost: {result['train_flops_per_image'] / 1e6:,.0f} MFLOP per training image (forward + backward, "
                f"torch's flop counter) -> {result['achieved_gflops']:,.1f} GFLOP/s achieved")
        if "matmul_peak_gflops" in result:
            line += (f"; this machine's {result['peak_dtype']} matmul peak {result['matmul_peak_gflops']:,.1f} GFLOP/s "
                     f"({result['peak_n']}^3, {result['threads']} threads): {100 * result['peak_fraction']:.0f}% of it")
        out.print(line, highlight=False)


@data_app.command("info")
def data_info(path: Annotated[str, typer.Argument(help="FER2013 file or folder (any supported layout).")],
              as_json: Json = False) -> None:
    """The detected layout and the counts per split x class."""
    from fer_sweep.data import splits as data
    from fer_sweep.cli import render

    with user_errors():
        info = data.info(path)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        out.print(render.data_table(info))


@app.command()
def repair(study: Study = None, results: Results = Path("results"), as_json: Json = False) -> None:
    """Rewrite a study's journal without its damaged records (a backup is kept); run it with the sweep stopped."""
    from fer_sweep.sweep.study import repair_journal

    with user_errors():
        done = repair_journal(results, study)
    if as_json:
        print(json.dumps(done, indent=2))
    elif not done["damaged"]:
        out.print(f"{done['path']}: {done['records']} records, none damaged: nothing to repair", highlight=False)
    else:
        out.print(f"{done['path']}: rewrote {done['records']} records without {done['damaged']} damaged line(s) "
                  f"({done['recovered']} whole record(s) recovered from them; trial ids named: "
                  f"{', '.join(map(str, done['trial_ids'])) or 'none'}); the damaged copy is {done['backup']}",
                  highlight=False)
