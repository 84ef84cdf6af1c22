"""The training recipes of issue 20 in learn/: random crops and the models that take them, ten-crop testing, the
exponential moving average of the weights, the plateau schedule's factor and patience, and its cuts replayed by a
refit without validation. Tiny models and data, one thread."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from fer_sweep.config import ModelConfig, RunConfig, TrainConfig, UserError, canonical_tta, tta_mode
from fer_sweep.data.synthetic import synthetic_faces
from fer_sweep.learn import augment as A
from fer_sweep.learn import train as T
from fer_sweep.learn.checkpoint import model_config, model_from, state_dict_cpu
from fer_sweep.learn.device import to_device
from fer_sweep.learn.evaluate import model_input_size, predict_proba
from fer_sweep.learn.models import build_model, input_size_of, model_for

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TINY = ModelConfig(arch="cnn", conv=((4, 3), (8, 3)), fc_units=8, dropout=0.0)


def faces(n: int, seed: int = 0):
    x, y = synthetic_faces(n, seed=seed)
    return to_device(x, y, CPU)


def numbered(n: int = 3, side: int = 48) -> torch.Tensor:
    """(n, 1, side, side) images whose pixel values say where they are: 1000 * image + 48 * row + column."""
    rows = torch.arange(side).view(side, 1) * 48 + torch.arange(side).view(1, side)
    return torch.stack([rows + 1000 * i for i in range(n)]).unsqueeze(1).float()


# ------------------------------------------------------------------------------------------------ crops
def test_random_crops_are_windows_of_their_own_image_at_random_offsets():
    torch.manual_seed(0)
    x = numbered(64)
    crops = A.random_crop_batch(x, 40)
    assert crops.shape == (64, 1, 40, 40)
    tops, lefts = set(), set()
    for i, c in enumerate(crops[:, 0]):
        top, left = divmod(int(c[0, 0].item()) - 1000 * i, 48)
        assert 0 <= top <= 8 and 0 <= left <= 8
        assert torch.equal(c, x[i, 0, top:top + 40, left:left + 40])  # a true window, of this image
        tops.add(top), lefts.add(left)
    assert len(tops) > 3 and len(lefts) > 3  # one offset per image, not one per batch
    assert A.random_crop_batch(x, 48).equal(x)


def test_augment_batch_crops_after_the_affine_augmentations():
    cfg = TrainConfig(crop=44, aug_flip=True, aug_translate_px=2, aug_erase_p=0.5)
    assert A.augment_batch(torch.zeros(5, 1, 48, 48), cfg).shape == (5, 1, 44, 44)


def test_ten_crops_are_the_corners_and_the_centre_each_mirrored():
    x = numbered(2)
    views = A.ten_crops(x, 40)
    assert len(views) == 10 and all(v.shape == (2, 1, 40, 40) for v in views)
    corners = [(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)]
    for v, (top, left) in zip(views[:5], corners):
        assert torch.equal(v, x[..., top:top + 40, left:left + 40])
    for v, m in zip(views[:5], views[5:]):
        assert torch.equal(m, v.flip(3))
    assert len(A.eval_views(x, "tencrop", 40)) == 10
    # a crop model without ten-crop gets its centre crop (and its mirror with flip); a 48 model the face itself
    assert [v.shape[-1] for v in A.eval_views(x, "none", 40)] == [40]
    assert torch.equal(A.eval_views(x, "flip", 40)[1], A.center_crop(x, 40).flip(3))
    assert torch.equal(A.eval_views(x, "none", 48)[0], x) and len(A.eval_views(x, "flip", 48, 2)) == 10


def test_models_take_the_crop_size_and_evaluation_feeds_them_their_views():
    cfg = RunConfig(TINY, TrainConfig(crop=40, tta="tencrop"))
    model = model_for(cfg, seed=0).eval()
    assert model.input_size == 40 == model_input_size(model) == input_size_of(cfg.train)
    assert model(torch.zeros(2, 1, 40, 40)).shape == (2, 7)
    with pytest.raises(RuntimeError):  # a flatten head is sized for its crop: 48x48 input does not fit
        model(torch.zeros(2, 1, 48, 48))
    data = faces(12)
    norm = (128.0, 64.0)
    proba = predict_proba(model, data.x, norm, tta="tencrop", amp="off")
    x = A.normalize_batch(data.x, norm)
    with torch.no_grad():
        expected = torch.stack([model(v).softmax(1) for v in A.ten_crops(x, 40)]).mean(0)
    assert torch.allclose(proba, expected, atol=1e-5)  # the mean of the ten views' probabilities
    centre = predict_proba(model, data.x, norm, tta=False, amp="off")
    with torch.no_grad():
        assert torch.allclose(centre, model(A.center_crop(x, 40)).softmax(1), atol=1e-5)


def test_a_model_folder_rebuilds_at_its_crop_size_and_old_folders_at_48():
    cfg = RunConfig(TINY, TrainConfig(crop=36))
    model = model_for(cfg, seed=1)
    config = model_config(cfg, (0.0, 255.0))
    again = model_from(config, state_dict_cpu(model))
    assert again.input_size == 36
    old = model_config(RunConfig(TINY, TrainConfig()), (0.0, 255.0))
    for key in ("crop", "ema", "plateau_factor", "plateau_patience", "lr_plan"):  # written before issue 20
        old["train"].pop(key)
    assert model_from(old, state_dict_cpu(build_model(TINY, seed=0))).input_size == 48


def test_tta_values_old_and_new():
    assert [tta_mode(v) for v in (False, True, "none", "flip", "tencrop", None)] == \
        ["none", "flip", "none", "flip", "tencrop", "none"]
    assert [canonical_tta(v) for v in ("none", "flip", "tencrop", True, False)] == [False, True, "tencrop", True, False]
    with pytest.raises(UserError, match="unknown tta"):
        tta_mode("fivecrop")
    data = faces(20)
    with pytest.raises(UserError, match="tencrop needs crop"):
        T.fit(build_model(TINY), data, data, TrainConfig(tta="tencrop"))


# ------------------------------------------------------------------------------------------------ EMA
def test_weight_average_is_the_hand_computed_average_of_the_weights_after_each_step():
    torch.manual_seed(0)
    data = faces(64)
    cfg = TrainConfig(ema=0.9, batch_size=16, optimizer="sgd", lr=0.1, aug_flip=True)
    model = build_model(TINY, seed=0)
    tr = T.start_training(model, data, cfg, (128.0, 64.0), total_steps=10)
    avg = {k: v.detach().clone().double() if v.is_floating_point() else v.clone()
           for k, v in model.state_dict().items()}
    stats = torch.zeros(2)
    for n in range(1, 6):
        T.train_step(tr, data, torch.arange(16 * (n - 1), 16 * n) % 64, stats, measure=False)
        d = min(0.9, (1 + n) / (10 + n))  # the ramp, then the decay
        for k, v in model.state_dict().items():
            avg[k] = d * avg[k] + (1 - d) * v.double() if v.is_floating_point() else v.clone()
    got = tr.ema.model.state_dict()
    assert tr.eval_model is tr.ema.model and tr.ema.updates == 5
    for k, v in avg.items():
        assert torch.allclose(got[k].double(), v.double(), atol=1e-5), k  # BatchNorm's running statistics too
    assert not any(p.requires_grad for p in tr.ema.model.parameters())


def test_fit_with_ema_validates_and_keeps_the_averaged_weights():
    data, val = faces(96, seed=1), faces(48, seed=2)
    cfg = TrainConfig(epochs=2, batch_size=16, patience=0, ema=0.95, lr=3e-3)
    plain = build_model(TINY, seed=0)
    averaged = build_model(TINY, seed=0)
    r_plain = list(T.fit(plain, data, val, dataclasses.replace(cfg, ema=0.0)))
    r_avg = list(T.fit(averaged, data, val, cfg))
    # same seed, same batches: the live weights of the two runs are the same, the kept ones are not
    assert r_plain[-1].metrics["train/loss"] == pytest.approx(r_avg[-1].metrics["train/loss"], rel=1e-4)
    kept = {k: v for k, v in averaged.state_dict().items() if v.is_floating_point()}
    assert any(not torch.allclose(v, plain.state_dict()[k]) for k, v in kept.items())
    best = r_avg[-1].best_epoch
    acc = T.evaluate_as_trained(averaged, val, T.input_norm("unit", data.x), cfg)["acc"]
    assert acc == pytest.approx(r_avg[best - 1].metrics["val/acc"])  # what was validated is what was kept


# ------------------------------------------------------------------------------------------------ plateau
def test_plateau_cuts_the_lr_by_its_factor_after_its_patience():
    data = faces(64, seed=3)
    val = to_device(np.asarray(data.x.numpy()), (np.asarray(data.y.numpy()) + 1) % 7, CPU)  # wrong labels: no gain
    cfg = TrainConfig(epochs=5, batch_size=16, patience=0, schedule="plateau", lr=1e-4, plateau_factor=0.25,
                      plateau_patience=0)
    results = list(T.fit(build_model(TINY, seed=0), data, val, cfg))
    lrs = [r.metrics["lr"] for r in results]
    accs = [r.metrics["val/acc"] for r in results]
    expected, lr, best = [], 1e-4, -1.0
    for acc in accs:  # patience 0: every epoch without a gain cuts the lr for the next one
        expected.append(lr)
        if acc > best * (1 + 1e-4):
            best = acc
        else:
            lr *= 0.25
    assert lrs == pytest.approx(expected) and min(lrs) < 1e-4
    # the defaults: old specs train as before
    assert TrainConfig.plateau_factor == 0.5 and TrainConfig.plateau_patience == 2


def test_a_refit_replays_the_plateau_cuts_without_validation():
    data = faces(64, seed=4)
    plan = (1.0, 1.0, 0.5, 0.25)
    cfg = TrainConfig(epochs=4, batch_size=16, patience=3, schedule="plateau", lr=0.01, lr_plan=plan)
    model = build_model(TINY, seed=0)
    results = list(T.fit(model, data, None, cfg))
    assert [r.metrics["lr"] for r in results] == pytest.approx([0.01 * p for p in plan])
    assert [r.epoch for r in results] == [1, 2, 3, 4] and results[-1].stop == "done"  # no early stopping
    assert all(math.isnan(r.metrics["val/acc"]) for r in results) and results[-1].best_epoch == 4
    with pytest.raises(UserError, match="needs lr_plan"):
        T.fit(build_model(TINY), data, None, dataclasses.replace(cfg, lr_plan=()))
    with pytest.raises(UserError, match="lr_plan"):
        T.fit(build_model(TINY), data, data, dataclasses.replace(cfg, schedule="cosine"))


def test_sgd_nesterov_plateau_crops_tencrop_and_ema_train_together():
    data, val = faces(96, seed=5), faces(32, seed=6)
    cfg = RunConfig(TINY, TrainConfig(epochs=2, batch_size=16, optimizer="sgd", nesterov=True, lr=0.02,
                                      schedule="plateau", crop=40, tta="tencrop", ema=0.99, patience=0))
    model = model_for(cfg, seed=0)
    results = list(T.fit(model, data, val, cfg.train))
    assert results[-1].stop == "done" and all(math.isfinite(r.metrics["val/acc"]) for r in results)
    out = T.train_throughput(model_for(cfg, seed=0), data, cfg.train, steps=2, warmup=1)
    assert out["train_img_per_s"] > 0
    assert isinstance(model, nn.Module) and model.input_size == 40
