"""End to end through the real CLI: a tiny sweep on synthetic faces, real journal storage, real wandb
offline files, then `best` and `status`; and resume after a killed or interrupted sweep."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from fer_sweep.cli import app

TINY = {
    "study": "tiny", "data": "synthetic", "trials": 3, "seed": 1,
    "splits": {"synthetic_n": 280, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
    "pruner": {"type": "median", "startup_trials": 1, "warmup_epochs": 1},
    "wandb": {"project": "fer-sweep-tests", "mode": "offline"},
    "model": {"arch": "cnn", "fc_units": 16},
    "train": {"epochs": 2, "patience": 0, "batch_size": 32},
    "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]},
              "lr": {"low": 0.001, "high": 0.01, "log": True}, "norm": {"choices": ["batch", "none"]}},
}


def write_spec(folder: Path, **changes) -> Path:
    spec = {**TINY, **changes}
    path = folder / f"{spec['study']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.stderr}\n{result.exception!r}"
    return result


def load_study(results: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(results / name / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec = write_spec(root)
    results = root / "results"
    ran = invoke("run", str(spec), "--results", str(results), "--wandb", "offline", "--device", "cpu")
    best = invoke("best", "--results", str(results), "--device", "cpu", "--wandb", "offline", "--seeds", "2")
    return results / "tiny", ran, best


def test_run_writes_one_trials_csv_row_per_trial(swept):
    folder, ran, _ = swept
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


def test_one_offline_wandb_run_per_trial(swept):
    folder, ran, _ = swept
    runs = sorted((folder / "wandb").glob("offline-run-*"))
    assert len(runs) == 3 + 1  # three trials and the final retrain
    for run in runs:
        assert list(run.glob("run-*.wandb")), f"no wandb log in {run}"
    assert "wandb sync" in ran.stdout


def test_study_matches_csv_and_nothing_left_running(swept):
    folder, _, _ = swept
    study = load_study(folder.parent, "tiny")
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:
        assert len(t.intermediate_values) == t.user_attrs["epochs"]  # val acc reported every epoch
        assert t.user_attrs["ticket"] == t.number


def test_best_writes_weights_config_metrics_and_confusion(swept):
    folder, _, best = swept
    final = folder / "final"
    state = torch.load(final / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    metrics = json.loads((final / "metrics.json").read_text())
    config = json.loads((final / "config.json").read_text())
    study = load_study(folder.parent, "tiny")
    winner = max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    assert metrics["winner"]["number"] == winner.number == config["trial"]
    assert config["params"] == winner.params
    assert metrics["split"] == "test" and metrics["seeds"] == 2 and len(metrics["runs"]) == 2
    assert 0.0 <= metrics["test/acc"]["mean"] <= 1.0 and metrics["test/acc"]["std"] >= 0.0
    assert sum(map(sum, metrics["confusion"])) == metrics["n_test"] == 280 * 0.2
    assert [r["class"] for r in metrics["per_class"]] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert (final / "confusion.png").stat().st_size > 1000
    assert "winner" in best.stdout and "test: acc" in best.stdout


def test_status_json_counts_and_leaderboard(swept):
    folder, _, _ = swept
    result = invoke("status", "--results", str(folder.parent), "--json")
    st = json.loads(result.stdout)
    assert st["finished"] == 3 and st["target"] == 3
    assert sum(st["counts"].values()) == 3 and len(st["leaderboard"]) == 3
    assert st["epochs_trained"] <= st["epochs_budget"] == 6
    vals = [r["val_acc"] for r in st["leaderboard"] if r["state"] == "complete"]
    assert vals == sorted(vals, reverse=True)
    assert "trials of tiny" in invoke("status", "--results", str(folder.parent)).stdout


def test_rerun_of_a_finished_sweep_runs_nothing(swept):
    folder, _, _ = swept
    spec = write_spec(folder.parent.parent)
    before = [(t.number, t.state, t.datetime_complete) for t in load_study(folder.parent, "tiny").get_trials()]
    invoke("run", str(spec), "--results", str(folder.parent), "--wandb", "disabled", "--device", "cpu")
    after = [(t.number, t.state, t.datetime_complete) for t in load_study(folder.parent, "tiny").get_trials()]
    assert after == before


def test_resume_with_another_spec_is_refused(swept, tmp_path):
    folder, _, _ = swept
    spec = write_spec(tmp_path, train={"epochs": 3, "patience": 0, "batch_size": 32})
    result = CliRunner().invoke(app, ["run", str(spec), "--results", str(folder.parent)])
    assert result.exit_code == 2 and "was started with other train" in result.stderr


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fer_sweep", *args]


def _wait_for_running(proc: subprocess.Popen, results: Path, name: str, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if (results / name / "journal.log").exists():
            try:
                trials = load_study(results, name).get_trials(states=(TrialState.RUNNING,))
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
    spec = write_spec(tmp_path, study=f"resume-{how}", trials=3, train={"epochs": 3, "patience": 0, "batch_size": 32},
                      splits={"synthetic_n": 1400, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                      model={"arch": "cnn", "fc_units": 32, "conv": [[16, 3], [32, 3]]}, space={"lr": {"choices": [0.001, 0.002, 0.003]}})
    results = tmp_path / "results"
    args = ("run", str(spec), "--results", str(results), "--wandb", "disabled", "--device", "cpu")
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_running(proc, results, f"resume-{how}")
    signalled = time.monotonic()
    proc.send_signal({"kill": signal.SIGKILL, "interrupt": signal.SIGINT, "terminate": signal.SIGTERM}[how])
    _, stderr = proc.communicate(timeout=60)
    if how != "kill":
        assert proc.returncode == (130 if how == "interrupt" else 143), stderr
        assert "run the same command again to resume" in stderr and "Traceback" not in stderr
        assert time.monotonic() - signalled < 20  # promptly: the epoch in progress is not finished first
        cut = [t for t in load_study(results, f"resume-{how}").get_trials() if t.state == TrialState.FAIL]
        assert [t.user_attrs["message"] for t in cut] == ["Ctrl-C" if how == "interrupt" else "SIGTERM"]
        waiting = load_study(results, f"resume-{how}").get_trials(states=(TrialState.WAITING,))
        assert [t.system_attrs["fixed_params"] for t in waiting if t.user_attrs.get("retry_of") == cut[0].number] \
            == [cut[0].params]
    study = load_study(results, f"resume-{how}")
    cut = [t for t in study.get_trials()
           if t.state == TrialState.RUNNING or t.user_attrs.get("outcome") == "interrupted"]
    assert cut, "the cut trial should be RUNNING (killed) or failed as interrupted"
    cut_ticket = cut[0].user_attrs["ticket"]

    rerun = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    trials = load_study(results, f"resume-{how}").get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert sorted(t.user_attrs["ticket"] for t in finished) == [0, 1, 2]
    redone = [t for t in finished if t.user_attrs["ticket"] == cut_ticket]
    assert len(redone) == 1 and redone[0].params == cut[0].params and redone[0].number > cut[0].number
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs.get("outcome") for t in failed] == ["crashed" if how == "kill" else "interrupted"]
    rows = list(csv.DictReader((results / f"resume-{how}" / "trials.csv").open()))
    assert sum(r["state"] in ("complete", "pruned") for r in rows) == 3
