"""`best`: pick the winner on validation, retrain it through the sweep's own trial path, test it once, save it."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from fer_sweep.config import EpochResult, RunConfig, UserError
from fer_sweep.data.splits import Splits
from fer_sweep.files import write_atomic
from fer_sweep.learn.checkpoint import save_model, state_dict_cpu
from fer_sweep.learn.device import pick_device, to_device
from fer_sweep.learn.train import evaluate_as_trained, input_norm
from fer_sweep.results import ensemble
from fer_sweep.results.plots import save_confusion_png
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
                 on_epoch: Callable[[int, EpochResult, int], None] | None = None) -> dict[str, Any]:
    """Retrain the winner K times (seeds), early-stopped on validation; evaluate each once on test; save the
    seed with the best validation accuracy to <folder>/final/. Returns metrics.json's content.
    `on_epoch(seed, result, epochs)` sees every epoch of every seed (progress of a long retrain). `epochs` and
    `seeds` default to the spec's `best:` section (else the sweep's epochs, 1 seed)."""
    winner = pick_winner(study)
    epochs, seeds = epochs or spec.best.epochs or None, seeds or spec.best.seeds
    params, cfg = trial_config(winner.params, spec, epochs=epochs)  # the sweep's own two functions
    dev = pick_device(device)
    train, val = to_device(splits.train.x, splits.train.y, dev), to_device(splits.val.x, splits.val.y, dev)
    test = None if splits.test is None else to_device(splits.test.x, splits.test.y, dev)
    norm = input_norm(cfg.train.normalize, train.x)
    runs, best_state, chosen, kept = [], None, 0, []
    for k in range(seeds):
        seed_cfg = RunConfig(cfg.model, dataclasses.replace(cfg.train, seed=cfg.train.seed + k))
        seed = seed_cfg.train.seed
        t = Training.start(seed_cfg).run(train, val, norm=norm,
                                         on_epoch=(lambda r: on_epoch(seed, r, seed_cfg.train.epochs)) if on_epoch else None)
        val_m = evaluate_as_trained(t.model, val, norm, seed_cfg.train)
        test_m = None if test is None else evaluate_as_trained(t.model, test, norm, seed_cfg.train)
        runs.append({"seed": seed, "epochs": t.last.epoch, "best_epoch": t.last.best_epoch,
                     "stop": t.last.stop, "message": t.last.message, "val": val_m, "test": test_m})
        if best_state is None or val_m["acc"] > runs[chosen]["val"]["acc"]:
            best_state, chosen = state_dict_cpu(t.model), len(runs) - 1
        if seeds > 1:  # every seed is kept: their average is reported as an ensemble of seeds (final/seeds/)
            kept.append(ensemble.seed_model(t.model, seed_cfg, norm, val, test))
    metrics = _metrics(winner, runs, chosen, splits)
    if kept:
        metrics["seeds_ensemble"] = ensemble.seeds_metrics(kept, val, test)
    config = checkpoint_config(cfg, norm, params, spec, winner.number)
    _save(folder / "final", best_state, config, metrics, f"{spec.study} winner (trial {winner.number})")
    ensemble.save_seeds(folder / "final" / "seeds", kept, config, metrics.get("seeds_ensemble"))
    run = tracking.TrialRun(mode=wandb_mode, project=spec.wandb.project, entity=spec.wandb.entity,
                            group=spec.study, name=f"{spec.study}-final", job_type="final", run_dir=folder,
                            config=wandb_config(cfg, spec, trial=winner.number))
    run.finish(tags=["final"], summary={k: v["mean"] for k, v in metrics.items() if isinstance(v, dict) and "mean" in v})
    return metrics


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
