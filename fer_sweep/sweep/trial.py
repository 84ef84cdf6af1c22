"""One trial's path, shared by `run` (every Optuna trial), `best` (every retrained seed) and the W&B agent: the
trial context (the spec's splits on the device, their input norms, the tracking run), params -> RunConfig -> model ->
`fit` with every epoch logged, the summary every tracking run ends with; the config a trained model is saved with."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import optuna
import torch
from torch import nn

from fer_sweep.config import EpochResult, RunConfig
from fer_sweep.data.splits import Split, Splits, load_splits
from fer_sweep.learn.augment import Norm
from fer_sweep.learn.checkpoint import model_config
from fer_sweep.learn.device import DeviceSplit, pick_device, to_device
from fer_sweep.learn.models import model_for
from fer_sweep.learn.train import TrainState, fit, input_norm
from fer_sweep.sweep import tracking
from fer_sweep.sweep.space import sample_params, to_run_config
from fer_sweep.sweep.spec import SweepSpec


def load_data(spec: SweepSpec) -> Splits:
    """The splits the spec names (its data and split options): what the sweep, `best` and `report` read."""
    s = spec.splits
    return load_splits(spec.data, val_frac=s.val_frac, test_frac=s.test_frac, seed=s.seed, synthetic_n=s.synthetic_n)


def trial_config(source: Union[optuna.trial.BaseTrial, Mapping[str, Any]], spec: SweepSpec,
                 **train_overrides: Any) -> tuple[dict[str, Any], RunConfig]:
    """The searched params and the RunConfig they make. `source` is a live trial (the sweep suggests on it) or the
    params of one (`best`'s winner, the W&B agent's values), replayed through `optuna.trial.FixedTrial`: the same
    two functions either way, so the sweep, the retrain and the agent can never drift apart."""
    trial = source if isinstance(source, optuna.trial.BaseTrial) else optuna.trial.FixedTrial(dict(source))
    params = sample_params(trial, spec)
    return params, to_run_config(params, spec, **train_overrides)


def wandb_config(cfg: RunConfig, spec: SweepSpec, **extra: Any) -> dict[str, Any]:
    """A W&B run's config: every model.* and train.* setting, `extra` (the trial's number), study and data."""
    return {**{f"model.{k}": v for k, v in vars(cfg.model).items()},
            **{f"train.{k}": v for k, v in vars(cfg.train).items()},
            **extra, "study": spec.study, "data": spec.data}


def checkpoint_config(cfg: RunConfig, norm, params: Mapping[str, Any], spec: SweepSpec, trial: int) -> dict[str, Any]:
    """config.json of a model trained in this study (a kept trial, `best`'s final/): it rebuilds the model, and its
    split options rebuild the splits `predict --split` reads."""
    return model_config(cfg, norm, params=dict(params), trial=trial, study=spec.study, data=spec.data,
                        splits=dataclasses.asdict(spec.splits))


@dataclass
class TrialContext:
    """What every training of a study shares, wherever it runs (a `run` worker, the W&B agent, `best`): the spec,
    its splits on the device (test only for `best`, which reads it once), their input norms, and where the tracking
    runs go."""

    spec: SweepSpec
    folder: Path  # the study's results folder (W&B offline runs, kept models)
    train: DeviceSplit
    val: DeviceSplit
    test: Optional[DeviceSplit]
    wandb_mode: str
    norms: dict[str, Norm] = field(default_factory=dict)

    @classmethod
    def open(cls, spec: SweepSpec, folder: Path, *, device: str, wandb_mode: str, splits: Splits | None = None,
             with_test: bool = False) -> "TrialContext":
        """Read the spec's data once (unless `splits` are given) and put train and val on the device; test too
        with `with_test` (`best` only: a sweep never touches it)."""
        splits = splits or load_data(spec)
        dev = pick_device(device)
        test = _on_device(splits.test, dev) if with_test and splits.test is not None else None
        return cls(spec, folder, _on_device(splits.train, dev), _on_device(splits.val, dev), test, wandb_mode)

    def norm(self, mode: str) -> Norm:
        """The input normalisation `mode` computed on this context's train split (once per mode)."""
        if mode not in self.norms:
            self.norms[mode] = input_norm(mode, self.train.x)
        return self.norms[mode]

    def track(self, cfg: RunConfig, name: Optional[str], *, job_type: str = "trial",
              **extra: Any) -> tracking.TrialRun:
        """The tracking (W&B) run of one training: grouped by study, configured with every setting and `extra`
        (the trial's number); `name` None lets W&B name it (the agent's run)."""
        return tracking.TrialRun(mode=self.wandb_mode, project=self.spec.wandb.project, entity=self.spec.wandb.entity,
                                 group=self.spec.study, name=name, job_type=job_type, run_dir=self.folder,
                                 config=wandb_config(cfg, self.spec, **extra))

    def fit(self, t: "Training", run: Optional[tracking.TrialRun] = None, *,
            on_epoch: Optional[Callable[[EpochResult], None]] = None,
            should_prune: Optional[Callable[[EpochResult], bool]] = None,
            resume: Optional[Mapping[str, Any]] = None,
            save: Optional[Callable[[dict[str, Any]], None]] = None) -> "Training":
        """Train `t` (`Training.start(cfg)`, made by the caller so that an interrupt still finds it) on this context's
        train split, validated on val every epoch, each epoch logged to `run`; `should_prune` may stop it early;
        `save` and `resume` as in `Training.run` (epoch checkpoints). A trial that learned nothing (`dead_trial`,
        spec `dead_after`) ends as diverged, whatever the pruner says, with epochs left unspent."""
        majority = float(torch.bincount(self.val.y).max()) / max(len(self.val), 1)
        after = self.spec.dead_after

        def stop(result: EpochResult) -> bool:
            why = dead_trial(t.history, majority, after) if after and result.epoch < t.cfg.train.epochs else None
            if why:
                t.outcome, t.message = "diverged", why
                return True
            return should_prune is not None and should_prune(result)

        return t.run(self.train, self.val, norm=self.norm(t.cfg.train.normalize),
                     log=run.log if run is not None else None, on_epoch=on_epoch, should_prune=stop,
                     resume=resume, save=save)

    def identity(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """What a trial checkpoint must share with the trial that resumes from it: the params, the data and its
        splits (options and sizes)."""
        return {"params": dict(params), "data": self.spec.data, "splits": dataclasses.asdict(self.spec.splits),
                "faces": [len(self.train), len(self.val)]}


def _on_device(faces: Split, device: torch.device) -> DeviceSplit:
    assert faces.y is not None  # the splits of a FER2013 file are labelled (unlabelled files are only predicted)
    return to_device(faces.x, faces.y, device)


def finish_tracking(run: tracking.TrialRun, t: Optional["Training"], outcome: str) -> dict[str, Any]:
    """Close a trial's tracking run with the summary and tag every trial ends with (complete, pruned@<epoch>, or
    failed:<outcome>) and return that summary."""
    last = t.last if t else None
    summary = {"best/val_acc": last.best_val_acc if last else 0.0, "best/epoch": last.best_epoch if last else 0,
               "outcome": outcome, "epochs": last.epoch if last else 0}
    tag = {"pruned": f"pruned@{summary['epochs']}", "complete": "complete"}.get(outcome, f"failed:{outcome}")
    run.finish(tags=[tag], summary=summary)
    return summary


@dataclass
class Training:
    """One model's training, kept up to date as it runs: a caller interrupted mid-epoch (Ctrl-C, SIGTERM) still
    knows the last finished epoch and how long the epochs took."""

    cfg: RunConfig
    model: nn.Module
    last: Optional[EpochResult] = None
    outcome: str = "complete"  # complete | pruned | diverged | oom
    message: str = ""
    train_s: float = 0.0  # the epochs' own seconds (not the set-up)
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch (`epoch_row`)

    @classmethod
    def start(cls, cfg: RunConfig) -> "Training":
        """A fresh model for `cfg`, initialised with its seed."""
        return cls(cfg, model_for(cfg, seed=cfg.train.seed))

    def run(self, train: DeviceSplit, val: Optional[DeviceSplit], *, norm: Norm,
            log: Optional[Callable[..., None]] = None,
            on_epoch: Optional[Callable[[EpochResult], None]] = None,
            should_prune: Optional[Callable[[EpochResult], bool]] = None,
            resume: Optional[Mapping[str, Any]] = None,
            save: Optional[Callable[[dict[str, Any]], None]] = None) -> "Training":
        """`fit` to the end: each epoch goes to `log(metrics, step=epoch)` (a W&B run) and `on_epoch`, then
        `should_prune` may stop it. The model ends holding its best validation epoch's weights. `save` gets the run so
        far after every epoch ({state, history, train_s}: a checkpoint); `resume` is such a record of a stopped run
        of the same configuration, which goes on at the epoch after it."""
        if resume is not None:  # `last` too: a run whose last epoch was saved has no epoch left to yield
            self.history, self.train_s = list(resume["history"]), float(resume["train_s"])
            self.last = EpochResult(**resume["last"])

        def checkpoint(state: TrainState, result: EpochResult) -> None:  # the run so far, this epoch included
            assert save is not None
            last = {**dataclasses.asdict(result), "metrics": dict(result.metrics)}
            save({"state": state.state_dict(), "history": [*self.history, epoch_row(result)],
                  "train_s": self.train_s + result.metrics["time/epoch_s"], "last": last})

        for result in fit(self.model, train, val, self.cfg.train, norm=norm,
                          resume=resume["state"] if resume is not None else None,
                          checkpoint=checkpoint if save is not None else None):
            self.last = result
            self.train_s += result.metrics["time/epoch_s"]
            self.history.append(epoch_row(result))
            if log:
                log(result.metrics, step=result.epoch)
            if on_epoch:
                on_epoch(result)
            if result.stop in ("diverged", "oom"):
                self.outcome, self.message = result.stop, result.message
            elif result.stop is None and should_prune is not None and should_prune(result):
                if self.outcome == "complete":  # (TrialContext.fit's check may have called it diverged)
                    self.outcome, self.message = "pruned", f"pruned at epoch {result.epoch}"
                break
        return self


def dead_trial(history: list[dict[str, Any]], majority: float, after: int) -> Optional[str]:
    """Why a trial has learned nothing after `after` epochs or more (None while it may still): every epoch's
    validation accuracy at most half a point above the majority-class rate (it predicts one class, as lr 0.05
    without normalisation does), or the training loss rising for `after` epochs in a row and above the first
    epoch's. Non-finite losses are the training loop's own stop ("diverged")."""
    if after < 1 or len(history) < after:
        return None
    accs = [float(a) if a is not None else math.inf for a in (row.get("val/acc") for row in history)]
    if all(a <= majority + 0.005 for a in accs):
        return (f"val acc {100 * max(accs):.2f}% after {len(history)} epochs, the majority-class rate "
                f"({100 * majority:.2f}%): the model predicts one class; stopped (spec dead_after: {after})")
    losses = [float(x) if x is not None else math.nan for x in (row.get("train/loss") for row in history)]
    first, losses = losses[0], losses[-(after + 1):]
    if len(losses) == after + 1 and all(b > a for a, b in zip(losses, losses[1:])) and losses[-1] > first:
        return (f"train loss rising for {after} epochs ({losses[0]:.3f} -> {losses[-1]:.3f}), above the first "
                f"epoch's {first:.3f}; stopped (spec dead_after: {after})")
    return None


HISTORY_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/macro_f1", "lr", "time/epoch_s")


def epoch_row(result: EpochResult) -> dict[str, Any]:
    """One epoch as a JSON-ready row (`best --json`'s per-epoch history): epoch and HISTORY_KEYS, nan as None
    (a refit's epochs have no validation)."""
    row: dict[str, Any] = {"epoch": result.epoch}
    for key in HISTORY_KEYS:
        value = float(result.metrics.get(key, math.nan))
        row[key] = value if math.isfinite(value) else None
    return row
