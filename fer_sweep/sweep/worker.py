"""One worker of a sweep: claim tickets and run each as a trial (train, report, prune, log, keep its model) until
none is left; in the `run` process, or as its own process: `python -m fer_sweep.sweep.worker RESULTS/STUDY`."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from fer_sweep.config import Notice, RunConfig, UserError, first_line
from fer_sweep.data.splits import Splits
from fer_sweep.learn.device import is_oom
from fer_sweep.learn.throughput import train_flops_per_image
from fer_sweep.sweep import artifacts
from fer_sweep.sweep.checkpoints import checkpoint_path, load_checkpoint, remove_checkpoint, save_checkpoint
from fer_sweep.sweep.dbfaults import DB_WAIT_S, StorageDown, is_db_fault, ride_out, study_fault, study_faults
from fer_sweep.sweep.eta import COST, PROGRESS
from fer_sweep.sweep.optuna_api import Heartbeat, frozen, storage_of, trial_id
from fer_sweep.sweep.plateau import plateau
from fer_sweep.sweep.signals import DeadlineReached, between_trials, deadline_alarm, interrupting, past, stopped_line
from fer_sweep.sweep.spec import SweepSpec
from fer_sweep.sweep.study import claim, load_saved_spec, open_study, reap, release_own, requeue
from fer_sweep.sweep.summary import OUTCOME, RESUMED_FROM, TICKET, write_trials_csv
from fer_sweep.sweep.trial import Seeds, Training, TrialContext, finish_tracking, seed_attrs, seed_configs, trial_config

STORAGE_ENV = "FER_SWEEP_STORAGE"  # how a parent hands the storage URL to its workers (not argv: `ps` shows argv)
SHARED_GPU_ENV = "FER_SWEEP_SHARED_GPU"  # "1" when a worker shares its GPU with other workers (OOMs are retried)
OOM_RETRIES = "oom_retries"  # user attr of a re-queued ticket: how often it ran out of memory on a shared GPU
MAX_OOM_RETRIES = 2  # then an OOM is the configuration's own verdict ("oom", finished)


@dataclass
class Worker:
    """One worker of a running sweep: the study it claims trials from, and its trial context (the spec, the splits on
    the device, where to write)."""

    ctx: TrialContext
    study: optuna.Study
    name: str = "w0"
    on_epoch: Callable[[int, Any], None] | None = None  # (trial number, EpochResult) for the live view
    shared_device: bool = False  # other workers train on this GPU too: an OOM may be theirs, so it is retried
    db_wait_s: float = DB_WAIT_S  # how long a database that stopped answering is waited for (`run --db-wait`)

    def patiently(self, call: Callable[[], Any]) -> Any:
        """`call()` (a storage call that may be repeated), riding out a database outage of up to db_wait_s."""
        return ride_out(call, self.db_wait_s, f"worker {self.name}")


def make_worker(spec: SweepSpec, study: optuna.Study, folder: Path, *, device: str, wandb_mode: str,
                name: str = "w0", splits: Splits | None = None, db_wait_s: float = DB_WAIT_S) -> Worker:
    """Load the data once and put train/val on the device; the test split is never touched here."""
    ctx = TrialContext.open(spec, folder, device=device, wandb_mode=wandb_mode, splits=splits)
    return Worker(ctx, study, name=name, shared_device=os.environ.get(SHARED_GPU_ENV) == "1", db_wait_s=db_wait_s)


def worker_loop(w: Worker, on_trial: Callable[[], None] | None = None, deadline: float | None = None) -> int:
    """Claim and run tickets until none is left or the study is on a plateau (spec `stop:`), or until `deadline` (a
    time.time() value: `run --timeout`): no trial starts after it, and the one training then is interrupted and
    re-queued as on SIGTERM. Every epoch's
    time also goes to the storage (user attr `progress`), which is what times the ETA wherever it is read.
    A database that stops answering is waited for (`w.db_wait_s`): within a trial its writes are tried again and
    training goes on; between trials (or when a trial was cut short) the worker waits, puts back in the queue what
    it held, and goes on. Returns how many trials this worker ran."""
    ran, then = 0, w.on_epoch
    w.on_epoch = _recording_progress(w, then)
    try:
        with deadline_alarm(deadline, _interruptible):
            while not past(deadline):
                try:
                    reap(w.study)
                    if plateau(w.study.get_trials(deepcopy=False), w.ctx.spec.stop):  # spec `stop:` says enough
                        break
                    trial = claim(w.study, w.ctx.spec.trials, w.name)
                    if trial is None:
                        break
                    run_trial(w, trial)
                except Exception as e:
                    if not _outlast(w, e):
                        raise
                    continue
                ran += 1
                if on_trial:
                    on_trial()
    except DeadlineReached:  # run_trial has failed the trial as `interrupted` and re-queued it
        pass
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: run_trial has said which trial it re-queued, if one trained
        between_trials(e)
        raise
    finally:
        w.on_epoch = then
    return ran


def _outlast(w: Worker, error: Exception) -> bool:
    """After a database fault between trials, or one that cut a trial short (a write that was not tried again):
    wait for the storage (w.db_wait_s), then fail and re-queue the trials this process held. False when `error` is
    not such a fault or was already waited for; StorageDown when the storage did not come back in time."""
    if not is_db_fault(error) or getattr(error, "waited", False):
        return False
    w.patiently(lambda: release_own(w.study, w.name))
    return True


_NOT_HERE = ("optuna", "sqlalchemy", "psycopg", "wandb")  # a storage write or a wandb log half done: not cut short


def _interruptible(frame) -> bool:
    """Where the deadline may interrupt: inside a trial's training (`Training.epochs`), not in the middle of a storage
    call or a wandb log, nor anywhere between trials (claiming, writing a verdict), which sees the deadline itself."""
    while frame is not None:
        if frame.f_code is Training._epochs.__code__:
            return True
        if frame.f_globals.get("__name__", "").split(".")[0] in _NOT_HERE:
            return False
        frame = frame.f_back
    return False


def _recording_progress(w: Worker, then: Callable[[int, Any], None] | None) -> Callable[[int, Any], None]:
    """An on_epoch that stores the trial's [epochs, train seconds so far] (user attr PROGRESS, one write per epoch),
    then calls `then`."""
    seconds: dict[int, float] = {}

    def on_epoch(number: int, result) -> None:
        seconds[number] = seconds.get(number, 0.0) + float(result.metrics.get("time/epoch_s", 0.0))
        try:
            w.patiently(lambda: storage_of(w.study).set_trial_user_attr(trial_id(w.study, number), PROGRESS,
                                                                        [result.epoch, round(seconds[number], 3)]))
        except UpdateFinishedTrialError:  # reaped meanwhile: its verdict is someone else's now
            pass
        if then:
            then(number, result)

    return on_epoch


def run_trial(w: Worker, trial: optuna.Trial) -> str:
    """Train one trial, its seeds in step (spec `repeats`), reporting every epoch's mean to Optuna (pruning) and each
    seed's epochs to its own wandb run; returns its outcome."""
    ctx, start = w.ctx, time.perf_counter()
    params, cfg = trial_config(trial, ctx.spec)
    cfgs = seed_configs(cfg, ctx.spec.repeats)
    runs = [ctx.track(c, f"{ctx.spec.study}-t{trial.number}" + (f"-s{c.train.seed}" if len(cfgs) > 1 else ""),
                      trial=trial.number, seed=c.train.seed) for c in cfgs]

    def on_epoch(result) -> None:
        if math.isfinite(result.metrics["val/acc"]):  # a diverged epoch has no val accuracy
            w.patiently(lambda: trial.report(result.metrics["val/acc"], result.epoch))
        if w.on_epoch:
            w.on_epoch(trial.number, result)

    group, (paths, resumes) = None, _resumed(w, trial, params, cfgs)
    try:
        with Heartbeat(w.study, trial.number):
            group = Seeds.start(cfgs)
            _record_cost(w, trial, group)
            _replay(w, trial, group, resumes)
            ctx.fit_seeds(group, runs, on_epoch=on_epoch, should_prune=lambda _: w.patiently(trial.should_prune),
                          resumes=resumes, saves=[_saver(ctx, path, params) for path in paths])
            if group.outcome in ("complete", "pruned"):  # each seed's best-epoch model, for ensembles (spec `keep`)
                artifacts.save_trial_models(ctx, trial, [(t.model, t.cfg, t.last) for t in group.runs], params)
        outcome_, message = group.outcome, group.message
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (preemption) raised as Terminated("SIGTERM") by the caller
        _abandon(w, trial, runs, group, str(e) or "Ctrl-C", start)
        e.stopped = f"trial {trial.number} was re-queued"  # type: ignore[attr-defined]
        raise
    except StorageDown as e:  # the storage did not come back within --db-wait: this worker ends with one line
        _abandon(w, trial, runs, group, str(e), start)
        raise
    except UpdateFinishedTrialError:  # reaped while it trained (its heartbeat missed during an outage): re-queued
        for run in runs:  # by whoever reaped it; its verdict is theirs
            run.finish(tags=["reaped"], summary={"outcome": "reaped"})
        return "reaped"
    except UserError as e:
        outcome_, message = "error", str(e)
    except Exception as e:  # noqa: BLE001 - a bug in one configuration must not end the sweep
        fault = study_fault(e)
        if fault:  # a full disk or a storage gone away: this run ends, the trial goes back in the queue
            _abandon(w, trial, runs, group, str(fault), start)
            raise fault from None
        if is_oom(e):  # e.g. building a model too big for memory, before `fit` (which reports its own OOMs)
            outcome_, message = "oom", f"out of memory: {first_line(e)}"
        else:
            outcome_, message = "error", f"{type(e).__name__}: {e}"
            with open(w.ctx.folder / "errors.log", "a") as log:
                log.write(f"trial {trial.number}:\n{traceback.format_exc()}\n")
    retries = int(trial.user_attrs.get(OOM_RETRIES, 0))
    retry = outcome_ == "oom" and w.shared_device and retries < MAX_OOM_RETRIES
    if retry:  # a neighbour on the same GPU may have taken the memory: not this configuration's verdict
        outcome_, message = "oom_retry", f"{message}; the GPU is shared with other workers: re-queued"
    with study_faults():  # a verdict that cannot be written: the next run reaps the trial and runs it again
        _finish(w, trial, runs, group, outcome_, message, time.perf_counter() - start)
        if not retry:  # ended: its checkpoints have nothing left to resume (a retried OOM resumes from them)
            for path in paths:
                remove_checkpoint(path)
        w.patiently(lambda: artifacts.prune_trial_models(w.study, w.ctx.folder, w.ctx.spec.keep))  # after the verdict
        if retry:
            w.patiently(lambda: requeue(w.study, frozen(w.study, trial.number), **{OOM_RETRIES: retries + 1}))
    return outcome_


def _record_cost(w: Worker, trial: optuna.Trial, group: Seeds) -> None:
    """The trial's cost for the ETA (user attr COST): training FLOPs per image of one epoch of all its seeds."""
    t = group.runs[0]
    try:
        cost = train_flops_per_image(t.model, t.cfg.train, w.ctx.train.x.device) * len(group.runs)
    except Exception:  # noqa: BLE001 - a model the flop counter cannot trace still trains; the ETA times it plainly
        return
    w.patiently(lambda: trial.set_user_attr(COST, round(cost)))


def _saver(ctx: TrialContext, path: Path | None, params: dict) -> Callable[[dict], None] | None:
    return (lambda ck: save_checkpoint(path, ctx.identity(params), ck)) if path else None


def _resumed(w: Worker, trial: optuna.Trial, params: dict,
             cfgs: list[RunConfig]) -> tuple[list[Path | None], list[dict | None]]:
    """Each seed's checkpoint file (one per ticket and seed) and what it resumes from: the checkpoint a stopped trial
    of the same ticket left (checkpoints.py)."""
    ticket = trial.user_attrs.get(TICKET)
    if ticket is None:  # a trial fer-sweep did not queue (none today): no checkpoint
        return [None] * len(cfgs), [None] * len(cfgs)
    paths = [checkpoint_path(w.ctx.folder, ticket, r) for r in range(len(cfgs))]
    return list(paths), [load_checkpoint(path, w.ctx.identity(params), c.train) for path, c in zip(paths, cfgs)]


def _replay(w: Worker, trial: optuna.Trial, group: Seeds, resumes: list[dict | None]) -> None:
    """Report the epochs the checkpoints hold to this trial as they were (the seeds' mean), so the pruner sees each
    epoch once and none is trained twice."""
    if not any(resumes):
        return
    for t, resume in zip(group.runs, resumes):
        if resume is not None:
            t.resume(resume)
    for row in group.catch_up():
        if row["val/acc"] is not None:
            w.patiently(partial(trial.report, row["val/acc"], row["epoch"]))
    done = len(group.history)
    w.patiently(lambda: trial.set_user_attr(RESUMED_FROM, done))
    warnings.warn(Notice(f"trial {trial.number} (ticket {trial.user_attrs.get(TICKET)}) resumes at epoch {done + 1} "
                         f"from its checkpoint ({done} epochs not trained again)"), stacklevel=2)


def _abandon(w: Worker, trial, runs, group: Seeds | None, message: str, start: float) -> None:
    """Record an unfinished trial as `interrupted` and queue its configuration again, as far as the storage can
    still be written (a full disk, a database gone away): what is not written, the next run's reap does."""
    try:
        _finish(w, trial, runs, group, "interrupted", message, time.perf_counter() - start)
        requeue(w.study, frozen(w.study, trial.number))
    except Exception:  # noqa: BLE001 - the fault that brought us here is what the caller reports
        pass


def _finish(w: Worker, trial, runs, group: Seeds | None, outcome_: str, message: str, seconds: float) -> None:
    """Record the outcome (user attrs, then the state), close the wandb runs, rewrite trials.csv.

    `seconds` is the whole trial; `train_seconds` the epochs alone (the rest is per-trial overhead). With several seeds
    (spec `repeats`) the value is their mean; `seed_values` and `val_acc_std` say how they spread.
    """
    last = group.last if group else None
    attrs = {OUTCOME: outcome_, "message": message, "seconds": round(seconds, 3), "worker": w.name,
             "train_seconds": round(group.train_s if group else 0.0, 3),
             "epochs": last.epoch if last else 0, "best_epoch": last.best_epoch if last else 0,
             "best_val_acc": last.best_val_acc if last else 0.0, **seed_attrs(group)}
    state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(outcome_, TrialState.FAIL)
    value = float(last.best_val_acc) if last and state == TrialState.COMPLETE else None

    def verdict() -> None:  # may be told again after an outage: attrs are values, tell skips a finished trial
        for key, val in attrs.items():
            trial.set_user_attr(key, val)
        w.study.tell(trial, value, state=state, skip_if_finished=True)

    w.patiently(verdict)
    for i, run in enumerate(runs):
        finish_tracking(run, group.runs[i] if group else None, outcome_)
    w.patiently(lambda: write_trials_csv(w.study, w.ctx.folder))


def worker_main(folder: Path, *, name: str, device: str, wandb_mode: str, heartbeat_s: int,
                deadline: float | None = None, db_wait_s: float = DB_WAIT_S) -> int:
    """Entry of one worker process: resume the study in `folder` and run tickets until none is left (or until
    `deadline`, a time.time() value)."""
    spec = load_saved_spec(folder)
    study = ride_out(lambda: open_study(spec, folder, os.environ.get(STORAGE_ENV), heartbeat_s), db_wait_s,
                     f"worker {name}")  # a database down as this worker starts is waited for, as mid-trial
    return worker_loop(make_worker(spec, study, folder, device=device, wandb_mode=wandb_mode, name=name,
                                   db_wait_s=db_wait_s), deadline=deadline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_sweep.sweep.worker")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--name", default="w0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--wandb", default="offline")
    parser.add_argument("--heartbeat", type=int, default=30)
    parser.add_argument("--deadline", type=float, default=None, help="time.time() after which no trial runs")
    parser.add_argument("--db-wait", type=float, default=DB_WAIT_S, help="seconds to wait for a database that "
                        "stopped answering")
    args = parser.parse_args(argv)
    with interrupting(signal.SIGINT, signal.SIGTERM):
        try:
            with study_faults():
                ran = worker_main(args.folder, name=args.name, device=args.device, wandb_mode=args.wandb,
                                  heartbeat_s=args.heartbeat, deadline=args.deadline, db_wait_s=args.db_wait)
        except KeyboardInterrupt as e:
            print(f"worker {args.name}: {stopped_line(e)}", file=sys.stderr)
            return getattr(e, "exit_code", 130)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return getattr(e, "exit_code", 2)
    stopped = " and stopped at the deadline (--timeout)" if past(args.deadline) else ""
    print(f"worker {args.name}: ran {ran} trials{stopped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
