"""Where studies live: results folders, Optuna storages (embedded journal file or a URL), masked URLs."""

from __future__ import annotations

import contextlib
import fcntl
import random
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

import optuna

from fer_sweep.config import UserError, WriteError, first_line, write_error
from fer_sweep.sweep.journal import HealingJournal

JOURNAL = "journal.log"
STORAGE_NOTE = "storage.txt"  # the masked URL of an external storage, so `status` can say which one


def mask_url(url: str) -> str:
    """Hide the password of a storage URL: postgresql://user:secret@host/db -> postgresql://user:***@host/db."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def study_dir(results: Path, study: str) -> Path:
    return Path(results) / study


def find_study(results: Path, study: str | None) -> str:
    """The named study, or the only / most recently used one under `results`."""
    results = Path(results)
    if study:
        if not (results / study / "spec.yaml").is_file():
            raise UserError(f"{results / study}: no study named {study!r} here (run `fer-sweep run` first)")
        return study
    found = sorted((p.parent for p in results.glob("*/spec.yaml")), key=_last_used, reverse=True)
    if not found:
        raise UserError(f"{results}: no study found (run `fer-sweep run SPEC` first, or pass --results DIR)")
    return found[0].name


def _last_used(folder: Path) -> float:
    return max(p.stat().st_mtime for p in [folder / "spec.yaml", *folder.glob("journal.log"), *folder.glob("trials.csv")])


def open_storage(folder: Path, url: str | None, *, heartbeat_s: int = 30,
                 on_stale: Callable | None = None) -> optuna.storages.BaseStorage:
    """The study's storage: `url` if given (RDB with heartbeats), else the journal file in `folder`.

    The journal file backend is safe for many processes on one machine (Optuna's advice over SQLite).
    """
    if url is None and (folder / STORAGE_NOTE).is_file():
        raise UserError(f"{folder}: this study lives in {(folder / STORAGE_NOTE).read_text().strip()}: "
                        "pass the same --storage URL")
    if url is None:
        folder.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(HealingJournal(str(folder / JOURNAL)))
    for attempt in range(6):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and what we need
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                                                  heartbeat_stale_trial_callback=on_stale)
        except Exception as e:  # bad URL, server down, missing driver: one line, password masked
            if attempt < 5 and _schema_race(e):
                time.sleep(0.2 + random.random())  # then the tables are there, made by whoever won
                continue
            msg = mask_url(first_line(e))
            raise UserError(f"storage {mask_url(url)}: cannot open ({msg})") from None
    raise AssertionError("unreachable")


def _schema_race(e: Exception) -> bool:
    """Optuna creating its tables in a new database while another process does the same (the tasks of a Slurm
    array all start at once): PostgreSQL refuses the loser's CREATE with a duplicate key or 'already exists'."""
    return type(e).__name__ in ("IntegrityError", "ProgrammingError") and \
        any(m in str(e) for m in ("duplicate key", "already exists"))


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (guards study creation and the ticket queue)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:  # "a": taking the lock leaves the file as it was
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class StorageDown(WriteError):
    """The study's database stopped answering and did not come back within the wait (`run --db-wait`)."""


def is_db_fault(error: BaseException) -> bool:
    """A database storage that does not answer (a server restarting, a network cut): Optuna's StorageInternalError
    or SQLAlchemy's own errors, which RDBStorage lets through."""
    return isinstance(error, (optuna.exceptions.StorageInternalError, StorageDown)) or \
        type(error).__module__.startswith("sqlalchemy")


def study_fault(error: BaseException) -> Optional[WriteError]:
    """The one-line error for a fault of the study's storage rather than of a trial: an OSError while writing (a
    full disk, a read-only folder) or a database that stopped answering; None for anything else."""
    if isinstance(error, OSError):
        return write_error(error)
    if isinstance(error, StorageDown):
        return error
    if is_db_fault(error):
        return StorageDown(f"the study's storage stopped answering ({mask_url(first_line(error, 200))}): the running "
                           "trial goes back in the queue; run the same command to resume once it answers again")
    return None


DB_WAIT_S = 300.0  # `run --db-wait`'s default: a database restart or a managed failover takes seconds to minutes
RETRY_MAX_S = 10.0  # the longest pause between two tries
T = TypeVar("T")


def ride_out(call: Callable[[], T], wait_s: float, who: str, *, say: Callable[[str], None] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, tried again while the study's database does not answer (0.5 s, then twice as long each time, at
    most RETRY_MAX_S apart) for up to `wait_s` seconds; then StorageDown, the one line. Other errors pass at once.
    For storage calls that may be repeated (reads, writes of a value, a verdict told with skip_if_finished). `say`
    gets one line when the storage stops answering and one when it answers again (default: stderr)."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    started, pause = None, 0.5
    while True:
        try:
            result = call()
        except Exception as e:
            if not is_db_fault(e) or isinstance(e, StorageDown):
                raise
            now = time.monotonic()
            if started is None:
                started = now
                if wait_s > 0:
                    say(f"{who}: the study's storage stopped answering ({mask_url(first_line(e, 160))}); "
                        f"trying again for up to {wait_s:.0f} s (run --db-wait)")
            if now - started >= wait_s:
                fault = study_fault(e)
                if wait_s > 0:
                    fault = StorageDown(f"{fault} (waited {wait_s:.0f} s: --db-wait)")
                fault.waited = True  # a caller further out does not wait a second time
                raise fault from None
            sleep(min(pause, started + wait_s - now))
            pause = min(2 * pause, RETRY_MAX_S)
            continue
        if started is not None:
            say(f"{who}: the study's storage answers again after {time.monotonic() - started:.0f} s; going on")
        return result


@contextlib.contextmanager
def study_faults() -> Iterator[None]:
    """Turn a storage fault (see study_fault) raised inside into its one-line WriteError."""
    try:
        yield
    except Exception as e:
        fault = study_fault(e)
        if fault is None:
            raise
        raise fault from None
