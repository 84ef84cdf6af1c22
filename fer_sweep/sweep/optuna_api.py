"""The Optuna internals fer-sweep relies on, in one place, each behind a function that fails loudly.

Optuna's public API has no accessor for a study's storage, and its storages address trials by an internal
id that `FrozenTrial`/`Trial` keep in the private `_trial_id`. fer-sweep needs both for what Optuna's
`Study.optimize` does not offer: claiming a waiting ticket with the storage's compare-and-set
(`set_trial_state_values`, public on every storage), reaping a dead worker's trial and recording
heartbeats from our own loop. Everything else goes through public API: trial ids are looked up with the
storages' public `get_study_id_from_name` / `get_trial_id_from_study_id_trial_number`, heartbeats are
recorded with the public `record_heartbeat` from a thread of our own (not `optuna.storages._heartbeat`),
and stale trials are failed with the public `optuna.storages.fail_stale_trials`.

The one private name left, `Study._storage`, is read only here; `pyproject.toml` bounds optuna to the
major versions it is tested with (4 and 5), and tests/sweep/test_optuna_api.py fails with this module's message
if a new Optuna drops it.
"""

from __future__ import annotations

import threading

import optuna
from optuna.storages import BaseStorage

TESTED = "optuna 4.x and 5.0"

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
                           "(see fer_sweep/optuna_api.py)")
    return storage


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
        self.storage, self.stop, self.thread = storage, threading.Event(), None
        if interval is not None:
            self.id, self.interval = trial_id(study, number), interval
            self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{number}", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.id)
            except Exception:  # noqa: BLE001 - a database restarting: the trial's own writes report it; beat again
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
