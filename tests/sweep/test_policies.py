"""Sweep policies (sweep/policies.py): asynchronous successive halving (ASHA) with two workers and a resume; the
pruner's maximum resource is the spec's largest epoch budget."""

from __future__ import annotations

import subprocess

import pytest
from optuna.trial import TrialState

from fer_sweep.sweep.policies import make_pruner
from fer_sweep.sweep.spec import parse_spec
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


@pytest.mark.parametrize("train, space, expected", [
    ({}, {"epochs": {"choices": [5, 20]}}, 20),  # searched: its top choice, not TrainConfig's default 15
    ({}, {"epochs": {"low": 4, "high": 40}}, 40),
    ({"epochs": 9}, {}, 9),
    ({}, {}, 15),
])
def test_hyperband_max_resource_is_the_largest_epoch_budget(train, space, expected):
    hyperband = {"type": "hyperband", "min_epochs": 1, "reduction_factor": 3}
    spec = parse_spec({"data": "synthetic", "pruner": hyperband, "train": train, "space": space}, "s.yaml")
    assert make_pruner(spec)._max_resource == expected == spec.max_epochs  # Optuna's own record of max_resource
