"""`fer-sweep status --json`: counts, the leaderboard, the epoch budget of a searched `epochs` and the importances'
basis."""

from __future__ import annotations

import json

from tests.helpers import invoke, write_tiny_spec


def test_status_json_counts_and_leaderboard(tiny_sweep):
    folder, _, _ = tiny_sweep
    result = invoke("status", "--results", str(folder.parent), "--json")
    st = json.loads(result.stdout)
    assert st["finished"] == 3 and st["target"] == 3
    assert sum(st["counts"].values()) == 3 and len(st["leaderboard"]) == 3
    assert st["epochs_trained"] <= st["epochs_budget"] == 6
    vals = [r["val_acc"] for r in st["leaderboard"] if r["state"] == "complete"]
    assert vals == sorted(vals, reverse=True)
    shown = invoke("status", "--results", str(folder.parent)).stdout
    assert "trials of tiny" in shown
    # what `best --seeds 2` saved: one retrain, no ensemble of models
    assert [(r["path"], r["seeds"]) for r in st["saved"]["retrains"]] == [("final/", 2)]
    assert st["saved"]["ensemble"] is None and "retrain final/: trial" in shown


def test_status_budget_of_a_searched_epochs(tmp_path, one_thread):
    """Found in use: a spec searching `epochs: {choices: [20]}` with no train.epochs had `status` count a budget of
    15 epochs a trial (TrainConfig's default) for trials that trained 20. The budget is the searched top."""
    spec = write_tiny_spec(tmp_path, study="searched", trials=1, pruner={"type": "none"},
                           splits={"synthetic_n": 140, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                           wandb={"project": "fer-sweep-tests", "mode": "disabled"},
                           model={"arch": "cnn", "conv": [[4, 3], [8, 3]], "fc_units": 8},
                           train={"patience": 0, "batch_size": 32}, space={"epochs": {"choices": [3]}})
    results = tmp_path / "results"
    invoke("run", spec, "--results", results, "--device", "cpu")
    st = json.loads(invoke("status", "--results", results, "--json").stdout)
    assert st["finished"] == 1 and st["leaderboard"][0]["epochs"] == 3
    assert st["epochs_trained"] == 3 and st["epochs_budget"] == 3
    assert st["eta_s"] == 0 and st["eta_basis"]["epochs_left_max"] == 0


def test_status_json_has_the_importance_basis(small_study):
    result = invoke("status", "--results", small_study["results"], "--json")
    basis = json.loads(result.stdout)["importance_basis"]
    assert basis["complete_trials"] <= 2 and basis["reliable"] is False and basis["reliable_from"] == 20


def test_saved_retrains_skip_what_cannot_be_read(tmp_path):
    from fer_sweep.results.retrains import saved

    assert saved(tmp_path) == {"retrains": [], "ensemble": None}  # nothing retrained
    (tmp_path / "final" / "earlier" / "1").mkdir(parents=True)
    (tmp_path / "final" / "model.pt").write_bytes(b"x")
    (tmp_path / "final" / "metrics.json").write_text('{"split": "test", "runs": [')  # torn
    (tmp_path / "final" / "ensemble.json").write_text("{}")
    assert saved(tmp_path) == {"retrains": [], "ensemble": None}
