"""Tensor maths of the trainer's newer features: mixup, cutmix, soft-target loss, shift and multi-view TTA;
and the strong spec, which uses them, validated and run small on synthetic faces."""

from __future__ import annotations

import math
import pytest
import torch
import torch.nn.functional as F

from fer_sweep.learn.augment import cutmix_box, mix_batch, one_hot, shift_batch, tta_views
from fer_sweep.config import TrainConfig
from fer_sweep.sweep.spec import load_spec, parse_spec
from tests.test_workers import check_exact, cli, journal_study

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


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


def test_specs_accept_asha_amp_modes_and_a_best_section():
    base = {"data": "synthetic", "space": {"lr": {"choices": [0.001]}}}
    spec = parse_spec({**base, "pruner": {"type": "asha", "min_epochs": 2, "reduction_factor": 3},
                       "train": {"amp": True}, "best": {"epochs": 40, "seeds": 3}}, "s.yaml")
    assert spec.pruner.type == "asha" and spec.train["amp"] == "auto" and spec.best.epochs == 40
    assert parse_spec({**base, "train": {"amp": False}}, "s.yaml").train["amp"] == "off"
    assert parse_spec({**base, "train": {"amp": "bf16"}}, "s.yaml").train["amp"] == "bf16"
    for bad, message in ((dict(train={"amp": "fp16"}), "train.amp: unknown amp 'fp16'"),
                         (dict(best={"seeds": 0}), "best.seeds: must be >= 1"),
                         (dict(best={"epoch": 3}), "best.epoch: unknown key"),
                         (dict(train={"mix_prob": 1.5}), "train.mix_prob: must be <= 1"),
                         (dict(pruner={"type": "asha", "reduction_factor": 1}), "reduction_factor >= 2")):
        with pytest.raises(Exception, match=message.replace("(", r"\(")):
            parse_spec({**base, **bad}, "s.yaml")


def test_strong_spec_validates_and_runs_two_trials_of_one_epoch(tmp_path):
    import subprocess

    import yaml

    raw = yaml.safe_load((ROOT / "sweeps" / "strong.yaml").read_text())
    load_spec(ROOT / "sweeps" / "strong.yaml", check_data=False)
    raw.update({"data": "synthetic", "splits": {"synthetic_n": 300, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                "wandb": {"mode": "disabled"}})
    raw["train"].update({"epochs": 1, "eval_batch_size": 256})
    raw["model"].update({"conv": [[8, 3], [8, 3], [16, 3], [16, 3]], "fc_units": 16})  # the spec's shape, smaller
    raw["space"]["mixup_alpha"] = {"choices": [0.2]}  # both trials mix, so the mixing path runs
    raw["best"] = {"epochs": 2, "seeds": 2}
    spec_path = tmp_path / "strong.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    run = subprocess.run(cli("run", str(spec_path), "--trials", "2", "--results", str(results), "--device", "cpu"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    study = journal_study(results, "strong")
    finished = check_exact(study, spec_path, 2)
    assert all(t.user_attrs["epochs"] == 1 and math.isfinite(t.user_attrs["best_val_acc"]) for t in finished)
    best = subprocess.run(cli("best", "--study", "strong", "--results", str(results), "--device", "cpu", "--json",
                              "--wandb", "disabled"), capture_output=True, text=True, timeout=600)
    assert best.returncode == 0, best.stderr
    metrics = __import__("json").loads(best.stdout)
    assert metrics["seeds"] == 2 and [r["epochs"] for r in metrics["runs"]] == [2, 2]  # the spec's `best:`
