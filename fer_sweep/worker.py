"""`python -m fer_sweep.worker RESULTS/STUDY`: one worker process of a multi-worker sweep (started by `run`);
and how a sweep process turns SIGTERM (a cluster preempting the job) into an interrupt like Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

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
        raise Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_sweep.worker")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--name", default="w0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--wandb", default="offline")
    parser.add_argument("--heartbeat", type=int, default=30)
    args = parser.parse_args(argv)
    with interrupting(signal.SIGINT, signal.SIGTERM):
        try:
            from fer_sweep.runner import worker_main  # after argparse: `--help` needs no torch

            ran = worker_main(args.folder, name=args.name, device=args.device, wandb_mode=args.wandb,
                              heartbeat_s=args.heartbeat)
        except KeyboardInterrupt as e:
            how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            print(f"worker {args.name}: {how}, its trial was re-queued", file=sys.stderr)
            return getattr(e, "exit_code", 130)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"worker {args.name}: ran {ran} trials", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
