"""The Optuna internals fer-sweep relies on (fer_sweep/sweep/optuna_api.py): present in the installed Optuna, used
through one module, failing loudly if a new Optuna drops them, and the version bound that goes with them."""

from __future__ import annotations

import re
import time
import tomllib

import optuna
import pytest
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


def test_a_missing_internal_fails_loudly_with_the_tested_versions():
    class NewStudy:  # what a future Optuna without Study._storage would look like to us
        study_name = "x"

    with pytest.raises(RuntimeError, match=r"has no Study\._storage: fer-sweep is tested with optuna 4\.x and 5\.0"):
        optuna_api.storage_of(NewStudy())


def test_no_private_optuna_name_outside_optuna_api():
    private = re.compile(r"\._storage\b|\._trial_id\b|optuna\.\w+\._\w+|from optuna\.\w+\._\w+")
    checked = [path for path in (ROOT / "fer_sweep").rglob("*.py") if path.name != "optuna_api.py"]
    assert {path.parent.name for path in checked} >= {"fer_sweep", "data", "learn", "sweep", "results", "cli"}
    for path in checked:
        hits = [line for line in path.read_text().splitlines() if private.search(line)]
        assert not hits, f"{path.relative_to(ROOT)}: {hits}"
    assert private.search((ROOT / "fer_sweep" / "sweep" / "optuna_api.py").read_text())  # the check finds them


def test_pyproject_bounds_optuna_to_the_tested_majors():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (optuna_req,) = [d for d in deps if d.startswith("optuna")]
    assert optuna_req.replace(" ", "") == "optuna>=4.0,<6"
    assert 4 <= int(optuna.__version__.split(".")[0]) < 6


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
