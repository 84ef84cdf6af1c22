"""Stopping a study on a plateau (spec `stop:`, sweep/plateau.py): the rule on finished trials, and a real `run`
that stops, says so, stays stopped on a rerun with more trials, and goes on with --no-stop."""

from __future__ import annotations

import datetime
import json

import optuna
from optuna.trial import TrialState

from fer_sweep.sweep.plateau import plateau
from fer_sweep.sweep.spec import StopSpec
from tests.helpers import invoke, journal_study, make_spec, refused


def _finished(*values) -> list:
    """Trials finished one second apart with these values (None: a pruned trial)."""
    start = datetime.datetime(2026, 1, 1)
    trials = []
    for i, v in enumerate(values):
        t = optuna.trial.create_trial(value=v, state=TrialState.COMPLETE if v is not None else TrialState.PRUNED)
        t.number, t.datetime_complete = i, start + datetime.timedelta(seconds=i)
        trials.append(t)
    return trials[::-1]  # the order given does not matter: the finish times do


def test_a_plateau_is_patience_finished_trials_without_a_gain_of_min_delta_points():
    stop = StopSpec(patience=2, min_delta=0.5)
    assert plateau(_finished(0.50), stop) is None
    assert plateau(_finished(0.50, 0.502), stop) is None  # one without a gain
    line = plateau(_finished(0.50, 0.502, 0.503), stop)  # 0.3 points above 0.50: no gain of 0.5 points
    assert line and "last 2 finished trials" in line and "by 0.5 points" in line
    assert plateau(_finished(0.50, 0.502, 0.506), stop) is None  # 0.6 points: a gain, the count starts again
    assert plateau(_finished(0.50, 0.506, 0.51), stop) is None  # 0.4 above the new best 0.506: one without
    assert plateau(_finished(0.50, None, None), stop)  # pruned trials never gain
    assert plateau(_finished(0.50, 0.502, 0.503), None) is None  # no `stop:`: never
    assert plateau(_finished(0.50, 0.50, 0.50), StopSpec(patience=2)) and \
        plateau(_finished(0.50, 0.50, 0.51), StopSpec(patience=2)) is None  # min_delta 0: any rise is a gain


def test_stop_settings_are_checked_with_one_line(tmp_path):
    for stop, words in (({"patience": 0}, ("stop.patience", ">= 1")), ({"min_delta": -1}, ("stop.min_delta",)),
                        ({"patiense": 2}, ("stop.patiense", "did you mean 'patience'"))):
        refused("run", make_spec(tmp_path, "bad", 3, stop=stop), "--results", tmp_path / "r", words=words)
    assert not (tmp_path / "r").exists()


# every trial learns nothing (lr ~1e-9): all reach the same validation accuracy, so none gains on the first
FLAT = {"space": {"lr": {"low": 1e-9, "high": 2e-9, "log": True}}, "pruner": {"type": "none"},
        "train": {"epochs": 1, "patience": 0, "batch_size": 32}, "stop": {"patience": 2, "min_delta": 0.5}}


def test_run_stops_on_a_plateau_says_so_stays_stopped_and_goes_on_with_no_stop(tmp_path):
    results, spec = tmp_path / "r", make_spec(tmp_path, "flat", 12, **FLAT)
    first = invoke("run", spec, "--results", results, "--device", "cpu")
    study = journal_study(results, "flat")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert not study.get_trials(states=(TrialState.RUNNING,))
    said = first.stderr + first.stdout
    assert "stopped on a plateau: the last 2 finished trials did not raise the best validation accuracy by 0.5 " \
           "points" in " ".join(said.split()) and "3 of 12 finished" in said, said
    status = json.loads(invoke("status", "--study", "flat", "--results", results, "--json").stdout)
    assert status["finished"] == 3 and "stopped on a plateau" in status["plateau"]
    assert "stopped on a plateau" in invoke("status", "--study", "flat", "--results", results).stdout

    invoke("run", spec, "--results", results, "--device", "cpu", "--trials", "14")  # more trials: still stopped
    assert len(journal_study(results, "flat").get_trials(states=(TrialState.COMPLETE,))) == 3

    invoke("run", spec, "--results", results, "--device", "cpu", "--trials", "5", "--no-stop")
    assert len(journal_study(results, "flat").get_trials(states=(TrialState.COMPLETE,))) == 5


def test_workers_in_processes_stop_on_the_plateau_too(tmp_path):
    """Each worker process reads `stop:` from the saved spec: two of them stop within a trial or two of the
    plateau (a trial each may be running when the third finishes), not at 12."""
    results, spec = tmp_path / "r", make_spec(tmp_path, "flat2", 12, **FLAT)
    invoke("run", spec, "--results", results, "--device", "cpu", "--workers", "2")
    done = journal_study(results, "flat2").get_trials(states=(TrialState.COMPLETE,))
    assert 3 <= len(done) <= 4
