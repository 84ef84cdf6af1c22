"""Ensembles from the sweep: every trial's model stored through Optuna's artifact store by two workers at once and
pruned to `keep`, a worker killed mid-upload leaves nothing trusted, greedy selection with replacement, one read
of the test split, and `predict` on the saved ensemble reproducing `best --ensemble`."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fer_sweep.sweep import artifacts
from fer_sweep.results import ensemble
from fer_sweep.sweep import launch as runner
from fer_sweep.cli import app
from fer_sweep.data.splits import Split
from fer_sweep.results.best import pick_winner
from fer_sweep.sweep.spec import SpecError, load_spec, parse_spec
from tests.test_workers import check_exact, cli, journal_study, make_spec

TRAIN = {"epochs": 2, "patience": 0, "batch_size": 32}


def invoke(*args, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


def stored_files(folder) -> set[str]:
    return {p.name for p in (folder / "artifacts").iterdir()}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Six trials by two worker processes, keeping the best three models."""
    root = tmp_path_factory.mktemp("ensemble")
    spec = make_spec(root, "ens", 6, keep=3, train=TRAIN)
    results = root / "results"
    run = subprocess.run(cli("run", str(spec), "--workers", "2", "--results", str(results), "--device", "cpu"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return {"spec": spec, "results": results, "folder": results / "ens", "study": journal_study(results, "ens")}


def test_two_workers_store_every_trial_and_keep_the_best_three(swept):
    finished = check_exact(swept["study"], swept["spec"], 6)
    assert all(set(t.user_attrs[artifacts.ARTIFACTS]) == {"model", "val_proba", "config"} for t in finished)
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers stored models into one store
    kept = artifacts.ranked(finished)[:3]
    assert kept[0].number == pick_winner(swept["study"]).number  # the winner's model is always kept
    assert stored_files(swept["folder"]) == {i for t in kept for i in t.user_attrs[artifacts.ARTIFACTS].values()}
    val = runner.load_data(load_spec(swept["spec"])).val
    models, notes = artifacts.load_kept(swept["study"], swept["folder"], 3)
    assert [m.number for m in models] == [t.number for t in kept] and notes == []
    for m, t in zip(models, kept):  # the stored probabilities are what the trial validated with
        assert m.val_proba.shape == (len(val.y), 7)
        assert np.mean(m.val_proba.argmax(1) == val.y) == pytest.approx(t.user_attrs["best_val_acc"], abs=1e-9)
        model = ensemble.model_from(m.config, m.weights)  # weights_only state dict + config rebuild the model
        assert isinstance(model, torch.nn.Module) and m.config["norm"] and m.config["train"]["epochs"] == 2


def _proba(p_true: list[float]) -> np.ndarray:
    """(N, 7) rows with p_true on class 0 and the rest spread evenly."""
    p = np.asarray(p_true, dtype=np.float32)[:, None]
    return np.concatenate([p, np.repeat((1 - p) / 6, 6, axis=1)], axis=1)


def test_selection_picks_with_replacement_and_weights_sum_to_one():
    # A is right on 20 faces, B hedges on all 30: the best mix is ~0.63 A, so the picks go A, B, A, and a fourth
    # pick (either) raises the loss again: the best prefix has three picks; C (uniform) is never picked.
    a, b, c = _proba([0.9] * 20 + [0.1] * 10), _proba([0.3] * 20 + [0.6] * 10), _proba([1 / 7] * 30)
    y = np.zeros(30, dtype=np.int64)
    sel = ensemble.greedy_select(np.stack([a, b, c]), y, picks=4)
    assert sel.order == (0, 1, 0) and list(sel.counts) == [2, 1, 0]
    assert sel.weights.sum() == pytest.approx(1.0) and sel.weights[0] == pytest.approx(2 / 3)
    assert sel.path[2] < sel.path[1] < sel.path[0] and sel.path[3] > sel.path[2]
    assert ensemble.greedy_select(np.stack([b]), y, picks=3).order == (0,)  # one model: itself, weight 1


def test_spec_keep_is_validated(tmp_path):
    assert parse_spec({"data": "synthetic"}, "x.yaml").keep == 10
    with pytest.raises(SpecError, match="keep: must be >= 0"):
        parse_spec({"data": "synthetic", "keep": -1}, "x.yaml")


class CountingSplit:
    """A split that records every read of its arrays and the function that read it."""

    def __init__(self, split: Split):
        self.split, self.reads = split, []

    def _read(self, name: str):
        self.reads.append((name, traceback.extract_stack()[-3].name))
        return getattr(self.split, name)

    x = property(lambda self: self._read("x"))
    y = property(lambda self: self._read("y"))


def test_test_split_is_read_once_after_selection_on_validation_only(swept):
    spec = load_spec(swept["spec"])
    splits = runner.load_data(spec)
    real = CountingSplit(splits.test)
    built = ensemble.build_ensemble(spec, swept["study"], swept["folder"], dataclasses.replace(splits, test=real),
                                    picks=4, device="cpu")["info"]
    assert real.reads == [("x", "_test"), ("y", "_test")]  # once, by the final evaluation
    rng = np.random.default_rng(0)
    noise = CountingSplit(Split(x=rng.integers(0, 256, splits.test.x.shape, dtype=np.uint8),
                                y=(splits.test.y + 1) % 7))
    other = ensemble.build_ensemble(spec, swept["study"], swept["folder"], dataclasses.replace(splits, test=noise),
                                    picks=4, device="cpu")["info"]
    assert noise.reads == [("x", "_test"), ("y", "_test")]
    chosen = ("selection", "members", "val/acc", "val/log_loss")
    assert [[m["trial"], m["weight"]] for m in other["members"]] == [[m["trial"], m["weight"]] for m in built["members"]]
    assert {k: other[k] for k in chosen if k != "members"} == {k: built[k] for k in chosen if k != "members"}
    assert sum(m["weight"] for m in built["members"]) == pytest.approx(1.0)


def _predict(folder, out):
    shown = invoke("predict", folder, "--data", "synthetic", "--split", "test", "--out", out, "--proba", "--json")
    return json.loads(shown.stdout)["acc"], [row for row in csv.reader(out.open())]


def test_best_ensemble_predict_and_report(swept, tmp_path):
    final = swept["folder"] / "final"
    info = json.loads(invoke("best", "--results", swept["results"], "--device", "cpu", "--ensemble", 5, "--json").stdout)
    assert info == json.loads((final / "ensemble.json").read_text())
    assert info["single"]["trial"] == pick_winner(swept["study"]).number and info["split"] == "test"
    assert {m["trial"] for m in info["members"]} <= set(info["candidates"]) and len(info["candidates"]) == 3
    for m in info["members"]:
        assert torch.load(final / m["path"] / "model.pt", weights_only=True)  # plain weights, loadable
    acc, _ = _predict(final, tmp_path / "ens.csv")
    assert acc == pytest.approx(info["test/acc"], abs=1e-6)  # predict on the folder reproduces best --ensemble
    page = invoke("report", "--results", swept["results"], "--json").stdout
    html = (swept["folder"] / "report.html").read_text()
    assert '"ensemble"' in page and 'id="ensemble"' in html and 'id="fig-ensemble"' in html
    # an ensemble of one model is that model: same accuracy, same probabilities as its own folder
    one = json.loads(invoke("best", "--results", swept["results"], "--device", "cpu", "--ensemble", 1, "--json").stdout)
    assert [(m["trial"], m["weight"]) for m in one["members"]] == [(one["single"]["trial"], 1.0)]
    assert one["test/acc"] == one["single"]["test/acc"]
    acc_ens, rows_ens = _predict(final, tmp_path / "one.csv")
    acc_member, rows_member = _predict(final / one["members"][0]["path"], tmp_path / "member.csv")
    assert rows_ens == rows_member and acc_ens == pytest.approx(one["test/acc"], abs=1e-6)


def test_ensemble_takes_no_retrain_flags(swept):
    result = CliRunner().invoke(app, ["best", "--results", str(swept["results"]), "--ensemble", "3", "--seeds", "2"])
    assert result.exit_code == 2 and "--ensemble combines the kept trial models" in result.stderr
    assert "Traceback" not in result.stderr


def test_seeds_are_kept_and_averaged_as_an_ensemble(swept, tmp_path):
    metrics = json.loads(invoke("best", "--results", swept["results"], "--device", "cpu", "--seeds", 2,
                                "--epochs", 1, "--wandb", "disabled", "--json").stdout)
    seeds = metrics["seeds_ensemble"]
    assert seeds["seeds"] == [0, 1] and seeds["weights"] == [0.5, 0.5] and "test/acc" in seeds
    folder = swept["folder"] / "final" / "seeds"
    assert sorted(p.name for p in folder.iterdir()) == ["ensemble.json", "s0", "s1"]
    acc, _ = _predict(folder, tmp_path / "seeds.csv")
    assert acc == pytest.approx(seeds["test/acc"], abs=1e-6)


KILLED_UPLOAD = """
import sys
from pathlib import Path
from optuna.artifacts import upload_artifact
from fer_sweep.sweep.artifacts import artifact_store
from fer_sweep.sweep.spec import load_spec
from fer_sweep.sweep.study import claim, prepare_study
spec = load_spec(sys.argv[1])
study = prepare_study(spec, Path(sys.argv[2]), None)
trial = claim(study, spec.trials, "victim")
print(trial.number, flush=True)
upload_artifact(artifact_store=artifact_store(Path(sys.argv[2]) / spec.study), file_path=sys.argv[3], study_or_trial=trial)
"""


def test_a_worker_killed_mid_upload_leaves_nothing_that_is_used(tmp_path):
    spec = make_spec(tmp_path, "killed", 2, keep=5, train={**TRAIN, "epochs": 1}, pruner={"type": "none"})
    results, fifo = tmp_path / "results", tmp_path / "model.fifo"
    os.mkfifo(fifo)
    victim = subprocess.Popen([sys.executable, "-c", KILLED_UPLOAD, str(spec), str(results), str(fifo)],
                              stdout=subprocess.PIPE, text=True)
    number = int(victim.stdout.readline())
    with open(fifo, "wb") as pipe:  # half a model: more than the writer's buffer, so part of it reaches the disk
        pipe.write(os.urandom(256 * 1024))
        pipe.flush()
        deadline = time.time() + 30
        while not any(p.stat().st_size for p in (results / "killed" / "artifacts").iterdir()) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    study = journal_study(results, "killed")
    dead = study.trials[number]
    partial = [k.split(":", 1)[1] for k in dead.system_attrs if k.startswith("artifacts:")]
    assert len(partial) == 1 and (results / "killed" / "artifacts" / partial[0]).stat().st_size > 0
    assert artifacts.ARTIFACTS not in dead.user_attrs  # never named: never trusted
    run = subprocess.run(cli("run", str(spec), "--results", str(results), "--device", "cpu"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    study = journal_study(results, "killed")
    finished = check_exact(study, spec, 2)
    assert study.trials[number].user_attrs["outcome"] == "crashed"  # reaped, its ticket re-run
    assert stored_files(results / "killed") == {i for t in finished for i in t.user_attrs[artifacts.ARTIFACTS].values()}
    info = json.loads(invoke("best", "--results", results, "--device", "cpu", "--ensemble", 3, "--json").stdout)
    assert number not in info["candidates"] and sorted(info["candidates"]) == sorted(t.number for t in finished)
