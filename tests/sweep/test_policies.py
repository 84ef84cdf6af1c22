"""Sweep policies (sweep/policies.py): asynchronous successive halving (ASHA) with two workers and a resume."""

from __future__ import annotations

import subprocess

from optuna.trial import TrialState

from tests.helpers import check_exact, cli, journal_study, make_spec

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
