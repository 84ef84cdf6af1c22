"""A spec in W&B Sweeps' syntax and back: the spec as a sweep config, the agent's `--name=value`s as its params.

The exported config's command runs `python -m fer_sweep.wandb_sweeps SPEC --key=value ...` once per W&B run; the
agent's `--key=value` arguments come back here as the spec's typed params (snapped to its grid), which the agent's
trial (wandb_backend/agent.py) replays through the sweep's own two functions.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import yaml

from fer_sweep.config import UserError
from fer_sweep.sweep.spec import ParamSpec, SweepSpec

ENTRY_MODULE = "fer_sweep.wandb_sweeps"
METRIC = {"name": "val/acc", "goal": "maximize"}


# ------------------------------------------------------------------------------------------ export


def sweep_config(spec: SweepSpec, spec_path: str, *, interpreter: str = "${interpreter}", device: str | None = None,
                 overrides: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The W&B Sweeps config equivalent to `spec`: random search over the same space, val/acc maximised,
    hyperband early termination, and a `command` that runs one fer-sweep trial with the agent's values.
    overrides (data, study) are passed on to each trial, which reads `spec_path`. A spec with `repeats` is refused:
    a W&B Sweeps run trains one seed, and its controller ranks runs, not configurations."""
    if spec.repeats > 1:
        raise UserError(f"{spec.path}: repeats: {spec.repeats}: W&B Sweeps trains one seed per run and ranks runs; "
                        "drop repeats, or run the sweep with --backend optuna (the default), which trains them")
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
    low, high = p.bounds()
    if p.is_int:
        ilow, ihigh, step = int(low), int(high), int(p.step or 1)
        if p.log:
            return {"distribution": "q_log_uniform_values", "min": ilow, "max": ihigh, "q": 1}
        if step > 1:
            return {"values": list(range(ilow, ihigh + 1, step))}
        return {"distribution": "int_uniform", "min": ilow, "max": ihigh}
    if p.log:
        return {"distribution": "log_uniform_values", "min": float(low), "max": float(high)}
    if p.step:
        return {"distribution": "q_uniform", "min": float(low), "max": float(high), "q": float(p.step)}
    return {"distribution": "uniform", "min": float(low), "max": float(high)}


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
    low, high = p.bounds()
    value = min(max(value, low), high)  # float noise at the edges of W&B's distributions
    if p.step:
        value = low + round((value - low) / p.step) * p.step
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
