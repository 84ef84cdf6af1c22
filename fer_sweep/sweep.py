"""Run a sweep: the study and its ticket queue, trials that train / prune / log, reaping and resume.

Every configuration of a sweep is a *ticket*: a WAITING Optuna trial enqueued once, up front, with
user attr `ticket` = its index. Workers (threads of this process, other processes, other machines)
claim tickets atomically through the storage, so a study ends with exactly `trials` finished trials
whatever the number of workers, and seeded random search gives the same configurations for 1 or 8
workers. A trial whose worker died is failed (`crashed`) and its ticket enqueued again.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from fer_sweep import artifacts, tracking
from fer_sweep.config import UserError
from fer_sweep.device import is_oom
from fer_sweep.models import build_model
from fer_sweep.optuna_api import Heartbeat, frozen, storage_of, trial_id, trial_object
from fer_sweep.space import sample_configs, sample_params, to_run_config
from fer_sweep.spec import PrunerSpec, SweepSpec, dump_spec, parse_spec
from fer_sweep.store import STORAGE_NOTE, folder_lock, mask_url, open_storage, study_dir
from fer_sweep.summary import OUTCOME, TICKET, is_finished, write_atomic, write_trials_csv
from fer_sweep.train import DeviceSplit, fit, input_norm

optuna.logging.set_verbosity(optuna.logging.WARNING)
SAME_STUDY_KEYS = ("data", "splits", "seed", "sampler", "model", "train", "space")  # may not change on resume
OOM_RETRIES = "oom_retries"  # user attr of a re-queued ticket: how often it ran out of memory on a shared GPU
MAX_OOM_RETRIES = 2  # then an OOM is the configuration's own verdict ("oom", finished)


@dataclass
class Worker:
    """One worker's view of a running sweep: the study, its data on the device, where to write."""

    spec: SweepSpec
    study: optuna.Study
    folder: Path
    train: DeviceSplit
    val: DeviceSplit
    wandb_mode: str
    name: str = "w0"
    on_epoch: Callable[[int, Any], None] | None = None  # (trial number, EpochResult) for the live view
    norms: dict = field(default_factory=dict)
    shared_device: bool = False  # other workers train on this GPU too: an OOM may be theirs, so it is retried

    def norm(self, mode: str) -> tuple[float, float]:
        if mode not in self.norms:
            self.norms[mode] = input_norm(mode, self.train.x)
        return self.norms[mode]


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed)
    return optuna.samplers.RandomSampler(seed=spec.seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    return pruner_for(spec.pruner, int(spec.train.get("epochs", 15)))


def pruner_for(p: PrunerSpec, epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner of a spec's `pruner` section, for trials of at most `epochs` epochs."""
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_epochs, max_resource=max(epochs, p.min_epochs + 1),
                                              reduction_factor=p.reduction_factor)
    if p.type == "asha":
        # Asynchronous successive halving: rungs at min_epochs * reduction_factor**k epochs; at each rung a
        # trial goes on only if it is in the top 1/reduction_factor of the trials that reached that rung so
        # far. No brackets and no waiting for a full cohort, so K workers never idle (Li et al. 2020).
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_epochs, reduction_factor=p.reduction_factor,
                                                      min_early_stopping_rate=0)
    return optuna.pruners.NopPruner()


def open_study(spec: SweepSpec, folder: Path, storage_url: str | None, heartbeat_s: int = 30) -> optuna.Study:
    storage = open_storage(folder, storage_url, heartbeat_s=heartbeat_s, on_stale=requeue)
    try:  # load an existing study: create_study would append another create record to a journal each time
        storage.get_study_id_from_name(spec.study)
    except KeyError:
        return optuna.create_study(study_name=spec.study, storage=storage, direction="maximize",
                                   sampler=make_sampler(spec), pruner=make_pruner(spec), load_if_exists=True)
    return optuna.load_study(study_name=spec.study, storage=storage, sampler=make_sampler(spec), pruner=make_pruner(spec))


def prepare_study(spec: SweepSpec, results: Path, storage_url: str | None, heartbeat_s: int = 30) -> optuna.Study:
    """Create or resume the study: check the spec matches, save it, and fill the ticket queue to `trials`."""
    folder = study_dir(results, spec.study)
    with folder_lock(folder):
        saved_path = folder / "spec.yaml"
        if saved_path.is_file():
            saved = yaml.safe_load(saved_path.read_text()) or {}
            changed = [k for k in SAME_STUDY_KEYS if saved.get(k) != spec.resolved.get(k)]
            if changed:
                raise UserError(f"{saved_path}: study {spec.study!r} was started with other {', '.join(changed)}; "
                                "resume with the same spec, or pass --study NEW_NAME")
        study = open_study(spec, folder, storage_url, heartbeat_s)
        write_atomic(saved_path, dump_spec(spec))
        if storage_url:
            write_atomic(folder / STORAGE_NOTE, mask_url(storage_url) + "\n")
        reap(study)
        ensure_tickets(study, spec)
    return study


def load_saved_spec(folder: Path) -> SweepSpec:
    """The resolved spec a study was started with (workers and `best` read this, not the user's file)."""
    raw = yaml.safe_load((folder / "spec.yaml").read_text())
    return parse_spec(raw, str(folder / "spec.yaml"), check_data=False)


def ensure_tickets(study: optuna.Study, spec: SweepSpec) -> int:
    """Enqueue the configurations 0..trials-1 that have no live or finished trial yet; returns how many."""
    live = {t.user_attrs.get(TICKET) for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.WAITING, TrialState.RUNNING) or is_finished(t)}
    missing = [i for i in range(spec.trials) if i not in live]
    if not missing:
        return 0
    configs = sample_configs(spec, spec.trials) if spec.sampler == "random" else [{}] * spec.trials
    for i in missing:
        study.enqueue_trial(configs[i], user_attrs={TICKET: i}, skip_if_exists=False)
    return len(missing)


def requeue(study: optuna.Study, failed: FrozenTrial, **attrs: Any) -> None:
    """Enqueue a dead worker's trial again with the same configuration (also Optuna's stale-trial callback);
    `attrs` are extra user attrs of the new ticket."""
    params = failed.system_attrs.get("fixed_params") or failed.params
    study.enqueue_trial(params, user_attrs={TICKET: failed.user_attrs.get(TICKET), "retry_of": failed.number, **attrs},
                        skip_if_exists=False)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against pid reuse); None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
            return "?"
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def reap(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose owner is gone and enqueue their configurations again.

    RDB storages also use Optuna's heartbeat (for workers on other machines); owners on this host are
    checked directly by pid and start time, which works for every storage.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    storage, host, reaped = storage_of(study), socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.system_attrs.get("owner") or {}
        if owner.get("host") != host or _process_start(owner["pid"]) in (owner.get("start"), "?"):
            continue
        try:
            tid = trial_id(study, t.number)
            storage.set_trial_user_attr(tid, OUTCOME, "crashed")
            storage.set_trial_user_attr(tid, "message", f"worker {owner.get('worker')} (pid {owner['pid']}) died")
            if storage.set_trial_state_values(tid, TrialState.FAIL):
                requeue(study, t)
                reaped.append(t.number)
        except UpdateFinishedTrialError:
            continue  # another worker reaped it first
    return reaped


def claim(study: optuna.Study, target: int, worker: str) -> optuna.Trial | None:
    """Atomically take a WAITING ticket (storage compare-and-set) and stamp it with its owner."""
    storage = storage_of(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        index = t.user_attrs.get(TICKET)
        if index is None or index >= target:
            continue
        tid = trial_id(study, t.number)
        try:
            if not storage.set_trial_state_values(tid, TrialState.RUNNING):
                continue
        except UpdateFinishedTrialError:
            continue
        if _is_duplicate(study, t, index):
            storage.set_trial_user_attr(tid, OUTCOME, "duplicate")
            storage.set_trial_state_values(tid, TrialState.FAIL)
            continue
        pid = os.getpid()
        storage.set_trial_system_attr(tid, "owner", {"host": socket.gethostname(), "pid": pid,
                                                     "start": _process_start(pid), "worker": worker})
        return trial_object(study, t.number)
    return None


def _is_duplicate(study: optuna.Study, mine: FrozenTrial, index: int) -> bool:
    """Two tickets for one index (a requeue racing a resume): the finished or older one wins."""
    return any(t.number != mine.number and t.user_attrs.get(TICKET) == index
               and (is_finished(t) or (t.state == TrialState.RUNNING and t.number < mine.number))
               for t in study.get_trials(deepcopy=False))


def run_trial(w: Worker, trial: optuna.Trial) -> str:
    """Train one trial, reporting every epoch to Optuna (pruning) and wandb; returns its outcome."""
    spec, start = w.spec, time.perf_counter()
    params = sample_params(trial, spec)
    cfg = to_run_config(params, spec)
    config = {**{f"model.{k}": v for k, v in vars(cfg.model).items()},
              **{f"train.{k}": v for k, v in vars(cfg.train).items()},
              "trial": trial.number, "study": spec.study, "data": spec.data}
    run = tracking.TrialRun(mode=w.wandb_mode, project=spec.wandb.project, entity=spec.wandb.entity,
                            group=spec.study, name=f"{spec.study}-t{trial.number}", config=config, run_dir=w.folder)
    result, outcome_, message, train_s = None, "complete", "", 0.0
    try:
        with Heartbeat(w.study, trial.number):
            model = build_model(cfg.model, seed=cfg.train.seed)
            for result in fit(model, w.train, w.val, cfg.train, norm=w.norm(cfg.train.normalize)):
                train_s += result.metrics["time/epoch_s"]
                if math.isfinite(result.metrics["val/acc"]):  # a diverged epoch has no val accuracy
                    trial.report(result.metrics["val/acc"], result.epoch)
                run.log(result.metrics, step=result.epoch)
                if w.on_epoch:
                    w.on_epoch(trial.number, result)
                if result.stop in ("diverged", "oom"):
                    outcome_, message = result.stop, result.message
                elif result.stop is None and trial.should_prune():
                    outcome_, message = "pruned", f"pruned at epoch {result.epoch}"
                    break
            if outcome_ in ("complete", "pruned"):  # its best-epoch model, for ensembles (spec `keep`)
                artifacts.save_trial_model(w, trial, model, cfg, params, result)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (preemption) raised as Terminated("SIGTERM") by the caller
        _finish(w, trial, run, result, "interrupted", str(e) or "Ctrl-C", time.perf_counter() - start, train_s)
        requeue(w.study, frozen(w.study, trial.number))
        raise
    except UserError as e:
        outcome_, message = "error", str(e)
    except Exception as e:  # a bug in one configuration must not end the sweep: record it, go on
        if is_oom(e):  # e.g. building a model too big for memory, before `fit` (which reports its own OOMs)
            outcome_, message = "oom", f"out of memory: {str(e).strip().splitlines()[0][:300]}"
        else:
            outcome_, message = "error", f"{type(e).__name__}: {e}"
            with open(w.folder / "errors.log", "a") as log:
                log.write(f"trial {trial.number}:\n{traceback.format_exc()}\n")
    retries = int(trial.user_attrs.get(OOM_RETRIES, 0))
    retry = outcome_ == "oom" and w.shared_device and retries < MAX_OOM_RETRIES
    if retry:  # a neighbour on the same GPU may have taken the memory: not this configuration's verdict
        outcome_, message = "oom_retry", f"{message}; the GPU is shared with other workers: re-queued"
    _finish(w, trial, run, result, outcome_, message, time.perf_counter() - start, train_s)
    artifacts.prune_trial_models(w.study, w.folder, w.spec.keep)  # after the verdict: see artifacts.py
    if retry:
        requeue(w.study, frozen(w.study, trial.number), **{OOM_RETRIES: retries + 1})
    return outcome_


def _finish(w: Worker, trial, run, result, outcome_: str, message: str, seconds: float, train_s: float) -> None:
    """Record the outcome (user attrs, then the state), close the wandb run, rewrite trials.csv.

    `seconds` is the whole trial; `train_seconds` the epochs alone (the rest is per-trial overhead).
    """
    attrs = {OUTCOME: outcome_, "message": message, "seconds": round(seconds, 3), "worker": w.name,
             "train_seconds": round(train_s, 3),
             "epochs": result.epoch if result else 0, "best_epoch": result.best_epoch if result else 0,
             "best_val_acc": result.best_val_acc if result else 0.0}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(outcome_, TrialState.FAIL)
    value = attrs["best_val_acc"] if state == TrialState.COMPLETE else None
    w.study.tell(trial, value, state=state, skip_if_finished=True)
    tag = {"pruned": f"pruned@{attrs['epochs']}", "complete": "complete"}.get(outcome_, f"failed:{outcome_}")
    run.finish(tags=[tag], summary={"best/val_acc": attrs["best_val_acc"], "best/epoch": attrs["best_epoch"],
                                    "outcome": outcome_, "epochs": attrs["epochs"]})
    write_trials_csv(w.study, w.folder)


def worker_loop(w: Worker, on_trial: Callable[[], None] | None = None) -> int:
    """Claim and run tickets until none is left; returns how many trials this worker ran."""
    ran = 0
    while True:
        reap(w.study)
        trial = claim(w.study, w.spec.trials, w.name)
        if trial is None:
            return ran
        run_trial(w, trial)
        ran += 1
        if on_trial:
            on_trial()
