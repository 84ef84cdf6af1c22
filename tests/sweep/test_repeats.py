"""Seeds per configuration (spec `repeats`), through the real CLI: a trial trains its k seeds in step, reports their
mean to the pruner, records each seed (values, curves, kept models, W&B runs) and ranks by the mean; a trial killed
mid-way resumes every seed at its own checkpoint and ends as one never stopped."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from fer_sweep.learn.models import model_for
from fer_sweep.learn.throughput import train_flops_per_image
from fer_sweep.sweep.eta import COST
from fer_sweep.sweep.study import load_saved_spec
from fer_sweep.sweep.trial import trial_config
from tests.helpers import cli, invoke, journal_study, kill_after_epochs, refused, write_tiny_spec


def _close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-5


def test_repeats_2_ranks_configurations_by_the_mean_of_their_seeds(tmp_path):
    spec = write_tiny_spec(tmp_path, study="rep", repeats=2, train={"epochs": 3, "patience": 0, "batch_size": 32,
                                                                    "seed": 5})
    results = tmp_path / "results"
    invoke("run", spec, "--results", results, "--wandb", "offline", "--device", "cpu")
    trials = journal_study(results, "rep").get_trials()
    assert len(trials) == 3
    for t in trials:
        u = t.user_attrs
        assert u["seeds"] == 2 and [r["seed"] for r in u["seed_runs"]] == [5, 6]  # the seed, then seed + 1
        cfg = trial_config(t.params, load_saved_spec(results / "rep"))[1]  # the ETA's cost: both seeds' FLOPs
        assert u[COST] == round(2 * train_flops_per_image(model_for(cfg, seed=0), cfg.train, torch.device("cpu")))
        assert _close(u["val_acc_std"], statistics.pstdev(u["seed_values"]))
        assert _close(u["best_val_acc"], statistics.fmean(u["seed_values"]))
        for r, value in zip(u["seed_runs"], u["seed_values"]):
            assert len(r["val_acc"]) == len(r["val_loss"]) == len(r["seconds"]) == u["epochs"]
            assert _close(max(r["val_acc"]), value)  # each seed's value: its best epoch
        for epoch, reported in t.intermediate_values.items():  # the pruner saw the mean of the seeds, epoch by epoch
            assert _close(reported, statistics.fmean(r["val_acc"][epoch - 1] for r in u["seed_runs"]))
        if t.state == TrialState.COMPLETE:
            assert _close(t.value, statistics.fmean(u["seed_values"]))
            assert len(u["artifacts"]) == 2  # each seed's model is kept (an ensemble candidate)
    assert len(set(tuple(t.user_attrs["seed_values"]) for t in trials)) == 3
    # W&B: one run per seed (named <study>-t<N>-s<seed>), no run for the configuration as such
    assert len(list((results / "rep" / "wandb").glob("offline-run-*"))) == 3 * 2

    status = json.loads(invoke("status", "--study", "rep", "--results", results, "--json").stdout)
    rows = status["leaderboard"]
    assert rows and all(r["seeds"] == 2 and r["val_acc_std"] is not None for r in rows)
    complete = [r for r in rows if r["state"] == "complete"]
    assert [r["val_acc"] for r in complete] == sorted((r["val_acc"] for r in complete), reverse=True)
    shown = invoke("status", "--study", "rep", "--results", results).stdout
    assert "mean ± std over the seeds" in shown and "(2)" in shown
    from fer_sweep.sweep.artifacts import load_kept  # every seed's model is an ensemble candidate

    models, notes = load_kept(journal_study(results, "rep"), results / "rep", 10)
    assert not notes and sorted((m.number, m.repeat) for m in models) == sorted(
        (t.number, r) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) for r in (0, 1))
    assert all(_close(m.val_acc, m.config["val/acc"]) and m.config["seed"] == 5 + m.repeat for m in models)

    # `best --race 2`: the top 2 complete trials bring their 2 sweep seeds, the race trains the third (seed 7)
    raced = json.loads(invoke("best", "--study", "rep", "--results", results, "--race", "2", "--no-retrain",
                              "--json", "--device", "cpu", "--wandb", "disabled").stdout)["race"]
    top = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number))[:2]
    assert sorted(e["trial"] for e in raced) == sorted(t.number for t in top)
    assert abs(sum(e["p_best"] for e in raced) - 1.0) < 1e-9
    for e in raced:
        sweep = next(t for t in trials if t.number == e["trial"])
        assert e["seeds"] == 3 and e["from_sweep"] == 2 and e["trained_now"] == 1 and e["seed_numbers"] == [5, 6, 7]
        assert e["values"][:2] == pytest.approx(sweep.user_attrs["seed_values"])
        assert e["mean"] == pytest.approx(statistics.fmean(e["values"]), abs=1e-4)
    assert raced[0]["mean"] >= raced[1]["mean"]  # best mean first: the winner
    winner = json.loads(invoke("best", "--study", "rep", "--results", results, "--no-retrain", "--json").stdout)
    assert winner["winner"]["seeds"] == 2 and winner["winner"]["number"] == top[0].number
    assert "over 2 seeds" in invoke("best", "--study", "rep", "--results", results, "--no-retrain").stdout


def test_a_repeated_trial_killed_mid_way_resumes_each_seed_and_ends_as_one_never_stopped(tmp_path):
    def spec_in(folder: Path) -> Path:
        folder.mkdir()
        return write_tiny_spec(folder, study="rk", trials=1, repeats=2, pruner={"type": "none"},
                               train={"epochs": 5, "patience": 0, "batch_size": 32, "deterministic": True},
                               splits={"synthetic_n": 900, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                               model={"arch": "cnn", "fc_units": 32, "conv": [[16, 3], [32, 3]], "dropout": 0.3},
                               space={"lr": {"choices": [0.002]}})

    def run(spec: Path, results: Path) -> subprocess.CompletedProcess:
        return subprocess.run(cli("run", str(spec), "--results", str(results), "--wandb", "disabled", "--device",
                                  "cpu"), capture_output=True, text=True, timeout=300)

    whole = run(spec_in(tmp_path / "a"), tmp_path / "ra")
    assert whole.returncode == 0, whole.stderr
    (expected,) = journal_study(tmp_path / "ra", "rk").get_trials()

    spec, results = spec_in(tmp_path / "b"), tmp_path / "rb"
    kill_after_epochs(spec, results, "rk", 2)
    names = sorted(p.name for p in (results / "rk" / "checkpoints").glob("ticket-*.pt"))
    assert names == ["ticket-0-s1.pt", "ticket-0.pt"]  # each seed its own checkpoint
    rerun = run(spec, results)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumes at epoch" in rerun.stderr
    got = [t for t in journal_study(results, "rk").get_trials() if t.state == TrialState.COMPLETE][0]
    assert got.intermediate_values == expected.intermediate_values  # every epoch's mean reported once, as it was
    assert got.user_attrs["seed_values"] == expected.user_attrs["seed_values"] and got.value == expected.value
    assert not list((results / "rk" / "checkpoints").glob("*.pt"))
    status = json.loads(subprocess.run(cli("status", "--study", "rk", "--results", str(results), "--json"),
                                       capture_output=True, text=True, timeout=120).stdout)
    assert status["epochs_redone"] == 0 and status["leaderboard"][0]["seeds"] == 2


def test_the_mean_of_seeds_counts_a_seed_that_stopped_early_with_its_best():
    from fer_sweep.config import EpochResult
    from fer_sweep.sweep.trial import Training, _mean_result

    def seed(accs: list[float], stop: str) -> Training:
        t = Training(cfg=None, model=None)  # type: ignore[arg-type]
        t.history = [{"epoch": e + 1, "val/acc": a, "train/loss": 1.0, "time/epoch_s": 2.0} for e, a in enumerate(accs)]
        t.last = EpochResult(len(accs), {}, max(accs), accs.index(max(accs)) + 1, stop)
        return t

    early, late = seed([0.5, 0.6, 0.55], "early_stop"), seed([0.4, 0.5, 0.6, 0.7], "done")
    third = _mean_result([early, late], 3, [{"val/acc": 0.45}, {"val/acc": 0.55}])
    assert _close(third.metrics["val/acc"], (0.55 + 0.6) / 2) and third.stop is None
    assert _close(third.metrics["time/epoch_s"], 4.0)  # the configuration's epoch costs both seeds' time
    fourth = _mean_result([early, late], 4, [{"val/acc": 0.45}, {"val/acc": 0.55}, {"val/acc": 0.575}])
    assert _close(fourth.metrics["val/acc"], (0.6 + 0.7) / 2)  # the early-stopped seed counts with its best model
    assert _close(fourth.best_val_acc, 0.65) and fourth.best_epoch == 4 and fourth.stop == "done"
    assert _close(fourth.metrics["time/epoch_s"], 2.0)


@pytest.mark.parametrize("repeats,words", [(0, ("repeats", ">= 1")), (11, ("repeats", "<= 10")),
                                           ("two", ("repeats", "integer"))])
def test_bad_repeats_are_refused_in_one_line(tmp_path, repeats, words):
    spec = write_tiny_spec(tmp_path, repeats=repeats)
    refused("run", spec, "--results", tmp_path / "r", words=words)
    assert not (tmp_path / "r").exists()


def test_repeats_with_a_searched_seed_is_refused(tmp_path):
    spec = write_tiny_spec(tmp_path, repeats=2, space={"seed": {"choices": [0, 1]}})
    refused("run", spec, "--results", tmp_path / "r", words=("repeats", "seed"))


def test_seeds_resumed_at_different_epochs_catch_up_and_a_seed_resumed_at_its_end_keeps_its_best_weights(tmp_path):
    """A kill can land when one seed has checkpointed more epochs than the other: the group books the epochs both
    have, the one behind trains on alone until they meet, and a seed that had finished trains nothing and still
    ends holding its best epoch's weights (what is kept and ensembled)."""
    import io

    import torch

    from fer_sweep.config import ModelConfig, RunConfig, TrainConfig
    from fer_sweep.sweep.spec import parse_spec
    from fer_sweep.sweep.trial import Seeds, Training, TrialContext, seed_configs
    from tests.helpers import random_device_split

    data, val = random_device_split(48, seed=1), random_device_split(24, seed=2)
    cfgs = seed_configs(RunConfig(ModelConfig(arch="cnn", conv=((4, 3),), fc_units=8),
                                  TrainConfig(epochs=3, batch_size=16, patience=0)), 2)
    saved: list[list[dict]] = [[], []]

    def keeper(r: int):
        def keep(checkpoint):  # through torch.save, as the file is
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            saved[r].append(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
        return keep

    whole = [Training.start(c).run(data, val, norm=(0.0, 255.0), save=keeper(r)) for r, c in enumerate(cfgs)]
    spec = parse_spec({"data": "synthetic", "dead_after": 0, "space": {"lr": {"choices": [0.001]}}}, "t.yaml")
    ctx = TrialContext(spec, tmp_path, data, val, None, "disabled", norms={"unit": (0.0, 255.0)})
    trained: list[tuple[int, int]] = []
    group = Seeds.start(cfgs)
    ctx.fit_seeds(group, [None, None], resumes=[saved[0][-1], saved[1][0]],  # seed 0 at its end, seed 1 at epoch 1
                  on_epoch=lambda r: trained.append((r.epoch, len(group.runs[1].history))))
    assert [row["epoch"] for row in group.history] == [1, 2, 3] and trained == [(2, 2), (3, 3)]
    assert group.seed_values() == [w.last.best_val_acc for w in whole]
    for resumed, original in zip(group.runs, whole):
        def untimed(history):
            return [{k: v for k, v in row.items() if k != "time/epoch_s"} for row in history]

        assert untimed(resumed.history) == untimed(original.history)
        for key, value in original.model.state_dict().items():
            assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_w_and_b_sweeps_refuse_repeats_in_one_line(tmp_path):
    spec = write_tiny_spec(tmp_path, repeats=2)
    refused("export-wandb", spec, words=("repeats: 2", "one seed per run", "--backend optuna"))
    assert not (tmp_path / "sweep.yaml").exists()
