"""Ensembles (results/ensemble.py): greedy selection with replacement, and one read of the test split after
selection on validation only."""

from __future__ import annotations

import dataclasses
import traceback

import numpy as np
import pytest

from fer_sweep.data.splits import Split
from fer_sweep.results import ensemble
from fer_sweep.sweep import launch as runner
from fer_sweep.sweep.spec import load_spec


def _proba(p_true: list[float]) -> np.ndarray:
    """(N, 7) rows with p_true on class 0 and the rest spread evenly."""
    p = np.asarray(p_true, dtype=np.float32)[:, None]
    return np.concatenate([p, np.repeat((1 - p) / 6, 6, axis=1)], axis=1)


def test_selection_picks_with_replacement_and_weights_sum_to_one():
    # A is right on 20 faces, B hedges on all 30: the best mix is ~0.63 A, so the picks go A, B, A, and a fourth
    # pick (either) raises the loss again: the best prefix has three picks; C (uniform) is never picked.
    a, b, c = _proba([0.9] * 20 + [0.1] * 10), _proba([0.3] * 20 + [0.6] * 10), _proba([1 / 7] * 30)
    y = np.zeros(30, dtype=np.int64)
    sel = ensemble.greedy_select(np.stack([a, b, c]), y, picks=4)
    assert sel.order == (0, 1, 0) and list(sel.counts) == [2, 1, 0]
    assert sel.weights.sum() == pytest.approx(1.0) and sel.weights[0] == pytest.approx(2 / 3)
    assert sel.path[2] < sel.path[1] < sel.path[0] and sel.path[3] > sel.path[2]
    assert ensemble.greedy_select(np.stack([b]), y, picks=3).order == (0,)  # one model: itself, weight 1


class CountingSplit:
    """A split that records every read of its arrays and the function that read it."""

    def __init__(self, split: Split):
        self.split, self.reads = split, []

    def _read(self, name: str):
        self.reads.append((name, traceback.extract_stack()[-3].name))
        return getattr(self.split, name)

    x = property(lambda self: self._read("x"))
    y = property(lambda self: self._read("y"))


def test_test_split_is_read_once_after_selection_on_validation_only(kept_sweep):
    spec = load_spec(kept_sweep["spec"])
    splits = runner.load_data(spec)
    real = CountingSplit(splits.test)
    built = ensemble.build_ensemble(spec, kept_sweep["study"], kept_sweep["folder"], dataclasses.replace(splits, test=real),
                                    picks=4, device="cpu")["info"]
    assert real.reads == [("x", "_test"), ("y", "_test")]  # once, by the final evaluation
    rng = np.random.default_rng(0)
    noise = CountingSplit(Split(x=rng.integers(0, 256, splits.test.x.shape, dtype=np.uint8),
                                y=(splits.test.y + 1) % 7))
    other = ensemble.build_ensemble(spec, kept_sweep["study"], kept_sweep["folder"], dataclasses.replace(splits, test=noise),
                                    picks=4, device="cpu")["info"]
    assert noise.reads == [("x", "_test"), ("y", "_test")]
    chosen = ("selection", "members", "val/acc", "val/log_loss")
    assert [[m["trial"], m["weight"]] for m in other["members"]] == [[m["trial"], m["weight"]] for m in built["members"]]
    assert {k: other[k] for k in chosen if k != "members"} == {k: built[k] for k in chosen if k != "members"}
    assert sum(m["weight"] for m in built["members"]) == pytest.approx(1.0)
