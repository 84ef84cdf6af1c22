"""The Optuna internals fer-sweep relies on, in one place, each behind a function that fails loudly.

Optuna's public API has no accessor for a study's storage, and its storages address trials by an internal
id that `FrozenTrial`/`Trial` keep in the private `_trial_id`. fer-sweep needs both for what Optuna's
`Study.optimize` does not offer: claiming a waiting ticket with the storage's compare-and-set
(`set_trial_state_values`, public on every storage), reaping a dead worker's trial and recording
heartbeats from our own loop. Everything else goes through public API: trial ids are looked up with the
storages' public `get_study_id_from_name` / `get_trial_id_from_study_id_trial_number`, heartbeats are
recorded with the public `record_heartbeat` from a thread of our own (not `optuna.storages._heartbeat`),
and stale trials are failed with the public `optuna.storages.fail_stale_trials`.

What is left, read only here (`PRIVATE_NAMES`, `INTERNAL_KEYS`; tests/test_architecture.py forbids them, and any
other private Optuna name, in every other module):
- the private attribute `Study._storage` (`storage_of`);
- the system attr `"fixed_params"`, where `Study.enqueue_trial` keeps a queued trial's parameters (`fixed_params`);
- the system attr prefix `"artifacts:"`, under which `optuna.artifacts.upload_artifact` records each upload
  (`recorded_artifact_ids`).
`pyproject.toml` bounds optuna to the major versions it is tested with (4 and 5), and
tests/sweep/test_optuna_api.py fails with this module's message if a new Optuna drops one of them.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna
from optuna.storages import BaseStorage

TESTED = "optuna 4.3 to 5.1"
PRIVATE_NAMES = ("_storage",)  # private Optuna attributes read here and nowhere else
FIXED_PARAMS = "fixed_params"  # trial system attr: the parameters Study.enqueue_trial fixed for a queued trial
ARTIFACT_PREFIX = "artifacts:"  # trial system attr prefix: upload_artifact records upload <id> as "artifacts:<id>"
INTERNAL_KEYS = (FIXED_PARAMS, ARTIFACT_PREFIX)  # Optuna's internal attr keys, used here and nowhere else

# Optuna logs every study created and every trial told at INFO; fer-sweep reports progress its own way. Set here,
# in the module that those creating studies or telling trials import (space, study, worker), whatever the order.
optuna.logging.set_verbosity(optuna.logging.WARNING)


def replay_study(seed: int) -> optuna.Study:
    """A throwaway in-memory study with a seeded random sampler, to draw configurations from ask/tell."""
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


def storage_of(study: optuna.Study) -> BaseStorage:
    """The study's storage (Optuna keeps it in the private `Study._storage`; there is no public accessor)."""
    storage = getattr(study, "_storage", None)
    if not isinstance(storage, BaseStorage):
        raise RuntimeError(f"optuna {optuna.__version__} has no Study._storage: fer-sweep is tested with {TESTED} "
                           "(see fer_sweep/sweep/optuna_api.py)")
    return storage


def fixed_params(t: optuna.trial.FrozenTrial) -> dict | None:
    """The parameters `Study.enqueue_trial` fixed for trial `t` (kept in its system attrs), or None if it set none."""
    return t.system_attrs.get(FIXED_PARAMS)


def recorded_artifact_ids(t: optuna.trial.FrozenTrial) -> list[str]:
    """The ids of the artifacts `upload_artifact` recorded for trial `t` (a record may come before or after its file
    is written, depending on the Optuna version)."""
    return [key[len(ARTIFACT_PREFIX):] for key in t.system_attrs if key.startswith(ARTIFACT_PREFIX)]


def trial_id(study: optuna.Study, number: int) -> int:
    """The storage's id of trial `number`, through the storages' public lookups."""
    storage = storage_of(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """Trial `number` as it is now in the storage."""
    return storage_of(study).get_trial(trial_id(study, number))


def trial_object(study: optuna.Study, number: int) -> optuna.Trial:
    """A live `optuna.Trial` for a trial this worker has claimed (what `Study.ask` returns for a new one)."""
    return optuna.Trial(study, trial_id(study, number))


class Heartbeat:
    """Record a running trial's heartbeat every `storage.get_heartbeat_interval()` seconds while it trains, on
    storages that have heartbeats enabled (RDB with heartbeat_interval); a no-op elsewhere."""

    def __init__(self, study: optuna.Study, number: int):
        storage = storage_of(study)
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()  # BaseHeartbeat's public methods
        self.storage: Any = storage  # a BaseHeartbeat too when interval is set (not a public Optuna type)
        self.stop, self.thread = threading.Event(), None
        if interval is not None:
            self.id, self.interval = trial_id(study, number), interval
            self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{number}", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.id)
            except Exception:  # noqa: BLE001 - a database restarting: the trial's own writes report it
                pass
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> "Heartbeat":
        if self.thread:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.thread:
            self.stop.set()
            self.thread.join()
