"""`python -m fer_sweep.worker RESULTS/STUDY`: one worker process of a multi-worker sweep (started by `run`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fer_sweep.config import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_sweep.worker")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--name", default="w0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--wandb", default="offline")
    parser.add_argument("--heartbeat", type=int, default=30)
    args = parser.parse_args(argv)
    from fer_sweep.runner import worker_main  # after argparse: `--help` needs no torch

    try:
        ran = worker_main(args.folder, name=args.name, device=args.device, wandb_mode=args.wandb,
                          heartbeat_s=args.heartbeat)
    except KeyboardInterrupt:
        print(f"worker {args.name}: interrupted, its trial was re-queued", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"worker {args.name}: ran {ran} trials", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
