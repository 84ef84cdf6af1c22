"""The trainer, run for real on tiny CPU data: fit, stopping rules, determinism, augmentation, metrics."""

import inspect
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fer_sweep.learn import augment as A
from fer_sweep.learn import train as T
from fer_sweep.config import NUM_CLASSES, ModelConfig, TrainConfig, UserError
from fer_sweep.learn.models import build_model
from fer_sweep.data.synthetic import synthetic_faces
from fer_sweep.learn.augment import affine_batch, augment_batch, erase_batch, flip_batch
from fer_sweep.learn.evaluate import evaluate, predict_proba
from fer_sweep.learn.device import DeviceSplit, pick_device, to_device
from fer_sweep.learn.train import fit, input_norm, train_throughput

TINY = ModelConfig(arch="cnn", conv=((8, 3), (16, 3)), fc_units=32, dropout=0.0)
TIMING_KEYS = ("time/epoch_s", "speed/train_img_per_s")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy shared box OpenMP threads that wait
    on each other make every op up to 10x slower; one thread keeps these tests fast either way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_split(n, seed):
    rng = np.random.default_rng(seed)
    return to_device(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, NUM_CLASSES, n), "cpu")


def run(model, train, val, **kw):
    return list(fit(model, train, val, TrainConfig(**{"batch_size": 16, "patience": 0, **kw})))


# ---------------------------------------------------------------- fit
def test_overfits_random_labels():
    data = random_split(64, seed=0)
    model = build_model(TINY, seed=0)
    results = run(model, data, data, epochs=30)
    assert results[-1].stop == "done"
    assert evaluate(model, data, input_norm("unit", data.x))["acc"] >= 0.95


def test_one_result_per_epoch_with_all_metrics():
    data, val = random_split(40, seed=1), random_split(24, seed=2)
    results = run(build_model(TINY, seed=0), data, val, epochs=3)
    assert [r.epoch for r in results] == [1, 2, 3]
    assert [r.stop for r in results] == [None, None, "done"]
    for i, r in enumerate(results):
        assert set(r.metrics) == set(T.METRIC_KEYS)
        assert all(math.isfinite(v) for v in r.metrics.values())
        best = max(x.metrics["val/acc"] for x in results[:i + 1])
        assert r.best_val_acc == best
        assert results[r.best_epoch - 1].metrics["val/acc"] == best
    assert results[0].metrics["train/loss"] == pytest.approx(math.log(7), abs=0.3)


def test_early_stop_after_patience_restores_best_weights():
    train, val = random_split(64, seed=3), random_split(64, seed=4)  # val labels unrelated: acc stalls
    model = build_model(TINY, seed=0)
    results = run(model, train, val, epochs=60, patience=2)
    last = results[-1]
    assert last.stop == "early_stop" and len(results) < 60
    assert last.epoch == last.best_epoch + 2
    best = results[last.best_epoch - 1].metrics
    after = evaluate(model, val, input_norm("unit", train.x))
    assert after["acc"] == last.best_val_acc
    assert after["loss"] == pytest.approx(best["val/loss"], rel=1e-5)


def test_closing_early_keeps_best_weights():
    train, val = random_split(64, seed=5), random_split(32, seed=6)
    model = build_model(TINY, seed=0)
    gen = fit(model, train, val, TrainConfig(epochs=10, batch_size=16, patience=0))
    first = [next(gen) for _ in range(3)]
    gen.close()  # what a pruned trial does
    best = first[first[-1].best_epoch - 1].metrics
    assert evaluate(model, val, (0.0, 255.0))["loss"] == pytest.approx(best["val/loss"], rel=1e-5)


@pytest.mark.parametrize("kw", [dict(optimizer="sgd", lr=1e6), dict(optimizer="adam", lr=1e9, momentum=0.0)])
def test_divergence_stops_without_raising(kw):
    data = random_split(64, seed=7)
    model = build_model(TINY, seed=0)
    results = run(model, data, data, epochs=20, **kw)
    assert results[-1].stop == "diverged"
    assert "epoch" in results[-1].message
    assert all(torch.isfinite(p).all() for p in model.parameters())  # restored, not left at nan/inf


def test_out_of_memory_stops_without_raising(monkeypatch):
    data = random_split(32, seed=17)
    model = build_model(TINY, seed=0)
    calls = []

    def fake_epoch(tr, train):  # the first epoch trains for real, the second runs out of memory
        if calls:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        calls.append(1)
        return real_epoch(tr, train)
    real_epoch = T._train_epoch
    monkeypatch.setattr(T, "_train_epoch", fake_epoch)
    results = run(model, data, data, epochs=5)
    assert [r.stop for r in results] == [None, "oom"]
    assert "out of memory at epoch 2" in results[-1].message and results[-1].best_epoch == 1
    assert evaluate(model, data, (0.0, 255.0))["acc"] == results[0].metrics["val/acc"]


def test_same_seed_same_metrics_other_seed_differs():
    data, val = random_split(48, seed=8), random_split(16, seed=9)
    cfg = dict(epochs=2, aug_flip=True, aug_translate_px=3, aug_rotate_deg=10, aug_scale=0.1, aug_erase_p=0.5)
    model_cfg = ModelConfig(arch="residual", conv=((8, 3), (16, 3)), fc_units=16, dropout=0.3)

    def metrics(seed):
        results = run(build_model(model_cfg, seed=0), data, val, seed=seed, **cfg)
        return [{k: v for k, v in r.metrics.items() if k not in TIMING_KEYS} for r in results]
    a, b, c = metrics(0), metrics(0), metrics(1)
    assert a == b
    assert a != c


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_each_optimizer_runs(optimizer):
    data = random_split(32, seed=10)
    results = run(build_model(TINY, seed=0), data, data, epochs=1, optimizer=optimizer, lr=1e-3,
                  weight_decay=1e-4, nesterov=optimizer == "sgd")
    assert results[-1].stop == "done" and math.isfinite(results[-1].metrics["train/loss"])


@pytest.mark.parametrize("schedule", ["constant", "plateau", "cosine", "onecycle"])
def test_each_schedule_runs(schedule):
    data = random_split(32, seed=11)
    results = run(build_model(TINY, seed=0), data, data, epochs=3, schedule=schedule, warmup_epochs=1, lr=1e-2)
    lrs = [r.metrics["lr"] for r in results]
    assert results[-1].stop == "done" and all(0 <= lr <= 1e-2 + 1e-12 for lr in lrs)
    if schedule in ("cosine", "onecycle"):
        assert lrs[-1] < 1e-4  # annealed to ~0 by the last step
    if schedule == "constant":
        assert lrs == [1e-2] * 3


def test_all_knobs_together():
    data = random_split(40, seed=12)
    cfg = dict(epochs=2, label_smoothing=0.1, class_weights=True, grad_clip=1.0, tta=True, normalize="standard",
               aug_flip=True, aug_translate_px=2, aug_erase_p=0.5)
    results = run(build_model(ModelConfig(arch="vgg", conv=((8, 3), (16, 3)), fc_units=16), seed=0),
                  data, data, **cfg)
    assert results[-1].stop == "done"
    assert all(math.isfinite(v) for v in results[-1].metrics.values())


def test_fewer_images_than_batch_size_still_trains():
    data = random_split(10, seed=13)
    results = run(build_model(TINY, seed=0), data, data, epochs=1, batch_size=64)
    assert results[-1].stop == "done" and math.isfinite(results[-1].metrics["train/loss"])


@pytest.mark.parametrize("field,value", [("optimizer", "lamb"), ("schedule", "step"), ("normalize", "zscore")])
def test_unknown_settings_are_user_errors(field, value):
    data = random_split(8, seed=14)
    with pytest.raises(UserError, match=value):
        fit(build_model(TINY), data, data, TrainConfig(**{field: value}))


def test_learns_synthetic_faces():
    """A few CPU epochs reach >= 90% val accuracy on the synthetic faces (about 94% in practice)."""
    train, val = to_device(*synthetic_faces(2000, seed=0), "cpu"), to_device(*synthetic_faces(350, seed=1), "cpu")
    model = build_model(ModelConfig(arch="residual", conv=((8, 3), (16, 3), (32, 3)), fc_units=64, dropout=0.1),
                        seed=0)
    results = run(model, train, val, epochs=5, batch_size=32, lr=3e-3, schedule="cosine", normalize="standard",
                  aug_flip=True)
    assert results[-1].best_val_acc >= 0.9


# ---------------------------------------------------------------- augmentation
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


SYNCS = (r"\.item\(", r"\.cpu\(", r"\.tolist\(", r"\.numpy\(", r"(?<![\w.])(float|int|bool)\(", r"print\(",
         r"nonzero\(", r"synchronize\(")


def test_step_loop_has_no_host_syncs():
    hot = [T._Trainer.step, T._epoch_batches, A.augment_batch, A.flip_batch, A.affine_batch, A.erase_batch,
           A.normalize_batch]
    for fn in hot:
        code = "\n".join(line.split("#")[0] for line in inspect.getsource(fn).splitlines())
        for sync in SYNCS:
            assert not re.search(sync, code), (fn.__name__, sync)
    loop = inspect.getsource(T._train_epoch)
    assert ".tolist(" not in loop and ".item(" not in loop


# ---------------------------------------------------------------- evaluation
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
    data = random_split(20, seed=15)
    model = build_model(TINY, seed=0)
    norm = (0.0, 255.0)
    p = predict_proba(model, data.x, norm, batch_size=7)
    assert p.shape == (20, 7) and p.dtype == torch.float32
    assert torch.allclose(p.sum(1), torch.ones(20), atol=1e-5)
    mirrored = predict_proba(model, data.x.flip(2), norm)
    tta = predict_proba(model, data.x, norm, tta=True)
    assert torch.allclose(tta, (p + mirrored) / 2, atol=1e-5)


# ---------------------------------------------------------------- devices, normalisation, throughput
def test_pick_device_and_to_device():
    assert pick_device("auto").type in ("cpu", "cuda")
    assert pick_device("cpu") == torch.device("cpu")
    for bad in ("gpu0", "tpu"):
        with pytest.raises(UserError):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA"):
            pick_device("cuda:0")
    split = to_device(np.zeros((3, 48, 48), np.uint8), np.array([0, 6, 2]), "cpu")
    assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64 and len(split) == 3
    with pytest.raises(UserError):
        to_device(np.zeros((3, 48, 48), np.float32), np.zeros(3), "cpu")
    with pytest.raises(UserError):
        to_device(np.zeros((3, 48, 48), np.uint8), np.array([0, 7, 1]), "cpu")


def test_input_norm_modes():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (50, 48, 48), dtype=np.uint8))
    assert input_norm("unit", x) == (0.0, 255.0)
    assert input_norm("sym", x) == (127.5, 127.5)
    mean, std = input_norm("standard", x)
    ref = x.numpy().astype(np.float64)
    assert mean == pytest.approx(ref.mean()) and std == pytest.approx(ref.std())
    with pytest.raises(UserError):
        input_norm("minmax", x)


def test_train_throughput_reports_and_restores_weights():
    data = random_split(40, seed=16)
    model = build_model(TINY, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_throughput(model, data, TrainConfig(batch_size=16), steps=3, warmup=1)
    assert out["train_img_per_s"] > 0 and out["step_ms"] > 0
    assert (out["steps"], out["batch_size"], out["device"]) == (3, 16, "cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_device_split_is_frozen():
    split = DeviceSplit(torch.zeros(1, 48, 48, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64))
    with pytest.raises(Exception):
        split.x = split.x
