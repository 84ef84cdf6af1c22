"""Faults of the study's storage (sweep/dbfaults.py): a database call tried again until it answers, and given up
with one line after the wait, other errors passing at once; each fault as its one-line error."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time

import optuna
import pytest

from fer_sweep.config import UserError, WriteError
from fer_sweep.sweep.dbfaults import StorageDown, is_db_fault, ride_out, study_fault, study_faults
from fer_sweep.sweep.store import StorageUnreachable, open_storage
from fer_sweep.sweep.worker import STORAGE_ENV
from tests.helpers import make_spec


def _db_down() -> Exception:
    import sqlalchemy.exc

    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection to server at 127.0.0.1 failed"))


def test_ride_out_tries_a_storage_call_again_until_it_answers():
    calls, pauses, said = [], [], []

    def call():
        calls.append(1)
        if len(calls) <= 3:
            raise _db_down()
        return "answer"

    assert ride_out(call, 60, "worker w0", say=said.append, sleep=pauses.append) == "answer"
    assert len(calls) == 4 and pauses == [0.5, 1.0, 2.0]
    assert len(said) == 2 and "stopped answering" in said[0] and "up to 60 s" in said[0]
    assert "answers again" in said[1]


def test_ride_out_gives_up_with_one_line_and_passes_other_errors_at_once():
    def down():
        raise _db_down()

    with pytest.raises(StorageDown) as gone:  # --db-wait 0: the old behaviour, at once
        ride_out(down, 0, "worker w0", say=pytest.fail, sleep=pytest.fail)
    assert "stopped answering" in str(gone.value) and "\n" not in str(gone.value) and gone.value.waited
    said: list[str] = []
    start = time.monotonic()
    with pytest.raises(StorageDown) as gone:
        ride_out(down, 1.2, "worker w0", say=said.append)  # real sleeps: 0.5, 0.5, then 0.2 s
    assert 1.1 < time.monotonic() - start < 5 and "waited 1 s" in str(gone.value) and len(said) == 1
    with pytest.raises(KeyError):
        ride_out(lambda: {}["x"], 60, "worker w0", say=pytest.fail, sleep=pytest.fail)


def test_study_fault_names_a_full_disk_and_a_database_in_one_line_and_nothing_else():
    full = study_fault(OSError(errno.ENOSPC, "No space left on device", "/r/s/journal.log"))
    assert isinstance(full, WriteError) and "No space left on device" in str(full) and "\n" not in str(full)
    down = study_fault(optuna.exceptions.StorageInternalError("postgresql://fer:pw@h/db went away"))
    assert isinstance(down, StorageDown) and "fer:***@h/db" in str(down) and "pw@" not in str(down)
    assert is_db_fault(_db_down()) and study_fault(_db_down()) is not None
    assert study_fault(KeyError("x")) is None and not is_db_fault(KeyError("x"))
    with pytest.raises(StorageDown):
        with study_faults():
            raise _db_down()
    with pytest.raises(KeyError):
        with study_faults():
            raise KeyError("x")


def _refusing_url() -> str:
    """A PostgreSQL URL on a loopback port nothing listens on: every connection is refused, as while a server
    restarts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://fer:s3cret@127.0.0.1:{port}/sweeps"


def test_a_database_that_refuses_is_one_line_at_open_and_is_waited_for_by_a_worker_starting_then(tmp_path):
    """`run` opening a database that refuses says so in one line (exit 2 there); a worker process starting while
    it refuses (a Slurm task, a worker of a run whose database went away) waits `--db-wait` like any storage call,
    then ends with the one line that says to run the same command (exit 75), never a traceback."""
    url = _refusing_url()
    with pytest.raises(StorageUnreachable) as refused:
        open_storage(tmp_path, url)
    assert is_db_fault(refused.value) and "cannot open" in str(refused.value) and "s3cret" not in str(refused.value)
    with pytest.raises(UserError) as bad:  # a URL no database is behind: no fault to wait out
        open_storage(tmp_path, "nosuchdb://x/y")
    assert not is_db_fault(bad.value)

    folder = tmp_path / "down"
    folder.mkdir()
    make_spec(folder, "spec", 2)  # the saved spec a worker reads (folder/spec.yaml)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fer_sweep.sweep.worker", str(folder), "--db-wait", "2"],
                          env={**os.environ, STORAGE_ENV: url}, capture_output=True, text=True, timeout=120)
    said = proc.stderr.strip().splitlines()
    assert proc.returncode == 75 and "Traceback" not in proc.stderr, proc.stderr
    assert "stopped answering" in said[0] and "trying again for up to 2 s" in said[0], proc.stderr
    assert said[-1].startswith("error:") and "run the same command" in said[-1] and "s3cret" not in proc.stderr
    assert time.monotonic() - started >= 2
