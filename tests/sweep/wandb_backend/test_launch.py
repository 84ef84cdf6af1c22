"""`run --backend wandb` (sweep/wandb_backend/launch.py): offline or logged out, it is refused before a W&B sweep
or a file is created. Nothing here touches the network."""

from __future__ import annotations

import pytest

from fer_sweep.config import UserError
from fer_sweep.sweep.spec import parse_spec
from fer_sweep.sweep.wandb_backend import launch
from tests.helpers import no_wandb_login


def test_offline_or_logged_out_is_refused_before_anything_is_created(tmp_path, monkeypatch):
    import wandb

    def no_sweep(*args, **kwargs):
        raise AssertionError("a W&B sweep was created")

    monkeypatch.setattr(wandb, "sweep", no_sweep)
    no_wandb_login(monkeypatch, tmp_path)
    spec = parse_spec({"data": "synthetic", "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}}, "small.yaml")
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(UserError, match="--backend wandb needs W&B online"):
        launch.run_wandb_sweep(spec, results=tmp_path / "r", wandb_mode="online")
    monkeypatch.delenv("WANDB_MODE")
    with pytest.raises(UserError, match="needs W&B online"):
        launch.run_wandb_sweep(spec, results=tmp_path / "r", wandb_mode="offline")
    with pytest.raises(UserError, match="not logged in to W&B: run `wandb login`"):
        launch.run_wandb_sweep(spec, results=tmp_path / "r", wandb_mode="online")
    assert not (tmp_path / "r").exists()
