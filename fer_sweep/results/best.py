"""`best`: pick the winner on validation, retrain it through the sweep's own trial path, test it once, save it.

With `refit`, the retrain is a selection run (train only, validation held out: it picks the epoch count E and, for
the plateau schedule, records the epochs its lr was cut) followed, for each seed, by a refit on train + validation
for exactly E epochs with the same lr schedule (the plateau cuts replayed); the refit models are tested once and
saved, their validation figures are not held out (they trained on it) and are reported as such. The selection
run's model is saved too (final/selection/), as a held-out model that ensembles may pool.

A retrain is saved whole or not at all, and never destroys the one before it: its files are written into
final/.incoming/, then the earlier retrain's files in final/ (model, config, metrics, confusion plot, seeds/,
selection/) move to final/earlier/<k>/ (k = 1, 2, ... oldest first), where ensembles still pool them, and the new
ones move in (results/retrains.py). final/ always holds the latest; a full disk or a kill leaves it as it was."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import statistics
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from fer_sweep.config import EpochResult, Notice, RunConfig, UserError
from fer_sweep.data.splits import Splits
from fer_sweep.files import write_atomic
from fer_sweep.learn.augment import Norm
from fer_sweep.learn.checkpoint import CONFIG_FILE, save_model, save_torch, state_dict_cpu
from fer_sweep.learn.device import DeviceSplit
from fer_sweep.learn.train import BUDGET_FREE_SCHEDULES, evaluate_as_trained, input_norm
from fer_sweep.results.ensemble.seeds import save_seeds, seed_model, seeds_metrics
from fer_sweep.results.plots import save_confusion_png
from fer_sweep.results.retrains import SEEDS_DONE, SELECTION, TRAIN_STATE, staged
from fer_sweep.sweep.checkpoints import load_checkpoint, save_checkpoint
from fer_sweep.sweep.spec import SweepSpec
from fer_sweep.sweep.trial import Training, TrialContext, checkpoint_config, seed_config, trial_config

Progress = Callable[[int, EpochResult, int], None]  # on_epoch(seed, result, epochs): every epoch of every seed


def pick_winner(study: optuna.Study) -> FrozenTrial:
    """The complete trial with the best validation accuracy (pruned and failed trials never win)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise UserError(f"study {study.study_name!r} has no complete trial yet: run or resume the sweep first")
    return max(complete, key=lambda t: (t.value, -t.number))


def winner_info(t: FrozenTrial) -> dict[str, Any]:
    """What `best` and `--json` say of the winner: its number, validation accuracy, epochs and params (with spec
    `repeats`, its seeds and their std: the accuracy is their mean)."""
    assert t.value is not None  # a complete trial
    seeds = {"seeds": t.user_attrs["seeds"], "val_acc_std": t.user_attrs.get("val_acc_std")} \
        if (t.user_attrs.get("seeds") or 1) > 1 else {}  # spec `repeats`: the value is the seeds' mean
    return {"number": t.number, "val_acc": round(t.value, 4), "epochs": t.user_attrs.get("epochs"),
            "best_epoch": t.user_attrs.get("best_epoch"), **seeds, "params": dict(t.params)}


def retrain_best(spec: SweepSpec, study: optuna.Study, folder: Path, splits: Splits, *, device: str = "auto",
                 epochs: int | None = None, seeds: int | None = None, wandb_mode: str = "disabled",
                 on_epoch: Progress | None = None, refit: bool = False,
                 winner: FrozenTrial | None = None, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Retrain the winner K times (seeds), early-stopped on validation; evaluate each once on test; save the
    seed with the best validation accuracy to <folder>/final/. Returns metrics.json's content.
    `on_epoch(seed, result, epochs)` sees every epoch of every seed (progress of a long retrain). `epochs` and
    `seeds` default to the spec's `best:` section (else the sweep's epochs, 1 seed). With `refit`: see the module
    docstring (the first seed's selection run, then K refits on train + validation; final/ holds the first refit).
    `winner` is `pick_winner(study)` where the caller has it already (or the winner of `best --race`); `record` adds
    keys to metrics.json (the race that chose the winner)."""
    winner = winner or pick_winner(study)
    epochs, seeds = epochs or spec.best.epochs or None, seeds or spec.best.seeds
    params, cfg = trial_config(winner.params, spec, epochs=epochs)  # the sweep's own two functions
    ctx = TrialContext.open(spec, folder, device=device, wandb_mode=wandb_mode, splits=splits, with_test=True)
    norm = ctx.norm(cfg.train.normalize)
    config = checkpoint_config(cfg, norm, params, spec, winner.number)
    if refit:
        return _refit(ctx, winner, cfg, config, splits, seeds, on_epoch, record or {})
    done, cfgs = _done_folder(folder / "final", config), [seed_config(cfg, k) for k in range(seeds)]
    start_epoch, starts = _continuable(folder / "final", config, cfgs)
    runs, states, kept = _train_seeds(ctx, cfgs, (ctx.train, ctx.val, norm), done, keep=seeds > 1,
                                      on_epoch=on_epoch, starts=starts)
    chosen = max(range(len(runs)), key=lambda i: (runs[i]["val"]["acc"], -i))  # the first of equals
    metrics = _metrics(winner, runs, chosen, splits) | dict(record or {})
    if start_epoch:
        metrics["continued_from_epoch"] = start_epoch
    if kept:
        metrics["seeds_ensemble"] = seeds_metrics(kept, ctx.val, ctx.test)
    with staged(folder / "final") as stage:
        _save(stage, states[chosen], config, metrics, f"{spec.study} winner (trial {winner.number})")
        save_seeds(stage / "seeds", kept, config, metrics.get("seeds_ensemble"))
        (stage / TRAIN_STATE).mkdir()
        for c in cfgs:  # each seed's state at its last epoch: what a longer retrain continues from
            if _seed_checkpoint(done, c.train.seed).is_file():
                _seed_checkpoint(done, c.train.seed).rename(stage / TRAIN_STATE / f"s{c.train.seed}.pt")
    shutil.rmtree(done.parent, ignore_errors=True)  # published: the finished seeds are in final/ now
    _finish_run(ctx, cfg, winner, metrics)
    return metrics


def _train_seeds(ctx: TrialContext, cfgs: list[RunConfig], data: tuple[DeviceSplit, DeviceSplit | None, Norm],
                 done: Path, *, keep: bool, on_epoch: Progress | None,
                 starts: dict[int, dict] | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """The per-seed loop of a retrain and a refit alike: each seed's configuration is trained on data = (train,
    validation watched while training (None in a refit), norm), or taken from `done` where a stopped `best` left it
    (a seed stopped mid-way goes on from its last epoch's checkpoint there; `starts` are earlier retrains' states a
    longer one continues), and evaluated once on the context's validation and test splits. Returns each seed's run
    (with its per-epoch history), its weights, and, with `keep`, its model for the ensemble of seeds."""
    train, val, norm = data
    runs, states, kept = [], [], []
    for cfg in cfgs:
        finished = _finished_seed(done, cfg.train.seed, need_kept=keep)
        if finished is None:
            progress = (lambda r, c=cfg: on_epoch(c.train.seed, r, c.train.epochs)) if on_epoch else None
            path, identity = _seed_checkpoint(done, cfg.train.seed), {"seed": cfg.train.seed}
            resume = load_checkpoint(path, identity, cfg.train) or (starts or {}).get(cfg.train.seed)
            try:
                t = Training.start(cfg).run(train, val, norm=norm, on_epoch=progress, resume=resume,
                                            save=partial(save_checkpoint, path, identity))
            except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM: the epochs saved so far are kept
                e.stopped = f"seed {cfg.train.seed} goes on from its last saved epoch"  # type: ignore[attr-defined]
                raise
            val_m = evaluate_as_trained(t.model, ctx.val, norm, cfg.train)
            test_m = None if ctx.test is None else evaluate_as_trained(t.model, ctx.test, norm, cfg.train)
            # every seed is kept when K > 1: their average is reported as an ensemble of seeds (final/seeds/)
            finished = {"run": _run(cfg, t, val_m, test_m), "state": state_dict_cpu(t.model),
                        "kept": seed_model(t.model, cfg, norm, ctx.val, ctx.test) if keep else None}
            _keep_finished_seed(done, cfg.train.seed, finished)
        runs.append(finished["run"])
        states.append(finished["state"])
        if keep:
            kept.append(finished["kept"])
    return runs, states, kept


def _seed_checkpoint(done: Path, seed: int) -> Path:
    """A seed's epoch checkpoint while its retrain runs (final/.seeds-done/<key>/s<seed>.ckpt)."""
    return done / f"s{seed}.ckpt"


def _continuable(final: Path, config: dict, cfgs: list[RunConfig]) -> tuple[int, dict[int, dict]]:
    """(E0, each seed's saved state) when the retrain in final/ is one this retrain continues: the same winner,
    configuration (but its epochs), data and splits, E0 < these epochs, every seed run to its last epoch, and a
    schedule that does not stretch with the budget (else (0, {}), with one line for a stretching schedule)."""
    saved = final / CONFIG_FILE
    if not saved.is_file() or not (final / TRAIN_STATE).is_dir():
        return 0, {}
    before, now = json.loads(saved.read_text()), json.loads(json.dumps(config, default=str))
    e0, epochs = int(before["train"]["epochs"]), cfgs[0].train.epochs
    same = ({**before, "train": {**before["train"], "epochs": 0}} == {**now, "train": {**now["train"], "epochs": 0}})
    if not same or e0 >= epochs:
        return 0, {}
    if cfgs[0].train.schedule not in BUDGET_FREE_SCHEDULES:
        warnings.warn(Notice(f"the {cfgs[0].train.schedule} schedule stretches with the epoch budget: the "
                             f"{e0}-epoch retrain in final/ cannot be continued to {epochs}; retraining from scratch"),
                      stacklevel=2)
        return 0, {}
    starts = {}
    for c in cfgs:
        state = load_checkpoint(final / TRAIN_STATE / f"s{c.train.seed}.pt", {"seed": c.train.seed}, c.train)
        if state is None or len(state["history"]) != e0:  # missing, or a seed that stopped early
            return 0, {}
        starts[c.train.seed] = state
    return e0, starts


def _done_folder(final: Path, config: dict) -> Path:
    """Where this retrain's finished seeds wait (keyed by everything that makes the retrain: the winner, its
    configuration with the epochs, the data and splits), so that the same `best` stopped mid-way resumes with its
    next seed and another retrain never takes them."""
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return final / SEEDS_DONE / key


def _keep_finished_seed(done: Path, seed: int, finished: dict) -> None:
    done.mkdir(parents=True, exist_ok=True)
    save_torch(done / f"s{seed}.pt", finished)


def _finished_seed(done: Path, seed: int, need_kept: bool) -> dict | None:
    """A seed this retrain finished before it was stopped (its run, weights, and probabilities for the ensemble of
    seeds: its test split was read then, and is not read again), else None (also for an unreadable file)."""
    path = done / f"s{seed}.pt"
    if not path.is_file():
        return None
    try:
        finished = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a file cut by a kill, or another torch's: train the seed again
        return None
    if need_kept and finished.get("kept") is None:
        return None
    finished["run"] = {**finished["run"], "resumed": True}
    return finished


def _run(cfg: RunConfig, t: Training, val_m: dict, test_m: dict | None) -> dict[str, Any]:
    last = t.last
    assert last is not None  # `fit` yields at least one result
    return {"seed": cfg.train.seed, "epochs": last.epoch, "best_epoch": last.best_epoch, "stop": last.stop,
            "message": last.message, "history": t.history, "val": val_m, "test": test_m}


def _refit(ctx: TrialContext, winner: FrozenTrial, cfg: RunConfig, config: dict, splits: Splits, seeds: int,
           on_epoch: Progress | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """The selection run, then `seeds` refits on train + validation for the epochs it chose (module docstring)."""
    sel_cfg, norm = seed_config(cfg, 0), ctx.norm(cfg.train.normalize)
    progress = (lambda r: on_epoch(sel_cfg.train.seed, r, sel_cfg.train.epochs)) if on_epoch else None
    t = ctx.fit(Training.start(sel_cfg), on_epoch=progress)
    chosen = t.last.best_epoch if t.last else 0
    if chosen < 1 or t.outcome != "complete":
        raise UserError(f"--refit: the selection run ended {t.outcome} ({t.last.message if t.last else ''}): "
                        "no epoch count to refit")
    sel_val = evaluate_as_trained(t.model, ctx.val, norm, sel_cfg.train)
    sel_test = None if ctx.test is None else evaluate_as_trained(t.model, ctx.test, norm, sel_cfg.train)
    selection = _run(sel_cfg, t, sel_val, sel_test)
    # the lr of each epoch (the plateau schedule steps after the epoch is read): its cuts, replayed by the refits
    lrs = [row["lr"] for row in t.history[:chosen]]
    plan = tuple(round(lr / cfg.train.lr, 9) for lr in lrs) if cfg.train.schedule == "plateau" else ()
    both = DeviceSplit(torch.cat([ctx.train.x, ctx.val.x]), torch.cat([ctx.train.y, ctx.val.y]))
    refit_norm = input_norm(cfg.train.normalize, both.x)  # the refit's training data is train + validation
    how = {"epochs": chosen, "faces": len(both), "selection_seed": sel_cfg.train.seed, "lr_plan": list(plan)}
    cfgs = [seed_config(cfg, k, epochs=chosen, patience=0, lr_plan=plan) for k in range(seeds)]
    refit_config = {**checkpoint_config(cfgs[0], refit_norm, config["params"], ctx.spec, winner.number), "refit": how}
    done = _done_folder(ctx.folder / "final", refit_config)
    runs, states, kept = _train_seeds(ctx, cfgs, (both, None, refit_norm), done, keep=seeds > 1, on_epoch=on_epoch)
    metrics = _metrics(winner, runs, 0, splits) | dict(record)
    metrics["val_held_out"] = False
    metrics["notes"].append(f"refit on train + validation ({len(both)} faces) for {chosen} epochs, the count the "
                            f"selection run chose on held-out validation: validation figures are not held out")
    metrics["refit"] = {**how, "selection": _selection_summary(selection)}
    if kept:
        metrics["seeds_ensemble"] = seeds_metrics(kept, ctx.val, ctx.test)
    with staged(ctx.folder / "final") as stage:
        save_model(stage / SELECTION, state_dict_cpu(t.model), config)  # held out: ensembles may pool it
        _save(stage, states[0], refit_config, metrics,
              f"{ctx.spec.study} winner (trial {winner.number}), refit on train + val")
        save_seeds(stage / "seeds", kept, refit_config, metrics.get("seeds_ensemble"))
    shutil.rmtree(done.parent, ignore_errors=True)
    _finish_run(ctx, cfg, winner, metrics)
    return metrics


def _selection_summary(selection: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's record of the refit's selection run: its run without the per-split reports, its scores."""
    val, test = selection["val"], selection["test"]
    return ({k: v for k, v in selection.items() if k not in ("val", "test", "history")}
            | {"val/acc": val["acc"], "val/macro_f1": val["macro_f1"], "path": SELECTION,
               **({"test/acc": test["acc"], "test/macro_f1": test["macro_f1"]} if test else {})})


def _finish_run(ctx: TrialContext, cfg: RunConfig, winner: FrozenTrial, metrics: dict) -> None:
    """The retrain's tracking run (job type final), its summary the mean of every metric over the seeds."""
    run = ctx.track(cfg, f"{ctx.spec.study}-final", job_type="final", trial=winner.number)
    summary = {k: v["mean"] for k, v in metrics.items() if isinstance(v, dict) and "mean" in v}
    run.finish(tags=["final"], summary=summary)


def _mean_std(values: list[float]) -> dict[str, float]:
    std = round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "std": std}


def _metrics(winner: FrozenTrial, runs: list[dict], chosen: int, splits: Splits) -> dict[str, Any]:
    split = "test" if splits.test is not None else "val"
    saved = runs[chosen]
    out = {"winner": winner_info(winner), "split": split, "seeds": len(runs), "saved_seed": saved["seed"],
           "notes": list(splits.notes) + ([] if splits.test is not None else
                                          ["no test split in this data: reporting validation only"]),
           "val/acc": _mean_std([r["val"]["acc"] for r in runs]),
           "val/macro_f1": _mean_std([r["val"]["macro_f1"] for r in runs]),
           "runs": [{k: v for k, v in r.items() if k not in ("val", "test")} |
                    {"val/acc": r["val"]["acc"],
                     **({"test/acc": r["test"]["acc"], "test/macro_f1": r["test"]["macro_f1"]} if r["test"] else {})}
                    for r in runs]}
    if splits.test is not None:
        out["test/acc"] = _mean_std([r["test"]["acc"] for r in runs])
        out["test/macro_f1"] = _mean_std([r["test"]["macro_f1"] for r in runs])
    report = saved[split]
    out.update({"per_class": report["per_class"], "confusion": report["confusion"],
                "n_" + split: int(sum(map(sum, report["confusion"])))})
    return out


def _save(final: Path, state, config: dict, metrics: dict, title: str) -> None:
    save_model(final, state, config)
    write_atomic(final / "metrics.json", json.dumps(metrics, indent=2))
    save_confusion_png(metrics["confusion"], final / "confusion.png", title=f"{title} on {metrics['split']}")
