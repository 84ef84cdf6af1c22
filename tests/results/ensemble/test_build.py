"""Building an ensemble (results/ensemble/build.py): one read of the test split, after selection on validation
only."""

from __future__ import annotations

import dataclasses
import traceback

import numpy as np
import pytest

from fer_sweep.data.splits import Split
from fer_sweep.results.ensemble.build import build_ensemble
from fer_sweep.sweep import launch as runner
from fer_sweep.sweep.spec import load_spec


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
    built = build_ensemble(spec, kept_sweep["study"], kept_sweep["folder"], dataclasses.replace(splits, test=real),
                           picks=4, device="cpu")["info"]
    assert real.reads == [("x", "_test"), ("y", "_test")]  # once, by the final evaluation
    rng = np.random.default_rng(0)
    noise = CountingSplit(Split(x=rng.integers(0, 256, splits.test.x.shape, dtype=np.uint8),
                                y=(splits.test.y + 1) % 7))
    other = build_ensemble(spec, kept_sweep["study"], kept_sweep["folder"], dataclasses.replace(splits, test=noise),
                           picks=4, device="cpu")["info"]
    assert noise.reads == [("x", "_test"), ("y", "_test")]
    chosen = ("selection", "members", "val/acc", "val/log_loss")
    assert [[m["trial"], m["weight"]] for m in other["members"]] == [[m["trial"], m["weight"]] for m in built["members"]]
    assert {k: other[k] for k in chosen if k != "members"} == {k: built[k] for k in chosen if k != "members"}
    assert sum(m["weight"] for m in built["members"]) == pytest.approx(1.0)
