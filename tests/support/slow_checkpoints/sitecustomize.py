"""Slow, logged epoch-checkpoint writes in a process a test starts, so a fault test can kill it half-way through
writing a checkpoint and then check that no trial ever resumed from a torn one.

A test puts this folder on the child's PYTHONPATH (tests/support/slow_checkpoints/__init__.py builds that environment)
with FER_SWEEP_TESTS_CHECKPOINT_LOG, a JSON-lines file, and FER_SWEEP_TESTS_SLOW_CHECKPOINTS_S, a pause. Only the
temporary file behind `<study>/checkpoints/ticket-<i>.pt` is touched: half of it is written and flushed, `half` is
logged, the pause, then the rest (what fer-sweep's atomic write then renames into place). The log gets `writing` (the
sha256 and size of the whole checkpoint, before its first byte), `half`, and `loaded` for every checkpoint file a
trial reads (the sha256 of the file as it was read, and whether the trial used it). fer-sweep itself reads no test
variable; each hook is set right after its module first runs, so the process imports nothing earlier than it would
without this file."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time

LOG = "FER_SWEEP_TESTS_CHECKPOINT_LOG"
DELAY = "FER_SWEEP_TESTS_SLOW_CHECKPOINTS_S"


def log(event: str, **fields) -> None:
    with open(os.environ[LOG], "a") as f:
        f.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


def is_checkpoint(path) -> bool:
    name, parent = os.path.basename(os.fspath(path)), os.path.basename(os.path.dirname(os.fspath(path)))
    return parent == "checkpoints" and name.startswith("ticket-") and name.endswith(".pt")


class SlowTmp:
    """The temporary path a checkpoint is written to, whose write_bytes pauses half-way (other calls go through)."""

    def __init__(self, tmp, target, delay_s: float):
        self.tmp, self.target, self.delay_s = tmp, target, delay_s

    def write_bytes(self, data) -> int:
        data = bytes(data)
        where = {"path": os.fspath(self.target), "tmp": os.fspath(self.tmp)}
        log("writing", **where, sha=hashlib.sha256(data).hexdigest(), size=len(data))
        with open(self.tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            log("half", **where)
            time.sleep(self.delay_s)
            f.write(data[len(data) // 2:])
        return len(data)

    def __fspath__(self) -> str:
        return os.fspath(self.tmp)

    def __getattr__(self, name):
        return getattr(self.tmp, name)


def slowed_atomic_path(original):
    """fer_sweep.files.atomic_path, yielding a SlowTmp for a checkpoint file."""
    delay_s = float(os.environ.get(DELAY) or 0)

    @contextlib.contextmanager
    def atomic_path(path):
        with original(path) as tmp:
            yield SlowTmp(tmp, path, delay_s) if is_checkpoint(path) else tmp

    return atomic_path


def logged_load(original):
    """fer_sweep.sweep.checkpoints.load_checkpoint, logging the file it read and whether the trial used it."""

    @functools.wraps(original)
    def load_checkpoint(path, *args, **kwargs):
        try:
            with open(path, "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            sha = None
        saved = original(path, *args, **kwargs)
        if sha is not None:
            log("loaded", path=os.fspath(path), sha=sha, used=saved is not None)
        return saved

    return load_checkpoint


HOOKS = {"fer_sweep.learn.checkpoint": ("atomic_path", slowed_atomic_path),  # save_torch's atomic write
         "fer_sweep.sweep.checkpoints": ("load_checkpoint", logged_load)}  # what a resuming trial reads


class SetHooks(importlib.abc.MetaPathFinder):
    """Finds the hooks' modules as Python would, and wraps each hooked function once its module has run."""

    def find_spec(self, name, path, target=None):
        if name not in HOOKS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module
        attr, wrap = HOOKS[name]

        def exec_module(module):
            run(module)
            if not hasattr(module, attr):  # a renamed function would make the fault test test nothing
                raise AttributeError(f"{name} has no {attr!r} to hook (tests/support/slow_checkpoints)")
            setattr(module, attr, wrap(getattr(module, attr)))

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get(LOG):
    sys.meta_path.insert(0, SetHooks())
