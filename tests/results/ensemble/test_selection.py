"""Greedy selection (results/ensemble/selection.py): forward selection with replacement by validation log-loss."""

from __future__ import annotations

import numpy as np
import pytest

from fer_sweep.results.ensemble.selection import greedy_select


def _proba(p_true: list[float]) -> np.ndarray:
    """(N, 7) rows with p_true on class 0 and the rest spread evenly."""
    p = np.asarray(p_true, dtype=np.float32)[:, None]
    return np.concatenate([p, np.repeat((1 - p) / 6, 6, axis=1)], axis=1)


def test_selection_picks_with_replacement_and_weights_sum_to_one():
    # A is right on 20 faces, B hedges on all 30: the best mix is ~0.63 A, so the picks go A, B, A, and a fourth
    # pick (either) raises the loss again: the best prefix has three picks; C (uniform) is never picked.
    a, b, c = _proba([0.9] * 20 + [0.1] * 10), _proba([0.3] * 20 + [0.6] * 10), _proba([1 / 7] * 30)
    y = np.zeros(30, dtype=np.int64)
    sel = greedy_select(np.stack([a, b, c]), y, picks=4)
    assert sel.order == (0, 1, 0) and list(sel.counts) == [2, 1, 0]
    assert sel.weights.sum() == pytest.approx(1.0) and sel.weights[0] == pytest.approx(2 / 3)
    assert sel.path[2] < sel.path[1] < sel.path[0] and sel.path[3] > sel.path[2]
    assert greedy_select(np.stack([b]), y, picks=3).order == (0,)  # one model: itself, weight 1
