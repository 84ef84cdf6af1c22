"""Drive a sweep: load the data once, run one worker in-process or K worker processes, and watch them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna

from fer_sweep.config import UserError, WriteError
from fer_sweep.learn.device import pick_device, to_device
from fer_sweep.sweep.checkpoints import remove_finished
from fer_sweep.sweep.dbfaults import DB_WAIT_S, study_fault, study_faults
from fer_sweep.sweep.estimate import estimate
from fer_sweep.sweep.eta import FORECAST, TICKET_COSTS
from fer_sweep.sweep.plateau import plateau
from fer_sweep.sweep.signals import past
from fer_sweep.sweep.spec import SweepSpec
from fer_sweep.sweep.store import study_dir
from fer_sweep.sweep.study import prepare_study, reap, tickets_left
from fer_sweep.sweep.summary import TICKET, is_finished, snapshot, status, write_trials_csv
from fer_sweep.sweep.trial import load_data
from fer_sweep.sweep.warmstart import Source, import_trials
from fer_sweep.sweep.worker import SHARED_GPU_ENV, STORAGE_ENV, make_worker, worker_loop

REFRESH_S = 5.0  # in-process: the fewest seconds between two snapshots read after an epoch (a study read each)
STOP_GRACE_S = 20  # on Ctrl-C/SIGTERM, how long workers get to re-queue their trials (schedulers wait ~30 s)


@dataclass(frozen=True)
class LaunchPlan:
    """What one `run` launches, built once from its flags and passed down whole: the sweep, where its study lives,
    and how its workers run. (The callbacks that watch it are run_sweep's arguments, not part of the plan.)"""

    spec: SweepSpec
    results: Path  # the folder holding one sub-folder per study
    storage_url: str | None = None  # `--storage`; None: the journal file in the study folder
    workers: int = 1  # worker processes (1 with no gpus: one worker in this process)
    gpus: tuple[str, ...] | None = None  # `--gpus`: the workers' GPUs, round-robin
    device: str = "auto"
    wandb_mode: str = "offline"
    heartbeat_s: int = 30  # a running trial's heartbeat; a worker silent for longer is reaped
    deadline: float | None = None  # a time.time() value (`run --timeout`): no trial starts after it
    db_wait_s: float = DB_WAIT_S  # how long workers wait for a database storage that stops answering
    sources: tuple[Source, ...] = ()  # `--from`: earlier studies whose fitting finished trials are imported

    @property
    def folder(self) -> Path:
        return study_dir(self.results, self.spec.study)


def worker_env(parent: Mapping[str, str], k: int, workers: int, gpus: Sequence[str] | None, cpu_count: int) -> dict:
    """Environment of worker k of `workers` (a pure function of its arguments).

    GPUs: `--gpus` indices count within the GPUs this process may use, so under a scheduler that set
    CUDA_VISIBLE_DEVICES=2,3, `--gpus 0,1` means physical GPUs 2 and 3; worker k gets gpus[k % len(gpus)].
    CUDA_DEVICE_ORDER=PCI_BUS_ID makes indices match nvidia-smi's (CUDA's default order is fastest first),
    unless the parent chose an order. Threads: the CPU cores are shared out (OMP_NUM_THREADS) on GPU
    machines too, since every worker's data-independent host work would otherwise claim every core.
    """
    env = dict(parent)
    if gpus:
        visible = [v.strip() for v in parent["CUDA_VISIBLE_DEVICES"].split(",")] \
            if parent.get("CUDA_VISIBLE_DEVICES", "").strip() else None
        gpu = gpus[k % len(gpus)]
        if visible is not None and gpu.isdigit():
            if int(gpu) >= len(visible):
                raise UserError(f"--gpus {','.join(gpus)}: GPU {gpu} is not among the "
                                f"{len(visible)} visible ones (CUDA_VISIBLE_DEVICES={parent['CUDA_VISIBLE_DEVICES']})")
            gpu = visible[int(gpu)]
        env["CUDA_VISIBLE_DEVICES"] = gpu
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        sharing = sum(1 for j in range(workers) if gpus[j % len(gpus)] == gpus[k % len(gpus)])
        env[SHARED_GPU_ENV] = "1" if sharing > 1 else "0"
    if "OMP_NUM_THREADS" not in parent:  # K workers share the cores instead of oversubscribing them
        env["OMP_NUM_THREADS"] = str(max(1, cpu_count // workers))
    return env


def run_sweep(plan: LaunchPlan, *, on_update: Callable[[dict], None] | None = None, on_epoch: Callable | None = None,
              on_start: Callable[[dict], None] | None = None,
              on_import: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run the sweep to `spec.trials` finished trials (resuming whatever is there); returns the status, with
    `deadline_reached` true when the plan's `deadline` stopped it first: no trial starts after the deadline and every
    worker interrupts and re-queues the trial it is training then.
    `on_start` is called once every input has been checked and the study is open, with its snapshot then (the run
    header says how far a resumed study got), after
    `on_import` with what `--from` imported (warmstart.import_trials); `on_update`
    with a snapshot after every epoch and trial (K worker processes: every second). Workers wait up to `db_wait_s`
    for a database storage that stops answering (see worker_loop) before they end with one line."""
    spec, folder, workers, gpus = plan.spec, plan.folder, plan.workers, plan.gpus
    for k in range(workers if gpus else 0):  # a bad --gpus fails here, before anything is written
        worker_env(os.environ, k, workers, gpus, os.cpu_count() or 1)
    splits = load_data(spec)  # unreadable data or a bad device end here too, before the study folder is written
    device = pick_device("cuda" if gpus else plan.device)  # (K workers read the data from the parse cache this filled)
    imports: dict[str, Any] = {}

    def warm_start(st: optuna.Study) -> None:
        imports.update(import_trials(st, spec, folder, list(plan.sources)))

    with study_faults():
        study = prepare_study(spec, plan.results, plan.storage_url, plan.heartbeat_s,
                              before_tickets=warm_start if plan.sources else None)
        remove_finished(folder, {t.user_attrs[TICKET] for t in study.get_trials(deepcopy=False)
                                 if is_finished(t) and TICKET in t.user_attrs})  # a kill's leftovers
    if on_import and imports:
        on_import(imports)
    max_epochs = spec.max_epochs
    k = max(workers, len(gpus or []))
    if on_start:
        with study_faults():
            snap = snapshot(study, spec.trials, max_epochs, spec.pruner, k)
        left = spec.trials - snap["finished"] - len(snap["running"])
        assert splits.train.y is not None  # a sweep's data is labelled (load_data)
        assert splits.val.y is not None
        train = to_device(splits.train.x, splits.train.y, device)  # (the workers hold their own copies)
        val = to_device(splits.val.x, splits.val.y, device)
        tickets = tickets_left(study, spec)[:max(left, 0)]
        snap["estimate"] = forecast = estimate(spec, train, val, [p for _, p in tickets], devices=len(gpus or []) or 1)
        if forecast:  # the ETA's prior, per worker: CPU workers share the cores, GPU workers split over the GPUs
            shared = max(k / max(len(gpus or []), 1), 1.0)
            costs = {str(n): c for (n, _), c in zip(tickets, forecast["costs"]) if n is not None}
            with study_faults():
                study.set_user_attr(FORECAST, {"s_per_epoch": round(forecast["s_per_epoch_mean"] * shared, 3),
                                               "host": socket.gethostname(), TICKET_COSTS: costs})
        snap["timeout_left_s"] = None if plan.deadline is None else max(plan.deadline - time.time(), 0.0)
        del train, val
        on_start(snap)
    ours = (socket.gethostname(), {os.getpid()})  # this run's workers (their pids join when they start)
    last = [0.0]

    def refresh() -> None:
        assert on_update is not None  # refresh is only handed out with on_update
        last[0] = time.monotonic()
        try:
            on_update(snapshot(study, spec.trials, max_epochs, spec.pruner, k, ours=ours))
        except Exception as e:  # the view skips a refresh while the storage does not answer
            if study_fault(e) is None:
                raise

    update = refresh if on_update else None
    if workers == 1 and not gpus:
        _run_in_process(plan, study, splits, update, on_epoch, last)
    else:
        del splits
        _run_rounds(plan, study, update, ours[1])
    with study_faults():
        write_trials_csv(study, folder)
        done = status(study, spec.trials, max_epochs, pruner=spec.pruner, workers=k, stop=spec.stop)
    done["deadline_reached"] = past(plan.deadline) and done["finished"] < spec.trials
    return done


def _run_in_process(plan: LaunchPlan, study: optuna.Study, splits, update: Callable[[], None] | None,
                    on_epoch: Callable | None, last: list[float]) -> None:
    """One worker in this process, on the data already read: `on_epoch` sees every epoch, and `update` (which sets
    `last[0]`) runs after an epoch at most every REFRESH_S, and after every trial."""
    w = make_worker(plan.spec, study, plan.folder, device=plan.device, wandb_mode=plan.wandb_mode, name="w0",
                    splits=splits, db_wait_s=plan.db_wait_s)

    def epoch(number: int, result) -> None:
        if on_epoch:
            on_epoch(number, result)
        if update and time.monotonic() - last[0] >= REFRESH_S:
            update()

    w.on_epoch = epoch
    if update:
        update()
    with study_faults():  # a full disk or a storage gone away: one line, the trial re-queued
        worker_loop(w, on_trial=update, deadline=plan.deadline)


@study_faults()
def _run_rounds(plan: LaunchPlan, study: optuna.Study, update: Callable[[], None] | None,
                pids: set | None = None) -> None:
    """K worker processes until no ticket waits (a worker's storage fault ends it with one line)."""
    for _ in range(3):  # another round re-runs trials reaped after the other workers had left
        try:
            _run_processes(plan, update, pids)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a worker that had to be killed leaves its trial RUNNING
            reap(study)
            raise
        reap(study)
        if past(plan.deadline) or not _waiting(study, plan.spec.trials) or \
                plateau(study.get_trials(deepcopy=False), plan.spec.stop):
            break


def _stop(procs: list[subprocess.Popen], signum: int) -> None:
    """Send `signum` to the workers still running (each fails and re-queues its trial, then exits); kill those
    that have not exited STOP_GRACE_S later (their trials stay RUNNING until reaped)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    until = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _waiting(study: optuna.Study, target: int) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
               if (t.user_attrs.get("ticket") or 0) < target)


def _run_processes(plan: LaunchPlan, update: Callable[[], None] | None, pids: set | None = None) -> None:
    """Start K `python -m fer_sweep.sweep.worker` processes (round-robin over GPUs) and watch them. Each stops
    itself at the plan's deadline; one still running STOP_GRACE_S after it is sent SIGTERM."""
    folder, workers, gpus, deadline = plan.folder, plan.workers, plan.gpus, plan.deadline
    procs = []
    for k in range(workers):
        env = worker_env(os.environ, k, workers, gpus, os.cpu_count() or 1)
        if plan.storage_url:
            env[STORAGE_ENV] = plan.storage_url
        log = open(folder / f"worker-{k}.log", "a")
        cmd = [sys.executable, "-m", "fer_sweep.sweep.worker", str(folder), "--name", f"w{k}",
               "--device", "cuda" if gpus else plan.device, "--wandb", plan.wandb_mode,
               "--heartbeat", str(plan.heartbeat_s), "--db-wait", repr(plan.db_wait_s)]
        if deadline is not None:
            cmd += ["--deadline", repr(deadline)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        if pids is not None:  # whose trials are this run's (the progress lines name only those)
            pids.add(procs[-1].pid)
        log.close()
    try:
        while any(p.poll() is None for p in procs):
            if update:
                update()
            if deadline is not None and past(deadline + STOP_GRACE_S):  # a worker stuck past its own deadline
                _stop(procs, signal.SIGTERM)
                break
            time.sleep(1.0)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): forward the same signal
        _stop(procs, getattr(e, "signum", signal.SIGINT))
        stopped = f"each worker re-queued the trial it was training (see {folder}/worker-*.log)"
        e.stopped = stopped  # type: ignore[attr-defined]
        raise
    # a worker killed (SIGKILL: reaped) or stopped by a signal (SIGINT/SIGTERM: its trial re-queued) has not failed
    failed = [k for k, p in enumerate(procs) if p.returncode not in (0, -9, 137, -2, 130, -15, 143)]
    faulted = [k for k in failed if procs[k].returncode == WriteError.exit_code]
    if faulted:  # a full disk or a storage gone away in a worker: the run ends as it would in-process
        tail = (folder / f"worker-{faulted[0]}.log").read_text()[-500:].strip().splitlines()
        raise WriteError(tail[-1].removeprefix("error: ") if tail else f"worker-{faulted[0]} could not write the study")
    if failed and not any(p.returncode == 0 for p in procs):
        tail = (folder / f"worker-{failed[0]}.log").read_text()[-500:].strip().splitlines()
        raise UserError(f"{folder}: every worker failed; last line of worker-{failed[0]}.log: "
                        f"{tail[-1] if tail else '(empty)'}")
