"""`run --backend wandb`: create the W&B sweep for a spec and run a local `wandb agent` loop of its trials."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from fer_sweep.config import UserError, first_line
from fer_sweep.sweep.spec import SweepSpec, dump_spec
from fer_sweep.sweep.tracking import logged_in
from fer_sweep.sweep.wandb_backend.mapping import dump_config, sweep_config

LOGIN_HINT = "run `wandb login` (or set WANDB_API_KEY)"


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
    except Exception as e:  # noqa: BLE001 - any failure of wandb.sweep is the one line
        raise UserError(f"wandb: could not create the sweep ({type(e).__name__}: {first_line(e, 160)})") from None
    wandb.agent(sweep_id, project=spec.wandb.project, entity=spec.wandb.entity, count=spec.trials)
    return {"sweep_id": sweep_id, "config": str(folder / "sweep.yaml"), "runs": spec.trials,
            "project": spec.wandb.project, "entity": spec.wandb.entity}
