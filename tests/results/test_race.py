"""`best --race` as a library (results/race.py): p_best's bootstrap, the candidates, a trial's sweep seeds (spec
`repeats`: user attrs `seed_values`), and a race stopped mid-seed that goes on from its epoch checkpoint, ending with
the values of a race never stopped (CPU training is deterministic)."""

from __future__ import annotations

import shutil

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from fer_sweep.config import Notice, UserError
from fer_sweep.results.race import candidates, p_best, race, race_models, sweep_values
from fer_sweep.sweep.trial import trial_config
from tests.helpers import invoke, make_spec

TRAIN = {"epochs": 3, "patience": 0, "batch_size": 32, "deterministic": True}


def test_p_best_sums_to_one_and_is_reproducible():
    rng = np.random.default_rng(1)
    values = [list(rng.uniform(0.4, 0.6, n)) for n in (2, 3, 5, 3)]
    p = p_best(values)
    assert len(p) == 4 and all(0.0 <= x <= 1.0 for x in p)
    assert sum(p) == pytest.approx(1.0, abs=1e-9)
    assert p_best(values) == p  # a fixed generator seed


def test_p_best_of_a_dominant_candidate_and_of_ties():
    assert p_best([[0.7, 0.72, 0.71], [0.5, 0.6, 0.65]]) == [1.0, 0.0]  # every draw: its mean is the best
    assert p_best([[0.5, 0.5], [0.5, 0.5], [0.4, 0.45]]) == pytest.approx([0.5, 0.5, 0.0])  # equal means share
    a, b = p_best([[0.5, 0.6, 0.55], [0.6, 0.5, 0.55]])  # the same seeds' values: about even
    assert a == pytest.approx(0.5, abs=0.05) and a + b == pytest.approx(1.0, abs=1e-12)
    assert p_best([[0.6]]) == [1.0]


def _study(values: list[float | None], attrs: list[dict] | None = None) -> optuna.Study:
    """An in-memory study: a complete trial per value, a pruned one per None."""
    study = optuna.create_study(direction="maximize", study_name="fake")
    dist = {"lr": optuna.distributions.FloatDistribution(0.001, 0.01)}
    for i, v in enumerate(values):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 0.001 + i * 0.001}, distributions=dist, value=v,
            state=TrialState.PRUNED if v is None else TrialState.COMPLETE, user_attrs=(attrs or [{}] * 9)[i]))
    return study


def test_candidates_are_the_top_complete_trials_older_first_among_equals():
    study = _study([0.5, 0.7, None, 0.7, 0.6])
    chosen, notes = candidates(study, 2)
    assert [t.number for t in chosen] == [1, 3] and notes == []
    chosen, notes = candidates(study, 9)  # more than there are: all 4 complete ones, with a note
    assert [t.number for t in chosen] == [1, 3, 4, 0] and "racing all 4" in notes[0]
    with pytest.raises(UserError, match="nothing to race"):
        candidates(_study([0.5, None]), 2)


def test_where_few_trials_completed_the_pruned_ones_that_went_furthest_fill_the_race():
    """ASHA stops most trials early: a race of 3 after one complete trial takes the pruned trials of the most epochs,
    then of the best accuracy reported; a pruned trial without an epoch never races."""
    study = optuna.create_study(direction="maximize", study_name="asha")
    dist = {"lr": optuna.distributions.FloatDistribution(0.001, 0.01)}
    for i, (state, curve) in enumerate([(TrialState.PRUNED, [0.30]), (TrialState.COMPLETE, [0.3, 0.4, 0.5, 0.55]),
                                        (TrialState.PRUNED, [0.30, 0.35]), (TrialState.PRUNED, [0.45]),
                                        (TrialState.PRUNED, [0.30, 0.38]), (TrialState.PRUNED, [])]):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 0.001 + i * 0.001}, distributions=dist, state=state,
            value=max(curve) if state == TrialState.COMPLETE else None,
            intermediate_values=dict(enumerate(curve, start=1))))
    chosen, notes = candidates(study, 3)
    assert [t.number for t in chosen] == [1, 4, 2]  # 2 epochs before 1; of 2 epochs the better accuracy first
    assert len(notes) == 1 and "1 complete trial; 2 pruned ones (stopped at epoch 2) race too" in notes[0]
    chosen, notes = candidates(study, 9)  # every trial with an epoch: trial 5 (none) never races
    assert [t.number for t in chosen] == [1, 4, 2, 3, 0] and "racing all 5" in notes[-1]


def test_a_trial_of_a_repeats_sweep_brings_its_seeds():
    study = _study([0.55, 0.5], [{"seeds": 2, "seed_values": [0.5, 0.6], "val_acc_std": 0.05}, {}])
    with_seeds, plain = study.get_trials()
    assert sweep_values(with_seeds) == [0.5, 0.6] and sweep_values(plain) == [0.5]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A 2-trial study (3 epochs per trial, no pruning) and an untouched copy of its results."""
    root = tmp_path_factory.mktemp("race-lib")
    results = root / "results"
    invoke("run", make_spec(root, "stop", 2, pruner={"type": "none"}, train=TRAIN), "--results", results,
           "--device", "cpu")
    shutil.copytree(results, root / "fresh")
    return {"results": results, "fresh": root / "fresh"}


def _open(results):
    from fer_sweep.sweep.study import open_existing
    from fer_sweep.sweep.trial import load_data

    spec, study, folder = open_existing(results, "stop", None)
    return spec, study, folder, load_data(spec)


def test_a_stopped_race_goes_on_from_its_checkpoint_and_ends_as_a_fresh_one(stopped):
    """Ctrl-C (a KeyboardInterrupt from on_epoch) in epoch 1 of the second candidate's race seed: the first one's
    seed is saved whole in race/, the second's epoch checkpoint waits; the same race trains epochs 2 and 3 of that
    seed only and ends with the values of a race never stopped."""
    spec, study, folder, splits = _open(stopped["results"])
    seen: list[tuple[int, int, int]] = []

    def stop_after_four(trial, seed, result, epochs):
        seen.append((trial, seed, result.epoch))
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as e:
        race(spec, study, folder, splits, k=2, seeds=2, device="cpu", on_epoch=stop_after_four)
    assert "goes on from its last saved epoch" in e.value.stopped  # type: ignore[attr-defined]
    (first, s1, _), (second, s2, _) = seen[0], seen[3]
    assert [p.name for p in race_models(folder)] == [f"t{first}-s{s1}"] and first != second
    assert (folder / "race" / ".checkpoints" / f"t{second}-s{s2}.pt").is_file()

    again: list[tuple[int, int, int]] = []
    with pytest.warns(Notice, match="resumes at epoch 2"):
        resumed = race(spec, study, folder, splits, k=2, seeds=2, device="cpu",
                       on_epoch=lambda t, s, r, n: again.append((t, s, r.epoch)))
    assert again == [(second, s2, 2), (second, s2, 3)]  # the first seed reused, the second goes on
    by_trial = {e["trial"]: e for e in resumed["race"]}
    assert (by_trial[first]["reused"], by_trial[first]["trained_now"]) == (1, 0)
    assert (by_trial[second]["reused"], by_trial[second]["trained_now"]) == (0, 1)
    assert not list((folder / "race" / ".checkpoints").glob("*.pt")) and len(race_models(folder)) == 2

    fspec, fstudy, ffolder, fsplits = _open(stopped["fresh"])
    fresh = race(fspec, fstudy, ffolder, fsplits, k=2, seeds=2, device="cpu")
    assert [(e["trial"], e["values"]) for e in fresh["race"]] == [(e["trial"], e["values"]) for e in resumed["race"]]
    assert sum(e["p_best"] for e in resumed["race"]) == pytest.approx(1.0, abs=1e-9)
    assert resumed["winner"] == resumed["race"][0]["trial"] == max(
        resumed["race"], key=lambda e: sum(e["values"]) / len(e["values"]))["trial"]


def test_trials_with_their_seeds_from_a_repeats_sweep_race_only_the_missing_ones(stopped, tmp_path):
    """Trials that bring 3 seeds (`seed_values`) race to 3 seeds without training and to 4 with one seed each, the
    seed after theirs (train seed + 3)."""
    spec, study, _, splits = _open(stopped["fresh"])
    copy = optuna.create_study(direction="maximize", study_name="stop")
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        values = [t.value - 0.01, t.value, t.value + 0.01]
        copy.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.value,
                                                 user_attrs={**t.user_attrs, "seeds": 3, "seed_values": values}))
    three = race(spec, copy, tmp_path, splits, k=2, seeds=3, device="cpu")
    assert [e["trained_now"] for e in three["race"]] == [0, 0] and not race_models(tmp_path)
    assert all(e["values"] == sweep_values(copy.trials[e["trial"]]) for e in three["race"])
    four = race(spec, copy, tmp_path, splits, k=2, seeds=4, device="cpu")
    base = trial_config(copy.trials[0].params, spec)[1].train.seed
    assert all(e["seeds"] == 4 and e["from_sweep"] == 3 and e["trained_now"] == 1 for e in four["race"])
    assert all(e["seed_numbers"] == [base, base + 1, base + 2, base + 3] for e in four["race"])
    assert sorted(p.name for p in race_models(tmp_path)) == sorted(f"t{e['trial']}-s{base + 3}" for e in four["race"])


def test_a_pruned_candidate_trains_every_seed_to_the_full_budget(stopped, tmp_path):
    """A race after ASHA: one trial complete, one pruned after epoch 1. The pruned one's run does not count: the race
    trains its seeds base and base + 1 for the sweep's full 3 epochs, and its seed base then scores what the sweep's
    own full run of that configuration scored (CPU training is deterministic)."""
    spec, study, _, splits = _open(stopped["fresh"])
    full = study.get_trials(states=(TrialState.COMPLETE,))
    copy = optuna.create_study(direction="maximize", study_name="stop")
    for i, t in enumerate(full):
        pruned = i == 0
        copy.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, value=None if pruned else t.value,
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE, user_attrs=t.user_attrs,
            intermediate_values={1: t.intermediate_values[1]} if pruned else t.intermediate_values))
    raced = race(spec, copy, tmp_path, splits, k=2, seeds=2, device="cpu")
    by_trial = {e["trial"]: e for e in raced["race"]}
    assert "1 pruned one (stopped at epoch 1) race too" in raced["notes"][0]
    cut, whole = by_trial[0], by_trial[1]
    assert (cut["sweep_state"], cut["from_sweep"], cut["trained_now"], cut["seeds"]) == ("pruned", 0, 2, 2)
    assert (whole["sweep_state"], whole["from_sweep"], whole["trained_now"]) == ("complete", 1, 1)
    assert cut["values"][0] == pytest.approx(full[0].value, abs=1e-6)  # seed base, to the full budget
    assert sorted(p.name for p in race_models(tmp_path)) == sorted(
        f"t{n}-s{s}" for n, e in by_trial.items() for s in e["seed_numbers"][e["from_sweep"]:])


def test_a_pruned_winner_of_a_race_is_retrained_like_any_winner(stopped, tmp_path):
    """The race's winner may be a trial ASHA pruned: `best` retrains its configuration at the full budget, tests it
    once and saves it; its panel and metrics describe the pruned trial as the sweep left it (value: its last report,
    as Optuna keeps a pruned trial's)."""
    from fer_sweep.results.best import retrain_best

    spec, study, _, splits = _open(stopped["fresh"])
    t = study.get_trials(states=(TrialState.COMPLETE,))[0]
    copy = optuna.create_study(direction="maximize", study_name="stop")
    copy.add_trial(optuna.trial.create_trial(
        params=t.params, distributions=t.distributions, value=t.intermediate_values[1], state=TrialState.PRUNED,
        user_attrs={**t.user_attrs, "epochs": 1, "best_epoch": 1}, intermediate_values={1: t.intermediate_values[1]}))
    pruned = copy.trials[0]
    m = retrain_best(spec, copy, tmp_path, splits, device="cpu", winner=pruned, record={"race": [{"trial": 0}]})
    assert m["winner"]["number"] == 0 and m["winner"]["epochs"] == 1  # the sweep's cut run, as it was
    assert m["race"] == [{"trial": 0}] and m["split"] == "test" and 0.0 <= m["test/acc"]["mean"] <= 1.0
    assert m["seeds"] == 1 and (tmp_path / "final" / "model.pt").is_file()
