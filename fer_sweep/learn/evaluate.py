"""Evaluation on the device: class probabilities (optional TTA), loss, accuracy, macro-F1, confusion.

The views a model sees follow the model and its training record alone: a model trained on random crops takes
crop x crop input (its `input_size`), and gets the centre crop, the centre crop and its mirror, or ten crops
(`tta`: none, flip, tencrop); a model of the whole face gets the face (and its mirror, and shifted copies). So
`fit`, `best`, ensembles and `predict` all score the same weights the same way, with nothing to pass but `tta`."""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from fer_sweep.config import EMOTIONS, IMAGE_SIZE, NUM_CLASSES, UserError, tta_mode
from fer_sweep.learn.augment import Norm, eval_views, normalize_batch
from fer_sweep.learn.device import DeviceSplit, accumulator_dtype, eval_batch_size
from fer_sweep.learn.precision import autocast, resolve_amp


def model_input_size(model: nn.Module) -> int:
    """The side of the input the model takes (`models.build_model` records it; the whole face otherwise)."""
    return int(getattr(getattr(model, "_orig_mod", model), "input_size", IMAGE_SIZE))


def _log_probs(model: nn.Module, x_u8: torch.Tensor, norm: Norm, batch_size: int | None, tta, tta_shift_px: int,
               amp) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, (B, 7) float32 log-probabilities) per batch; with TTA, of the mean of the views' probabilities
    (`augment.eval_views`: the face or its centre crop, its mirror and shifted copies, or ten crops)."""
    dtype = resolve_amp(amp, x_u8.device)
    mode, size, batch_size = tta_mode(tta), model_input_size(model), eval_batch_size(x_u8.device, batch_size)
    for start in range(0, x_u8.shape[0], batch_size):
        x = normalize_batch(x_u8[start:start + batch_size], norm)
        with autocast(x.device, dtype):
            views = [model(v).float().log_softmax(1) for v in eval_views(x, mode, size, tta_shift_px)]
            logp = views[0] if len(views) == 1 else torch.logsumexp(torch.stack(views), 0) - math.log(len(views))
        yield start, logp


def predict_proba(model: nn.Module, x: torch.Tensor, norm: Norm, *, batch_size: int | None = None,
                  tta=False, tta_shift_px: int = 0, amp="auto") -> torch.Tensor:
    """(N, 7) float32 class probabilities for (N, 48, 48) uint8 faces, on their device. `tta` is the record's value
    (False/True/"none"/"flip"/"tencrop"); a crop model gets its crops. `amp` is the precision policy the model was
    trained with (precision.resolve_amp)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            parts = [logp.exp() for _, logp in _log_probs(model, x, norm, batch_size, tta, tta_shift_px, amp)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, NUM_CLASSES, device=x.device)


def evaluate(model: nn.Module, split: DeviceSplit, norm: Norm, *, batch_size: int | None = None, tta=False,
             tta_shift_px: int = 0, label_smoothing: float = 0.0, amp="auto") -> dict:
    """Loss, accuracy, macro-F1, per-class precision/recall/F1/support and the 7x7 confusion
    (rows = true class, columns = predicted). Macro-F1 averages the classes that occur in the labels
    or the predictions (as scikit-learn does). Everything is reduced on the device, read once."""
    if len(split) == 0:
        raise UserError("cannot evaluate an empty split")
    was_training = model.training
    model.eval()
    dtype = accumulator_dtype(split.y.device)
    loss_sum = torch.zeros((), dtype=dtype, device=split.y.device)
    counts = torch.zeros(NUM_CLASSES * NUM_CLASSES, dtype=torch.int64, device=split.y.device)
    try:
        with torch.no_grad():
            for start, logp in _log_probs(model, split.x, norm, batch_size, tta, tta_shift_px, amp):
                y = split.y[start:start + logp.shape[0]]
                loss = -logp.gather(1, y[:, None]).squeeze(1)
                if label_smoothing > 0:  # same target mixture as F.cross_entropy(label_smoothing=)
                    loss = (1 - label_smoothing) * loss - label_smoothing * logp.mean(1)
                loss_sum += loss.sum()
                counts += torch.bincount(y * NUM_CLASSES + logp.argmax(1), minlength=NUM_CLASSES ** 2)
    finally:
        model.train(was_training)
    return scores_from_confusion(loss_sum, counts.view(NUM_CLASSES, NUM_CLASSES).to(dtype))


def scores_from_confusion(loss_sum: torch.Tensor, confusion: torch.Tensor) -> dict:
    tp, support, predicted = confusion.diagonal(), confusion.sum(1), confusion.sum(0)
    n = support.sum()
    precision = tp / predicted.clamp(min=1)
    recall = tp / support.clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    present = (support + predicted) > 0
    macro_f1 = (f1 * present).sum() / present.sum().clamp(min=1)
    head = torch.stack([loss_sum / n, tp.sum() / n, macro_f1])
    values = torch.cat([head, precision, recall, f1, support, confusion.flatten()]).tolist()  # one sync
    (loss, acc, macro), rest = values[:3], values[3:]
    k = NUM_CLASSES
    per_class = [{"class": EMOTIONS[c], "precision": rest[c], "recall": rest[k + c], "f1": rest[2 * k + c],
                  "support": int(rest[3 * k + c])} for c in range(k)]
    confusion_rows = [[int(v) for v in rest[4 * k + r * k:4 * k + (r + 1) * k]] for r in range(k)]
    return {"loss": loss, "acc": acc, "macro_f1": macro, "per_class": per_class, "confusion": confusion_rows}
