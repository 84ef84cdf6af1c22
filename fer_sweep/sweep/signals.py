"""How a sweep process turns SIGTERM (a cluster preempting the job) into an interrupt like Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


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
        raise Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
