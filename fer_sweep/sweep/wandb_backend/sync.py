"""`sync`: upload a study's offline wandb runs with `wandb sync`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from fer_sweep.config import UserError
from fer_sweep.sweep.tracking import logged_in
from fer_sweep.sweep.wandb_backend.launch import LOGIN_HINT


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
