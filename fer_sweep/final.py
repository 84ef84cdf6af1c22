"""`best`: pick the winner on validation, retrain it through the sweep's own code path, test it once, save it."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from fer_sweep import ensemble, tracking
from fer_sweep.artifacts import run_config_json
from fer_sweep.config import EMOTIONS, EpochResult, UserError
from fer_sweep.data import Splits
from fer_sweep.models import build_model
from fer_sweep.plots import save_confusion_png
from fer_sweep.space import sample_params, to_run_config
from fer_sweep.spec import SweepSpec
from fer_sweep.summary import write_atomic
from fer_sweep.train import evaluate_as_trained, fit, input_norm, pick_device, to_device


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
    # Replay through the same two functions as the sweep, so the sweep and the retrain cannot drift.
    params = sample_params(optuna.trial.FixedTrial(winner.params), spec)
    cfg = to_run_config(params, spec, epochs=epochs)
    dev = pick_device(device)
    train, val = to_device(splits.train.x, splits.train.y, dev), to_device(splits.val.x, splits.val.y, dev)
    test = None if splits.test is None else to_device(splits.test.x, splits.test.y, dev)
    norm = input_norm(cfg.train.normalize, train.x)
    runs, best_state, chosen, kept = [], None, 0, []
    for k in range(seeds):
        train_cfg = dataclasses.replace(cfg.train, seed=cfg.train.seed + k)
        model = build_model(cfg.model, seed=train_cfg.seed)
        last = None
        for last in fit(model, train, val, train_cfg, norm=norm):
            if on_epoch:
                on_epoch(train_cfg.seed, last, train_cfg.epochs)
        val_m = evaluate_as_trained(model, val, norm, train_cfg)
        test_m = None if test is None else evaluate_as_trained(model, test, norm, train_cfg)
        runs.append({"seed": train_cfg.seed, "epochs": last.epoch, "best_epoch": last.best_epoch,
                     "stop": last.stop, "message": last.message, "val": val_m, "test": test_m})
        if best_state is None or val_m["acc"] > runs[chosen]["val"]["acc"]:
            best_state = {kk.removeprefix("_orig_mod."): v.detach().cpu().clone() for kk, v in model.state_dict().items()}
            chosen = len(runs) - 1
        if seeds > 1:  # every seed is kept: their average is reported as an ensemble of seeds (final/seeds/)
            kept.append(ensemble.seed_model(model, cfg.model, train_cfg, norm, val, test))
    metrics = _metrics(winner, runs, chosen, splits)
    if kept:
        metrics["seeds_ensemble"] = ensemble.seeds_metrics(kept, val, test)
    _save(folder / "final", best_state, cfg, params, norm, spec, winner, metrics)
    ensemble.save_seeds(folder / "final" / "seeds", kept, run_config_json(cfg, norm, params, spec, winner.number),
                        metrics.get("seeds_ensemble"))
    _log_final(spec, folder, cfg, metrics, wandb_mode)
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


def _save(final: Path, state, cfg, params, norm, spec: SweepSpec, winner: FrozenTrial, metrics) -> None:
    final.mkdir(parents=True, exist_ok=True)
    torch.save(state, final / "model.pt")
    config = {"model": dataclasses.asdict(cfg.model), "train": dataclasses.asdict(cfg.train),
              "norm": list(norm), "params": params, "trial": winner.number, "study": spec.study,
              "data": spec.data, "splits": dataclasses.asdict(spec.splits), "classes": list(EMOTIONS)}
    write_atomic(final / "config.json", json.dumps(config, indent=2))
    write_atomic(final / "metrics.json", json.dumps(metrics, indent=2))
    save_confusion_png(metrics["confusion"], final / "confusion.png",
                       title=f"{spec.study} winner (trial {winner.number}) on {metrics['split']}")


def _log_final(spec: SweepSpec, folder: Path, cfg, metrics: dict, wandb_mode: str) -> None:
    run = tracking.TrialRun(mode=wandb_mode, project=spec.wandb.project, entity=spec.wandb.entity,
                            group=spec.study, name=f"{spec.study}-final", job_type="final", run_dir=folder,
                            config={"model": dataclasses.asdict(cfg.model), "train": dataclasses.asdict(cfg.train),
                                    "trial": metrics["winner"]["number"]})
    summary = {k: v["mean"] for k, v in metrics.items() if isinstance(v, dict) and "mean" in v}
    run.finish(tags=["final"], summary=summary)


def load_final(folder: Path) -> tuple[torch.nn.Module, dict]:
    """Load <folder>/model.pt (weights only: a checkpoint carrying pickled code is refused) and its config."""
    from fer_sweep.config import ModelConfig

    config_path, model_path = folder / "config.json", folder / "model.pt"
    if not config_path.is_file() or not model_path.is_file():
        raise UserError(f"{folder}: no model here (expected model.pt and config.json written by `fer-sweep best`)")
    config = json.loads(config_path.read_text())
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{model_path}: refused: not a plain weights file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]})") from None
    model_cfg = config["model"]
    model_cfg["conv"] = tuple(tuple(s) for s in model_cfg["conv"])
    model = build_model(ModelConfig(**model_cfg))
    model.load_state_dict(state)
    return model.eval(), config
