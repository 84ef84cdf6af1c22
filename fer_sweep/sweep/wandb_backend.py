"""W&B interop: a spec as a W&B Sweeps config, the one-trial entry its agent runs, `run --backend wandb`, `sync`.

The exported sweep runs `python -m fer_sweep.wandb_sweeps SPEC --key=value ...` once per W&B run: the
agent's values are replayed through `space.sample_params` (an `optuna.trial.FixedTrial`) and
`space.to_run_config`, exactly as `best` replays a winner, so a W&B run trains what an Optuna trial with
the same values trains and logs the same metric keys.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from fer_sweep.config import UserError, first_line
from fer_sweep.sweep.spec import ParamSpec, SweepSpec, dump_spec, load_spec
from fer_sweep.sweep.tracking import logged_in

ENTRY_MODULE = "fer_sweep.wandb_sweeps"
METRIC = {"name": "val/acc", "goal": "maximize"}
LOGIN_HINT = "run `wandb login` (or set WANDB_API_KEY)"


# ------------------------------------------------------------------------------------------ export


def sweep_config(spec: SweepSpec, spec_path: str, *, interpreter: str = "${interpreter}", device: str | None = None,
                 overrides: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The W&B Sweeps config equivalent to `spec`: random search over the same space, val/acc maximised,
    hyperband early termination, and a `command` that runs one fer-sweep trial with the agent's values.
    overrides (data, study) are passed on to each trial, which reads `spec_path`."""
    command = ["${env}", interpreter, "-m", ENTRY_MODULE, spec_path]
    command += [f"--{k}={v}" for k, v in (overrides or {}).items() if v is not None]
    if device:
        command.append(f"--device={device}")
    config: dict[str, Any] = {
        "name": spec.study,
        "description": f"fer-sweep study {spec.study}: {spec.trials} trials (wandb agent --count {spec.trials})",
        "project": spec.wandb.project,
        "method": "random",
        "metric": dict(METRIC),
        "early_terminate": {"type": "hyperband", "min_iter": int(spec.pruner.min_epochs),
                            "eta": int(spec.pruner.reduction_factor)},
        "parameters": {p.name: wandb_param(p) for p in spec.space},
        "command": command + ["${args}"],
    }
    if spec.wandb.entity:
        config["entity"] = spec.wandb.entity
    return config


def wandb_param(p: ParamSpec) -> dict[str, Any]:
    """One searched parameter in W&B's syntax (lists such as conv stay JSON strings, as in the Optuna path)."""
    if p.choices:
        return {"values": list(p.choices)}
    if p.is_int:
        low, high, step = int(p.low), int(p.high), int(p.step or 1)
        if p.log:
            return {"distribution": "q_log_uniform_values", "min": low, "max": high, "q": 1}
        if step > 1:
            return {"values": list(range(low, high + 1, step))}
        return {"distribution": "int_uniform", "min": low, "max": high}
    if p.log:
        return {"distribution": "log_uniform_values", "min": float(p.low), "max": float(p.high)}
    if p.step:
        return {"distribution": "q_uniform", "min": float(p.low), "max": float(p.high), "q": float(p.step)}
    return {"distribution": "uniform", "min": float(p.low), "max": float(p.high)}


def dump_config(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)


# ------------------------------------------------------------------------------ agent values -> params


def params_from_args(spec: SweepSpec, args: Sequence[str]) -> dict[str, Any]:
    """`--key=value` strings (the agent's `${args}`) as typed values of the spec's searched parameters."""
    by_name = {p.name: p for p in spec.space}
    params: dict[str, Any] = {}
    for arg in args:
        key, eq, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not eq:
            raise UserError(f"agent argument {arg!r}: expected --name=value")
        if key not in by_name:
            raise UserError(f"agent argument --{key}: not a parameter of {spec.path} "
                            f"(it searches: {', '.join(by_name) or 'nothing'})")
        params[key] = parse_value(by_name[key], text)
    missing = [name for name in by_name if name not in params]
    if missing:
        raise UserError(f"agent arguments: missing {', '.join('--' + m for m in missing)} for {spec.path}")
    return params


def parse_value(p: ParamSpec, text: str):
    """The agent's text for one parameter as the value Optuna would have suggested (snapped to the grid)."""
    if p.choices:
        for choice in p.choices:
            if _same_choice(choice, text):
                return choice
        raise UserError(f"agent argument --{p.name}={text}: not one of {list(p.choices)}")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"agent argument --{p.name}={text}: expected a number") from None
    value = min(max(value, p.low), p.high)  # float noise at the edges of W&B's distributions
    if p.step:
        value = p.low + round((value - p.low) / p.step) * p.step
    return int(round(value)) if p.is_int else round(value, 12)


def _same_choice(choice, text: str) -> bool:
    if isinstance(choice, bool):
        return text.lower() == str(choice).lower()
    if isinstance(choice, (int, float)):
        try:
            return math.isclose(float(text), choice, rel_tol=1e-12)
        except ValueError:
            return False
    if text == str(choice):
        return True
    try:
        return json.loads(text) == json.loads(choice)  # conv: "[[4,3]]" and "[[4, 3]]" are one choice
    except (TypeError, ValueError):
        return False


# -------------------------------------------------------------------------------------- one trial


class _Stopped(Exception):
    """SIGTERM from the agent: W&B's hyperband stopped this run."""


def run_one_trial(spec: SweepSpec, params: Mapping[str, Any], *, device: str = "auto", wandb_mode: str = "online",
                  on_epoch: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train the spec's model with `params` on its train split, validate every epoch, log to the (agent's) run."""
    from fer_sweep.learn.device import pick_device, to_device
    from fer_sweep.learn.train import input_norm
    from fer_sweep.sweep import tracking
    from fer_sweep.sweep.trial import Training, load_data, trial_config, wandb_config

    params, cfg = trial_config(params, spec)
    splits = load_data(spec)
    dev = pick_device(device)
    train, val = to_device(splits.train.x, splits.train.y, dev), to_device(splits.val.x, splits.val.y, dev)
    run = tracking.TrialRun(mode=wandb_mode, project=spec.wandb.project, entity=spec.wandb.entity, group=spec.study,
                            name=None, config=wandb_config(cfg, spec), run_dir=Path("."))
    t = Training.start(cfg)
    main = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if main else None
    try:
        t.run(train, val, norm=input_norm(cfg.train.normalize, train.x), log=run.log, on_epoch=on_epoch)
    except _Stopped:
        t.outcome = "pruned"
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    last = t.last
    summary = {"best/val_acc": last.best_val_acc if last else 0.0, "best/epoch": last.best_epoch if last else 0,
               "outcome": t.outcome, "epochs": last.epoch if last else 0}
    tag = f"pruned@{summary['epochs']}" if t.outcome == "pruned" else t.outcome
    run.finish(tags=[tag], summary=summary)
    return {"params": params, **summary}


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


# ----------------------------------------------------------------------------- run --backend wandb


def require_online(wandb_mode: str, what: str) -> None:
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled") or wandb_mode != "online":
        raise UserError(f"{what} needs W&B online (wandb mode here: {os.environ.get('WANDB_MODE') or wandb_mode}): "
                        f"{LOGIN_HINT}, unset WANDB_MODE, pass --wandb online; offline, use --backend optuna")
    if not logged_in():
        raise UserError(f"{what}: not logged in to W&B: {LOGIN_HINT}")


def run_wandb_sweep(spec: SweepSpec, *, results: Path, wandb_mode: str, device: str = "auto") -> dict[str, Any]:
    """Create the W&B sweep for `spec` and run a local `wandb agent` loop of `spec.trials` runs."""
    require_online(wandb_mode, "--backend wandb")
    import wandb

    folder = Path(results).resolve() / spec.study / "wandb-sweep"
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "spec.yaml"  # the resolved spec (with --data/--trials): the agent's trials read this
    spec_file.write_text(dump_spec(spec))
    config = sweep_config(spec, str(spec_file), interpreter=sys.executable, device=device)
    (folder / "sweep.yaml").write_text(dump_config(config))
    try:
        sweep_id = wandb.sweep(config, project=spec.wandb.project, entity=spec.wandb.entity)
    except Exception as e:
        raise UserError(f"wandb: could not create the sweep ({type(e).__name__}: {first_line(e, 160)})") from None
    wandb.agent(sweep_id, project=spec.wandb.project, entity=spec.wandb.entity, count=spec.trials)
    return {"sweep_id": sweep_id, "config": str(folder / "sweep.yaml"), "runs": spec.trials,
            "project": spec.wandb.project, "entity": spec.wandb.entity}


# -------------------------------------------------------------------------------------------- sync


def offline_runs(folder: Path) -> list[Path]:
    return sorted(p for p in (Path(folder) / "wandb").glob("offline-run-*") if p.is_dir())


def sync_runs(folder: Path, *, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> dict[str, Any]:
    """Upload a study's offline wandb runs with `wandb sync` (runs already synced are skipped by wandb)."""
    runs = offline_runs(folder)
    if not runs:
        raise UserError(f"{folder}/wandb: no offline wandb runs to upload")
    if not logged_in():
        raise UserError(f"not logged in to W&B: {LOGIN_HINT}, then run `fer-sweep sync` again; nothing was uploaded")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}  # WANDB_MODE=offline would make sync a no-op
    proc = run([sys.executable, "-m", "wandb", "sync", *map(str, runs)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise UserError(f"wandb sync failed (exit {proc.returncode}): {last[-1] if last else 'no output'}")
    return {"runs": [str(r) for r in runs], "output": proc.stdout}


if __name__ == "__main__":
    sys.exit(trial_main())
