"""`best --refit`: a selection run on train (validation held out) picks the epoch count and records the plateau
schedule's cuts; each seed is refit on train + validation for that many epochs with the cuts replayed, tested once,
saved, and its validation reported as not held out; the selection run's model is kept for ensembles, the refit
models are left out of them."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.helpers import cli, invoke, refused

SPEC = {
    "study": "refit", "data": "synthetic", "trials": 1, "seed": 0, "keep": 2,
    "splits": {"synthetic_n": 200, "val_frac": 0.25, "test_frac": 0.25, "seed": 0},
    "pruner": {"type": "none"}, "wandb": {"project": "fer-sweep-tests", "mode": "disabled"},
    "model": {"arch": "cnn", "conv": [[4, 3], [8, 3]], "fc_units": 8},
    "train": {"epochs": 1, "patience": 0, "batch_size": 32, "schedule": "plateau", "plateau_patience": 0,
              "plateau_factor": 0.5, "lr": 0.01},
    "space": {"dropout": {"choices": [0.1]}},
}


@pytest.fixture(scope="module")
def refit(tmp_path_factory):
    root = tmp_path_factory.mktemp("refit")
    spec, results = root / "refit.yaml", root / "results"
    spec.write_text(yaml.safe_dump(SPEC))
    done = subprocess.run(cli("run", str(spec), "--results", str(results), "--device", "cpu"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(invoke("best", "--refit", "--epochs", 4, "--seeds", 2, "--results", results, "--device",
                                "cpu", "--wandb", "disabled", "--json").stdout)
    return {"results": results, "final": results / "refit" / "final", "metrics": metrics}


def test_refit_trains_on_train_and_val_for_the_chosen_epochs(refit):
    m, final = refit["metrics"], refit["final"]
    r = m["refit"]
    chosen = r["selection"]["best_epoch"]
    assert 1 <= chosen <= 4 and r["epochs"] == chosen and r["selection"]["epochs"] <= 4
    assert r["faces"] == 100 + 50  # train + validation of the 200 synthetic faces (the 50 of test held out)
    assert [run["epochs"] for run in m["runs"]] == [chosen, chosen] and [run["seed"] for run in m["runs"]] == [0, 1]
    assert len(r["lr_plan"]) == chosen and r["lr_plan"][0] == 1.0  # the plateau cuts, replayed
    assert m["val_held_out"] is False and any("not held out" in n for n in m["notes"])
    assert "test/acc" in m and "test/acc" in r["selection"] and m["seeds_ensemble"]["seeds"] == [0, 1]
    config = json.loads((final / "config.json").read_text())
    assert config["refit"]["epochs"] == chosen and config["train"]["epochs"] == chosen
    assert config["train"]["lr_plan"] == r["lr_plan"]
    assert (final / "selection" / "model.pt").is_file() and "refit" not in json.loads(
        (final / "selection" / "config.json").read_text())
    assert sorted(p.name for p in (final / "seeds").iterdir()) == ["ensemble.json", "s0", "s1"]


def test_the_refit_model_predicts_and_the_terminal_says_val_is_not_held_out(refit, tmp_path):
    from fer_sweep.cli.render_results import refit_line

    out = tmp_path / "p.csv"
    shown = json.loads(invoke("predict", refit["final"], "--data", "synthetic", "--split", "test", "--out", out,
                              "--json").stdout)
    assert shown["n"] == 50
    line = refit_line(refit["metrics"])  # what `best --refit` prints under its table
    assert "not held out" in line and f"for {refit['metrics']['refit']['epochs']} epochs" in line
    assert "final/selection/" in line and "test acc" in line


def test_ensembles_pool_the_selection_run_and_leave_the_refit_models_out(refit):
    info = json.loads(invoke("best", "--ensemble", 3, "--results", refit["results"], "--device", "cpu",
                             "--json").stdout)
    assert "selection" in info["candidates"]
    assert not {"final", "s0", "s1"} & set(info["candidates"])
    assert any("refit on train + validation" in n for n in info["notes"])


def test_refit_goes_with_the_retrain_only(refit):
    results = refit["results"]
    refused("best", "--refit", "--ensemble", 3, "--results", results, words=("--refit", "--ensemble"))
    refused("best", "--refit", "--no-retrain", "--results", results, words=("--refit", "--no-retrain"))
