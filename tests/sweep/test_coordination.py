"""The coordination layer under concurrency on a real PostgreSQL server: the small case of the load test
(benchmarks/bench_coordination.py: worker processes that claim, sleep for the training and record a verdict), and
the tasks of an array job all opening a new database at once (each creates Optuna's tables)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

from sqlalchemy.engine import make_url

from benchmarks.bench_coordination import run_case


def test_eight_workers_run_each_ticket_once(postgres_url):
    row = run_case(postgres_url, workers=8, trials=24, sleep_s=0.1, timeout=300)
    assert row["n_errors"] == 0 and row["killed"] == 0, row["errors"]
    assert row["finished"] == 24 and row["exact"] and row["duplicates"] == 0 and row["running_left"] == 0, row
    assert 0 < row["claim_p50_ms"] <= row["claim_p99_ms"]
    assert 8 <= row["connections_max"] <= 8 * 3, row  # each worker holds its own connection(s), and only those


def test_array_tasks_opening_a_new_database_at_once_all_succeed(postgres_url, tmp_path):
    """Six processes create Optuna's tables in an empty database at the same moment, as the tasks of a Slurm array
    do on their first start: the losers of that race retry (store.open_storage) instead of failing."""
    import psycopg

    u = make_url(postgres_url)
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = u.set(database=name).render_as_string(hide_password=False)
    at = time.time() + 8  # after every process has imported optuna
    code = ("import sys, time; from pathlib import Path; from fer_sweep.sweep.store import open_storage\n"
            f"time.sleep(max(0, {at} - time.time())); open_storage(Path(sys.argv[1]), sys.argv[2]).get_all_studies()")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), url], stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    errors = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in errors), [e for rc, e in errors if rc][:1]
