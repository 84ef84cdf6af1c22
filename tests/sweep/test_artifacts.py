"""Kept trial models (sweep/artifacts.py): every trial's model stored through Optuna's artifact store by two
workers at once and pruned to `keep`; each upload recorded before its file is written, so a worker killed
mid-upload leaves nothing trusted and nothing that pruning cannot find, whatever order Optuna writes in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import torch

from fer_sweep.learn.checkpoint import model_from
from fer_sweep.results.best import pick_winner
from fer_sweep.sweep import artifacts
from fer_sweep.sweep import launch as runner
from fer_sweep.sweep.spec import load_spec
from tests.helpers import SPEC, check_exact, cli, invoke, journal_study, make_spec


def stored_files(folder) -> set[str]:
    return {p.name for p in (folder / "artifacts").iterdir()}


def test_two_workers_store_every_trial_and_keep_the_best_three(kept_sweep):
    finished = check_exact(kept_sweep["study"], kept_sweep["spec"], 6)
    assert all(set(t.user_attrs[artifacts.ARTIFACTS]) == {"model", "val_proba", "config"} for t in finished)
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers stored models into one store
    kept = artifacts.ranked(finished)[:3]
    assert kept[0].number == pick_winner(kept_sweep["study"]).number  # the winner's model is always kept
    assert stored_files(kept_sweep["folder"]) == {i for t in kept for i in t.user_attrs[artifacts.ARTIFACTS].values()}
    val = runner.load_data(load_spec(kept_sweep["spec"])).val
    models, notes = artifacts.load_kept(kept_sweep["study"], kept_sweep["folder"], 3)
    assert [m.number for m in models] == [t.number for t in kept] and notes == []
    for m, t in zip(models, kept):  # the stored probabilities are what the trial validated with
        assert m.val_proba.shape == (len(val.y), 7)
        assert np.mean(m.val_proba.argmax(1) == val.y) == pytest.approx(t.user_attrs["best_val_acc"], abs=1e-9)
        model = model_from(m.config, m.weights)  # weights_only state dict + config rebuild the model
        assert isinstance(model, torch.nn.Module) and m.config["norm"] and m.config["train"]["epochs"] == 2


def test_each_upload_is_recorded_in_the_trial_before_its_file_is_written(tmp_path):
    """What pruning relies on, checked at the moment the store writes: not the order of Optuna's own record."""
    study = optuna.create_study()
    trial = study.ask()
    seen = []

    class Store:  # an artifact store that looks at the trial when asked to write
        def write(self, artifact_id, content_body):
            seen.append((artifact_id, dict(study.trials[trial.number].system_attrs), content_body.read()))

    (tmp_path / "model.pt").write_bytes(b"weights")
    artifact_id = artifacts.upload(Store(), trial, tmp_path / "model.pt")
    ((written_id, attrs, body),) = seen
    assert written_id == artifact_id and body == b"weights"
    assert attrs[artifacts.UPLOAD_MARK + artifact_id] == "model.pt"
    assert artifacts.uploaded_ids(study.trials[trial.number]) == [artifact_id]  # once, with Optuna's record too


KILLED_UPLOAD = """
import sys
from pathlib import Path
from fer_sweep.sweep.artifacts import artifact_store, upload
from fer_sweep.sweep.spec import load_spec
from fer_sweep.sweep.study import claim, prepare_study
spec = load_spec(sys.argv[1])
study = prepare_study(spec, Path(sys.argv[2]), None)
trial = claim(study, spec.trials, "victim")
print(trial.number, flush=True)
upload(artifact_store(Path(sys.argv[2]) / spec.study), trial, Path(sys.argv[3]))
"""


def test_a_worker_killed_mid_upload_leaves_nothing_that_is_used(tmp_path):
    spec = make_spec(tmp_path, "killed", 2, keep=5, train={**SPEC["train"], "epochs": 1}, pruner={"type": "none"})
    results, fifo = tmp_path / "results", tmp_path / "model.fifo"
    os.mkfifo(fifo)
    victim = subprocess.Popen([sys.executable, "-c", KILLED_UPLOAD, str(spec), str(results), str(fifo)],
                              stdout=subprocess.PIPE, text=True)
    number = int(victim.stdout.readline())
    with open(fifo, "wb") as pipe:  # half a model: more than the writer's buffer, so part of it reaches the disk
        pipe.write(os.urandom(256 * 1024))
        pipe.flush()
        deadline = time.time() + 30
        stored = results / "killed" / "artifacts"
        while not any(p.stat().st_size for p in stored.iterdir()) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    study = journal_study(results, "killed")
    dead = study.trials[number]
    partial = artifacts.uploaded_ids(dead)  # recorded before the file was written, whatever Optuna's order
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
