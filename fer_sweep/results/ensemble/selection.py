"""Greedy selection of an ensemble on validation: forward selection with replacement, by log-loss.

Selection is Caruana et al.'s (2004) forward selection with replacement: start from the best single model (the
sweep's winner, the best-ranked kept model), then repeatedly add the kept model that most lowers the validation
log-loss of the weighted average (re-adding one already in raises its weight), up to K picks; keep the prefix
with the lowest validation log-loss (so the winner alone when no addition helps); weights = picks / picks kept.
Log-loss, not accuracy, for the additions: accuracy moves in steps of one face, so on a validation split of a
few thousand faces most candidate additions tie or win by noise, and greedy accuracy stalls or overfits;
log-loss is smooth, rewards a member that fixes confident mistakes before they flip a label, and is what
averaging probabilities optimises. Only validation data is looked at; the test split is read once, after the
choice, by ensemble/build.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from fer_sweep.config import UserError
from fer_sweep.results.ensemble.scores import EPS

CRITERION = "val/log_loss"


@dataclass(frozen=True)
class Selection:
    order: tuple[int, ...]  # candidate indices in pick order (the kept prefix); repeats are re-picks
    counts: np.ndarray  # (M,) how often each candidate was picked
    weights: np.ndarray  # (M,) counts / len(order): sums to 1
    path: tuple[float, ...]  # validation log-loss after each of the K picks


def greedy_select(probas: np.ndarray, y: np.ndarray, picks: int, start: Optional[int] = 0) -> Selection:
    """Forward selection with replacement over (M, N, 7) validation probabilities, up to `picks` picks; the first
    pick is `start` (the best single model), or with None the model of lowest log-loss."""
    if picks < 1 or len(probas) == 0:
        raise UserError(f"--ensemble: needs at least one pick and one model (got {picks} picks, {len(probas)} models)")
    py = probas[:, np.arange(len(y)), y].astype(np.float64)  # (M, N): each model's probability of the true class
    total, order, path = np.zeros(py.shape[1]), [], []
    for k in range(1, picks + 1):
        losses = -np.log(np.clip((total + py) / k, EPS, None)).mean(axis=1)
        best = start if k == 1 and start is not None else int(np.argmin(losses))  # a tie: the better-ranked one
        total += py[best]
        order.append(best)
        path.append(float(losses[best]))
    size = int(np.argmin(path)) + 1  # the best prefix (a tie: the smaller ensemble)
    counts = np.bincount(order[:size], minlength=len(py))
    return Selection(tuple(order[:size]), counts, counts / size, tuple(path))
