"""Load test of the coordination layer at scale: the ticket queue, claiming, reaping and result writes with 64 and
256 concurrent workers on a real PostgreSQL server (real processes), the training replaced by a short sleep.

    python benchmarks/bench_coordination.py [--workers 64,256] [--trials-per-worker 4] [--sleep 0.5]
        [--storage rdb,grpc] [--grpc-threads 10] [--max-connections 1000] [--no-write]

Each worker is a process that opens the study and loops as `worker_loop` does: `reap` -> `claim` -> sleep ->
record the verdict (the user attrs `_finish` writes, `tell`, trials.csv rewritten) until no ticket is left. The
workers import only the coordination layer (`fer_sweep.sweep.study`: optuna, SQLAlchemy, psycopg; no torch) and
are forked from one forkserver that has imported it, so 256 of them fit in memory (about 16 GB with their
PostgreSQL backends: run it on a machine with nothing else big running); they all start claiming at
once, as the tasks of an array job do. Measured: finished trials (goal: exactly N), tickets run by more than one
worker (goal: 0), the latency of `claim` and of `reap` + `claim` (p50/p99), of the result writes, and the database
connections held (pg_stat_activity, sampled every 0.25 s).

`--storage grpc` puts Optuna's gRPC storage proxy (`optuna.storages.run_grpc_proxy_server`, one process holding
the database connections, with Optuna's cached storage) between the workers and PostgreSQL. It needs `grpcio`.

It prints the table and replaces its section of benchmarks/RESULTS.md (not with --no-write).
The tests run a small case (8 workers, 24 trials) with a harness of their own (tests/sweep/test_coordination.py,
tests/support/coordination.py): tests and benchmarks import nothing from each other.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import platform
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRELOAD = ["fer_sweep.sweep.study", "fer_sweep.sweep.summary", "psycopg", "sqlalchemy"]
SPEC = {"data": "synthetic", "seed": 0, "pruner": {"type": "none"}, "wandb": {"mode": "disabled"},
        "model": {"arch": "cnn"}, "train": {"epochs": 1},
        "space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "dropout": {"low": 0.0, "high": 0.5}}}


def spec_for(study: str, trials: int):
    from fer_sweep.sweep.spec import parse_spec

    return parse_spec({**SPEC, "study": study, "trials": trials}, f"<{study}>", check_data=False)


# ----------------------------------------------------------------------------------------------- the worker
def worker(k: int, url: str, proxy: tuple[str, int] | None, study_name: str, folder: str, trials: int,
           sleep_s: float, out: str, go, ready, claim_order: str = "spread") -> None:
    """One load-test worker (runs in a forked process): worker_loop's coordination with a sleep for training."""
    import optuna
    from optuna.trial import TrialState

    from fer_sweep.sweep import study as study_module
    from fer_sweep.sweep.study import claim, open_study, reap
    from fer_sweep.sweep.summary import OUTCOME, TICKET, write_trials_csv

    if claim_order == "fifo":  # the order before the spread: every worker tries the queue's head, then the next
        study_module._claim_order = lambda waiting, target: [t for t in waiting
                                                             if (t.user_attrs.get(TICKET) or 0) < target]

    rec: dict = {"claim": [], "reap_claim": [], "write": [], "tickets": [], "errors": []}
    spec = spec_for(study_name, trials)
    try:
        if proxy:
            from fer_sweep.sweep.policies import make_pruner, make_sampler

            storage = optuna.storages.GrpcStorageProxy(host=proxy[0], port=proxy[1])
            storage.wait_server_ready(timeout=60)
            study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(spec),
                                      pruner=make_pruner(spec))
        else:
            study = open_study(spec, Path(folder), url)
        study.get_trials(deepcopy=False)  # connected, like a worker that has loaded its data
    except Exception as e:  # noqa: BLE001 - reported in the table, not raised in a child
        rec["errors"].append(f"open: {type(e).__name__}: {e}"[:300])
        Path(out).write_text(json.dumps(rec))
        ready.release()
        return
    ready.release()
    go.wait()
    rng = random.Random(k)
    while True:
        try:
            t0 = time.perf_counter()
            reap(study)
            t1 = time.perf_counter()
            trial = claim(study, trials, f"w{k}")
            t2 = time.perf_counter()
            rec["claim"].append(t2 - t1)
            rec["reap_claim"].append(t2 - t0)
            if trial is None:
                break
            rec["tickets"].append(trial.user_attrs.get("ticket"))
            time.sleep(sleep_s * rng.uniform(0.5, 1.5))  # the training
            t3 = time.perf_counter()
            attrs = {OUTCOME: "complete", "message": "", "seconds": sleep_s, "worker": f"w{k}",
                     "train_seconds": sleep_s, "epochs": 1, "best_epoch": 1, "best_val_acc": rng.random()}
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            study.tell(trial, attrs["best_val_acc"], state=TrialState.COMPLETE, skip_if_finished=True)
            write_trials_csv(study, Path(folder))
            rec["write"].append(time.perf_counter() - t3)
        except Exception as e:  # noqa: BLE001 - reported in the table, not raised in a child
            rec["errors"].append(f"{type(e).__name__}: {e}"[:300])
            if len(rec["errors"]) > 5:
                break
    Path(out).write_text(json.dumps(rec))


def _prepare(url: str, study_name: str, trials: int, results: str) -> None:
    from fer_sweep.sweep.study import prepare_study

    prepare_study(spec_for(study_name, trials), Path(results), url)


def _proxy_server(url: str, port: int, threads: int) -> None:
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    import optuna

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.storages.run_grpc_proxy_server(optuna.storages.get_storage(url), host="127.0.0.1", port=port,
                                          thread_pool=ThreadPoolExecutor(max_workers=threads))


# -------------------------------------------------------------------------------------------- measurement
def _connections(url: str, app: str, stop: threading.Event, samples: list) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
                         autocommit=True) as conn:
        while not stop.is_set():
            n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchone()[0]
            samples.append(n)
            stop.wait(0.25)


def _available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run_case(url: str, workers: int, trials: int, sleep_s: float = 0.5, storage: str = "rdb",
             grpc_threads: int = 10, study: str | None = None, timeout: float = 1800,
             claim_order: str = "spread") -> dict:
    """One load test: `workers` processes, `trials` tickets, on the PostgreSQL at `url` (directly, or through a
    gRPC proxy); returns the row of the table, and the study's name."""
    import optuna
    from optuna.trial import TrialState

    name = study or f"load-{storage}-{workers}w-{trials}t-{os.getpid()}-{int(time.time())}"
    app = name[:60]  # the workers' (and the proxy's) application_name: what the connection count counts
    url = f"{url}{'&' if '?' in url else '?'}application_name={app}"
    tmp = Path(tempfile.mkdtemp(prefix="fer-load-"))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    setup = ctx.Process(target=_prepare, args=(url, name, trials, str(tmp)))
    setup.start()
    setup.join()
    if setup.exitcode != 0:
        raise RuntimeError(f"preparing the study failed (exit {setup.exitcode})")
    server, proxy = None, None
    if storage == "grpc":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = ctx.Process(target=_proxy_server, args=(url, port, grpc_threads), daemon=True)
        server.start()
        proxy = ("127.0.0.1", port)
    go, ready = ctx.Event(), ctx.Semaphore(0)
    procs = [ctx.Process(target=worker, args=(k, url, proxy, name, str(tmp / name), trials, sleep_s,
                                              str(tmp / f"w{k}.json"), go, ready, claim_order)) for k in range(workers)]
    base_mem = _available_mib()
    stop, samples = threading.Event(), []
    monitor = threading.Thread(target=_connections, args=(url, app, stop, samples), daemon=True)
    monitor.start()
    try:
        for p in procs:
            p.start()
        for _ in procs:
            if not ready.acquire(timeout=600):
                raise RuntimeError("workers did not open the study within 600 s")
        low_mem = _available_mib()
        start = time.perf_counter()
        go.set()
        until = time.monotonic() + timeout
        for p in procs:
            p.join(max(1.0, until - time.monotonic()))
        wall = time.perf_counter() - start
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            p.kill()
    finally:
        stop.set()
        monitor.join()
        if server is not None:
            server.kill()
    recs = [json.loads(f.read_text()) for f in sorted(tmp.glob("w*.json"))]
    claims = [x for r in recs for x in r["claim"]]
    both = [x for r in recs for x in r["reap_claim"]]
    writes = [x for r in recs for x in r["write"]]
    ran = [t for r in recs for t in r["tickets"]]
    errors = [e for r in recs for e in r["errors"]]
    reader = optuna.storages.RDBStorage(url)
    final = optuna.load_study(study_name=name, storage=reader).get_trials(deepcopy=False)
    reader.engine.dispose()
    finished = [t for t in final if t.state == TrialState.COMPLETE]
    per_ticket: dict = {}
    for t in finished:
        per_ticket[t.user_attrs.get("ticket")] = per_ticket.get(t.user_attrs.get("ticket"), 0) + 1
    shutil.rmtree(tmp, ignore_errors=True)
    return {"storage": storage, "claim_order": claim_order, "workers": workers, "trials": trials,
            "finished": len(finished),
            "exact": len(finished) == trials and sorted(per_ticket) == list(range(trials)),
            "duplicates": len(ran) - len(set(ran)) + sum(c - 1 for c in per_ticket.values()),
            "running_left": sum(t.state == TrialState.RUNNING for t in final),
            "claim_p50_ms": 1000 * _pct(claims, 0.5), "claim_p99_ms": 1000 * _pct(claims, 0.99),
            "reap_claim_p50_ms": 1000 * _pct(both, 0.5), "reap_claim_p99_ms": 1000 * _pct(both, 0.99),
            "write_p50_ms": 1000 * _pct(writes, 0.5), "write_p99_ms": 1000 * _pct(writes, 0.99),
            "connections_max": max(samples, default=0),
            "connections_median": statistics.median(samples) if samples else 0,
            "wall_s": wall, "trials_per_s": len(finished) / wall if wall else 0.0,
            "worker_mib": (base_mem - low_mem) / workers, "errors": errors[:3], "n_errors": len(errors),
            "killed": len(alive), "study": name}


# ------------------------------------------------------------------------------------------------- server
def start_postgres(max_connections: int) -> tuple[str, callable]:
    """A throwaway PostgreSQL server on loopback (as tests/pg.py starts one, with more connections allowed)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise SystemExit("needs PostgreSQL's server binaries (apt-get install postgresql)")
    bindir, root = Path(bins[-1]).parent, Path(tempfile.mkdtemp(prefix="fer-pg-bench-"))
    password, data = "bench-pw", root / "data"
    (root / "pw").write_text(password + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for p in (root, root / "pw"):
            os.chown(p, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]

    def run(*cmd):
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "fer", f"--pwfile={root / 'pw'}", "--auth-host=scram-sha-256",
        "--auth-local=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections={max_connections} "
        "-c shared_buffers=128MB", "start")
    run(str(bindir / "createdb"), "-h", str(root), "-p", str(port), "-U", "fer", "sweeps")

    def stop():
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)

    return f"postgresql://fer:{password}@127.0.0.1:{port}/sweeps", stop


def table(rows: list[dict]) -> str:
    lines = ["| storage | claim order | workers | trials | finished (exact) | duplicates | claim p50 / p99 (ms) | "
             "reap+claim p50 / p99 (ms) | result write p50 / p99 (ms) | connections max (median) | trials/s | "
             "MiB/worker |", "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['storage']} | {r['claim_order']} | {r['workers']} | {r['trials']} | {r['finished']} "
                     f"({'yes' if r['exact'] else 'NO'}"
                     f"{'; workers killed at the time limit' if r['killed'] else ''}) | "
                     f"{r['duplicates']} | {r['claim_p50_ms']:.0f} / "
                     f"{r['claim_p99_ms']:.0f} | {r['reap_claim_p50_ms']:.0f} / {r['reap_claim_p99_ms']:.0f} | "
                     f"{r['write_p50_ms']:.0f} / {r['write_p99_ms']:.0f} | {r['connections_max']} "
                     f"({r['connections_median']:.0f}) | {r['trials_per_s']:.1f} | {r['worker_mib']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="64,256")
    ap.add_argument("--trials-per-worker", type=int, default=4)
    ap.add_argument("--sleep", type=float, default=0.5, help="seconds of 'training' per trial (x0.5-1.5, random)")
    ap.add_argument("--storage", default="rdb,grpc", help="rdb (workers on PostgreSQL), grpc (through the proxy)")
    ap.add_argument("--grpc-threads", type=int, default=10, help="the proxy server's thread pool (Optuna's default)")
    ap.add_argument("--max-connections", type=int, default=1000)
    ap.add_argument("--case-timeout", type=float, default=1200,
                    help="seconds a case may run; then its workers are killed")
    ap.add_argument("--claim-order", default="spread", help="spread (fer-sweep's: the head, then at random), fifo "
                    "(every worker in queue order, as before), or both: spread,fifo")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    url, stop = start_postgres(args.max_connections)
    rows = []
    try:
        cases = [(s, o) for o in args.claim_order.split(",") for s in args.storage.split(",")]
        try:
            import grpc  # noqa: F401 - only whether it imports
        except ImportError:
            if any(s == "grpc" for s, _ in cases):
                print("grpcio is not installed (pip install grpcio): the grpc cases are left out", flush=True)
            cases = [(s, o) for s, o in cases if s != "grpc"]
        for storage, order in cases:
            for workers in map(int, args.workers.split(",")):
                row = run_case(url, workers, workers * args.trials_per_worker, args.sleep, storage, args.grpc_threads,
                               claim_order=order, timeout=args.case_timeout)
                rows.append(row)
                print(table([row]).splitlines()[-1], f"wall {row['wall_s']:.1f} s; errors {row['n_errors']} "
                      f"{row['errors'][:1]}; killed {row['killed']}", flush=True)
    finally:
        stop()
    print(table(rows))
    if not args.no_write:
        from benchmarks.common import write_section

        cpu = platform.processor() or platform.machine()
        body = (table(rows) + "\n\n" + f"- machine: {cpu}, {os.cpu_count()} cores, shared with other jobs "
                f"(load average "
                f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end); Python {platform.python_version()}; "
                f"{time.strftime('%Y-%m-%d')}\n"
                f"- command: `.venv/bin/python benchmarks/bench_coordination.py --workers {args.workers} "
                f"--trials-per-worker {args.trials_per_worker} --sleep {args.sleep} --storage {args.storage} "
                f"--claim-order {args.claim_order}`")
        write_section("Coordination at scale: 64 and 256 workers on PostgreSQL", body)


if __name__ == "__main__":
    main()
