"""Sweep policies: asynchronous successive halving (ASHA) with two workers and a resume, and an out-of-memory
on a GPU shared with other workers retried instead of being taken as the configuration's verdict."""

from __future__ import annotations

import subprocess

from optuna.trial import TrialState

from fer_sweep.sweep.worker import make_worker
from fer_sweep.sweep.spec import load_spec
from fer_sweep.sweep.worker import MAX_OOM_RETRIES, OOM_RETRIES, worker_loop
from fer_sweep.sweep.study import prepare_study
from fer_sweep.sweep.summary import outcome
from tests.test_workers import check_exact, cli, journal_study, make_spec

ASHA = {"type": "asha", "min_epochs": 1, "reduction_factor": 2}


def test_asha_prunes_at_its_rungs_and_resumes_with_two_workers(tmp_path):
    spec = make_spec(tmp_path, "asha", 4, pruner=ASHA, train={"epochs": 4, "patience": 0, "batch_size": 32})
    results = tmp_path / "results"
    run = cli("run", str(spec), "--workers", "2", "--results", str(results), "--device", "cpu")
    first = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    before = {t.number: (t.state, t.user_attrs["ticket"]) for t in journal_study(results, "asha").get_trials()}
    again = subprocess.run([*run, "--trials", "8"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    study = journal_study(results, "asha")
    finished = check_exact(study, spec, 8)  # tickets 0..7 once each, the seeded configurations
    assert {t.number: (t.state, t.user_attrs["ticket"]) for t in study.get_trials() if t.number in before} == before
    pruned = [t for t in finished if t.state == TrialState.PRUNED]
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    assert pruned and complete, [(t.number, t.state, dict(t.intermediate_values)) for t in finished]
    for t in pruned:  # rungs at 1, 2 (and 4 = the last epoch, never pruned): a trial stops right after one
        assert max(t.intermediate_values) in (1, 2) and t.user_attrs["epochs"] == max(t.intermediate_values)
    assert all(t.user_attrs["epochs"] == 4 for t in complete)
    assert {t.user_attrs["worker"] for t in finished} == {"w0", "w1"}


def test_out_of_memory_on_a_shared_gpu_is_retried_then_final(tmp_path):
    """A real allocation failure (a 3 TB head layer) in a worker that shares its device: re-queued
    MAX_OOM_RETRIES times as `oom_retry` (not finished), then recorded as the configuration's `oom`."""
    huge = {"arch": "cnn", "fc_units": 10_000_000_000}
    spec = load_spec(make_spec(tmp_path, "oom", 1, model=huge, space={"lr": {"choices": [0.001]}}))
    results = tmp_path / "results"
    study = prepare_study(spec, results, None)
    w = make_worker(spec, study, results / "oom", device="cpu", wandb_mode="disabled")
    w.shared_device = True
    assert worker_loop(w) == MAX_OOM_RETRIES + 1
    trials = study.get_trials()
    assert [outcome(t) for t in trials] == ["oom_retry"] * MAX_OOM_RETRIES + ["oom"]
    assert [t.user_attrs.get(OOM_RETRIES, 0) for t in trials] == list(range(MAX_OOM_RETRIES + 1))
    assert {t.user_attrs["ticket"] for t in trials} == {0}
    assert "re-queued" in trials[0].user_attrs["message"] and "can't allocate memory" in trials[-1].user_attrs["message"]
    w.shared_device = False  # a worker alone on its device takes the first OOM as the verdict
    spec2 = load_spec(make_spec(tmp_path, "oom2", 1, model=huge, space={"lr": {"choices": [0.001]}}))
    study2 = prepare_study(spec2, results, None)
    w2 = make_worker(spec2, study2, results / "oom2", device="cpu", wandb_mode="disabled")
    assert worker_loop(w2) == 1 and outcome(study2.get_trials()[0]) == "oom"
