"""Worker processes on a real PostgreSQL server for the coordination tests: each opens the study and loops as
`worker_loop` does (`reap` -> `claim` -> sleep for the training -> record the verdict) until no ticket is left.

The workers import only the coordination layer (optuna, SQLAlchemy, psycopg; no torch) and are forked from one
forkserver that has imported it, so eight of them start in about a second. (The load test at 64 and 256 workers
is benchmarks/bench_coordination.py, a program of its own.)"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

PRELOAD = ["fer_sweep.sweep.study", "fer_sweep.sweep.summary", "psycopg", "sqlalchemy"]
SPEC = {"data": "synthetic", "seed": 0, "pruner": {"type": "none"}, "wandb": {"mode": "disabled"},
        "model": {"arch": "cnn"}, "train": {"epochs": 1},
        "space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "dropout": {"low": 0.0, "high": 0.5}}}


def spec_for(study: str, trials: int):
    from fer_sweep.sweep.spec import parse_spec

    return parse_spec({**SPEC, "study": study, "trials": trials}, f"<{study}>", check_data=False)


def _worker(k: int, url: str, study_name: str, folder: str, trials: int, sleep_s: float, out: str, go, ready) -> None:
    """One worker (a forked process): worker_loop's coordination, a sleep for the training; writes what it saw."""
    from optuna.trial import TrialState

    from fer_sweep.sweep.study import claim, open_study, reap
    from fer_sweep.sweep.summary import OUTCOME, TICKET, write_trials_csv

    rec: dict = {"claim_s": [], "tickets": [], "errors": []}
    try:
        study = open_study(spec_for(study_name, trials), Path(folder), url)
        study.get_trials(deepcopy=False)  # connected, like a worker that has loaded its data
    except Exception as e:  # noqa: BLE001 - recorded, not raised in a child
        rec["errors"].append(f"open: {type(e).__name__}: {e}"[:300])
    ready.release()
    go.wait()
    rng = random.Random(k)
    while not rec["errors"]:
        try:
            reap(study)
            start = time.perf_counter()
            trial = claim(study, trials, f"w{k}")
            rec["claim_s"].append(time.perf_counter() - start)
            if trial is None:
                break
            rec["tickets"].append(trial.user_attrs.get(TICKET))
            time.sleep(sleep_s * rng.uniform(0.5, 1.5))  # the training
            value = rng.random()
            for key, v in {OUTCOME: "complete", "seconds": sleep_s, "worker": f"w{k}", "epochs": 1,
                           "best_epoch": 1, "best_val_acc": value}.items():
                trial.set_user_attr(key, v)
            study.tell(trial, value, state=TrialState.COMPLETE, skip_if_finished=True)
            write_trials_csv(study, Path(folder))
        except Exception as e:  # noqa: BLE001 - recorded, not raised in a child
            rec["errors"].append(f"{type(e).__name__}: {e}"[:300])
    Path(out).write_text(json.dumps(rec))


def _prepare(url: str, study_name: str, trials: int, results: str) -> None:
    from fer_sweep.sweep.study import prepare_study

    prepare_study(spec_for(study_name, trials), Path(results), url)


def _count_connections(url: str, app: str, stop: threading.Event, samples: list) -> None:
    """Sample the connections named `app` (pg_stat_activity) every 0.25 s until `stop`."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
                         autocommit=True) as conn:
        while not stop.is_set():
            sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            samples.append(conn.execute(sql, (app,)).fetchone()[0])
            stop.wait(0.25)


def run_workers(url: str, workers: int, trials: int, sleep_s: float, timeout: float = 300) -> dict:
    """`workers` processes run a fresh study of `trials` tickets on the PostgreSQL at `url`, all starting to claim
    at once. Returns the study's final trials, each worker's claim times, the tickets each ran, their errors, how
    many had to be killed at `timeout`, and the most connections they held at once."""
    import optuna

    name = f"coord-{workers}w-{trials}t-{os.getpid()}-{int(time.time())}"
    url = f"{url}{'&' if '?' in url else '?'}application_name={name}"  # what the connection count counts
    tmp = Path(tempfile.mkdtemp(prefix="fer-coord-"))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    setup = ctx.Process(target=_prepare, args=(url, name, trials, str(tmp)))
    setup.start()
    setup.join()
    assert setup.exitcode == 0, f"preparing the study failed (exit {setup.exitcode})"
    go, ready = ctx.Event(), ctx.Semaphore(0)
    procs = [ctx.Process(target=_worker, args=(k, url, name, str(tmp / name), trials, sleep_s, str(tmp / f"w{k}.json"),
                                               go, ready)) for k in range(workers)]
    stop, samples = threading.Event(), []
    monitor = threading.Thread(target=_count_connections, args=(url, name, stop, samples), daemon=True)
    monitor.start()
    try:
        for p in procs:
            p.start()
        for _ in procs:
            assert ready.acquire(timeout=timeout), f"workers did not open the study within {timeout} s"
        go.set()
        until = time.monotonic() + timeout
        for p in procs:
            p.join(max(1.0, until - time.monotonic()))
        killed = [p for p in procs if p.is_alive()]
        for p in killed:
            p.kill()
    finally:
        stop.set()
        monitor.join()
    recs = [json.loads(f.read_text()) for f in sorted(tmp.glob("w*.json"))]
    shutil.rmtree(tmp, ignore_errors=True)
    reader = optuna.storages.RDBStorage(url)
    final = optuna.load_study(study_name=name, storage=reader).get_trials(deepcopy=False)
    reader.engine.dispose()
    return {"trials": final, "claim_s": [x for r in recs for x in r["claim_s"]],
            "tickets_run": [t for r in recs for t in r["tickets"]], "errors": [e for r in recs for e in r["errors"]],
            "killed": len(killed), "connections_max": max(samples, default=0)}
