"""Epoch checkpoints of running trials: one file per ticket beside the study (`checkpoints/ticket-<i>.pt`), replaced
after every epoch and removed when the trial ends; a re-queued trial resumes from its ticket's file.

A checkpoint holds the trial's whole training state (`TrainState.state_dict()`: weights, optimiser, schedule, weight
average, best weights and value, early-stop counter, every generator), its per-epoch history and train seconds, and
what identifies it (the trial's params, the data and splits, the split sizes). One that is cut, or from another
configuration or other data, is refused with one warning line and the trial starts from epoch 0. Writes are atomic
(temporary name, then rename): a kill or a full disk mid-write leaves the previous epoch's checkpoint."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import torch

from fer_sweep.config import Notice, TrainConfig, UserError, first_line
from fer_sweep.learn.checkpoint import save_torch
from fer_sweep.learn.train import check_resumable

FOLDER = "checkpoints"  # <study folder>/checkpoints/ (a shared folder when workers run on several machines)


def checkpoint_path(folder: Path, ticket: int, repeat: int = 0) -> Path:
    """The checkpoint of a ticket's seed: `ticket-<i>.pt` for its first (or only) seed, `ticket-<i>-s<r>.pt` for the
    r-th of spec `repeats`."""
    return Path(folder) / FOLDER / (f"ticket-{ticket}.pt" if repeat == 0 else f"ticket-{ticket}-s{repeat}.pt")


def save_checkpoint(path: Path, identity: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
    """Replace the ticket's checkpoint with `payload` (state, history, train_s) and its identity, atomically; the
    first save of an attempt also removes what earlier attempts killed mid-write left (their temporary files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_torn(path)
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
    """The trial ended: its checkpoint goes, and any temporary file a killed write of its ticket left."""
    if path is not None:
        path.unlink(missing_ok=True)
        _remove_torn(path)


def _remove_torn(path: Path) -> None:
    """Delete the temporary files of writes of this ticket's checkpoint by other processes (`.ticket-<i>.pt.<pid>.tmp`,
    files.atomic_path): only one attempt of a ticket runs at a time, so any other is a write a kill cut short."""
    mine = f".{path.name}.{os.getpid()}.tmp"
    for torn in path.parent.glob(f".{path.name}.*.tmp"):
        if torn.name != mine:
            torn.unlink(missing_ok=True)


def remove_finished(folder: Path, finished_tickets: Iterable[int]) -> list[int]:
    """Delete the checkpoints (and torn writes) of tickets that are finished: left by a kill between a trial's verdict
    and its clean-up. Returns the tickets whose files went."""
    gone = []
    for ticket in finished_tickets:
        first = checkpoint_path(folder, ticket)
        for path in [first, *first.parent.glob(f"ticket-{ticket}-s*.pt")]:
            if path.exists() or any(path.parent.glob(f".{path.name}.*.tmp")):
                remove_checkpoint(path)
                if ticket not in gone:
                    gone.append(ticket)
    return gone
