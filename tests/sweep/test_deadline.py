"""`run --timeout` underneath (sweep/signals.py, worker_loop): durations, and a deadline that interrupts a trial only
inside its training, never while a verdict is being written."""

from __future__ import annotations

import time

import pytest

from fer_sweep.config import UserError
from fer_sweep.sweep.signals import DeadlineReached, deadline_alarm, parse_duration, past


@pytest.mark.parametrize("text,seconds", [("20s", 20), ("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400),
                                          ("45", 45), ("2d", 172800), (" 10M ", 600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "0", "1h30", "abc", "-5s", "5x", "m", "1e3s", "inf"])
def test_bad_durations_name_the_flag(text):
    with pytest.raises(UserError, match=r"^--timeout "):
        parse_duration(text)


def _busy(seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass


def _inside(frame) -> bool:
    """The test's stand-in for "inside Training.run": anywhere under `_interruptible_work`."""
    while frame is not None:
        if frame.f_code is _interruptible_work.__code__:
            return True
        frame = frame.f_back
    return False


def _interruptible_work(seconds: float) -> None:
    _busy(seconds)


def test_deadline_interrupts_only_where_allowed_and_once():
    order = []
    start = time.monotonic()
    with pytest.raises(DeadlineReached):
        with deadline_alarm(time.time() + 0.2, _inside, retry_s=0.05):
            _busy(0.5)  # not interruptible: the alarm waits
            order.append(("busy done", time.monotonic() - start))
            _interruptible_work(5)  # interrupted at once (the deadline is long past)
    took = time.monotonic() - start
    assert order and order[0][1] >= 0.5 and took < 1.5, (order, took)
    assert past(time.time() - 1) and not past(None) and not past(time.time() + 60)


def test_no_deadline_no_alarm():
    with deadline_alarm(None):
        _interruptible_work(0.1)
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_alarm_is_cancelled_on_the_way_out():
    import signal

    with deadline_alarm(time.time() + 30, _inside):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    _interruptible_work(0.05)  # nothing fires later
