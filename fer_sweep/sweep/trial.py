"""One trial's path, shared by `run` (every Optuna trial), `best` (every retrained seed) and the W&B agent: the
spec's data, params -> RunConfig -> model -> `fit`, every epoch logged; the config a trained model is saved with."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

import optuna
from torch import nn

from fer_sweep.config import EpochResult, RunConfig
from fer_sweep.data.splits import Splits, load_splits
from fer_sweep.learn.checkpoint import model_config
from fer_sweep.learn.device import DeviceSplit
from fer_sweep.learn.models import model_for
from fer_sweep.learn.train import fit
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
class Training:
    """One model's training, kept up to date as it runs: a caller interrupted mid-epoch (Ctrl-C, SIGTERM) still
    knows the last finished epoch and how long the epochs took."""

    cfg: RunConfig
    model: nn.Module
    last: Optional[EpochResult] = None
    outcome: str = "complete"  # complete | pruned | diverged | oom
    message: str = ""
    train_s: float = 0.0  # the epochs' own seconds (not the set-up)

    @classmethod
    def start(cls, cfg: RunConfig) -> "Training":
        """A fresh model for `cfg`, initialised with its seed."""
        return cls(cfg, model_for(cfg, seed=cfg.train.seed))

    def run(self, train: DeviceSplit, val: DeviceSplit, *, norm, log: Optional[Callable[..., None]] = None,
            on_epoch: Optional[Callable[[EpochResult], None]] = None,
            should_prune: Optional[Callable[[EpochResult], bool]] = None) -> "Training":
        """`fit` to the end: each epoch goes to `log(metrics, step=epoch)` (a W&B run) and `on_epoch`, then
        `should_prune` may stop it. The model ends holding its best validation epoch's weights."""
        for result in fit(self.model, train, val, self.cfg.train, norm=norm):
            self.last = result
            self.train_s += result.metrics["time/epoch_s"]
            if log:
                log(result.metrics, step=result.epoch)
            if on_epoch:
                on_epoch(result)
            if result.stop in ("diverged", "oom"):
                self.outcome, self.message = result.stop, result.message
            elif result.stop is None and should_prune is not None and should_prune(result):
                self.outcome, self.message = "pruned", f"pruned at epoch {result.epoch}"
                break
        return self
