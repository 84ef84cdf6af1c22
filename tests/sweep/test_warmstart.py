"""Warm start (`run NEW --from OLD`, sweep/warmstart.py): which old trials fit an edited space, and a real run that
imports them, counts them apart, does not draw their configurations again, and lets `best` use them."""

from __future__ import annotations

import json

import optuna
from optuna.trial import TrialState

from fer_sweep.sweep.spec import load_spec
from fer_sweep.sweep.warmstart import fit
from tests.helpers import invoke, journal_study, make_spec, refused

# OLD fixed norm: batch and tried three learning rates; NEW searches norm too, and drops lr 0.05
OLD = {"model": {"arch": "cnn", "fc_units": 8, "norm": "batch"}, "pruner": {"type": "none"},
       "space": {"lr": {"choices": [0.001, 0.01, 0.05]}}, "keep": 10}
NEW = {"pruner": {"type": "none"}, "space": {"lr": {"choices": [0.001, 0.01]}, "norm": {"choices": ["batch", "none"]}}}


def _trial(**params) -> optuna.trial.FrozenTrial:
    dists = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
    return optuna.trial.create_trial(params=params, distributions=dists, value=0.5)


def test_an_old_trial_fits_when_the_new_space_holds_its_settings_and_the_fixed_ones_agree(tmp_path):
    old = load_spec(make_spec(tmp_path, "old", 3, **OLD))
    new = load_spec(make_spec(tmp_path, "new", 2, **NEW))
    assert fit(new, old, _trial(lr=0.01)) == ({"lr": 0.01, "norm": "batch"}, "")  # OLD's fixed norm, mapped
    assert fit(new, old, _trial(lr=0.05)) == (None, "lr 0.05 outside the new choices")
    ranged = load_spec(make_spec(tmp_path, "ranged", 2, pruner={"type": "none"},
                                 space={"lr": {"low": 0.005, "high": 0.02, "log": True}}))
    assert fit(ranged, old, _trial(lr=0.01))[0] == {"lr": 0.01}
    assert fit(ranged, old, _trial(lr=0.001)) == (None, "lr 0.001 outside the new range")
    longer = load_spec(make_spec(tmp_path, "longer", 2, **NEW, train={"epochs": 3, "patience": 0, "batch_size": 32}))
    assert fit(longer, old, _trial(lr=0.01)) == (None, "epochs 2, not 3 as now")  # a setting NEW fixes differs


def test_run_from_an_old_study_imports_what_fits_and_best_uses_it(tmp_path):
    results = tmp_path / "r"
    invoke("run", make_spec(tmp_path, "old", 3, **OLD), "--results", results, "--device", "cpu")
    new_spec = make_spec(tmp_path, "new", 2, **NEW)
    ran = invoke("run", new_spec, "--results", results, "--device", "cpu", "--from", "old")
    said = " ".join(ran.stderr.split())
    assert "warm start from old: imported 2 finished trials" in said, ran.stderr
    assert "not imported: 1 trial: lr 0.05 outside the new choices" in said, ran.stderr

    old, new = journal_study(results, "old"), journal_study(results, "new")
    imported = [t for t in new.get_trials() if "imported_from" in t.user_attrs]
    own = [t for t in new.get_trials() if "imported_from" not in t.user_attrs]
    by_origin = {t.user_attrs["imported_from"]: t for t in imported}
    for t in old.get_trials(states=(TrialState.COMPLETE,)):
        if t.params["lr"] != 0.05:
            copy = by_origin[f"old#{t.number}"]
            assert copy.value == t.value and copy.params == {**t.params, "norm": "batch"}
            assert copy.intermediate_values == t.intermediate_values
    assert len(imported) == 2 and len(own) == 2 and all(t.state == TrialState.COMPLETE for t in own)
    assert {t.params["norm"] for t in own} == {"none"}  # the random search did not draw an imported config again

    status = json.loads(invoke("status", "--study", "new", "--results", results, "--json").stdout)
    assert status["finished"] == 2 and status["imported"] == 2 and status["target"] == 2
    top = max(new.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    assert status["best"]["number"] == top.number
    winner = json.loads(invoke("best", "--study", "new", "--results", results, "--no-retrain", "--json").stdout)
    assert winner["winner"]["number"] == top.number
    ensemble = json.loads(invoke("best", "--study", "new", "--results", results, "--ensemble", "4", "--device", "cpu",
                                 "--json").stdout)
    assert {t.number for t in imported} <= set(ensemble["candidates"])  # their kept models, copied into new's store

    again = invoke("run", new_spec, "--results", results, "--device", "cpu", "--from", "old")
    assert "imported 0 finished trials (2 imported before)" in " ".join(again.stderr.split()), again.stderr
    assert len(journal_study(results, "new").get_trials()) == 4


def test_from_a_study_on_other_splits_or_none_is_one_line_and_writes_nothing(tmp_path):
    results = tmp_path / "r"
    invoke("run", make_spec(tmp_path, "old", 1, **OLD), "--results", results, "--device", "cpu")
    other = make_spec(tmp_path, "other", 2, **NEW, splits={"synthetic_n": 240, "val_frac": 0.2, "test_frac": 0.2,
                                                          "seed": 0})
    refused("run", other, "--results", results, "--from", "old", words=("--from old", "other splits"))
    refused("run", other, "--results", results, "--from", "nosuch", words=("--from nosuch",))
    refused("run", make_spec(tmp_path, "old", 1, **OLD), "--results", results, "--from", "old",
            words=("--from old", "the study being run"))
    assert not (results / "other").exists()
