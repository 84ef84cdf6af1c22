"""Trials that learn nothing end early as `diverged` (spec `dead_after`, sweep/trial.py dead_trial), whatever the
pruner says: the rule on a history, and a real `run` whose trials sit at the majority-class rate."""

from __future__ import annotations

import json

from optuna.trial import TrialState

from fer_sweep.sweep.trial import dead_trial
from tests.helpers import invoke, journal_study, make_spec, refused


def _history(accs, losses=None):
    losses = losses or [1.9] * len(accs)
    return [{"epoch": i + 1, "val/acc": a, "train/loss": loss} for i, (a, loss) in enumerate(zip(accs, losses))]


def test_a_trial_at_the_majority_rate_or_with_a_rising_loss_is_dead_after_n_epochs():
    assert dead_trial(_history([0.2494]), 0.2494, 2) is None  # one epoch: too soon
    why = dead_trial(_history([0.2494, 0.2494]), 0.2494, 2)
    assert why and "majority-class rate (24.94%)" in why and "predicts one class" in why
    assert dead_trial(_history([0.2494, 0.31]), 0.2494, 2) is None  # it learns
    assert dead_trial(_history([0.31, 0.2494]), 0.2494, 2) is None  # it learned once: not stuck from the start
    assert dead_trial(_history([0.2494, 0.2494]), 0.2494, 0) is None  # dead_after: 0, never
    rising = dead_trial(_history([0.3, 0.3, 0.3], [1.8, 1.9, 2.1]), 0.25, 2)
    assert rising and "train loss rising for 2 epochs (1.800 -> 2.100)" in rising
    assert dead_trial(_history([0.3, 0.3, 0.3], [1.8, 1.7, 1.75]), 0.25, 2) is None  # noise, not a rise
    assert dead_trial(_history([0.3, 0.3, 0.3], [1.8, 1.6, 1.7, 1.75][:3]), 0.25, 2) is None  # below the first
    assert dead_trial([{"epoch": 1, "val/acc": None, "train/loss": None}] * 2, 0.25, 2) is None  # no numbers


def test_run_stops_trials_that_learn_nothing_after_dead_after_epochs(tmp_path):
    """The notebook grid's dead corner (a large lr without normalisation): the network collapses to one class, its
    validation accuracy sits at the majority-class rate; each trial ends as diverged after 2 of its 6 epochs, with
    one line, and counts as finished (not re-run)."""
    results = tmp_path / "r"
    spec = make_spec(tmp_path, "dead", 2, dead_after=2, pruner={"type": "none"},
                     train={"epochs": 6, "patience": 0, "batch_size": 32},
                     model={"arch": "cnn", "fc_units": 8, "norm": "none"},
                     splits={"synthetic_n": 700, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                     space={"lr": {"choices": [0.5, 1.0]}})
    ran = invoke("run", spec, "--results", results, "--device", "cpu")
    trials = journal_study(results, "dead").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert all(t.user_attrs["outcome"] == "diverged" and t.user_attrs["epochs"] == 2 for t in trials)
    assert "the model predicts one class" in trials[0].user_attrs["message"]
    said = ran.stderr + ran.stdout
    assert "2/2 finished" in said and "majority-class rate" in " ".join(said.split()), said
    status = json.loads(invoke("status", "--study", "dead", "--results", results, "--json").stdout)
    assert status["finished"] == 2 and status["counts"] == {"diverged": 2}
    shown = invoke("status", "--study", "dead", "--results", results).stdout  # stopped on purpose, not failed
    assert "0 complete, 0 pruned, 2 diverged (stopped early), 0 failed" in " ".join(shown.split()), shown


def test_dead_after_is_checked(tmp_path):
    refused("run", make_spec(tmp_path, "bad", 2, dead_after=-1), "--results", tmp_path / "r",
            words=("dead_after",))
