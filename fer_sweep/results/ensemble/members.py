"""Ensemble members and their probabilities: one member's (own norm, TTA and precision), and the weighted average."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from fer_sweep.config import tta_mode
from fer_sweep.learn.evaluate import predict_proba


@dataclass
class Member:
    """One model of an ensemble (a single model is an ensemble of one with weight 1)."""

    name: str
    weight: float
    model: nn.Module
    config: dict  # config.json: model, train (tta, tta_shift_px, amp, eval_batch_size), norm, ...


def member_proba(m: Member, x: torch.Tensor, *, tta: Optional[bool] = None,
                 batch_size: Optional[int] = None) -> torch.Tensor:
    """(N, 7) probabilities of one member with its own norm, TTA (flip or ten crops; a crop model gets its crops)
    and precision. `tta` overrides the TTA for all: False = one view, True = the member's own TTA, or flip for a
    member that has none."""
    t = m.config.get("train") or {}
    own = t.get("tta", False)
    views = own if tta is None else (False if not tta else (own if tta_mode(own) != "none" else True))
    return predict_proba(m.model, x, tuple(m.config["norm"]), tta=views,
                         tta_shift_px=int(t.get("tta_shift_px", 0)), amp=t.get("amp", "auto"),
                         batch_size=batch_size or t.get("eval_batch_size"))  # None: the device's


def combine(probas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The weighted average, summed in member order (so `best` and `predict` get the same numbers)."""
    total = None
    for p, w in zip(probas, weights):
        part = p.float() * float(w)
        total = part if total is None else total + part
    assert total is not None, "combine: no member probabilities"
    return total


def ensemble_proba(members: Sequence[Member], x: torch.Tensor, *, tta: Optional[bool] = None,
                   batch_size: Optional[int] = None) -> torch.Tensor:
    return combine([member_proba(m, x, tta=tta, batch_size=batch_size) for m in members],
                   [m.weight for m in members])
