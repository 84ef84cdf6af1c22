"""Slow, logged epoch-checkpoint writes in a child process (this folder's sitecustomize.py), so a fault test can
kill it half-way through writing a checkpoint and check afterwards which checkpoints were written whole and which
ones trials resumed from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from tests.support.slow_checkpoints.sitecustomize import DELAY, LOG

FOLDER = Path(__file__).resolve().parent


def slow_checkpoints_env(log: Path, delay_s: float = 0.0, parent: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables to add to a child's environment so that it logs its checkpoint writes and loads to `log` and
    pauses `delay_s` seconds half-way through writing each checkpoint."""
    path = [str(FOLDER), *([parent["PYTHONPATH"]] if parent.get("PYTHONPATH") else [])]
    return {LOG: str(log), DELAY: str(delay_s), "PYTHONPATH": os.pathsep.join(path)}


def checkpoint_events(log: Path) -> list[dict]:
    """The events the children logged so far (`writing`, `half`, `loaded`), oldest first (a line still being
    appended is left for the next read)."""
    text = log.read_text() if log.is_file() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
