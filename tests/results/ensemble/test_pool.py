"""The pool of several studies (results/ensemble/pool.py), end to end through `best --ensemble K --study A --study B`:
two tiny synthetic studies of different architectures (one trained on random crops with ten-crop testing), one of
them retrained with two seeds; the pool holds every kept trial model and every retrained model of both, each member
records its study, studies on other splits are refused with one line; `predict`, `report` and `export` (of a
member) take the result."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.helpers import cli, invoke, one_line_error, refused

COMMON = {
    "data": "synthetic", "trials": 2, "seed": 2, "keep": 2,
    "splits": {"synthetic_n": 200, "val_frac": 0.25, "test_frac": 0.25, "seed": 0},
    "pruner": {"type": "none"}, "wandb": {"project": "fer-sweep-tests", "mode": "disabled"},
    "space": {"lr": {"low": 0.002, "high": 0.01, "log": True}},
}
STUDIES = {
    # a VGG-style net on random 40x40 crops, tested on ten crops, with a weight average and SGD + plateau
    "crops": {"model": {"arch": "vgg", "conv": [[4, 3], [8, 3]], "fc_units": 8},
              "train": {"epochs": 1, "patience": 0, "batch_size": 32, "crop": 40, "tta": "tencrop", "ema": 0.9,
                        "optimizer": "sgd", "nesterov": True, "schedule": "plateau"}},
    # a residual net on whole faces with flip testing
    "res": {"model": {"arch": "residual", "conv": [[4, 3], [8, 3]], "fc_units": 8},
            "train": {"epochs": 1, "patience": 0, "batch_size": 32, "tta": "flip"}},
}


def _run(root, results, name, **changes):
    spec = root / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({**COMMON, "study": name, **STUDIES.get(name, STUDIES["res"]), **changes}))
    done = subprocess.run(cli("run", str(spec), "--results", str(results), "--device", "cpu"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    results = root / "results"
    for name in STUDIES:
        _run(root, results, name)
    _run(root, results, "other", trials=1, splits={**COMMON["splits"], "seed": 1})  # same data, other splits
    invoke("best", "--study", "crops", "--results", results, "--device", "cpu", "--seeds", 2, "--epochs", 1,
           "--wandb", "disabled", "--json")
    info = json.loads(invoke("best", "--ensemble", 4, "--study", "crops", "--study", "res", "--results", results,
                             "--device", "cpu", "--json").stdout)
    return {"results": results, "info": info, "final": results / "crops" / "final"}


def test_the_pool_holds_both_studies_trial_models_and_the_retrained_seeds(studies):
    info = studies["info"]
    assert info["kind"] == "studies" and info["studies"] == ["crops", "res"] and info["study"] == "crops"
    cands = set(info["candidates"])
    assert {"crops-s0", "crops-s1"} <= cands  # final/seeds/*, of which final/ is one (not pooled twice)
    assert "crops-final" not in cands
    assert {c for c in cands if c.startswith("crops-t")} and {c for c in cands if c.startswith("res-t")}
    assert len([c for c in cands if "-t" in c]) == 4  # keep 2 of each study
    assert info["candidates"][:2] == sorted(["crops-s0", "crops-s1"], key=info["candidates"].index)
    assert info["single"]["source"] == "seed" and info["single"]["study"] == "crops"  # the best retrained model
    assert info["selection"][0] == info["single"]["trial"]  # selection starts from it
    for m in info["members"]:
        assert m["study"] in ("crops", "res") and m["name"].startswith(m["study"] + "-")
        assert m["arch"] == {"crops": "vgg", "res": "residual"}[m["study"]]
        assert m["source"] in ("trial", "seed") and (studies["final"] / m["path"] / "model.pt").is_file()
    assert sum(m["weight"] for m in info["members"]) == pytest.approx(1.0)
    assert json.loads((studies["final"] / "ensemble.json").read_text()) == info


def test_predict_reproduces_the_ensemble_and_report_names_the_studies(studies, tmp_path):
    out = tmp_path / "ens.csv"
    shown = json.loads(invoke("predict", studies["final"], "--data", "synthetic", "--split", "test", "--out", out,
                              "--json").stdout)
    assert shown["acc"] == pytest.approx(studies["info"]["test/acc"], abs=1e-6)
    invoke("report", "--study", "crops", "--results", studies["results"], "--json")
    page = (studies["results"] / "crops" / "report.html").read_text()
    assert "of the studies crops, res" in page and 'id="ensemble"' in page


def test_export_writes_a_member_and_a_crop_model_at_its_input_size(studies, tmp_path):
    member = studies["info"]["members"][0]
    done = json.loads(invoke("export", studies["final"] / member["path"], "--onnx", tmp_path / "m.onnx",
                             "--json").stdout)
    assert done["ok"] and done["input_size"] == {"crops": 40, "res": 48}[member["study"]]
    seed = json.loads(invoke("export", studies["final"] / "seeds" / "s1", "--onnx", tmp_path / "s.onnx",
                             "--json").stdout)
    assert seed["ok"] and seed["input_size"] == 40 and seed["metadata"]["tta"].startswith("tencrop")
    assert "x 40 x 40" in seed["metadata"]["fer_sweep.input"]
    refused("export", studies["final"], "--onnx", tmp_path / "e.onnx", words=("ensemble", "member"))


def test_studies_on_other_splits_or_without_ensemble_are_refused(studies):
    results = studies["results"]
    shown = invoke("best", "--ensemble", 3, "--study", "crops", "--study", "other", "--results", results, "--device",
                   "cpu", code=2)
    one_line_error(shown, "--study other", "other splits")
    assert shown.stdout == ""  # refused before anything is printed (before: crops's winner panel, then the refusal)
    refused("best", "--study", "crops", "--study", "res", "--results", results, words=("--ensemble",))
    assert json.loads((studies["final"] / "ensemble.json").read_text()) == studies["info"]  # nothing written


def test_a_second_retrain_keeps_the_first_in_earlier_and_the_pool_holds_both(studies):
    results = studies["results"]
    final = results / "res" / "final"
    base = ("best", "--study", "res", "--results", results, "--device", "cpu", "--epochs", 1, "--wandb", "disabled",
            "--json")
    first = json.loads(invoke(*base, "--seeds", 2).stdout)
    assert not (final / "earlier").exists()  # nothing before the first retrain
    second = json.loads(invoke(*base, "--seeds", 1).stdout)
    earlier = final / "earlier" / "1"
    for path in ("model.pt", "config.json", "confusion.png", "seeds/ensemble.json", "seeds/s0/model.pt",
                 "seeds/s1/model.pt"):
        assert (earlier / path).is_file(), path
    assert json.loads((earlier / "metrics.json").read_text())["runs"] == first["runs"]
    assert json.loads((final / "metrics.json").read_text())["runs"] == second["runs"]
    assert (final / "model.pt").is_file() and not (final / "seeds").exists()  # the latest retrain had 1 seed
    info = json.loads(invoke("best", "--ensemble", 3, "--study", "res", "--results", results, "--device", "cpu",
                             "--json").stdout)
    assert {"final", "e1-s0", "e1-s1"} <= set(info["candidates"])
    assert not {"e1-final", "seeds"} & set(info["candidates"])  # final/ is one of its seeds: not pooled twice
    invoke(*base, "--seeds", 1)
    assert sorted(p.name for p in (final / "earlier").iterdir()) == ["1", "2"]  # oldest first, none overwritten
    # `status` lists every retrain, latest first, and the ensemble
    st = json.loads(invoke("status", "--study", "res", "--results", results, "--json").stdout)["saved"]
    assert [r["path"] for r in st["retrains"]] == ["final/", "final/earlier/2/", "final/earlier/1/"]
    assert [r["seeds"] for r in st["retrains"]] == [1, 1, 2]
    assert st["retrains"][2]["acc"] == first["test/acc"]["mean"] and "seeds_average_acc" in st["retrains"][2]
    assert st["ensemble"]["members"] == len(info["members"]) and st["ensemble"]["acc"] == info["test/acc"]
    shown = invoke("status", "--study", "res", "--results", results).stdout
    assert "retrain final/earlier/1/: trial" in shown and "2 seeds x 1 epochs" in shown and "ensemble final/:" in shown
