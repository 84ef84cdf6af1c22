"""How a sweep process turns SIGTERM (a cluster preempting the job), and `run --timeout`'s deadline, into an
interrupt like Ctrl-C."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from types import FrameType
from typing import Callable, Iterator

from fer_sweep.config import UserError


class Terminated(KeyboardInterrupt):
    """SIGTERM, which clusters send to preempt a job: handled like Ctrl-C (the running trial is failed as
    `interrupted` and re-queued), then the process exits with 143, what a shell reports for SIGTERM."""

    signum = signal.SIGTERM  # what a parent forwards to its workers
    exit_code = 143  # 128 + SIGTERM


@contextlib.contextmanager
def interrupting(*signums: int) -> Iterator[None]:
    """While inside, the first of `signums` raises Terminated (SIGTERM) or KeyboardInterrupt (SIGINT) in the
    main thread; later ones are ignored, so a second signal cannot tear the clean-up apart (a scheduler sends
    SIGTERM to every process of a job, and the parent forwards it once more)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for s in signums:
            signal.signal(s, signal.SIG_IGN)
        _interrupt(Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt())

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# Main-thread sections that an interrupt must not cut (`uninterrupted`): their depth, and the interrupt held back
_held = 0
_pending: list[KeyboardInterrupt] = []


def _interrupt(e: KeyboardInterrupt) -> None:
    """Raise `e` in the main thread now, or, inside an `uninterrupted` section, as soon as the section ends."""
    if _held:
        _pending[:] = _pending or [e]
        return
    raise e


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """A main-thread section that Ctrl-C, SIGTERM and `--timeout`'s deadline do not cut: one that arrives inside is
    raised as the section ends. For the journal's lock: an interrupt landing between Optuna's lock calls (its
    release renames the lock aside, then deletes it) leaves a lock behind or raises a misleading FileNotFoundError
    in place of the interrupt. Other threads run their sections as they are (interrupts only land in the main one)."""
    global _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending:
            raise _pending.pop()


def stopped_line(e: KeyboardInterrupt) -> str:
    """The one line a process stopped by Ctrl-C or SIGTERM ends with: how it was stopped, what became of the work
    it had in hand (`e.stopped`, set where that is known: "trial 7 was re-queued"), and how to go on."""
    how = "terminated (SIGTERM)" if getattr(e, "exit_code", 130) == 143 else "interrupted"
    return f"{how}: {getattr(e, 'stopped', None) or 'nothing is lost'}; run the same command again to resume"


def between_trials(e: KeyboardInterrupt) -> None:
    """Mark `e` as having come while no trial trained (claiming the next, writing a verdict): nothing to re-queue."""
    if getattr(e, "stopped", None) is None:
        e.stopped = "no trial was training"  # type: ignore[attr-defined]


class DeadlineReached(KeyboardInterrupt):
    """`run --timeout`'s deadline, reached while a trial trains: the trial is failed as `interrupted` and re-queued,
    as on SIGTERM, and the worker stops; `run` then exits 0 with one line saying how far the study got."""

    exit_code = 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str = "--timeout", zero: bool = False) -> float:
    """Seconds in a duration such as `20s`, `90m`, `2h`, `1h30m` or `1.5h` (a bare number is seconds, as for
    coreutils' `timeout`); anything else, or zero unless `zero`, is a UserError naming the flag."""
    cleaned = text.strip().lower().replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned or (len(parts) > 1 and any(not u for _, u in parts)):
        raise UserError(f"{flag} {text!r}: expected a duration such as 20s, 90m, 2h or 1h30m")
    seconds = sum(float(n) * _UNITS[u or "s"] for n, u in parts)
    if seconds <= 0 and not (zero and seconds == 0):
        raise UserError(f"{flag} {text!r}: the duration must be more than 0")
    return seconds


@contextlib.contextmanager
def deadline_alarm(deadline: float | None, interruptible: Callable[[FrameType | None], bool] = lambda _: True,
                   retry_s: float = 0.2) -> Iterator[None]:
    """While inside, raise DeadlineReached in the main thread at `deadline` (a time.time() value; None: never).

    The interrupt lands only where `interruptible(frame)` says the main thread may be cut short (a worker says:
    inside the training, not while it writes a verdict); elsewhere the alarm tries again every `retry_s`, so
    code between trials runs on and sees the deadline itself. One interrupt at most; SIGALRM is the timer."""
    if deadline is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if interruptible(frame) and not _held:
            raise DeadlineReached(f"deadline (--timeout) reached at {time.strftime('%H:%M:%S')}")
        signal.setitimer(signal.ITIMER_REAL, retry_s)

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.time(), 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def past(deadline: float | None) -> bool:
    """Whether `deadline` (a time.time() value, or None for none) has passed."""
    return deadline is not None and time.time() >= deadline
