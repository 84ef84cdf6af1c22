"""`fer-sweep run` end to end: a tiny sweep on synthetic faces (real journal storage, real wandb offline files),
a finished sweep rerun (nothing runs) or resumed with another spec (refused), resume after a killed, interrupted
or terminated sweep, a leaderboard within 80 columns, and bad flags as one line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from fer_sweep.results.formats import param_label, pct
from tests.helpers import (
    FINISHED_STUDY_SPEC,
    cli,
    invoke,
    journal_study,
    make_spec,
    no_wandb_login,
    refused,
    write_tiny_spec,
)


def test_run_writes_one_trials_csv_row_per_trial(tiny_sweep):
    folder, ran, _ = tiny_sweep
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["state"] in ("complete", "pruned")
        assert 0.0 <= float(r["val_acc"]) <= 1.0
        assert 1 <= int(r["epochs"]) <= 2 and float(r["seconds"]) > 0
        assert r["params.norm"] in ("batch", "none") and json.loads(r["params.conv"])[0][1] == 3
    assert "3/3 finished" in ran.stdout
    from fer_sweep.learn.precision import cpu_capability  # the run header names the precision and the CPU capability
    assert "tiny: 3 trials" in ran.stderr and "precision: " in ran.stderr and cpu_capability() in ran.stderr
    assert yaml.safe_load((folder / "spec.yaml").read_text())["trials"] == 3


def test_one_offline_wandb_run_per_trial(tiny_sweep):
    folder, ran, _ = tiny_sweep
    runs = sorted((folder / "wandb").glob("offline-run-*"))
    assert len(runs) == 3 + 1  # three trials and the final retrain
    for run in runs:
        assert list(run.glob("run-*.wandb")), f"no wandb log in {run}"
    # the hint names this CLI's own upload command and the study's flags (not `wandb sync`)
    assert f"upload them with `fer-sweep sync --study tiny --results {folder.parent}`" in ran.stdout
    assert f"next: fer-sweep best --study tiny --results {folder.parent}" in ran.stdout


def test_study_matches_csv_and_nothing_left_running(tiny_sweep):
    folder, _, _ = tiny_sweep
    study = journal_study(folder.parent, "tiny")
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:
        assert len(t.intermediate_values) == t.user_attrs["epochs"]  # val acc reported every epoch
        assert t.user_attrs["ticket"] == t.number


def test_rerun_of_a_finished_sweep_runs_nothing(tiny_sweep):
    folder, _, _ = tiny_sweep
    spec = write_tiny_spec(folder.parent.parent)
    before = [(t.number, t.state, t.datetime_complete) for t in journal_study(folder.parent, "tiny").get_trials()]
    invoke("run", str(spec), "--results", str(folder.parent), "--wandb", "disabled", "--device", "cpu")
    after = [(t.number, t.state, t.datetime_complete) for t in journal_study(folder.parent, "tiny").get_trials()]
    assert after == before


def test_resume_with_another_spec_is_refused(tiny_sweep, tmp_path):
    folder, _, _ = tiny_sweep
    spec = write_tiny_spec(tmp_path, train={"epochs": 3, "patience": 0, "batch_size": 32})
    journal = folder / "journal.log"
    before = journal.read_bytes()
    refused("run", spec, "--results", folder.parent, words=("was started with other train",))
    assert journal.read_bytes() == before  # refused before the study was touched


def _wait_for_running(proc: subprocess.Popen, results: Path, name: str, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if (results / name / "journal.log").exists():
            try:
                trials = journal_study(results, name).get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # the journal file exists a moment before the study is created in it
                continue
            if trials and trials[0].intermediate_values:  # mid-trial: one epoch done
                return
    raise AssertionError("the sweep never got a trial running")


@pytest.mark.parametrize("how", ["kill", "interrupt", "terminate"])
def test_resume_after_kill_or_ctrl_c_ends_with_exactly_n(tmp_path, how):
    """SIGKILL leaves the trial RUNNING (a rerun reaps it); Ctrl-C and SIGTERM (a cluster's preemption) fail
    it as `interrupted` and re-queue it at once, and the process exits promptly (130 and 143)."""
    # trials long enough (~1 s an epoch) that the cut lands mid-trial
    spec = write_tiny_spec(tmp_path, study=f"resume-{how}", trials=3,
                           train={"epochs": 3, "patience": 0, "batch_size": 32},
                           splits={"synthetic_n": 1400, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                           model={"arch": "cnn", "fc_units": 32, "conv": [[16, 3], [32, 3]]},
                           space={"lr": {"choices": [0.001, 0.002, 0.003]}})
    results = tmp_path / "results"
    args = ("run", str(spec), "--results", str(results), "--wandb", "disabled", "--device", "cpu")
    # Ctrl-C as a terminal sends it: SIGINT at its default even when this suite was started in the background by a
    # non-interactive shell (`make test &`), which leaves SIGINT ignored for every process it starts
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_running(proc, results, f"resume-{how}")
    assert proc.poll() is None, "the run ended before the signal"
    signalled = time.monotonic()
    proc.send_signal({"kill": signal.SIGKILL, "interrupt": signal.SIGINT, "terminate": signal.SIGTERM}[how])
    _, stderr = proc.communicate(timeout=60)
    if how != "kill":
        assert proc.returncode == (130 if how == "interrupt" else 143), stderr
        assert "run the same command again to resume" in stderr and "Traceback" not in stderr
        assert time.monotonic() - signalled < 20  # promptly: the epoch in progress is not finished first
        cut = [t for t in journal_study(results, f"resume-{how}").get_trials() if t.state == TrialState.FAIL]
        assert [t.user_attrs["message"] for t in cut] == ["Ctrl-C" if how == "interrupt" else "SIGTERM"]
        waiting = journal_study(results, f"resume-{how}").get_trials(states=(TrialState.WAITING,))
        assert [t.system_attrs["fixed_params"] for t in waiting if t.user_attrs.get("retry_of") == cut[0].number] \
            == [cut[0].params]
    study = journal_study(results, f"resume-{how}")
    cut = [t for t in study.get_trials()
           if t.state == TrialState.RUNNING or t.user_attrs.get("outcome") == "interrupted"]
    assert cut, "the cut trial should be RUNNING (killed) or failed as interrupted"
    cut_ticket = cut[0].user_attrs["ticket"]
    if how != "kill":  # status calls the cut trial what it is: interrupted and re-queued, not failed
        shown = invoke("status", "--study", f"resume-{how}", "--results", results).stdout
        assert "0 failed, 1 interrupted and re-queued" in shown, shown

    done_before = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials())
    rerun = subprocess.run(cli(*args), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    requeued = "1 re-queued (each resumes at its last saved epoch)"  # a killed trial is reaped and re-queued too
    assert f"resuming: {done_before} of 3 finished, {requeued}" in rerun.stderr, rerun.stderr
    assert f"(ticket {cut_ticket}) resumes at epoch " in rerun.stderr  # from its checkpoint, not from epoch 1
    trials = journal_study(results, f"resume-{how}").get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert sorted(t.user_attrs["ticket"] for t in finished) == [0, 1, 2]
    redone = [t for t in finished if t.user_attrs["ticket"] == cut_ticket]
    assert len(redone) == 1 and redone[0].params == cut[0].params and redone[0].number > cut[0].number
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs.get("outcome") for t in failed] == ["crashed" if how == "kill" else "interrupted"]
    rows = list(csv.DictReader((results / f"resume-{how}" / "trials.csv").open()))
    assert sum(r["state"] in ("complete", "pruned") for r in rows) == 3


def test_run_leaderboard_fits_80_columns(tmp_path):
    spec = make_spec(tmp_path, "fit80", 2, model={"arch": "cnn", "fc_units": 8}, train={"epochs": 1, "patience": 0},
                     space={"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]},
                            "lr": {"low": 0.0001, "high": 0.01, "log": True}, "norm": {"choices": ["batch", "none"]},
                            "dropout": {"low": 0.1, "high": 0.3}, "batch_size": {"choices": [32, 64]},
                            "weight_decay": {"low": 0.00001, "high": 0.001, "log": True}})
    run = subprocess.run(cli("run", str(spec), "--results", str(tmp_path / "r"), "--device", "cpu"),
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert run.returncode == 0, run.stderr
    assert "…" not in run.stdout and "2/2 finished" in run.stdout
    rows = json.loads(subprocess.run(cli("status", "--results", str(tmp_path / "r"), "--json"), capture_output=True,
                                     text=True, timeout=120).stdout)["leaderboard"]
    for row in rows:
        assert pct(row["val_acc"]) in run.stdout and param_label("lr", row["params.lr"]) in run.stdout


def test_bad_flag_value_is_one_line(tmp_path):
    refused("run", make_spec(tmp_path, "good", 2), "--wandb", "cloud", "--results", tmp_path / "r",
            words=("--wandb: unknown value 'cloud'",))
    assert not (tmp_path / "r").exists()


def test_run_backend_wandb_offline_or_logged_out_is_a_clear_error(tmp_path, monkeypatch):
    import wandb

    def no_sweep(*args, **kwargs):
        raise AssertionError("a W&B sweep was created")

    monkeypatch.setattr(wandb, "sweep", no_sweep)
    no_wandb_login(monkeypatch, tmp_path)
    spec = tmp_path / "small.yaml"
    spec.write_text(yaml.safe_dump(FINISHED_STUDY_SPEC))
    args = ("run", spec, "--backend", "wandb", "--results", tmp_path / "r")
    refused(*args, "--wandb", "offline", words=("--backend wandb needs W&B online",))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    refused(*args, "--wandb", "online", words=("not logged in", "wandb login"))
    refused(*args, "--wandb", "online", "--workers", "2", words=("--workers", "--backend optuna"))
    refused(*args, "--backend", "ray", words=("--backend", "ray"))
    assert not (tmp_path / "r").exists()
