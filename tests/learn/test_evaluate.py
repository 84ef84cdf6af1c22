"""Metrics and prediction (learn/evaluate.py): evaluate against a hand computation, predict_proba and flip TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fer_sweep.config import NUM_CLASSES, ModelConfig
from fer_sweep.learn.device import to_device
from fer_sweep.learn.evaluate import evaluate, predict_proba
from fer_sweep.learn.models import build_model
from tests.helpers import random_device_split

pytestmark = pytest.mark.usefixtures("one_thread")


class _PixelClassifier(nn.Module):
    """Predicts the class written in pixel (0, 0) of the un-normalised image (norm = (0, 1))."""

    def forward(self, x):
        return F.one_hot(x[:, 0, 0, 0].round().long(), NUM_CLASSES).float() * 3.0


def test_evaluate_matches_hand_computation():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 4])
    pred = np.array([0, 0, 1, 1, 0, 2, 2, 4, 3, 4])
    x = np.broadcast_to(pred[:, None, None], (10, 48, 48)).astype(np.uint8)  # constant rows: flip-proof
    split = to_device(x, y, "cpu")
    out = evaluate(_PixelClassifier(), split, (0.0, 1.0), batch_size=3)
    confusion = np.zeros((7, 7), int)
    np.add.at(confusion, (y, pred), 1)
    assert out["confusion"] == confusion.tolist()
    assert out["acc"] == pytest.approx(7 / 10)
    # by hand: class 0 p=2/3 r=2/3; 1: p=1/2 r=1/2; 2: p=1 r=2/3; 3: p=1 r=1; 4: p=1/2 r=1; 5, 6 absent
    f1 = [2 / 3, 1 / 2, 0.8, 1.0, 2 / 3]
    assert out["macro_f1"] == pytest.approx(sum(f1) / 5)
    assert [c["f1"] for c in out["per_class"][:5]] == pytest.approx(f1)
    assert [c["support"] for c in out["per_class"]] == [3, 2, 3, 1, 1, 0, 0]
    assert out["per_class"][4]["precision"] == pytest.approx(0.5) and out["per_class"][4]["recall"] == 1.0
    logits = F.one_hot(torch.from_numpy(pred), 7).float() * 3.0
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, torch.from_numpy(y)).item(), rel=1e-6)
    smooth = evaluate(_PixelClassifier(), split, (0.0, 1.0), label_smoothing=0.1, tta=True)
    expected = F.cross_entropy(logits, torch.from_numpy(y), label_smoothing=0.1).item()
    assert smooth["loss"] == pytest.approx(expected, rel=1e-5)


def test_predict_proba_is_a_distribution_and_tta_averages_mirrors():
    data = random_device_split(20, seed=15)
    model = build_model(ModelConfig(arch="cnn", conv=((8, 3), (16, 3)), fc_units=32, dropout=0.0), seed=0)
    norm = (0.0, 255.0)
    p = predict_proba(model, data.x, norm, batch_size=7)
    assert p.shape == (20, 7) and p.dtype == torch.float32
    assert torch.allclose(p.sum(1), torch.ones(20), atol=1e-5)
    mirrored = predict_proba(model, data.x.flip(2), norm)
    tta = predict_proba(model, data.x, norm, tta=True)
    assert torch.allclose(tta, (p + mirrored) / 2, atol=1e-5)
