"""The study and its ticket queue (sweep/study.py): a worker killed mid-trial is reaped and its ticket re-run, a
silent remote worker's trial is failed by its heartbeat and re-queued, and reading a study appends nothing to
its journal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import yaml
from optuna.trial import TrialState

from fer_sweep.sweep.optuna_api import fixed_params, storage_of, trial_id
from fer_sweep.sweep.spec import parse_spec
from tests.helpers import check_exact, cli, invoke, journal_study, make_spec


def test_reading_a_study_appends_nothing_to_its_journal(small_study):
    journal = small_study["results"] / "small" / "journal.log"
    before = journal.read_bytes()
    for args in (("status",), ("status", "--json"), ("best", "--no-retrain"), ("report",)):
        invoke(*args, "--results", small_study["results"])
    again = invoke("run", small_study["spec"], "--results", small_study["results"], "--device", "cpu")
    assert "2/2 finished" in again.stdout
    assert journal.read_bytes() == before  # no create_study record per open, no write on a finished resume


def test_worker_killed_mid_trial_is_rerun_and_nothing_lost(tmp_path):
    # trials long enough (~1 s an epoch) that the kill lands mid-trial
    spec = make_spec(tmp_path, "crash", 4, train={"epochs": 4, "patience": 0, "batch_size": 32},
                     pruner={"type": "none"},
                     splits={"synthetic_n": 1400, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                     model={"arch": "cnn", "fc_units": 32, "conv": [[16, 3], [32, 3]]},
                     space={"lr": {"low": 0.001, "high": 0.01, "log": True}})
    results = tmp_path / "results"
    proc = subprocess.Popen(cli("run", str(spec), "--workers", "2", "--results", str(results), "--device", "cpu"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if (results / "crash" / "journal.log").exists():
            try:
                trials = journal_study(results, "crash").get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # the journal file exists a moment before the study is created in it
                continue
            running = [t for t in trials if t.intermediate_values and "owner" in t.system_attrs]
            victim = running[0] if running else None
    assert victim is not None, "no trial was caught mid-run"
    os.kill(victim.system_attrs["owner"]["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    study = journal_study(results, "crash")
    finished = check_exact(study, spec, 4)
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["outcome"] == "crashed"
    rerun = [t for t in finished if t.user_attrs["ticket"] == victim.user_attrs["ticket"]]
    assert rerun[0].params == victim.params and rerun[0].number > victim.number


def test_heartbeat_fails_a_silent_remote_trial_and_requeues_it(tmp_path, postgres_url):
    """A worker on another machine stops beating: after the grace period the trial is failed and its
    configuration enqueued again (Optuna's heartbeat; pids cannot be checked across machines)."""
    from fer_sweep.sweep.study import claim, prepare_study, reap

    spec = parse_spec(yaml.safe_load(make_spec(tmp_path, "beat", 2).read_text()), "beat.yaml")
    study = prepare_study(spec, tmp_path / "results", postgres_url, heartbeat_s=1)
    trial = claim(study, spec.trials, "remote")
    storage, tid = storage_of(study), trial_id(study, trial.number)
    storage.set_trial_system_attr(tid, "owner", {"host": "another-machine", "pid": 1, "start": "0", "worker": "remote"})
    storage.record_heartbeat(tid)
    params = fixed_params(storage.get_trial(tid))
    reap(study)
    assert storage.get_trial(tid).state == TrialState.RUNNING  # still within grace
    time.sleep(4.0)  # grace period = 3 heartbeats
    reap(study)
    assert storage.get_trial(tid).state == TrialState.FAIL
    waiting = study.get_trials(states=(TrialState.WAITING,))
    again = [t for t in waiting if t.user_attrs.get("retry_of") == trial.number]
    assert len(again) == 1 and params and fixed_params(again[0]) == params
    assert again[0].user_attrs["ticket"] == storage.get_trial(tid).user_attrs["ticket"]


def test_after_an_outage_a_worker_puts_back_what_it_held_and_nothing_else(tmp_path):
    """release_own: the trial this process claimed (owner stamp) and one it only marked (the stamp never written)
    go back in the queue; a trial of another process, and one that another process also tried to take, stay."""
    from fer_sweep.sweep.study import CLAIM_MARK, claim, prepare_study, release_own

    spec = parse_spec(yaml.safe_load(make_spec(tmp_path, "own", 4).read_text()), "own.yaml")
    study = prepare_study(spec, tmp_path / "results", None, heartbeat_s=30)
    storage, host = storage_of(study), socket.gethostname()
    mine = claim(study, spec.trials, "w0")
    marked, theirs, shared = (claim(study, spec.trials, "w0") for _ in range(3))
    for t in (marked, shared):  # as if the owner stamp had not been written when the storage went away
        storage.set_trial_system_attr(trial_id(study, t.number), "owner", None)
    storage.set_trial_system_attr(trial_id(study, shared.number), f"{CLAIM_MARK}{host}:1", {"host": host, "pid": 1})
    storage.set_trial_system_attr(trial_id(study, theirs.number), "owner",
                                  {"host": host, "pid": 1, "start": "0", "worker": "w9"})
    released = release_own(study, "w0")
    assert sorted(released) == sorted([mine.number, marked.number])
    states = {t.number: t for t in study.get_trials()}
    for t in (mine, marked):
        assert states[t.number].state == TrialState.FAIL and states[t.number].user_attrs["outcome"] == "interrupted"
        assert "storage stopped answering" in states[t.number].user_attrs["message"]
    assert states[theirs.number].state == states[shared.number].state == TrialState.RUNNING
    again = [t for t in states.values() if t.state == TrialState.WAITING and t.user_attrs.get("retry_of") is not None]
    assert sorted(t.user_attrs["retry_of"] for t in again) == sorted([mine.number, marked.number])
