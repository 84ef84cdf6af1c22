"""`fer-sweep status --json`: counts, the leaderboard and the importances' basis."""

from __future__ import annotations

import json


from tests.helpers import invoke


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
