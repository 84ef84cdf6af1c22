"""Faults of the study's storage: a database that stopped answering, riding it out, each fault as one line.

A full disk while writing is an OSError, named by fer_sweep.config.write_error; a database storage that does not
answer (a server restarting, a network cut) is Optuna's StorageInternalError or SQLAlchemy's own errors. Storage calls
that may be repeated go through `ride_out`, which tries them again for up to `run --db-wait`."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, Optional, TypeVar

from fer_sweep.config import WriteError, first_line, write_error
from fer_sweep.sweep.store import StorageUnreachable, db_error, mask_url


class StorageDown(WriteError):
    """The study's database stopped answering and did not come back within the wait (`run --db-wait`)."""

    waited = False  # True once `ride_out` waited for it: a caller further out does not wait a second time


def is_db_fault(error: BaseException) -> bool:
    """A database storage that does not answer (a server restarting, a network cut): Optuna's StorageInternalError
    or SQLAlchemy's own errors, which RDBStorage lets through, or a storage that could not be opened for that."""
    return isinstance(error, (StorageDown, StorageUnreachable)) or db_error(error)


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
                assert isinstance(fault, StorageDown)  # what study_fault makes of every database fault
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
