"""`sync` (sweep/wandb_backend/sync.py): every offline run is handed to `wandb sync`. Nothing here touches the
network."""

from __future__ import annotations

import subprocess

import pytest

from fer_sweep.config import UserError
from fer_sweep.sweep.wandb_backend import sync


def test_sync_hands_every_offline_run_to_wandb_sync(finished_study, tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs["env"]))
        return subprocess.CompletedProcess(cmd, 0, stdout="done", stderr="")

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    done = sync.sync_runs(finished_study["folder"], run=fake_run)
    (cmd, env), = calls
    assert cmd[1:4] == ["-m", "wandb", "sync"] and cmd[4:] == [str(p) for p in
                                                               sync.offline_runs(finished_study["folder"])]
    assert "WANDB_MODE" not in env and len(done["runs"]) == 7
    with pytest.raises(UserError, match="no offline wandb runs"):
        sync.sync_runs(tmp_path, run=fake_run)
