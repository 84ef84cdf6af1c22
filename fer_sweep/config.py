"""Frozen, typed configuration records shared by every module (stdlib only)."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Mapping, Optional

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)
IMAGE_SIZE = 48  # FER2013 faces are 48x48 grey
# Where FER2013 comes from, for the messages about a data file that is not there
FER2013_SOURCE = ('icml_face_data.csv or fer2013.csv from Kaggle\'s "Challenges in Representation Learning: '
                  'Facial Expression Recognition Challenge"')

# Allowed names, checked by spec validation and by the modules that implement them. The architectures are the
# model registry's names (learn/models.py MODELS), listed nowhere else.
NORMS = ("batch", "layer", "none")
POOLINGS = ("max", "avg", "none")
HEADS = ("flatten", "gap")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "plateau", "cosine", "onecycle")
NORMALIZATIONS = ("unit", "sym", "standard")
AMP_MODES = ("auto", "bf16", "off")
TTA_MODES = ("none", "flip", "tencrop")  # test-time views; a spec's tta: true/false are flip/none


class UserError(Exception):
    """A known user error (bad file, bad spec, bad flag).

    The CLI prints ``str(error)`` as one line on stderr and exits with code 2, never a traceback.
    """


class Notice(UserWarning):
    """What a user should hear that is no error (a journal healed, damaged records skipped): library code warns
    with it, and the CLI shows it as one line on stderr."""


class WriteError(UserError):
    """Writing the study or its results failed (a full disk, a read-only or vanished folder): one line, exit code 75
    (EX_TEMPFAIL: a temporary failure, try again), the running trial re-queued; the same command resumes."""

    exit_code = 75


def write_error(error: OSError) -> WriteError:
    """The one line for an OSError met while writing: the path, the reason, and what to do."""
    where = f"{error.filename}: " if error.filename else ""
    reason = error.strerror or first_line(error)
    fix = "free space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "make the folder writable"
    return WriteError(f"cannot write {where}{reason}: {fix}, then run the same command to resume")


def tta_mode(tta) -> str:
    """A TrainConfig.tta value as one of TTA_MODES: False/None/"none" -> none, True/"flip" -> flip, "tencrop"."""
    if tta is None or tta is False or tta == "none":
        return "none"
    if tta is True or tta == "flip":
        return "flip"
    if tta == "tencrop":
        return "tencrop"
    raise UserError(f"unknown tta {tta!r} (known: true, false, {', '.join(TTA_MODES)})")


def canonical_tta(tta):
    """How a record stores tta: False (none), True (flip) or "tencrop", so `bool(tta)` still says whether a model
    averages views and model folders written before ten-crop existed read exactly as they did."""
    mode = tta_mode(tta)
    return {"none": False, "flip": True}.get(mode, mode)


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception's text as one short line for a message: its first non-blank line (the type's name when it has
    no text), at most `limit` characters. Multi-line messages (pandas, torch) keep their first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one network; every model maps 1x48x48 to 7 logits."""

    arch: str = "cnn"  # a name in the model registry (learn/models.py MODELS)
    conv: tuple[tuple[int, int], ...] = ((32, 3), (64, 3), (128, 3))  # (channels, kernel) per stage
    depth: int = 1  # convs per stage (cnn, vgg) or residual blocks per stage (residual)
    norm: str = "batch"  # batch | layer (GroupNorm(1, C): per sample over C,H,W) | none
    pooling: str = "max"  # max | avg | none (then each stage downsamples with stride 2)
    dropout: float = 0.3  # head dropout probability
    stage_dropout: float = 0.0  # dropout after each stage (0 = off)
    head: str = "flatten"  # flatten | gap (global average pool)
    fc_units: int = 256  # hidden units in the head (0 = straight to the 7 logits)


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained; defaults are the settings of the project's original notebooks."""

    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "adam"  # adam | adamw | sgd | rmsprop
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd / rmsprop only
    nesterov: bool = False  # sgd only
    schedule: str = "constant"  # constant | plateau | cosine | onecycle
    warmup_epochs: int = 0  # linear warm-up, cosine only
    label_smoothing: float = 0.0
    class_weights: bool = False  # inverse-frequency class weights in the loss
    grad_clip: float = 0.0  # max global grad norm (0 = off)
    patience: int = 5  # early stopping on val accuracy, epochs without improvement (0 = off)
    normalize: str = "unit"  # unit [0,1] | sym [-1,1] | standard (train mean/std)
    aug_flip: bool = False  # random horizontal flip
    aug_translate_px: int = 0  # random shift up to this many pixels
    aug_rotate_deg: float = 0.0  # random rotation up to +-deg
    aug_scale: float = 0.0  # random zoom in [1-s, 1+s]
    aug_erase_p: float = 0.0  # probability of random erasing per image
    mixup_alpha: float = 0.0  # mixup: Beta(a, a) mixing weight per batch (0 = off)
    cutmix_alpha: float = 0.0  # cutmix: Beta(a, a) area kept per batch (0 = off); with mixup, one of the two per batch
    mix_prob: float = 1.0  # share of batches that are mixed when mixup or cutmix is on
    tta: bool | str = False  # test-time views (tta_mode): False/none | True/flip (face + mirror) | tencrop (crop > 0:
    #                          4 corner crops + the centre crop, each mirrored); `fit` validates tencrop with the
    #                          centre + mirror
    tta_shift_px: int = 0  # with tta flip: also average over 4 copies shifted by this many pixels (x2 with flips)
    crop: int = 0  # random crop: train on random crop x crop windows of the face, evaluate the centre crop (or ten
    #                crops); the model takes crop x crop input (0 = the whole 48x48 face)
    ema: float = 0.0  # exponential moving average of the weights with this decay per step (0 = off; e.g. 0.999):
    #                   validated, kept and saved with the averaged weights
    plateau_factor: float = 0.5  # plateau schedule: lr multiplier when val/acc stalls
    plateau_patience: int = 2  # plateau schedule: epochs without a val/acc gain before the lr is cut
    lr_plan: tuple[float, ...] = ()  # set by `best --refit`, not a spec key: per-epoch multipliers of lr that the
    #                                  plateau schedule replays instead of watching validation (the selection run's
    #                                  cuts)
    amp: str = "auto"  # precision policy (precision.py): auto (bf16 where native) | bf16 | off; true/false = auto/off
    channels_last: bool = True  # memory layout for convs (faster on CUDA and, measured, on CPU)
    compile: bool = False  # torch.compile the training forward/backward (eval runs the eager module)
    deterministic: bool = False  # deterministic kernels (CUDA: slower), so a rerun reproduces a trial exactly
    seed: int = 0
    eval_batch_size: int | None = None  # None: the device's (device.eval_batch_size: 128 on a CPU, else 1024)


@dataclass(frozen=True)
class RunConfig:
    """One trial's full configuration: the model and how to train it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class EpochResult:
    """What `train.fit` yields after each epoch.

    metrics keys (namespaced, identical in wandb, CSV and JSON): train/loss, train/acc, val/loss,
    val/acc, val/macro_f1, lr, weights/l2, grads/grad_to_weight, time/epoch_s, speed/train_img_per_s.
    stop is None while training goes on, else why it ended: "early_stop", "diverged", "oom",
    or "done" on the last scheduled epoch.
    """

    epoch: int  # 1-based
    metrics: Mapping[str, float]
    best_val_acc: float
    best_epoch: int
    stop: Optional[str] = None
    message: str = ""  # human-readable detail for stop (e.g. "loss is nan at epoch 2")
