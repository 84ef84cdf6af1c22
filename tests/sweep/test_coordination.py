"""The coordination layer under concurrency on a real PostgreSQL server: eight worker processes that claim, sleep for
the training and record a verdict (tests/support/coordination.py; the load test at 64 and 256 workers is
benchmarks/bench_coordination.py), and the tasks of an array job all opening a new database at once (each creates
Optuna's tables)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tests.support.coordination import run_workers


def test_eight_workers_run_each_ticket_once(postgres_url):
    got = run_workers(postgres_url, workers=8, trials=24, sleep_s=0.1, timeout=300)
    assert got["errors"] == [] and got["killed"] == 0, got["errors"][:3]
    finished = [t for t in got["trials"] if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["ticket"] for t in finished) == list(range(24))  # every ticket finished, once
    assert sorted(got["tickets_run"]) == list(range(24))  # and no ticket was claimed by two workers
    assert not [t for t in got["trials"] if t.state == TrialState.RUNNING]
    assert len(got["claim_s"]) == 24 + 8 and min(got["claim_s"]) > 0  # each worker's last claim finds none left
    assert 8 <= got["connections_max"] <= 8 * 3, got  # each worker holds its own connection(s), and only those


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
