"""Scores of given probabilities: accuracy and log-loss (numpy), and evaluate()'s metrics (torch)."""

from __future__ import annotations

import numpy as np
import torch

from fer_sweep.config import EMOTIONS
from fer_sweep.learn.device import accumulator_dtype
from fer_sweep.learn.evaluate import scores_from_confusion  # one definition of the metrics (macro-F1 etc.)

EPS = 1e-12  # probabilities are clipped here before the log


def np_scores(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p = np.clip(proba[np.arange(len(y)), y].astype(np.float64), EPS, None)
    return {"acc": float(np.mean(proba.argmax(1) == y)), "log_loss": float(-np.mean(np.log(p)))}


def proba_scores(proba: torch.Tensor, y: torch.Tensor) -> dict:
    """evaluate()'s metrics of given probabilities: log-loss (as `loss`), acc, macro-F1, per class, confusion."""
    dtype = accumulator_dtype(proba.device)
    p = proba.to(dtype).clamp_min(EPS)
    loss_sum = -p.log().gather(1, y[:, None]).sum()
    k = len(EMOTIONS)
    confusion = torch.bincount(y * k + proba.argmax(1), minlength=k * k).view(k, k).to(dtype)
    return scores_from_confusion(loss_sum, confusion)
