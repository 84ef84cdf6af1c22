"""Slow writes in a child process (fer-sweep's write-delay test hooks, set by this folder's sitecustomize.py), so a
fault test can kill it in the middle of a journal append or between two kept-model uploads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from tests.support.slow_writes.sitecustomize import VARIABLE

FOLDER = Path(__file__).resolve().parent


def slow_writes_env(delay_s: float, parent: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables to add to a child's environment so that its journal appends pause `delay_s` seconds half-way
    and its uploads `delay_s` seconds after each."""
    path = [str(FOLDER), *([parent["PYTHONPATH"]] if parent.get("PYTHONPATH") else [])]
    return {VARIABLE: str(delay_s), "PYTHONPATH": os.pathsep.join(path)}
