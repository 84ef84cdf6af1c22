"""Slow writes in a process a test starts: sets fer-sweep's write-delay test hooks from the tests' own variable.

A test puts this folder on the child's PYTHONPATH and the delay in FER_SWEEP_TESTS_SLOW_WRITES_S (tests/support/
slow_writes/__init__.py builds that environment); fer-sweep itself reads no test variable. Each hook is set right
after its module first runs, so the process imports nothing earlier than it would without this file."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

VARIABLE = "FER_SWEEP_TESTS_SLOW_WRITES_S"
HOOKS = {"fer_sweep.sweep.journal": "write_delay_s",  # the pause in the middle of each journal append
         "fer_sweep.sweep.artifacts": "upload_delay_s"}  # the pause after each kept-model upload


class SetHooks(importlib.abc.MetaPathFinder):
    """Finds the hooks' modules as Python would, and sets each hook to `delay_s` once its module has run."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s

    def find_spec(self, name, path, target=None):
        if name not in HOOKS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            if not hasattr(module, HOOKS[name]):  # a renamed hook would make the fault tests test nothing
                raise AttributeError(f"{name} has no test hook {HOOKS[name]!r} (tests/support/slow_writes)")
            setattr(module, HOOKS[name], self.delay_s)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get(VARIABLE):
    sys.meta_path.insert(0, SetHooks(float(os.environ[VARIABLE])))
