"""Where tensors live: device choice, device-resident splits, syncs, out-of-memory handling (pure torch).

Device-specific behaviour is kept in small pure functions so each branch can be tested on a CPU-only
machine with constructed `torch.device("cuda")` / `torch.device("mps")` objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fer_sweep.config import IMAGE_SIZE, NUM_CLASSES, UserError

DEVICE_HELP = "auto, cpu, cuda, cuda:K or mps"


@dataclass(frozen=True)
class DeviceSplit:
    """One split resident on the device; faces stay uint8 until a batch is sliced from them."""

    x: torch.Tensor  # (N, 48, 48) uint8
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.y.shape[0])


def pick_device(name: str = "auto") -> torch.device:
    """Resolve a device name: "auto" (CUDA, else Apple MPS, else CPU), "cpu", "cuda", "cuda:K" or "mps"."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"bad device {name!r} (use {DEVICE_HELP})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("device 'mps' asked for, but MPS is not available")
    elif device.type != "cpu":
        raise UserError(f"bad device {name!r} (use {DEVICE_HELP})")
    return device


def to_device(x: np.ndarray, y: np.ndarray, device: torch.device | str) -> DeviceSplit:
    """Copy (N, 48, 48) uint8 faces and (N,) labels to the device once; the faces stay uint8."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise UserError(f"faces must be uint8 of shape (N, 48, 48), got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],):
        raise UserError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise UserError(f"labels must be in 0..{NUM_CLASSES - 1}, got {y.min()}..{y.max()}")
    x = np.ascontiguousarray(x) if x.flags.writeable else x.copy()  # torch warns on read-only arrays
    x_t = torch.from_numpy(x).to(device)
    y_t = torch.from_numpy(y.astype(np.int64)).to(device)
    return DeviceSplit(x_t, y_t)


EVAL_BATCH = {"cpu": 128}  # evaluation batch per device type where it is not the default's (see eval_batch_size)
EVAL_BATCH_DEFAULT = 1024


def eval_batch_size(device: torch.device, configured: int | None = None) -> int:
    """The batch an evaluation pass runs in: `configured` (spec `train.eval_batch_size`) where set, else the device's.
    On a CPU the activations of 128 faces stay in cache: `fit`'s validation pass (flip TTA) took 0.84-0.90 ms per
    face at 128 against 2.00-3.73 at 1024 (residual 16-32-64; 2.81-3.30 against 5.39-11.88 for 32-64-128; two runs on
    an AVX2 EPYC, benchmarks/RESULTS.md "Validation pass: eval batch size"). A GPU wants large batches to fill it:
    1024."""
    if configured is not None:
        return configured
    return EVAL_BATCH.get(device.type, EVAL_BATCH_DEFAULT)


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for exact sums where the device has it; MPS has no float64 (it raises), so float32 there."""
    return torch.float32 if device.type == "mps" else torch.float64


def sync(device: torch.device) -> None:
    """Wait for queued kernels: CUDA and MPS run asynchronously, so timings must sync first."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def is_oom(error: BaseException) -> bool:
    """An out-of-memory error on any device: CUDA raises `torch.cuda.OutOfMemoryError`; MPS raises a plain
    RuntimeError ("MPS backend out of memory ..."); a CPU allocation failure is a RuntimeError too."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        words in text for words in ("out of memory", "can't allocate memory", "failed to allocate"))


def free_cached_memory(device: torch.device) -> None:
    """Give the caching allocator's free blocks back after an OOM, so the next trial starts clean."""
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and torch.backends.mps.is_available():
        torch.mps.empty_cache()
