"""The Optuna internals fer-sweep relies on (fer_sweep/sweep/optuna_api.py): present in the installed Optuna, used
through one module, failing loudly if a new Optuna drops them, and the version bound that goes with them."""

from __future__ import annotations

import time

import optuna
import pytest
import tomllib
from optuna.trial import TrialState

from fer_sweep.sweep import optuna_api
from tests.helpers import ROOT


def test_storage_and_trial_ids_of_the_installed_optuna(tmp_path):
    from fer_sweep.sweep.store import open_storage

    for storage in (optuna.storages.InMemoryStorage(), open_storage(tmp_path, None)):
        study = optuna.create_study(storage=storage, study_name=f"s{id(storage)}", direction="maximize")
        study.enqueue_trial({"x": 1})
        trial = study.ask()
        assert optuna_api.storage_of(study) is storage
        assert optuna_api.trial_id(study, trial.number) == trial._trial_id  # the public lookup agrees
        assert optuna_api.frozen(study, trial.number).state == TrialState.RUNNING
        assert optuna_api.trial_object(study, trial.number).number == trial.number


def test_the_internal_keys_are_where_the_installed_optuna_writes_them(tmp_path):
    """`fixed_params` (enqueue_trial) and `artifacts:<id>` (upload_artifact): what requeueing and pruning read."""
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.5})
    trial = study.ask()
    trial.suggest_float("x", 0, 2)
    (tmp_path / "f.bin").write_bytes(b"1")
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(tmp_path / "f.bin"),
                                                   study_or_trial=trial)
    done = optuna_api.frozen(study, trial.number)
    assert optuna_api.fixed_params(done) == {"x": 1.5}
    assert optuna_api.recorded_artifact_ids(done) == [artifact_id]
    other = study.ask()  # a trial not enqueued
    assert optuna_api.fixed_params(optuna_api.frozen(study, other.number)) is None


def test_a_missing_internal_fails_loudly_with_the_tested_versions():
    class NewStudy:  # what a future Optuna without Study._storage would look like to us
        study_name = "x"

    with pytest.raises(RuntimeError, match=r"has no Study\._storage: fer-sweep is tested with optuna 4\.3 to 5\.1"):
        optuna_api.storage_of(NewStudy())


def test_pyproject_bounds_optuna_to_the_tested_range():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (optuna_req,) = [d for d in deps if d.startswith("optuna")]
    assert optuna_req.replace(" ", "") == "optuna>=4.3,<6"  # UpdateFinishedTrialError is from 4.3
    major, minor = (int(part) for part in optuna.__version__.split(".")[:2])
    assert (4, 3) <= (major, minor) < (6, 0)


def test_heartbeat_is_recorded_while_a_trial_trains_and_stops_after(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, direction="maximize")
    trial = study.ask()
    with optuna_api.Heartbeat(study, trial.number):
        time.sleep(3)  # longer than the grace period: only the heartbeats keep it alive
        optuna.storages.fail_stale_trials(study)
        assert optuna_api.frozen(study, trial.number).state == TrialState.RUNNING
    time.sleep(3)  # no more heartbeats: now it is stale
    optuna.storages.fail_stale_trials(study)
    assert optuna_api.frozen(study, trial.number).state == TrialState.FAIL
