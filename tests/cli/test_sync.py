"""`fer-sweep sync` without a W&B login: one line, nothing uploaded."""

from __future__ import annotations

from fer_sweep.sweep.wandb_backend import sync as wandb_sweeps
from tests.helpers import no_wandb_login, refused


def test_sync_without_a_login_uploads_nothing(finished_study, tmp_path, monkeypatch):
    no_wandb_login(monkeypatch, tmp_path)
    runs = wandb_sweeps.offline_runs(finished_study["folder"])
    assert len(runs) == 6 + 1  # six trials and the final retrain
    refused("sync", "--results", finished_study["results"],
            words=("not logged in", "wandb login", "nothing was uploaded"))
    assert not list(finished_study["folder"].glob("wandb/offline-run-*/*.synced"))
