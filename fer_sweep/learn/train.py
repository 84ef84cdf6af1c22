"""Train one model on device-resident uint8 faces: the `fit` generator and `train_throughput`.

Speed rules: the data is copied to the device once as uint8; every epoch draws one `randperm` on the
device and slices batches from it; normalisation and augmentation act on whole batches with tensor
ops; the step loop never syncs with the host (loss and accuracy accumulate in device tensors that
are read once per epoch). Precision follows `precision.resolve_amp` (bf16 autocast on CUDA and on CPUs
with native bf16); channels_last on CUDA and CPU, where oneDNN runs NHWC convs faster too; fused
Adam(W) and cudnn autotuning on CUDA.

Recipes beyond the optimiser: random crops (`crop`, in `augment`), an exponential moving average of the weights
(`ema`: `WeightAverage`, updated after every step with foreach ops, no host sync; validation, the best-epoch
snapshot and the saved model are the averaged weights), the plateau schedule with its factor and patience (or, in
a refit without validation, its recorded cuts replayed: `lr_plan`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Generator, Iterator, Mapping, Optional, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from fer_sweep.config import (
    IMAGE_SIZE,
    NORMALIZATIONS,
    NUM_CLASSES,
    OPTIMIZERS,
    SCHEDULES,
    EpochResult,
    TrainConfig,
    UserError,
    first_line,
    tta_mode,
)
from fer_sweep.learn.augment import Norm, augment_batch, mix_batch, normalize_batch, one_hot
from fer_sweep.learn.device import DeviceSplit, accumulator_dtype, free_cached_memory, is_oom, sync
from fer_sweep.learn.evaluate import evaluate
from fer_sweep.learn.precision import autocast, resolve_amp

EMA_WARMUP = 10  # the average's decay ramps up as min(ema, (1 + n) / (EMA_WARMUP + n)) over the first steps n
COMPILE_BACKEND = "inductor"  # torch.compile backend ("eager" in tests: same dynamo tracing, no codegen)
METRIC_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/macro_f1", "lr", "weights/l2",
               "grads/grad_to_weight", "time/epoch_s", "speed/train_img_per_s")


def input_norm(mode: str, train_x: torch.Tensor) -> Norm:
    """(mean, std) in 0..255 units: unit -> [0, 1], sym -> [-1, 1], standard -> train mean/std."""
    if mode == "unit":
        return 0.0, 255.0
    if mode == "sym":
        return 127.5, 127.5
    if mode != "standard":
        raise UserError(f"unknown normalize {mode!r} (known: {', '.join(NORMALIZATIONS)})")
    dtype = accumulator_dtype(train_x.device)  # float64 where the device has it (not MPS)
    total = torch.zeros((), dtype=dtype, device=train_x.device)
    squares = torch.zeros_like(total)
    for chunk in train_x.reshape(-1).split(1 << 22):  # chunks keep the float copy small
        chunk = chunk.to(dtype)
        total += chunk.sum()
        squares += chunk.square().sum()
    n = max(train_x.numel(), 1)
    mean = total.item() / n
    std = math.sqrt(max(squares.item() / n - mean * mean, 0.0))
    return mean, (std if std > 1e-3 else 1.0)


# ---------------------------------------------------------------- optimiser, schedule, step
def _check_train(cfg: TrainConfig) -> None:
    for name, value, known in (("optimizer", cfg.optimizer, OPTIMIZERS),
                               ("schedule", cfg.schedule, SCHEDULES), ("normalize", cfg.normalize, NORMALIZATIONS)):
        if value not in known:
            raise UserError(f"unknown {name} {value!r} (known: {', '.join(known)})")
    if cfg.epochs < 1 or cfg.batch_size < 1 or (cfg.eval_batch_size is not None and cfg.eval_batch_size < 1):
        raise UserError("epochs, batch_size and eval_batch_size must be >= 1")
    if cfg.lr <= 0:
        raise UserError(f"lr must be > 0, got {cfg.lr}")
    if cfg.optimizer == "sgd" and cfg.nesterov and cfg.momentum <= 0:
        raise UserError("nesterov needs momentum > 0")
    if tta_mode(cfg.tta) == "tencrop" and not cfg.crop:
        raise UserError("tta tencrop needs crop > 0 (ten crops of crop x crop pixels; models trained on random crops)")
    if not 0 <= cfg.crop <= IMAGE_SIZE:
        raise UserError(f"crop must be 0 (off) or 1..{IMAGE_SIZE}, got {cfg.crop}")
    if not 0.0 <= cfg.ema < 1.0:
        raise UserError(f"ema must be in [0, 1) (0 = off), got {cfg.ema}")
    if not 0.0 < cfg.plateau_factor < 1.0 or cfg.plateau_patience < 0:
        raise UserError(f"plateau_factor must be in (0, 1) and plateau_patience >= 0, got {cfg.plateau_factor} "
                        f"and {cfg.plateau_patience}")
    if cfg.lr_plan and (cfg.schedule != "plateau" or min(cfg.lr_plan) <= 0):
        raise UserError("lr_plan replays the plateau schedule's cuts: positive multipliers, schedule plateau only")


def _optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params, lr, decay = list(model.parameters()), cfg.lr, cfg.weight_decay
    if cfg.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, weight_decay=decay, fused=device.type == "cuda" or None)  # fused: one kernel a step
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=decay, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=decay, momentum=cfg.momentum)


class PlanReplay:
    """The plateau schedule without validation: the lr of epoch e is lr x plan[e-1] (the last entry after the plan
    ends): the cuts a selection run made, replayed by a refit on train + validation. Stepped once per epoch."""

    def __init__(self, opt: torch.optim.Optimizer, base_lr: float, plan: tuple[float, ...]):
        self.opt, self.base_lr, self.plan, self.epoch = opt, base_lr, plan, 1
        self._apply()

    def _apply(self) -> None:
        scale = self.plan[min(self.epoch, len(self.plan)) - 1]
        for group in self.opt.param_groups:
            group["lr"] = self.base_lr * scale

    def step(self, _metric=None) -> None:
        self.epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self._apply()


def _schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
    """Return (scheduler or None, steps per call: True = per step, False = per epoch on val/acc).

    plateau cuts the lr by `plateau_factor` after `plateau_patience` epochs without a val/acc gain; its lr depends
    on the epochs trained so far only, never on the epoch budget, so an ASHA rung compares trials at the learning
    rates they would have at that epoch in a longer run, and `best --epochs` extends the same schedule."""
    if cfg.schedule == "constant":
        return None, True
    if cfg.schedule == "plateau" and cfg.lr_plan:
        return PlanReplay(opt, cfg.lr, tuple(cfg.lr_plan)), False
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience), False
    if cfg.schedule == "onecycle":  # +1: the scheduler is also stepped after the very last batch
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps + 1), True
    warm = cfg.warmup_epochs * steps_per_epoch

    def cosine(step: int) -> float:  # linear warm-up to lr, then cosine down to 0 at the last step
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))
    return torch.optim.lr_scheduler.LambdaLR(opt, cosine), True


def _loss_fn(cfg: TrainConfig, train_y: torch.Tensor) -> Callable[..., torch.Tensor]:
    """Cross-entropy against target distributions (one-hot, or mixed by mixup/cutmix). Probability targets
    never go through nll_loss, which has no deterministic CUDA kernel (torch.use_deterministic_algorithms)."""
    weight = None
    if cfg.class_weights:  # inverse frequency, mean weight over the train samples = 1
        counts = torch.bincount(train_y, minlength=NUM_CLASSES).float()
        weight = torch.where(counts > 0, counts.sum() / (NUM_CLASSES * counts.clamp(min=1)), 0.0)
    return partial(F.cross_entropy, weight=weight, label_smoothing=cfg.label_smoothing)


def use_channels_last(cfg: TrainConfig, device: torch.device, model: nn.Module) -> bool:
    """NHWC suits cuDNN (tensor cores) and oneDNN alike (CPU steps measured ~20-25% faster). Except
    GroupNorm models on CUDA: its CUDA kernel is NCHW-only, so every norm layer would convert the layout
    back and forth (not measurable here, no GPU; from torch's GroupNorm CUDA implementation)."""
    if not cfg.channels_last or device.type not in ("cuda", "cpu"):
        return False
    return not (device.type == "cuda" and any(isinstance(m, nn.GroupNorm) for m in model.modules()))


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """With `enabled`: deterministic kernels only (cuDNN autotuning off), restored afterwards. Without it,
    CUDA autotunes conv algorithms (fixed 48x48 shapes), the faster, not bit-reproducible choice."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    if enabled:
        # cuBLAS needs a fixed workspace to be deterministic; read when its handle is created (first matmul)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1], saved[2]


def _global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.detach().float()) for t in tensors]))


class WeightAverage:
    """An exponential moving average of a model's weights and float buffers (BatchNorm statistics too), in a copy of
    the model: avg = d * avg + (1 - d) * w after every optimiser step, d = min(decay, (1 + n) / (10 + n)) at step n
    (TensorFlow's ExponentialMovingAverage with num_updates: a short run's average, e.g. a trial stopped at an ASHA
    rung, is not dominated by the initial weights); integer buffers (BatchNorm's counter) are copied. One foreach
    lerp per step, on the device, no host sync."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        ours, theirs = self.model.state_dict(), model.state_dict()
        self._floats = [(ours[k], theirs[k]) for k in ours if ours[k].is_floating_point()]
        self._others = [(ours[k], theirs[k]) for k in ours if not ours[k].is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (EMA_WARMUP + self.updates))
        if self._floats:
            avg, live = zip(*self._floats)
            torch._foreach_lerp_(list(avg), list(live), 1.0 - decay)
        for avg, live in self._others:
            avg.copy_(live)


@dataclass
class TrainState:
    """Everything one training run owns and every epoch changes: the model and what drives it (optimiser, schedule,
    weight average), the epoch count, the best-so-far weights and value, the early-stop counter. The one object a
    checkpoint saves and restores; `fit` is a loop over it and `train_step` is its hot path."""

    model: nn.Module  # the module that owns the weights (evaluation runs it eagerly)
    net: nn.Module  # what the training step runs: `model`, or its torch.compile wrapper
    opt: torch.optim.Optimizer
    sched: Any  # an LRScheduler, ReduceLROnPlateau, PlanReplay, or None (constant)
    sched_per_step: bool  # True: stepped after every batch; False: after every epoch on val/acc
    loss_fn: Callable[..., torch.Tensor]
    cfg: TrainConfig
    norm: Norm
    device: torch.device
    amp: Optional[torch.dtype]  # autocast dtype, None = fp32
    channels_last: bool
    ema: Optional[WeightAverage]
    best_weights: dict[str, torch.Tensor]  # on-device copy of the best epoch's (evaluated) weights
    epoch: int = 0  # epochs finished
    best_acc: float = -1.0  # best val/acc so far (nan in a refit, which has no validation)
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one (early stopping)
    stopped_early: bool = False  # early stopping ended the run: a resume trains no further epoch

    @property
    def eval_model(self) -> nn.Module:
        """What is validated and kept: the averaged weights with `ema`, else the model itself."""
        return self.ema.model if self.ema is not None else self.model

    def end_epoch(self, epoch: int, metrics: Mapping[str, float], validated: bool) -> tuple[Optional[str], str]:
        """Book a finished epoch (best weights and value, the early-stop counter, the per-epoch schedule) and say
        whether training stops here: (stop, message), stop None to go on."""
        self.epoch = epoch
        if not validated:  # a refit: every epoch is "the best", the last one is kept
            self.best_acc, self.best_epoch = math.nan, epoch
            _snapshot(self.eval_model, self.best_weights)
        elif metrics["val/acc"] > self.best_acc:
            self.best_acc, self.best_epoch, self.stale = metrics["val/acc"], epoch, 0
            _snapshot(self.eval_model, self.best_weights)
        else:
            self.stale += 1
        if self.sched is not None and not self.sched_per_step:
            self.sched.step(metrics["val/acc"])
        if epoch == self.cfg.epochs:
            stop, message = "done", f"finished {epoch} epochs"
        elif validated and self.cfg.patience > 0 and self.stale >= self.cfg.patience:
            stop, message = "early_stop", f"no val/acc gain for {self.stale} epochs"
            self.stopped_early = True
        else:
            return None, ""
        if validated:
            message += f"; best val/acc {self.best_acc:.4f} at epoch {self.best_epoch}"
        return stop, message

    def state_dict(self) -> dict[str, Any]:
        """Everything `load_state_dict` needs to go on after `self.epoch` epochs as if never stopped (on the same
        device with deterministic kernels: bit for bit): weights, optimiser, schedule, weight average, the best
        weights and value, the early-stop counter, every generator, and what identifies the run. Its tensors are the
        live ones: save it (torch.save) before the next step."""
        ema = None if self.ema is None else {"model": self.ema.model.state_dict(), "updates": self.ema.updates}
        return {"version": STATE_VERSION, "run": run_identity(self.cfg), "epoch": self.epoch,
                "best_acc": self.best_acc, "best_epoch": self.best_epoch, "stale": self.stale,
                "stopped_early": self.stopped_early,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "schedule": None if self.sched is None else self.sched.state_dict(),
                "ema": ema,
                "best_weights": self.best_weights, "rng": rng_state(self.device)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict()` of a run of the same configuration (UserError otherwise)."""
        check_resumable(state, self.cfg)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(state["schedule"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["ema"]["model"])
            self.ema.updates = int(state["ema"]["updates"])
        for key, value in state["best_weights"].items():
            self.best_weights[key].copy_(value)
        self.epoch, self.best_epoch, self.stale = int(state["epoch"]), int(state["best_epoch"]), int(state["stale"])
        self.best_acc, self.stopped_early = float(state["best_acc"]), bool(state["stopped_early"])
        set_rng_state(state["rng"], self.device)


STATE_VERSION = 1  # of TrainState.state_dict(); a checkpoint of another version is refused
BUDGET_FREE_SCHEDULES = ("constant", "plateau")  # the lr of an epoch does not depend on the epoch budget


def run_identity(cfg: TrainConfig) -> dict[str, Any]:
    """What a resumed run must share with the one that saved its state: every setting, except the epoch budget where
    the schedule does not stretch with it (a longer run then goes on where a shorter one ended), and the evaluation
    batch size, which changes no weight (a run saved at another one, or by a version with another default, resumes)."""
    identity = dataclasses.asdict(cfg)
    identity.pop("eval_batch_size")
    if cfg.schedule in BUDGET_FREE_SCHEDULES:
        identity.pop("epochs")
    return identity


def check_resumable(state: Mapping[str, Any], cfg: TrainConfig) -> None:
    """UserError unless `state` (TrainState.state_dict()) was saved by a run of `cfg` (run_identity; the evaluation
    batch size that checkpoints of earlier versions recorded is not compared)."""
    saved = dict(state.get("run") or {})
    saved.pop("eval_batch_size", None)
    if state.get("version") != STATE_VERSION or saved != run_identity(cfg):
        raise UserError("checkpoint: saved by another configuration or another version of fer-sweep; it cannot be "
                        "resumed (train from epoch 0)")


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The generators training draws from: the CPU's (mixing's shape draws; batches on a CPU) and the device's
    (batch order, augmentation, dropout on CUDA or MPS)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    elif device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


def start_training(model: nn.Module, train: DeviceSplit, cfg: TrainConfig, norm: Norm, total_steps: int) -> TrainState:
    """Move `model` to the training split's device and build its training state (layout, optimiser, schedule over
    `total_steps` steps, weight average); the best weights start as the initial ones."""
    device = train.x.device
    model.to(device)
    channels_last = use_channels_last(cfg, device, model)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
    net = compile_model(model) if cfg.compile else model
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    opt = _optimizer(model, cfg, device)
    sched, per_step = _schedule(opt, cfg, steps_per_epoch, total_steps)
    ema = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    return TrainState(model, net, opt, sched, per_step, _loss_fn(cfg, train.y), cfg, norm, device,
                      resolve_amp(cfg.amp, device), channels_last, ema, best_weights=_snapshot(model))


def train_step(state: TrainState, split: DeviceSplit, idx: torch.Tensor, stats: torch.Tensor,
               measure: bool) -> Optional[torch.Tensor]:
    """One optimiser step on split[idx]; adds (loss sum, correct) into `stats` on the device. With `measure`, returns
    the gradient-to-weight norm ratio as a device tensor (two small reductions, read with the epoch's stats)."""
    cfg = state.cfg
    x = augment_batch(normalize_batch(split.x[idx], state.norm), cfg)
    y = split.y[idx]
    x, target = mix_batch(x, one_hot(y, NUM_CLASSES), cfg)
    if state.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(state.device, state.amp):
        logits = state.net(x)
    loss = state.loss_fn(logits.float(), target)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    ratio = None
    if measure:
        params = [p for p in state.model.parameters() if p.grad is not None]
        grads = [p.grad for p in params if p.grad is not None]
        ratio = _global_norm(grads) / _global_norm(params).clamp(min=1e-12)
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.opt.step()
    if state.ema is not None:
        state.ema.update()
    if state.sched is not None and state.sched_per_step:
        state.sched.step()
    stats += torch.stack([loss.detach() * y.shape[0], (logits.detach().argmax(1) == y).sum().float()])
    return ratio


def fit_tta(cfg: TrainConfig):
    """The views `fit` validates every epoch with: the run's own, except that ten-crop runs validate the centre crop
    and its mirror (a fifth of the cost of ten crops, paid every epoch of every trial).
    Wherever a trained model is scored or used (`best`, kept trial models, ensembles, `predict`) it gets its ten."""
    return True if tta_mode(cfg.tta) == "tencrop" else cfg.tta


def evaluate_as_trained(model: nn.Module, split: DeviceSplit, norm: Norm, cfg: TrainConfig, *, tta=None) -> dict:
    """`evaluate` with the run's own precision policy and TTA (`tta` overrides the TTA): what `best` and `predict`
    use, so the same weights report the same accuracy everywhere (`fit` passes `fit_tta`)."""
    return evaluate(model, split, norm, batch_size=cfg.eval_batch_size, tta=cfg.tta if tta is None else tta,
                    tta_shift_px=cfg.tta_shift_px, label_smoothing=cfg.label_smoothing, amp=cfg.amp)


def compile_model(model: nn.Module) -> nn.Module:
    """torch.compile for the training step only. Dynamo's caches are reset first: every trial builds a new
    model, and without the reset the compiled graphs of earlier trials count towards dynamo's recompile
    limit, after which it silently falls back to eager. Evaluation runs the eager module, so the
    eval-mode / no-grad / last-partial-batch variants are never compiled."""
    torch._dynamo.reset()
    return cast(nn.Module, torch.compile(model, backend=COMPILE_BACKEND, dynamic=False))


def epoch_batches(n: int, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Index batches of one epoch from a device randperm; drops the last partial batch (keeps >= 1)."""
    perm = torch.randperm(n, device=device)
    for i in range(max(1, n // batch_size)):
        yield perm[i * batch_size:(i + 1) * batch_size]


# ---------------------------------------------------------------- fit
def fit(model: nn.Module, train: DeviceSplit, val: Optional[DeviceSplit], cfg: TrainConfig, *,
        norm: Norm | None = None, resume: Mapping[str, Any] | None = None,
        checkpoint: Callable[[TrainState, EpochResult], None] | None = None) -> Generator[EpochResult, None, None]:
    """Train `model` on `train`, yielding one `EpochResult` per epoch (validated on `val`).

    With `val` None (a refit on train + validation, `best --refit`) nothing is validated: the run trains exactly
    `cfg.epochs` epochs, the val/* metrics are nan and the model ends holding its last epoch's weights (averaged
    with `ema`); a plateau schedule then needs `cfg.lr_plan`.

    The last result has `stop` set ("done", "early_stop", "diverged" or "oom"; never raised). An
    out-of-memory error before the first epoch (moving the model, the optimiser) yields one "oom" result
    with epoch 0. When iteration ends, however it ends (including the caller closing the generator
    early), the model holds the weights of its best val/acc epoch (the initial weights if no epoch
    finished cleanly). `norm` defaults to `input_norm(cfg.normalize, train.x)`; evaluate later with the
    same one. Seed the model's initialisation yourself (e.g. `build_model(cfg, seed=...)`): `fit` seeds
    the batch order, dropout, augmentation and mixing with `cfg.seed`.

    `checkpoint(state, result)` is called after each epoch is booked, before its result is yielded
    (`state.state_dict()` is what to save); `resume` is such a saved state of a run of the same configuration and
    data: training goes on at the epoch after it, exactly as the run that saved it would have (UserError for another
    configuration's).
    """
    _check_train(cfg)  # bad settings fail at the call, not at the first next()
    if len(train) == 0 or (val is not None and len(val) == 0):
        raise UserError(f"need non-empty train and val splits, got {len(train)} and {len(val or ())}")
    if val is None and cfg.schedule == "plateau" and not cfg.lr_plan:
        raise UserError("the plateau schedule watches validation: without it (a refit) it needs lr_plan")
    resolve_amp(cfg.amp, train.x.device)  # an impossible precision fails at the call too
    if resume is not None:
        check_resumable(resume, cfg)
    return _fit(model, train, val, cfg, norm, resume, checkpoint)


def _fit(model: nn.Module, train: DeviceSplit, val: Optional[DeviceSplit], cfg: TrainConfig, norm: Norm | None,
         resume: Mapping[str, Any] | None,
         checkpoint: Callable[[TrainState, EpochResult], None] | None) -> Generator[EpochResult, None, None]:
    """The training loop (see `fit`): one epoch = the steps over a device permutation, the epoch's one read of its
    stats, validation, then the state books the epoch (best weights, early stop, per-epoch schedule)."""
    device = train.x.device
    with deterministic_mode(cfg.deterministic, device):
        torch.manual_seed(cfg.seed)
        state = _start_or_oom(model, train, cfg, norm, resume)
        if isinstance(state, EpochResult):
            yield state
            return
        own_rng = None  # this run's generators between its epochs: runs that take turns (a trial's seeds) draw alone
        try:
            for epoch in range(state.epoch + 1, cfg.epochs + 1 if not state.stopped_early else 0):
                if own_rng is not None:
                    set_rng_state(own_rng, device)
                t0 = time.perf_counter()
                metrics, problem = dict.fromkeys(METRIC_KEYS, math.nan), None
                try:
                    state.net.train()
                    stats = torch.zeros(2, device=device)
                    batches = list(epoch_batches(len(train), cfg.batch_size, device))
                    for i, idx in enumerate(batches):
                        ratio = train_step(state, train, idx, stats, measure=i == len(batches) - 1)
                    seen = sum(idx.shape[0] for idx in batches)
                    assert ratio is not None  # the last step measures it
                    weight_l2 = _global_norm(list(state.model.parameters()))
                    loss_sum, correct, grad_ratio, l2 = torch.cat(  # the epoch's one read of the training stats
                        [stats, ratio.view(1).float(), weight_l2.view(1)]).tolist()
                    metrics.update({"train/loss": loss_sum / seen, "train/acc": correct / seen, "weights/l2": l2,
                                    "grads/grad_to_weight": grad_ratio, "lr": state.opt.param_groups[0]["lr"],
                                    "speed/train_img_per_s": seen / (time.perf_counter() - t0)})
                    if not math.isfinite(loss_sum):
                        problem = ("diverged", f"train loss is {loss_sum / seen} at epoch {epoch}")
                    elif not math.isfinite(l2):
                        problem = ("diverged", f"weight norm is {l2} at epoch {epoch}")
                    elif val is not None:  # the eager module (no compiled eval graphs), or its weight average
                        scores = evaluate_as_trained(state.eval_model, val, state.norm, cfg, tta=fit_tta(cfg))
                        metrics.update({"val/loss": scores["loss"], "val/acc": scores["acc"],
                                        "val/macro_f1": scores["macro_f1"]})
                except Exception as e:  # out of memory on any device becomes a result; the rest propagates
                    if not is_oom(e):
                        raise
                    problem = ("oom", f"out of memory at epoch {epoch} (batch size {cfg.batch_size}): {first_line(e)}")
                if problem and problem[0] == "oom":  # outside the except block: the traceback no longer pins memory
                    state.opt.zero_grad(set_to_none=True)
                    free_cached_memory(device)
                metrics["time/epoch_s"] = time.perf_counter() - t0
                if problem:
                    yield EpochResult(epoch, metrics, max(state.best_acc, 0.0), state.best_epoch, *problem)
                    return
                stop, message = state.end_epoch(epoch, metrics, validated=val is not None)
                result = EpochResult(epoch, metrics, state.best_acc, state.best_epoch, stop, message)
                if checkpoint is not None:
                    checkpoint(state, result)
                own_rng = rng_state(device)
                yield result
                if stop:
                    return
        finally:
            model.load_state_dict(state.best_weights)
            model.eval()


def _start_or_oom(model: nn.Module, train: DeviceSplit, cfg: TrainConfig, norm: Norm | None,
                  resume: Mapping[str, Any] | None) -> TrainState | EpochResult:
    """The run's training state (`resume`d where given), or the one "oom" result (epoch 0) when the model or its
    optimiser does not fit."""
    try:
        state = start_training(model, train, cfg, norm or input_norm(cfg.normalize, train.x),
                               total_steps=cfg.epochs * max(1, len(train) // cfg.batch_size))
        if resume is not None:
            state.load_state_dict(resume)
        return state
    except Exception as e:  # only out of memory becomes a result; the rest propagates
        if not is_oom(e):
            raise
        message = f"out of memory before the first epoch: {first_line(e)}"
    free_cached_memory(train.x.device)
    return EpochResult(0, {**dict.fromkeys(METRIC_KEYS, math.nan), "time/epoch_s": 0.0}, 0.0, 0, "oom", message)


def _snapshot(model: nn.Module, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """An on-device copy of the state dict (best weights are restored from it, never via the host);
    with `into`, copied into those buffers instead of allocating new ones."""
    if into is None:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k, v in model.state_dict().items():
        into[k].copy_(v)
    return into


# ---------------------------------------------------------------- throughput
def eval_seconds_per_image(model: nn.Module, train: DeviceSplit, val: DeviceSplit, cfg: TrainConfig,
                           images: int) -> float:
    """Seconds per validation face of `fit`'s validation pass (its TTA, batch size and precision), timed on the first
    `images` faces of `val` after a warm-up pass over a few of them; the model is left as it was."""
    if len(val) == 0:
        return 0.0
    norm = input_norm(cfg.normalize, train.x)
    n = min(images, len(val))
    head = DeviceSplit(val.x[:n], val.y[:n])
    evaluate_as_trained(model, DeviceSplit(val.x[:32], val.y[:32]), norm, cfg, tta=fit_tta(cfg))  # warm-up
    sync(val.x.device)
    t0 = time.perf_counter()
    evaluate_as_trained(model, head, norm, cfg, tta=fit_tta(cfg))
    sync(val.x.device)
    return (time.perf_counter() - t0) / n


def train_throughput(model: nn.Module, train: DeviceSplit, cfg: TrainConfig, *, steps: int, warmup: int = 5,
                     norm: Norm | None = None) -> dict:
    """Time `steps` real training steps (after `warmup`), exactly as `fit` runs them.

    The model's weights are restored afterwards; the optimiser is a throwaway one.
    """
    _check_train(cfg)
    if steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    norm = norm or input_norm(cfg.normalize, train.x)
    saved = _snapshot(model)
    batch_size = min(cfg.batch_size, len(train))

    def batches() -> Iterator[torch.Tensor]:
        while True:
            yield from epoch_batches(len(train), cfg.batch_size, train.x.device)
    try:
        with deterministic_mode(cfg.deterministic, train.x.device):
            tr = start_training(model, train, cfg, norm, total_steps=warmup + steps)
            tr.net.train()
            stats, it = torch.zeros(2, device=tr.device), batches()
            t_compile = time.perf_counter()
            for _ in range(warmup):
                train_step(tr, train, next(it), stats, measure=False)
            sync(tr.device)
            warmup_s = time.perf_counter() - t_compile
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(tr, train, next(it), stats, measure=False)
            sync(tr.device)
            elapsed = time.perf_counter() - t0
    finally:
        model.load_state_dict(saved)
    return {"train_img_per_s": steps * batch_size / elapsed, "step_ms": 1000 * elapsed / steps,
            "warmup_s": warmup_s, "steps": steps, "batch_size": batch_size, "device": str(tr.device),
            "precision": "bf16 autocast" if tr.amp == torch.bfloat16 else "fp32",
            "channels_last": tr.channels_last}
