"""Drive a sweep: load the data once, run one worker in-process or K worker processes, and watch them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna

from fer_sweep.config import UserError
from fer_sweep.learn.device import pick_device
from fer_sweep.sweep.spec import SweepSpec
from fer_sweep.sweep.store import study_dir
from fer_sweep.sweep.study import prepare_study, reap
from fer_sweep.sweep.summary import snapshot, status, write_trials_csv
from fer_sweep.sweep.trial import load_data
from fer_sweep.sweep.worker import SHARED_GPU_ENV, STORAGE_ENV, make_worker, worker_loop

STOP_GRACE_S = 20  # on Ctrl-C/SIGTERM, how long workers get to re-queue their trials (schedulers wait ~30 s)


def worker_env(parent: Mapping[str, str], k: int, workers: int, gpus: list[str] | None, cpu_count: int) -> dict:
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


def run_sweep(spec: SweepSpec, *, results: Path, storage_url: str | None = None, workers: int = 1,
              gpus: list[str] | None = None, device: str = "auto", wandb_mode: str = "offline",
              heartbeat_s: int = 30, on_update: Callable[[dict], None] | None = None,
              on_epoch: Callable | None = None, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run the sweep to `spec.trials` finished trials (resuming whatever is there); returns the snapshot.
    `on_start` is called once every input has been checked and the study is open (the run header)."""
    folder = study_dir(results, spec.study)
    for k in range(workers if gpus else 0):  # a bad --gpus fails here, before anything is written
        worker_env(os.environ, k, workers, gpus, os.cpu_count() or 1)
    splits = load_data(spec)  # unreadable data or a bad device end here too, before the study folder is written
    pick_device("cuda" if gpus else device)  # (K workers then read the data from the parse cache this filled)
    study = prepare_study(spec, results, storage_url, heartbeat_s)
    if on_start:
        on_start()
    max_epochs = int(spec.train.get("epochs", 15))
    update = (lambda: on_update(snapshot(study, spec.trials, max_epochs))) if on_update else None
    if workers == 1 and not gpus:
        w = make_worker(spec, study, folder, device=device, wandb_mode=wandb_mode, name="w0", splits=splits)
        w.on_epoch = on_epoch
        if update:
            update()
        worker_loop(w, on_trial=update)
    else:
        del splits
        for _ in range(3):  # another round re-runs trials reaped after the other workers had left
            try:
                _run_processes(spec, folder, storage_url, workers, gpus, device, wandb_mode, heartbeat_s, update)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a worker that had to be killed leaves its trial RUNNING
                reap(study)
                raise
            reap(study)
            if not _waiting(study, spec.trials):
                break
    write_trials_csv(study, folder)
    return status(study, spec.trials, max_epochs)


def _waiting(study: optuna.Study, target: int) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
               if (t.user_attrs.get("ticket") or 0) < target)


def _run_processes(spec, folder, storage_url, workers, gpus, device, wandb_mode, heartbeat_s, update) -> None:
    """Start K `python -m fer_sweep.sweep.worker` processes (round-robin over GPUs) and watch them."""
    procs = []
    for k in range(workers):
        env = worker_env(os.environ, k, workers, gpus, os.cpu_count() or 1)
        if storage_url:
            env[STORAGE_ENV] = storage_url
        log = open(folder / f"worker-{k}.log", "a")
        cmd = [sys.executable, "-m", "fer_sweep.sweep.worker", str(folder), "--name", f"w{k}",
               "--device", "cuda" if gpus else device, "--wandb", wandb_mode, "--heartbeat", str(heartbeat_s)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    try:
        while any(p.poll() is None for p in procs):
            if update:
                update()
            time.sleep(1.0)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): forward the same signal
        for p in procs:  # workers fail and re-queue their current trial, then exit
            if p.poll() is None:
                p.send_signal(getattr(e, "signum", signal.SIGINT))
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()  # its trial stays RUNNING; run_sweep reaps it
                p.wait()
        raise
    # a worker killed (SIGKILL: reaped) or stopped by a signal (SIGINT/SIGTERM: its trial re-queued) has not failed
    failed = [k for k, p in enumerate(procs) if p.returncode not in (0, -9, 137, -2, 130, -15, 143)]
    if failed and not any(p.returncode == 0 for p in procs):
        tail = (folder / f"worker-{failed[0]}.log").read_text()[-500:].strip().splitlines()
        raise UserError(f"{folder}: every worker failed; last line of worker-{failed[0]}.log: "
                        f"{tail[-1] if tail else '(empty)'}")
