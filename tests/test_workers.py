"""Many workers on one study: exact totals, seeded configs whatever the worker count, a real
PostgreSQL storage, a worker killed with SIGKILL mid-trial, and storage passwords kept out of sight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from fer_sweep.sweep.space import sample_configs
from fer_sweep.sweep.spec import parse_spec
from fer_sweep.sweep.store import mask_url
from tests.pg import PASSWORD, start_postgres

SPEC = {
    "data": "synthetic", "seed": 3,
    "splits": {"synthetic_n": 210, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
    "pruner": {"type": "median", "startup_trials": 1, "warmup_epochs": 1},
    "wandb": {"project": "fer-sweep-tests", "mode": "disabled"},
    "model": {"arch": "cnn", "fc_units": 8},
    "train": {"epochs": 2, "patience": 0, "batch_size": 32},
    "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]},
              "lr": {"low": 0.001, "high": 0.01, "log": True}, "norm": {"choices": ["batch", "none"]}},
}


def make_spec(folder: Path, study: str, trials: int, **changes) -> Path:
    path = folder / f"{study}.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "study": study, "trials": trials, **changes}))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fer_sweep", *args]


def journal_study(results: Path, name: str) -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(results / name / "journal.log"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


def check_exact(study: optuna.Study, spec_path: Path, n: int) -> list:
    """Exactly n finished trials, none running, tickets 0..n-1 once each, the seeded configs."""
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n, [(t.number, t.state, t.user_attrs) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sorted(t.user_attrs["ticket"] for t in finished) == list(range(n))
    spec = parse_spec(yaml.safe_load(spec_path.read_text()), str(spec_path))
    expected = sample_configs(spec, n)  # what one worker would run: the same set for K workers
    by_ticket = {t.user_attrs["ticket"]: t.params for t in finished}
    assert [by_ticket[i] for i in range(n)] == expected
    assert len({repr(sorted(p.items())) for p in by_ticket.values()}) == n  # no duplicate configs
    return finished


def test_mask_url_hides_passwords():
    assert mask_url("postgresql://fer:pw@db.lab:5432/s") == "postgresql://fer:***@db.lab:5432/s"
    assert mask_url("postgresql+psycopg2://u:p%40ss@h/d") == "postgresql+psycopg2://u:***@h/d"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_three_local_workers_end_with_exactly_nine(tmp_path):
    spec = make_spec(tmp_path, "local3", 9)
    results = tmp_path / "results"
    run = subprocess.run(cli("run", str(spec), "--workers", "3", "--results", str(results), "--device", "cpu"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "pruner.startup_trials=1 is below --workers 3" in run.stderr
    finished = check_exact(journal_study(results, "local3"), spec, 9)
    assert len({t.user_attrs["worker"] for t in finished}) >= 2  # the work was shared
    assert "9/9 finished" in run.stdout


def test_worker_killed_mid_trial_is_rerun_and_nothing_lost(tmp_path):
    # trials long enough (~1 s an epoch) that the kill lands mid-trial
    spec = make_spec(tmp_path, "crash", 4, train={"epochs": 4, "patience": 0, "batch_size": 32},
                     pruner={"type": "none"}, splits={"synthetic_n": 1400, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
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


@pytest.fixture(scope="module")
def postgres_url():
    url, stop = start_postgres()
    yield url
    stop()


def test_postgres_workers_exact_total_and_password_never_shown(tmp_path, postgres_url):
    spec = make_spec(tmp_path, "pg3", 6, wandb={"project": "fer-sweep-tests", "mode": "offline"})
    results = tmp_path / "results"
    run = subprocess.run(cli("run", str(spec), "--workers", "3", "--storage", postgres_url, "--results",
                             str(results), "--device", "cpu"), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="pg3", storage=postgres_url)
    check_exact(study, spec, 6)
    status = subprocess.run(cli("status", "--storage", postgres_url, "--results", str(results), "--json"),
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and '"finished": 6' in status.stdout
    # the URL's password appears in no output and no file the sweep wrote (wandb runs included)
    for text in (run.stdout, run.stderr, status.stdout, status.stderr):
        assert PASSWORD not in text
    written = [p for p in results.rglob("*") if p.is_file()]
    assert any("wandb" in str(p) for p in written) and any(p.name == "trials.csv" for p in written)
    for path in written:
        assert PASSWORD.encode() not in path.read_bytes(), path
    assert (results / "pg3" / "storage.txt").read_text().strip() == mask_url(postgres_url)
    # without --storage, the study's folder says where it lives (masked)
    again = subprocess.run(cli("status", "--results", str(results)), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "fer:***@" in again.stderr and PASSWORD not in again.stderr


def test_bad_storage_url_is_one_masked_line(tmp_path):
    spec = make_spec(tmp_path, "badpg", 1)
    url = "postgresql://fer:hunter2-secret@127.0.0.1:1/none"
    run = subprocess.run(cli("run", str(spec), "--storage", url, "--results", str(tmp_path / "r")),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "hunter2-secret" not in run.stdout + run.stderr
    assert run.stderr.strip().count("\n") == 0 and "fer:***@127.0.0.1:1/none" in run.stderr


def test_heartbeat_fails_a_silent_remote_trial_and_requeues_it(tmp_path, postgres_url):
    """A worker on another machine stops beating: after the grace period the trial is failed and its
    configuration enqueued again (Optuna's heartbeat; pids cannot be checked across machines)."""
    from fer_sweep.sweep.study import claim, prepare_study, reap

    spec = parse_spec(yaml.safe_load(make_spec(tmp_path, "beat", 2).read_text()), "beat.yaml")
    study = prepare_study(spec, tmp_path / "results", postgres_url, heartbeat_s=1)
    trial = claim(study, spec.trials, "remote")
    study._storage.set_trial_system_attr(trial._trial_id, "owner", {"host": "another-machine", "pid": 1,
                                                                    "start": "0", "worker": "remote"})
    study._storage.record_heartbeat(trial._trial_id)
    params = study._storage.get_trial(trial._trial_id).system_attrs["fixed_params"]
    reap(study)
    assert study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING  # still within grace
    time.sleep(4.0)  # grace period = 3 heartbeats
    reap(study)
    assert study._storage.get_trial(trial._trial_id).state == TrialState.FAIL
    waiting = study.get_trials(states=(TrialState.WAITING,))
    again = [t for t in waiting if t.user_attrs.get("retry_of") == trial.number]
    assert len(again) == 1 and again[0].system_attrs["fixed_params"] == params
    assert again[0].user_attrs["ticket"] == study._storage.get_trial(trial._trial_id).user_attrs["ticket"]
