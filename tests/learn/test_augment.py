"""Augmentation on the device (learn/augment.py): flips, affine transforms and erasing, and the tensor maths of
mixup, cutmix, soft-target loss, shift and multi-view TTA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fer_sweep.config import TrainConfig
from fer_sweep.learn.augment import (
    affine_batch,
    augment_batch,
    cutmix_box,
    erase_batch,
    flip_batch,
    mix_batch,
    one_hot,
    shift_batch,
    tta_views,
)


def test_flip_mirrors_and_keeps_shape():
    x = torch.rand(5, 1, 48, 48)
    assert torch.equal(flip_batch(x, p=1.0), x.flip(3))
    assert torch.equal(flip_batch(x, p=0.0), x)
    mixed = flip_batch(x, p=0.5)
    assert all(torch.equal(m, o) or torch.equal(m, o.flip(2)) for m, o in zip(mixed, x))


def test_affine_and_erase_keep_shape_and_dtype():
    x = torch.rand(6, 1, 48, 48)
    assert torch.allclose(affine_batch(x, 0, 0, 0), x, atol=1e-5)  # identity transform
    for out in (affine_batch(x, 4, 15, 0.2), erase_batch(x, 1.0), erase_batch(x, 0.0)):
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert not torch.allclose(affine_batch(x, 4, 15, 0.2), x)
    erased = erase_batch(x + 1, 1.0)  # x + 1 > 0, so zeros mark the erased rectangle
    assert ((erased == 0).flatten(1).sum(1) > 0).all()
    assert torch.equal(erase_batch(x, 0.0), x)
    cfg = TrainConfig(aug_flip=True, aug_translate_px=3, aug_rotate_deg=10, aug_scale=0.1, aug_erase_p=0.5)
    assert augment_batch(x, cfg).shape == x.shape


def batch(n: int = 16):
    torch.manual_seed(0)
    x = torch.randn(n, 1, 48, 48)
    y = torch.arange(n) % 7
    return x, y, one_hot(y, 7)


def test_one_hot_targets_give_the_same_loss_as_class_indices():
    logits = torch.randn(16, 7)
    _, y, t = batch()
    for smoothing in (0.0, 0.1):
        assert torch.allclose(F.cross_entropy(logits, t, label_smoothing=smoothing),
                              F.cross_entropy(logits, y, label_smoothing=smoothing), atol=1e-6)


def test_mixup_is_a_convex_combination_of_the_batch_and_a_permutation():
    x, y, t = batch()
    torch.manual_seed(3)
    mixed, target = mix_batch(x, t, TrainConfig(mixup_alpha=0.4))
    assert torch.allclose(target.sum(1), torch.ones(16))
    lam = target[torch.arange(16), y].min().item()  # the own class keeps at least lam (partners may share it)
    assert 0 < lam <= 1
    # every mixed image is lam * its own + (1 - lam) * some other image of the batch, with the same lam
    lams = set()
    for i in range(16):
        solutions = [j for j in range(16) if j != i or True
                     if torch.allclose(mixed[i], target_weight(target, y, i, j) * x[i]
                                       + (1 - target_weight(target, y, i, j)) * x[j], atol=1e-5)]
        assert solutions, i
        lams.add(round(target_weight(target, y, i, solutions[0]), 5))
    assert len(lams) == 1  # one lambda per batch


def target_weight(target, y, i, j) -> float:
    """Mixing weight of image i's own label, read off the target (exact unless i and its partner j share a label)."""
    if y[i] == y[j]:
        return 1.0 if i == j else 0.5
    return target[i, y[i]].item()


def test_cutmix_pastes_one_box_and_weights_labels_by_its_true_area():
    x, y, t = batch()
    cfg = TrainConfig(cutmix_alpha=1.0)
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, target = mix_batch(x, t, cfg)
        changed = (mixed != x).any(0).squeeze(0)  # pixels replaced in any image: the box
        if not changed.any():
            continue  # lam ~ 1: an empty (or fully clipped) box
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert changed.sum().item() == h * w  # one rectangle
        kept = 1 - h * w / (48 * 48)
        own = torch.tensor([target[i, y[i]].item() for i in range(16)])
        assert own.min().item() == pytest.approx(kept, abs=1e-5)  # images whose partner has another label
        assert torch.allclose(target.sum(1), torch.ones(16))


def test_cutmix_box_is_clipped_to_the_image():
    torch.manual_seed(0)
    for lam in (0.0, 0.3, 0.9, 1.0):
        for _ in range(50):
            top, left, h, w = cutmix_box(48, 48, lam)
            assert 0 <= top and 0 <= left and top + h <= 48 and left + w <= 48
            assert h * w <= round((1 - lam) * 48 * 48) + 2 * 48


def test_mix_prob_and_off_leave_batches_alone():
    x, _, t = batch()
    assert mix_batch(x, t, TrainConfig())[0] is x
    torch.manual_seed(0)
    outs = [mix_batch(x, t, TrainConfig(mixup_alpha=0.2, mix_prob=0.5))[0] is x for _ in range(200)]
    assert 60 < sum(outs) < 140  # about half of the batches are left as they were


def test_shift_moves_pixels_and_repeats_the_border():
    x = torch.arange(48 * 48, dtype=torch.float32).view(1, 1, 48, 48)
    right = shift_batch(x, 2, 0)
    assert torch.equal(right[..., :, 2:], x[..., :, :-2]) and torch.equal(right[..., :, 0], x[..., :, 0])
    down = shift_batch(x, 0, -3)  # up by 3
    assert torch.equal(down[..., :-3, :], x[..., 3:, :]) and torch.equal(down[..., -1, :], x[..., -1, :])
    assert shift_batch(x, 0, 0) is x


def test_tta_views():
    x, _, _ = batch(2)
    assert len(list(tta_views(x, False, 0))) == 1
    views = list(tta_views(x, True, 0))
    assert len(views) == 2 and torch.equal(views[1], x.flip(3))
    views = list(tta_views(x, True, 2))
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[5], x.flip(3)) and torch.equal(views[6], shift_batch(x.flip(3), 2, 0))
