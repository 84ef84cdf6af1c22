"""Where studies live: results folders, Optuna storages (journal file or URL), masked URLs, the folder lock.

What a fault of a storage is, and riding a database outage out, is sweep/dbfaults.py."""

from __future__ import annotations

import contextlib
import fcntl
import random
import re
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import optuna

from fer_sweep.config import UserError, first_line
from fer_sweep.sweep.journal import HealingJournal

JOURNAL = "journal.log"
STORAGE_NOTE = "storage.txt"  # the masked URL of an external storage, so `status` can say which one


class StorageUnreachable(UserError):
    """A database storage that could not be opened because it does not answer (refused, a server restarting, a
    network cut): one line and exit 2 when a run starts; a worker opening it mid-run waits for it (run --db-wait)."""


def db_error(error: BaseException) -> bool:
    """An error of a database storage itself (Optuna's StorageInternalError, SQLAlchemy's own errors), not of ours."""
    return isinstance(error, optuna.exceptions.StorageInternalError) or type(error).__module__.startswith("sqlalchemy")


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
            names = sorted(p.parent.name for p in results.glob("*/spec.yaml"))
            there = f"studies in {results}/: {', '.join(names)}" if names else f"{results}/ holds no study"
            raise UserError(f"{results / study}: no study named {study!r} here ({there}; `fer-sweep run SPEC` "
                            "starts one, --results DIR looks in another folder)")
        return study
    found = sorted((p.parent for p in results.glob("*/spec.yaml")), key=_last_used, reverse=True)
    if not found:
        raise UserError(f"{results}: no study found (run `fer-sweep run SPEC` first, or pass --results DIR)")
    return found[0].name


def _last_used(folder: Path) -> float:
    files = [folder / "spec.yaml", *folder.glob("journal.log"), *folder.glob("trials.csv")]
    return max(p.stat().st_mtime for p in files)


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
        except Exception as e:  # noqa: BLE001 - a schema race is retried, anything else is raised
            if attempt < 5 and _schema_race(e):
                time.sleep(0.2 + random.random())  # then the tables are there, made by whoever won
                continue
            msg = mask_url(first_line(e))
            unreachable = isinstance(e, optuna.exceptions.StorageInternalError) or \
                (db_error(e) and type(e).__name__ in ("OperationalError", "InterfaceError"))  # not a bad URL
            raise (StorageUnreachable if unreachable else UserError)(f"storage {mask_url(url)}: cannot open ({msg})") \
                from None
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
