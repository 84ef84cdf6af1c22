"""The healing journal (sweep/journal.py): an append cut by a kill is moved aside before the next one, and the
write-delay test hook, set in a child process from the test side (tests/support/slow_writes), cuts appends in two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

from fer_sweep.config import Notice
from fer_sweep.sweep import journal
from fer_sweep.sweep.journal import TORN_SUFFIX, HealingJournal
from tests.support.slow_writes import slow_writes_env

RECORD = {"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}
SLOW_APPEND = """
import sys
from fer_sweep.sweep.journal import HealingJournal
HealingJournal(sys.argv[1]).append_logs([{"op_code": 5, "worker_id": "killed", "trial_id": 7, "text": "x" * 4096}])
"""


def test_an_append_cut_by_a_kill_is_moved_aside_and_the_journal_goes_on(tmp_path):
    path = tmp_path / "journal.log"
    HealingJournal(str(path)).append_logs([RECORD])
    whole = path.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", SLOW_APPEND, str(path)], env={**os.environ, **slow_writes_env(600)})
    deadline = time.monotonic() + 60
    while path.stat().st_size == len(whole) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)  # half-way through its append: the hook holds it there for 600 s
    child.wait()
    cut = path.read_bytes()
    assert cut.startswith(whole) and len(whole) < len(cut) and not cut.endswith(b"\n")
    os.remove(f"{path}.lock")  # the killed writer's lock: what its grace period (LOCK_GRACE_S) breaks
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", Notice)
        backend = HealingJournal(str(path))
    assert backend.healed == len(whole) and path.read_bytes() == whole
    assert any("was cut at byte" in str(w.message) for w in said)
    (torn,) = [json.loads(line) for line in (tmp_path / f"journal.log{TORN_SUFFIX}").read_text().splitlines()]
    assert torn["offset"] == len(whole) and torn["text"].encode() == cut[len(whole):]
    backend.append_logs([RECORD])
    assert HealingJournal(str(path)).all_records() == [RECORD, RECORD]


def test_the_write_delay_hook_pauses_an_append_and_changes_nothing_written(tmp_path, monkeypatch):
    monkeypatch.setattr(journal, "write_delay_s", 0.2)
    backend = HealingJournal(str(tmp_path / "journal.log"))
    started = time.monotonic()
    backend.append_logs([RECORD, {**RECORD, "worker_id": "v"}])
    assert time.monotonic() - started >= 0.2
    assert backend.all_records() == [RECORD, {**RECORD, "worker_id": "v"}]


def test_a_sigterm_while_the_lock_is_held_lands_after_the_append_and_leaves_no_lock(tmp_path, monkeypatch):
    # An interrupt inside Optuna's lock calls left the lock behind, or surfaced as a FileNotFoundError on the lock's
    # `.rename` file in place of the interrupt (a worker then failed its trial as "cannot write", not "SIGTERM").
    from fer_sweep.sweep.signals import Terminated, interrupting

    monkeypatch.setattr(journal, "write_delay_s", 0.3)
    path = tmp_path / "journal.log"
    backend = HealingJournal(str(path))
    with interrupting(signal.SIGTERM):
        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM))  # mid-append, the lock held
        timer.start()
        with pytest.raises(Terminated):
            backend.append_logs([RECORD, {**RECORD, "worker_id": "v"}])
        timer.join()
    assert HealingJournal(str(path)).all_records() == [RECORD, {**RECORD, "worker_id": "v"}]
    assert not os.path.lexists(f"{path}.lock") and not list(tmp_path.glob("*.rename"))
