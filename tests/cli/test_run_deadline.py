"""`run --timeout` (a wall-clock budget: no trial starts after the deadline, the running one is re-queued, exit 0 and
one line), `run`'s lines where its output is no terminal (one per epoch and per finished trial, with the ETA), and
the ETA in `status --json`."""

from __future__ import annotations

import json
import re
import subprocess
import time

from optuna.trial import TrialState

from tests.helpers import check_exact, cli, journal_study, make_spec, refused

SLOWER = {  # trials of a few seconds each on a CPU, so a deadline a few seconds in finds one training
    "train": {"epochs": 4, "patience": 0, "batch_size": 32}, "pruner": {"type": "none"},
    "splits": {"synthetic_n": 1400, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
    "model": {"arch": "cnn", "fc_units": 32, "conv": [[16, 3], [32, 3]]},
    "space": {"lr": {"low": 0.001, "high": 0.01, "log": True}},
}


def test_a_bad_timeout_is_one_line_and_writes_nothing(tmp_path):
    spec = make_spec(tmp_path, "badtime", 1)
    for value in ("soon", "0s", "1h30"):
        refused("run", spec, "--timeout", value, "--results", tmp_path / "r", words=("--timeout", value))
    assert not (tmp_path / "r").exists()
    refused("run", spec, "--timeout", "5m", "--backend", "wandb", "--results", tmp_path / "r", words=("--timeout",))


def _interrupted_and_requeued(trials) -> list:
    cut = [t for t in trials if t.user_attrs.get("outcome") == "interrupted"]
    for t in cut:
        assert t.user_attrs["message"].startswith("deadline (--timeout) reached"), t.user_attrs
        assert [w for w in trials if w.user_attrs.get("retry_of") == t.number]  # re-queued at once
    return cut


def test_timeout_stops_in_time_exits_0_and_the_same_command_resumes(tmp_path):
    spec = make_spec(tmp_path, "budget", 10, **SLOWER)  # more than 6 s of trials even on an idle machine
    results = tmp_path / "results"
    args = ("run", str(spec), "--results", str(results), "--device", "cpu", "--wandb", "disabled")
    start = time.time()
    run = subprocess.run(cli(*args, "--timeout", "6s"), capture_output=True, text=True, timeout=120)
    took = time.time() - start
    assert run.returncode == 0, run.stderr
    assert took < 6 + 20, took  # the deadline, plus start-up and the re-queue
    last = run.stdout.strip().splitlines()
    assert len(last) == 1 and re.match(r"--timeout 6s reached: \d/10 trials finished.*run the same command again "
                                       r"to resume the other \d+$", last[0]), run.stdout
    assert "Traceback" not in run.stderr
    trials = journal_study(results, "budget").get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    _interrupted_and_requeued(trials)
    for t in trials:  # no trial started after the deadline
        assert t.datetime_start is None or t.datetime_start.timestamp() < start + 6 + 6, (t.number, t.datetime_start)
    if any(t.user_attrs.get("train_seconds") for t in trials):  # (an epoch was timed before the deadline)
        # where the output is no terminal: a line per epoch and per finished trial (a Slurm log, nohup)
        assert re.search(r"^trial \d+ epoch 1/4: val/acc \d\.\d{4} \(\d+\.\d s\)$", run.stderr, re.M), run.stderr
        # the study's ETA from the epochs timed so far, as data
        status = subprocess.run(cli("status", "--results", str(results), "--json"), capture_output=True, text=True,
                                timeout=120)
        data = json.loads(status.stdout)
        assert data["eta_s"] > 0 and data["eta_basis"]["s_per_epoch"] > 0 and data["eta_basis"]["trials_left"] >= 1

    rerun = subprocess.run(cli(*args), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(r"^trial \d+ complete: val/acc \d\.\d{4} after 4 epochs \([^)]+\); 10/10 finished$", rerun.stderr,
                     re.M), rerun.stderr
    check_exact(journal_study(results, "budget"), spec, 10)


def test_timeout_with_workers_stops_every_worker_by_the_deadline(tmp_path):
    spec = make_spec(tmp_path, "budget2", 40, **SLOWER)
    results = tmp_path / "results"
    start = time.time()
    run = subprocess.run(cli("run", str(spec), "--workers", "2", "--timeout", "12s", "--results", str(results),
                             "--device", "cpu", "--wandb", "disabled"), capture_output=True, text=True, timeout=120)
    took = time.time() - start
    assert run.returncode == 0, run.stderr
    assert took < 12 + 20, took
    assert "--timeout 12s reached:" in run.stdout and "/40 trials finished" in run.stdout
    trials = journal_study(results, "budget2").get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    _interrupted_and_requeued(trials)
    for k in (0, 1):
        log = (results / "budget2" / f"worker-{k}.log").read_text()
        assert "stopped at the deadline (--timeout)" in log and "Traceback" not in log, log
