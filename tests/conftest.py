"""Shared test set-up: a private parse cache, and wandb never reaching the network."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_env(tmp_path_factory):
    """Tests (and the worker processes they start) cache parsed data in a temp dir, not ~/.cache."""
    saved = {k: os.environ.get(k) for k in ("FER_SWEEP_CACHE", "WANDB_SILENT", "WANDB_DIR")}
    os.environ["FER_SWEEP_CACHE"] = str(tmp_path_factory.mktemp("fer-cache"))
    os.environ["WANDB_SILENT"] = "true"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
