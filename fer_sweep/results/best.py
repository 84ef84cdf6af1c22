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
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

import torch

from fer_sweep.config import EpochResult, RunConfig, UserError
from fer_sweep.data.splits import Splits
from fer_sweep.files import write_atomic
from fer_sweep.learn.checkpoint import save_model, save_torch, state_dict_cpu
from fer_sweep.learn.device import DeviceSplit, pick_device, to_device
from fer_sweep.learn.train import evaluate_as_trained, input_norm
from fer_sweep.results import ensemble
from fer_sweep.results.plots import save_confusion_png
from fer_sweep.results.retrains import SEEDS_DONE, SELECTION, staged
from fer_sweep.sweep import tracking
from fer_sweep.sweep.spec import SweepSpec
from fer_sweep.sweep.trial import Training, checkpoint_config, trial_config, wandb_config


def pick_winner(study: optuna.Study) -> FrozenTrial:
    """The complete trial with the best validation accuracy (pruned and failed trials never win)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise UserError(f"study {study.study_name!r} has no complete trial yet: run or resume the sweep first")
    return max(complete, key=lambda t: (t.value, -t.number))


def winner_info(t: FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "val_acc": round(t.value, 4), "epochs": t.user_attrs.get("epochs"),
            "best_epoch": t.user_attrs.get("best_epoch"), "params": dict(t.params)}


def retrain_best(spec: SweepSpec, study: optuna.Study, folder: Path, splits: Splits, *, device: str = "auto",
                 epochs: int | None = None, seeds: int | None = None, wandb_mode: str = "disabled",
                 on_epoch: Callable[[int, EpochResult, int], None] | None = None, refit: bool = False) -> dict[str, Any]:
    """Retrain the winner K times (seeds), early-stopped on validation; evaluate each once on test; save the
    seed with the best validation accuracy to <folder>/final/. Returns metrics.json's content.
    `on_epoch(seed, result, epochs)` sees every epoch of every seed (progress of a long retrain). `epochs` and
    `seeds` default to the spec's `best:` section (else the sweep's epochs, 1 seed). With `refit`: see the module
    docstring (the first seed's selection run, then K refits on train + validation; final/ holds the first refit)."""
    winner = pick_winner(study)
    epochs, seeds = epochs or spec.best.epochs or None, seeds or spec.best.seeds
    params, cfg = trial_config(winner.params, spec, epochs=epochs)  # the sweep's own two functions
    dev = pick_device(device)
    train, val = to_device(splits.train.x, splits.train.y, dev), to_device(splits.val.x, splits.val.y, dev)
    test = None if splits.test is None else to_device(splits.test.x, splits.test.y, dev)
    norm = input_norm(cfg.train.normalize, train.x)
    config = checkpoint_config(cfg, norm, params, spec, winner.number)
    if refit:
        return _refit(spec, winner, cfg, config, folder, splits, (train, val, test), norm, seeds, on_epoch,
                      wandb_mode)
    runs, best_state, chosen, kept = [], None, 0, []
    done = _done_folder(folder / "final", config)
    for k in range(seeds):
        seed_cfg = _seed_cfg(cfg, k)
        finished = _finished_seed(done, seed_cfg.train.seed, need_kept=seeds > 1)
        if finished is None:
            t = _train(seed_cfg, train, val, norm, on_epoch)
            val_m = evaluate_as_trained(t.model, val, norm, seed_cfg.train)
            test_m = None if test is None else evaluate_as_trained(t.model, test, norm, seed_cfg.train)
            # every seed is kept when K > 1: their average is reported as an ensemble of seeds (final/seeds/)
            finished = {"run": _run(seed_cfg, t, val_m, test_m), "state": state_dict_cpu(t.model),
                        "kept": ensemble.seed_model(t.model, seed_cfg, norm, val, test) if seeds > 1 else None}
            _keep_finished_seed(done, seed_cfg.train.seed, finished)
        runs.append(finished["run"])
        if best_state is None or finished["run"]["val"]["acc"] > runs[chosen]["val"]["acc"]:
            best_state, chosen = finished["state"], len(runs) - 1
        if seeds > 1:
            kept.append(finished["kept"])
    metrics = _metrics(winner, runs, chosen, splits)
    if kept:
        metrics["seeds_ensemble"] = ensemble.seeds_metrics(kept, val, test)
    with staged(folder / "final") as stage:
        _save(stage, best_state, config, metrics, f"{spec.study} winner (trial {winner.number})")
        ensemble.save_seeds(stage / "seeds", kept, config, metrics.get("seeds_ensemble"))
    shutil.rmtree(done.parent, ignore_errors=True)  # published: the finished seeds are in final/ now
    _finish_run(spec, folder, cfg, winner, metrics, wandb_mode)
    return metrics


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
    except Exception:  # a file cut by a kill, or another torch's: train the seed again  # noqa: BLE001
        return None
    if need_kept and finished.get("kept") is None:
        return None
    finished["run"] = {**finished["run"], "resumed": True}
    return finished


def _seed_cfg(cfg: RunConfig, k: int, **train: Any) -> RunConfig:
    return RunConfig(cfg.model, dataclasses.replace(cfg.train, seed=cfg.train.seed + k, **train))


def _train(cfg: RunConfig, train: DeviceSplit, val: DeviceSplit | None, norm, on_epoch) -> Training:
    seed = cfg.train.seed
    return Training.start(cfg).run(train, val, norm=norm,
                                   on_epoch=(lambda r: on_epoch(seed, r, cfg.train.epochs)) if on_epoch else None)


def _run(cfg: RunConfig, t: Training, val_m: dict, test_m: dict | None) -> dict[str, Any]:
    return {"seed": cfg.train.seed, "epochs": t.last.epoch, "best_epoch": t.last.best_epoch,
            "stop": t.last.stop, "message": t.last.message, "val": val_m, "test": test_m}


def _refit(spec: SweepSpec, winner: FrozenTrial, cfg: RunConfig, config: dict, folder: Path, splits: Splits,
           data: tuple, norm, seeds: int, on_epoch, wandb_mode: str) -> dict[str, Any]:
    """The selection run, then `seeds` refits on train + validation for the epochs it chose (module docstring)."""
    train, val, test = data
    sel_cfg = _seed_cfg(cfg, 0)
    lrs: list[float] = []

    def record(seed, r, epochs):
        lrs.append(r.metrics["lr"])  # the lr of each epoch (the plateau schedule steps after the epoch is read)
        if on_epoch:
            on_epoch(seed, r, epochs)

    t = _train(sel_cfg, train, val, norm, record)
    chosen = t.last.best_epoch
    if chosen < 1 or t.outcome not in ("complete",):
        raise UserError(f"--refit: the selection run ended {t.outcome} ({t.last.message}): no epoch count to refit")
    sel_val = evaluate_as_trained(t.model, val, norm, sel_cfg.train)
    sel_test = None if test is None else evaluate_as_trained(t.model, test, norm, sel_cfg.train)
    selection = _run(sel_cfg, t, sel_val, sel_test)
    sel_state = state_dict_cpu(t.model)  # saved with the refits (final/selection/): held out, ensembles may pool it
    plan = tuple(round(lr / cfg.train.lr, 9) for lr in lrs[:chosen]) if cfg.train.schedule == "plateau" else ()
    both = DeviceSplit(torch.cat([train.x, val.x]), torch.cat([train.y, val.y]))
    refit_norm = input_norm(cfg.train.normalize, both.x)  # the refit's training data is train + validation
    how = {"epochs": chosen, "faces": len(both), "selection_seed": sel_cfg.train.seed, "lr_plan": list(plan)}
    refit_cfg = _seed_cfg(cfg, 0, epochs=chosen, patience=0, lr_plan=plan)
    refit_config = {**checkpoint_config(refit_cfg, refit_norm, config["params"], spec, winner.number), "refit": how}
    runs, kept, first_state = [], [], None
    for k in range(seeds):
        seed_cfg = _seed_cfg(cfg, k, epochs=chosen, patience=0, lr_plan=plan)
        r = _train(seed_cfg, both, None, refit_norm, on_epoch)
        val_m = evaluate_as_trained(r.model, val, refit_norm, seed_cfg.train)  # not held out: it trained on it
        test_m = None if test is None else evaluate_as_trained(r.model, test, refit_norm, seed_cfg.train)
        runs.append(_run(seed_cfg, r, val_m, test_m))
        first_state = first_state or state_dict_cpu(r.model)
        if seeds > 1:
            kept.append(ensemble.seed_model(r.model, seed_cfg, refit_norm, val, test))
    metrics = _metrics(winner, runs, 0, splits)
    metrics["val_held_out"] = False
    metrics["notes"].append(f"refit on train + validation ({len(both)} faces) for {chosen} epochs, the count the "
                            f"selection run chose on held-out validation: validation figures are not held out")
    metrics["refit"] = {**how, "selection": {k: v for k, v in selection.items() if k not in ("val", "test")}
                        | {"val/acc": sel_val["acc"], "val/macro_f1": sel_val["macro_f1"], "path": SELECTION,
                           **({"test/acc": sel_test["acc"], "test/macro_f1": sel_test["macro_f1"]} if sel_test else {})}}
    if kept:
        metrics["seeds_ensemble"] = ensemble.seeds_metrics(kept, val, test)
    with staged(folder / "final") as stage:
        save_model(stage / SELECTION, sel_state, config)
        _save(stage, first_state, refit_config, metrics,
              f"{spec.study} winner (trial {winner.number}), refit on train + val")
        ensemble.save_seeds(stage / "seeds", kept, refit_config, metrics.get("seeds_ensemble"))
    _finish_run(spec, folder, cfg, winner, metrics, wandb_mode)
    return metrics


def _finish_run(spec: SweepSpec, folder: Path, cfg: RunConfig, winner: FrozenTrial, metrics: dict,
                wandb_mode: str) -> None:
    run = tracking.TrialRun(mode=wandb_mode, project=spec.wandb.project, entity=spec.wandb.entity,
                            group=spec.study, name=f"{spec.study}-final", job_type="final", run_dir=folder,
                            config=wandb_config(cfg, spec, trial=winner.number))
    run.finish(tags=["final"], summary={k: v["mean"] for k, v in metrics.items() if isinstance(v, dict) and "mean" in v})


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0}


def _metrics(winner: FrozenTrial, runs: list[dict], chosen: int, splits: Splits) -> dict[str, Any]:
    split = "test" if splits.test is not None else "val"
    saved = runs[chosen]
    out = {"winner": winner_info(winner), "split": split, "seeds": len(runs), "saved_seed": saved["seed"],
           "notes": list(splits.notes) + ([] if splits.test is not None else
                                          ["no test split in this data: reporting validation only"]),
           "val/acc": _mean_std([r["val"]["acc"] for r in runs]),
           "val/macro_f1": _mean_std([r["val"]["macro_f1"] for r in runs]),
           "runs": [{k: v for k, v in r.items() if k not in ("val", "test")} |
                    {"val/acc": r["val"]["acc"], **({"test/acc": r["test"]["acc"], "test/macro_f1": r["test"]["macro_f1"]}
                                                    if r["test"] else {})} for r in runs]}
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
