"""Epoch checkpoints of running trials: one file per ticket beside the study (`checkpoints/ticket-<i>.pt`), replaced
after every epoch and removed when the trial ends; a re-queued trial resumes from its ticket's file.

A checkpoint holds the trial's whole training state (`TrainState.state_dict()`: weights, optimiser, schedule, weight
average, best weights and value, early-stop counter, every generator), its per-epoch history and train seconds, and
what identifies it (the trial's params, the data and splits, the split sizes). One that is cut, or from another
configuration or other data, is refused with one warning line and the trial starts from epoch 0. Writes are atomic
(temporary name, then rename): a kill or a full disk mid-write leaves the previous epoch's checkpoint."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from fer_sweep.config import Notice, TrainConfig, UserError, first_line
from fer_sweep.learn.checkpoint import save_torch
from fer_sweep.learn.train import check_resumable

FOLDER = "checkpoints"  # <study folder>/checkpoints/ (a shared folder when workers run on several machines)


def checkpoint_path(folder: Path, ticket: int) -> Path:
    return Path(folder) / FOLDER / f"ticket-{ticket}.pt"


def save_checkpoint(path: Path, identity: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
    """Replace the ticket's checkpoint with `payload` (state, history, train_s) and its identity, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch(path, {**payload, "identity": dict(identity)})


def load_checkpoint(path: Path, identity: Mapping[str, Any], cfg: TrainConfig) -> Optional[dict[str, Any]]:
    """The ticket's checkpoint if there is one it can resume from, else None (one warning line when there is a file
    that cannot be used: the trial then trains from epoch 0)."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("identity") != dict(identity):
            raise UserError("saved by another configuration or for other data")
        check_resumable(saved["state"], cfg)
    except Exception as e:  # noqa: BLE001 - a file cut by a kill, another torch's or another run's: start over
        warnings.warn(Notice(f"{path}: checkpoint not used ({first_line(e, 160)}): the trial starts from epoch 0"),
                      stacklevel=2)
        return None
    return saved


def remove_checkpoint(path: Optional[Path]) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
