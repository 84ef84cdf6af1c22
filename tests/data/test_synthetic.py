"""Synthetic faces: deterministic, well-formed, all classes, learnable but not by a single pixel."""

from __future__ import annotations

import numpy as np
import pytest

from fer_sweep.data.synthetic import FER_TRAIN_COUNTS, synthetic_faces


def test_shapes_and_dtypes():
    x, y = synthetic_faces(50, seed=0)
    assert x.shape == (50, 48, 48) and x.dtype == np.uint8 and x.flags.c_contiguous
    assert y.shape == (50,) and y.dtype == np.int64
    assert x.std() > 20  # not blank: faces on varied backgrounds


def test_same_seed_same_faces_other_seed_other_faces():
    a, b, c = synthetic_faces(64, seed=5), synthetic_faces(64, seed=5), synthetic_faces(64, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_balanced_labels_cover_all_classes():
    _, y = synthetic_faces(700)
    assert np.bincount(y, minlength=7).tolist() == [100] * 7


def test_imbalance_follows_fer2013_training_proportions():
    _, y = synthetic_faces(2000, imbalance=True)
    counts = np.bincount(y, minlength=7)
    expected = 2000 * np.array(FER_TRAIN_COUNTS) / sum(FER_TRAIN_COUNTS)
    assert counts.sum() == 2000 and np.all(np.abs(counts - expected) <= 1)
    _, small = synthetic_faces(20, imbalance=True)
    assert set(small.tolist()) == set(range(7))  # even disgust appears


@pytest.mark.parametrize("n", [0, 1, 3])
def test_tiny_sizes(n):
    x, y = synthetic_faces(n)
    assert x.shape == (n, 48, 48) and y.shape == (n,)


def test_no_single_pixel_gives_the_label_away():
    x, y = synthetic_faces(1400, seed=1)
    flat = x.reshape(len(x), -1).astype(np.float32)
    means = np.stack([flat[y == c].mean(0) for c in range(7)])  # (7, 2304)
    best = max(  # nearest-class-mean accuracy of each pixel alone, in blocks to bound memory
        (np.abs(flat[:, None, p:p + 256] - means[None, :, p:p + 256]).argmin(1) == y[:, None]).mean(0).max()
        for p in range(0, 2304, 256)
    )
    assert best < 0.35, f"pixel-level giveaway: one pixel alone is {best:.0%} accurate"


def _features(x: np.ndarray) -> np.ndarray:
    """2x2-pooled pixels, standardised per image (cancels lighting and contrast), plus a bias."""
    pooled = x.reshape(len(x), 24, 2, 24, 2).mean((2, 4)).reshape(len(x), -1).astype(np.float32)
    pooled = (pooled - pooled.mean(1, keepdims=True)) / (pooled.std(1, keepdims=True) + 1e-3)
    return np.hstack([pooled, np.ones((len(x), 1), np.float32)])


def test_a_linear_model_learns_it_well_above_chance():
    x, y = synthetic_faces(700, seed=0)
    features, onehot = _features(x), np.eye(7, dtype=np.float32)[y]
    train, held_out = slice(0, 500), slice(500, 700)
    weights = np.zeros((features.shape[1], 7), np.float32)
    for _ in range(300):  # full-batch softmax regression
        logits = features[train] @ weights
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        weights -= 0.05 * (features[train].T @ (p - onehot[train]) / 500 + 1e-3 * weights)
    accuracy = ((features[held_out] @ weights).argmax(1) == y[held_out]).mean()
    assert accuracy > 0.45, f"held-out accuracy {accuracy:.0%} (chance is 14%)"
