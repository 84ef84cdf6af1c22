"""One trial's path, shared by `run` (every Optuna trial), `best` (every retrained seed) and the W&B agent: the
trial context (the spec's splits on the device, their input norms, the tracking run), params -> RunConfig -> model ->
`fit` with every epoch logged, the summary every tracking run ends with; the config a trained model is saved with."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Mapping, Optional, Sequence, Union

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


def seed_config(cfg: RunConfig, k: int, **train: Any) -> RunConfig:
    """Seed k of a configuration: its train seed + k (a `repeats` sweep's seeds, `best --race`'s, the retrain's), with
    any other `train` settings replaced."""
    return RunConfig(cfg.model, dataclasses.replace(cfg.train, seed=cfg.train.seed + k, **train))


def seed_configs(cfg: RunConfig, repeats: int) -> list[RunConfig]:
    """The configuration's seeds 0 .. repeats - 1 (spec `repeats`)."""
    return [seed_config(cfg, r) for r in range(repeats)]


def seed_attrs(group: Optional["Seeds"]) -> dict[str, Any]:
    """What a finished trial records of its seeds (user attrs): `seeds`, `seed_values` (each seed's best val acc, in
    seed order; the trial's value is their mean), `val_acc_std` (their population std) and `seed_runs` (each seed's
    per-epoch val acc, val loss and seconds: the learning curves `benchmarks/record_curves.py` tabulates)."""
    if group is None or not any(t.history for t in group.runs):
        return {}
    values = [round(v, 6) for v in group.seed_values()]
    return {"seeds": len(values), "seed_values": values,
            "val_acc_std": round(statistics.pstdev(values), 6) if len(values) > 1 else 0.0,
            "seed_runs": [{"seed": t.cfg.train.seed, **{name: [row.get(key) for row in t.history if row["epoch"] > 0]
                                                         for name, key in CURVE_KEYS.items()}}
                          for t in group.runs]}


CURVE_KEYS = {"val_acc": "val/acc", "val_loss": "val/loss", "seconds": "time/epoch_s"}


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
        `save` and `resume` as in `Training.epochs` (epoch checkpoints). One seed of `fit_seeds`."""
        self.fit_seeds(Seeds([t]), [run], on_epoch=on_epoch, should_prune=should_prune, resumes=[resume],
                       saves=[save])
        return t

    def fit_seeds(self, group: "Seeds", runs: Sequence[Optional[tracking.TrialRun]], *,
                  on_epoch: Optional[Callable[[EpochResult], None]] = None,
                  should_prune: Optional[Callable[[EpochResult], bool]] = None,
                  resumes: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
                  saves: Optional[Sequence[Optional[Callable[[dict[str, Any]], None]]]] = None) -> "Seeds":
        """Train the seeds of one configuration (spec `repeats`) in step, epoch by epoch: each seed's epoch goes to its
        own tracking run (`runs`), then the group books the epoch (`Seeds.book`: the mean of the seeds) and
        `on_epoch` and `should_prune` see the mean, so a pruner ranks configurations, not lucky seeds. `resumes` and
        `saves` are each seed's checkpoint (`Training.epochs`); seeds resumed at different epochs catch up one by
        one. A configuration that learned nothing (`dead_trial` on the mean, spec `dead_after`) ends as diverged,
        whatever the pruner says; a seed that diverges or runs out of memory ends the group with its verdict."""
        majority = float(torch.bincount(self.val.y).max()) / max(len(self.val), 1)
        after, k = self.spec.dead_after, len(group.runs)
        resumes, saves = resumes or [None] * k, saves or [None] * k
        steps = [t.epochs(self.train, self.val, norm=self.norm(t.cfg.train.normalize),
                          log=run.log if run is not None else None, resume=resume, save=save)
                 for t, run, resume, save in zip(group.runs, runs, resumes, saves)]
        group.catch_up()
        try:
            while not group.ended:
                epoch = len(group.history) + 1
                for t, step in zip(group.runs, steps):
                    if not t.ended and len(t.history) < epoch:  # (a seed resumed further on waits for the others)
                        next(step, None)
                failed = next((t for t in group.runs if t.outcome in ("diverged", "oom")), None)
                if failed is None or (failed.last is not None and failed.last.epoch == epoch):
                    result = group.book()  # (not an out-of-memory before the first epoch: nothing to book)
                    if on_epoch:
                        on_epoch(result)
                if failed is not None:
                    group.verdict(failed.outcome, (f"seed {failed.cfg.train.seed}: " if k > 1 else "") + failed.message)
                    break
                if result.stop:
                    break
                why = dead_trial(group.history, majority, after) if after and epoch < group.cfg.train.epochs else None
                if why:
                    group.verdict("diverged", why)
                elif should_prune is not None and should_prune(result):
                    group.verdict("pruned", f"pruned at epoch {epoch}")
                if group.outcome != "complete":
                    break
        finally:  # each seed's model ends holding its best epoch's weights
            for t, step in zip(group.runs, steps):
                if t.ended and inspect.getgeneratorstate(step) == inspect.GEN_CREATED:
                    for _ in step:  # a seed resumed at its end: nothing to train, `fit` restores its best weights
                        pass
                step.close()
        return group

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

    def resume(self, record: Mapping[str, Any]) -> None:
        """Take the epochs a checkpoint holds (`epochs`' `save`): its history, train seconds and last result (a run
        whose last epoch was saved has no epoch left to yield)."""
        self.history, self.train_s = list(record["history"]), float(record["train_s"])
        self.last = EpochResult(**record["last"])

    @property
    def ended(self) -> bool:
        """Whether its training has ended (its last epoch, early stopping, or a failure)."""
        return self.last is not None and self.last.stop is not None

    def epochs(self, train: DeviceSplit, val: Optional[DeviceSplit], *, norm: Norm,
               log: Optional[Callable[..., None]] = None,
               resume: Optional[Mapping[str, Any]] = None,
               save: Optional[Callable[[dict[str, Any]], None]] = None) -> Generator[EpochResult, None, None]:
        """`fit`, one epoch per `next()`: each epoch is booked here (last, history, train seconds) and goes to
        `log(metrics, step=epoch)` (a W&B run) before it is yielded. When the iteration ends (or is closed), the model
        holds its best validation epoch's weights. `save` gets the run so far after every epoch ({state, history,
        train_s, last}: a checkpoint); `resume` is such a record of a stopped run of the same configuration, taken now:
        the run goes on at the epoch after it."""
        if resume is not None:
            self.resume(resume)

        def checkpoint(state: TrainState, result: EpochResult) -> None:  # the run so far, this epoch included
            assert save is not None
            last = {**dataclasses.asdict(result), "metrics": dict(result.metrics)}
            save({"state": state.state_dict(), "history": [*self.history, epoch_row(result)],
                  "train_s": self.train_s + result.metrics["time/epoch_s"], "last": last})

        return self._epochs(fit(self.model, train, val, self.cfg.train, norm=norm,
                                resume=resume["state"] if resume is not None else None,
                                checkpoint=checkpoint if save is not None else None), log)

    def _epochs(self, results: Generator[EpochResult, None, None],
                log: Optional[Callable[..., None]]) -> Generator[EpochResult, None, None]:
        with contextlib.closing(results):  # closed early (pruned): `fit` restores the best weights
            for result in results:
                self.last = result
                self.train_s += result.metrics["time/epoch_s"]
                self.history.append(epoch_row(result))
                if log:
                    log(result.metrics, step=result.epoch)
                if result.stop in ("diverged", "oom"):
                    self.outcome, self.message = result.stop, result.message
                yield result

    def run(self, train: DeviceSplit, val: Optional[DeviceSplit], *, norm: Norm,
            on_epoch: Optional[Callable[[EpochResult], None]] = None,
            resume: Optional[Mapping[str, Any]] = None,
            save: Optional[Callable[[dict[str, Any]], None]] = None) -> "Training":
        """`epochs` to the end (a retrain's seed: no pruning), each epoch to `on_epoch`."""
        for result in self.epochs(train, val, norm=norm, resume=resume, save=save):
            if on_epoch:
                on_epoch(result)
        return self


@dataclass
class Seeds:
    """The trainings of one configuration, one per seed (spec `repeats`; one seed is the plain case), trained in step
    by `TrialContext.fit_seeds`. The configuration's epoch e is booked once every seed has trained it (or ended
    before it): its val acc is the mean of the seeds' (a seed that ended counts with its best, the model it keeps), its
    best val acc the mean of the seeds' bests so far, its times the sum (the trial's own time). Its value, the mean of
    the seeds' best val accs, is what the pruner, the leaderboard and `best` rank."""

    runs: list[Training]
    outcome: str = "complete"  # complete | pruned | diverged | oom: the configuration's verdict, every seed's too
    message: str = ""
    last: Optional[EpochResult] = None  # the mean's latest booked epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # the mean's rows (`epoch_row`), one per epoch

    @classmethod
    def start(cls, cfgs: Sequence[RunConfig]) -> "Seeds":
        return cls([Training.start(cfg) for cfg in cfgs])

    @property
    def cfg(self) -> RunConfig:
        return self.runs[0].cfg

    @property
    def ended(self) -> bool:
        return all(t.ended for t in self.runs)

    @property
    def train_s(self) -> float:
        return sum(t.train_s for t in self.runs)

    def catch_up(self) -> list[dict[str, Any]]:
        """Book the epochs every seed has already trained (resumed seeds); returns the mean's rows so far."""
        while any(len(t.history) > len(self.history) for t in self.runs) and all(
                t.ended or len(t.history) > len(self.history) for t in self.runs):
            self.book()
        return self.history

    def book(self) -> EpochResult:
        """Book the next epoch of the configuration (every seed has trained it or ended before it)."""
        epoch = len(self.history) + 1
        if len(self.runs) == 1:  # one seed: its own result, every metric kept
            t = self.runs[0]
            result = t.last if t.last is not None and t.last.epoch == epoch else _from_row(t.history[epoch - 1], t)
        else:
            result = _mean_result(self.runs, epoch, self.history)
        self.last = result
        self.history.append(epoch_row(result))
        return result

    def verdict(self, outcome: str, message: str) -> None:
        """The configuration's verdict, which every seed shares."""
        self.outcome, self.message = outcome, message
        for t in self.runs:
            t.outcome, t.message = outcome, message

    def seed_values(self) -> list[float]:
        """Each seed's best val acc (its kept model's), in seed order."""
        return [float(t.last.best_val_acc) if t.last else 0.0 for t in self.runs]


def _from_row(row: Mapping[str, Any], t: Training) -> EpochResult:
    """A resumed seed's booked epoch, rebuilt from its history row."""
    metrics = {k: (math.nan if row.get(k) is None else float(row[k])) for k in HISTORY_KEYS}
    accs = [r["val/acc"] if r["val/acc"] is not None else -1.0 for r in t.history[:row["epoch"]]]
    best = max(range(len(accs)), key=lambda i: (accs[i], -i))
    stop = t.last.stop if t.last is not None and row["epoch"] == t.last.epoch else None
    return EpochResult(row["epoch"], metrics, max(accs[best], 0.0), best + 1, stop)


def _mean_result(runs: Sequence[Training], epoch: int, before: Sequence[Mapping[str, Any]]) -> EpochResult:
    """The configuration's epoch `epoch` over its seeds (see `Seeds`)."""
    rows = [t.history[epoch - 1] if len(t.history) >= epoch else None for t in runs]
    bests = [_best_until(t.history, epoch) for t in runs]
    metrics: dict[str, float] = {}
    for key in HISTORY_KEYS:
        values = [float(r[key]) for r in rows if r is not None and r.get(key) is not None]
        metrics[key] = (sum(values) if key == "time/epoch_s" else statistics.fmean(values)) if values else math.nan
    accs = [float(r["val/acc"]) if r is not None and r.get("val/acc") is not None else b for r, b in zip(rows, bests)]
    metrics["val/acc"] = statistics.fmean(accs)
    curve = [row["val/acc"] if row["val/acc"] is not None else -1.0 for row in before] + [metrics["val/acc"]]
    best_epoch = max(range(len(curve)), key=lambda i: (curve[i], -i)) + 1
    ended = [t.last.stop for t in runs if t.last is not None and t.last.epoch <= epoch and t.last.stop]
    stop = ("done" if "done" in ended else ended[-1]) if len(ended) == len(runs) else None
    return EpochResult(epoch, metrics, statistics.fmean(bests), best_epoch, stop)


def _best_until(history: Sequence[Mapping[str, Any]], epoch: int) -> float:
    accs = [float(r["val/acc"]) for r in history[:epoch] if r.get("val/acc") is not None]
    return max(accs, default=0.0)


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
