"""The one trial a W&B agent runs: `python -m fer_sweep.wandb_sweeps SPEC --name=value ...` trains and logs it.

The agent's values are replayed through `space.sample_params` (an `optuna.trial.FixedTrial`) and
`space.to_run_config`, exactly as `best` replays a winner, so a W&B run trains what an Optuna trial with the same
values trains and logs the same metric keys.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from fer_sweep.config import UserError
from fer_sweep.sweep.spec import SweepSpec, load_spec
from fer_sweep.sweep.wandb_backend.mapping import ENTRY_MODULE, params_from_args


class _Stopped(Exception):
    """SIGTERM from the agent: W&B's hyperband stopped this run."""


def run_one_trial(spec: SweepSpec, params: Mapping[str, Any], *, device: str = "auto", wandb_mode: str = "online",
                  on_epoch: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train the spec's model with `params` on its train split, validate every epoch, log to the (agent's) run:
    the trial path a `run` worker takes (`TrialContext`), with W&B's early termination (SIGTERM) as pruning."""
    from fer_sweep.sweep.trial import Training, TrialContext, finish_tracking, trial_config

    params, cfg = trial_config(params, spec)
    ctx = TrialContext.open(spec, Path("."), device=device, wandb_mode=wandb_mode)
    run = ctx.track(cfg, None)
    t = Training.start(cfg)
    main = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if main else None
    try:
        ctx.fit(t, run, on_epoch=on_epoch)
    except _Stopped:
        t.outcome = "pruned"
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    return {"params": params, **finish_tracking(run, t, t.outcome)}


def _raise_stopped(signum, frame):
    raise _Stopped()


def trial_main(argv: list[str] | None = None) -> int:
    """`python -m fer_sweep.wandb_sweeps SPEC [--data D] [--study S] [--device D] [--wandb MODE] --name=value ...`
    (the agent's command; every other `--name=value` is a searched parameter)."""
    parser = argparse.ArgumentParser(prog=f"python -m {ENTRY_MODULE}", allow_abbrev=False)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--data", help="data override (as `run --data`)")
    parser.add_argument("--study", help="study override (the runs' group)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--wandb", default="auto", help="wandb mode (auto: online under an agent when logged in)")
    args, rest = parser.parse_known_args(argv)
    from fer_sweep.sweep import tracking

    try:
        spec = load_spec(args.spec, overrides={"data": args.data, "study": args.study})
        done = run_one_trial(spec, params_from_args(spec, rest), device=args.device,
                             wandb_mode=tracking.resolve_mode(args.wandb))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{done['outcome']} after {done['epochs']} epochs: best val/acc {done['best/val_acc']:.4f} "
          f"at epoch {done['best/epoch']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(trial_main())
