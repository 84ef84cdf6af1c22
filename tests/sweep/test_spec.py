"""Sweep specs (sweep/spec.py): the shipped ones load and encode the documented grid (the strong spec runs small);
every bad spec is one line, exit 2."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from fer_sweep.sweep.space import sample_configs, to_run_config
from fer_sweep.sweep.spec import SpecError, load_spec, parse_spec
from tests.helpers import ROOT, check_exact, cli, invoke, journal_study, one_line_error, refused

GOOD = {"study": "t", "data": "synthetic", "trials": 2, "train": {"epochs": 2},
        "space": {"lr": {"choices": [0.001, 0.01]}, "dropout": {"low": 0.1, "high": 0.3}}}


@pytest.mark.parametrize("name", ["quickstart", "cnn", "residual", "vgg"])
def test_shipped_specs_load(name):
    spec = load_spec(ROOT / "sweeps" / f"{name}.yaml", check_data=False)
    assert spec.study == name and spec.space
    cfg = to_run_config(sample_configs(spec, 1)[0], spec)
    assert cfg.model.arch == {"quickstart": "cnn"}.get(name, name)


@pytest.mark.parametrize("name, arch", [("cnn", "cnn"), ("residual", "residual")])
def test_seed_grids_are_exactly_the_documented_grid(name, arch):
    spec = load_spec(ROOT / "sweeps" / f"{name}.yaml", check_data=False)
    space = {p.name: p for p in spec.space}
    assert spec.data == "data/icml_face_data.csv" and spec.model == {"arch": arch}
    # the notebooks' training, plus flips and flip TTA (fixed settings, not searched)
    assert spec.train == {"optimizer": "adam", "epochs": 15, "patience": 5, "aug_flip": True, "tta": True}
    assert set(space) == {"conv", "dropout", "norm", "pooling", "batch_size", "lr"}
    convs = {to_run_config({"conv": c}, spec).model.conv for c in space["conv"].choices}
    assert convs == {((16, 3), (32, 3), (64, 3)), ((32, 3), (64, 3), (128, 3))}
    assert (space["dropout"].low, space["dropout"].high, space["dropout"].log) == (0.1, 0.3, False)
    assert set(space["norm"].choices) == {"batch", "layer", "none"}
    assert set(space["pooling"].choices) == {"max", "avg", "none"}
    assert set(space["batch_size"].choices) == {64, 128}
    assert set(space["lr"].choices) == {0.001, 0.01, 0.05}


def _write(tmp_path: Path, spec, name="bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def _with(**changes):
    spec = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        node, *keys = dotted.split("__")
        target = spec
        for key in [node, *keys][:-1]:
            target = target.setdefault(key, {})
        target[[node, *keys][-1]] = value
    return spec


BAD = {
    "unknown top key": (_with(epochs=3), "epochs: unknown key"),
    "unknown model key": (_with(model__width=3), "model.width: unknown key"),
    "unknown train key": (_with(train__lr_max=0.1), "train.lr_max: unknown key"),
    "wrong type": (_with(trials="ten"), "trials: expected an integer"),
    "wrong type in train": (_with(train__epochs=2.5), "train.epochs: expected an integer"),
    "bool for number": (_with(train__lr=True), "train.lr: expected a number"),
    "empty choices": (_with(space__lr={"choices": []}), "space.lr.choices: expected a non-empty list"),
    "low >= high": (_with(space__dropout={"low": 0.3, "high": 0.1}), "space.dropout: low must be < high"),
    "low == high": (_with(space__dropout={"low": 0.2, "high": 0.2}), "space.dropout: low must be < high"),
    "log with low <= 0": (_with(space__weight_decay={"low": 0.0, "high": 0.1, "log": True}),
                          "space.weight_decay.log: log scale needs low > 0"),
    "unknown architecture": (_with(model__arch="transformer"), "model.arch: unknown arch 'transformer'"),
    "unknown optimizer": (_with(train__optimizer="lion"), "train.optimizer: unknown optimizer 'lion'"),
    "unknown norm in choices": (_with(space__norm={"choices": ["batch", "instance"]}),
                                "space.norm.choices[1]: unknown norm 'instance'"),
    "unknown pooling": (_with(model__pooling="lp"), "model.pooling: unknown pooling 'lp'"),
    "unknown schedule": (_with(space__schedule={"choices": ["step"]}), "unknown schedule 'step'"),
    "missing data file": (_with(data="nowhere/icml_face_data.csv"), "data: file not found: nowhere/icml_face_data.csv"),
    "no data": ({k: v for k, v in GOOD.items() if k != "data"}, "data: required"),
    "fixed and searched": (_with(train__lr=0.1), "space.lr: is both fixed"),
    "range on a string": (_with(space__norm={"low": 1, "high": 2}), "space.norm: norm is not numeric"),
    "unknown sampler": (_with(sampler="grid"), "sampler: unknown sampler 'grid'"),
    "unknown pruner": (_with(pruner={"type": "sha"}), "pruner.type: unknown pruner 'sha'"),
    "unknown wandb mode": (_with(wandb={"mode": "cloud"}), "wandb.mode: unknown mode 'cloud'"),
    "dropout out of range": (_with(model__dropout=1.5), "model.dropout: must be < 1"),
    "bad conv": (_with(model__conv=[[32, 3], [64]]), "model.conv: expected a non-empty list of [channels, kernel]"),
    "zero trials": (_with(trials=0), "trials: must be >= 1"),
    "study with slash": (_with(study="a/b"), "study: must be a name"),
    "not a mapping": ("- just\n- a list\n", "expected a mapping of settings at the top level"),
    "invalid yaml": ("study: [unclosed\n", "invalid YAML"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_spec_is_one_line_exit_2(tmp_path, case):
    spec, expected = BAD[case]
    path = _write(tmp_path, spec)
    with pytest.raises(SpecError, match=None) as info:
        load_spec(path)
    assert expected in str(info.value) and str(info.value).startswith(str(path))
    result = invoke("run", path, "--results", tmp_path / "results", code=2)
    one_line_error(result, expected, str(path))
    assert "Traceback" not in result.stdout
    assert not (tmp_path / "results").exists()  # nothing trained, nothing written


def test_missing_spec_file(tmp_path):
    refused("run", tmp_path / "nope.yaml", "--results", tmp_path / "results", words=("nope.yaml: spec file not found",))
    assert not (tmp_path / "results").exists()


def test_specs_accept_asha_amp_modes_and_a_best_section():
    base = {"data": "synthetic", "space": {"lr": {"choices": [0.001]}}}
    spec = parse_spec({**base, "pruner": {"type": "asha", "min_epochs": 2, "reduction_factor": 3},
                       "train": {"amp": True}, "best": {"epochs": 40, "seeds": 3}}, "s.yaml")
    assert spec.pruner.type == "asha" and spec.train["amp"] == "auto" and spec.best.epochs == 40
    assert parse_spec({**base, "train": {"amp": False}}, "s.yaml").train["amp"] == "off"
    assert parse_spec({**base, "train": {"amp": "bf16"}}, "s.yaml").train["amp"] == "bf16"
    for bad, message in ((dict(train={"amp": "fp16"}), "train.amp: unknown amp 'fp16'"),
                         (dict(best={"seeds": 0}), "best.seeds: must be >= 1"),
                         (dict(best={"epoch": 3}), "best.epoch: unknown key"),
                         (dict(train={"mix_prob": 1.5}), "train.mix_prob: must be <= 1"),
                         (dict(pruner={"type": "asha", "reduction_factor": 1}), "reduction_factor >= 2")):
        with pytest.raises(SpecError, match=message.replace("(", r"\(")):
            parse_spec({**base, **bad}, "s.yaml")


def test_strong_spec_validates_and_runs_two_trials_of_one_epoch(tmp_path):
    raw = yaml.safe_load((ROOT / "sweeps" / "strong.yaml").read_text())
    load_spec(ROOT / "sweeps" / "strong.yaml", check_data=False)
    raw.update({"data": "synthetic", "splits": {"synthetic_n": 300, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                "wandb": {"mode": "disabled"}})
    raw["train"].update({"epochs": 1, "eval_batch_size": 256})
    raw["model"].update({"conv": [[8, 3], [8, 3], [16, 3], [16, 3]], "fc_units": 16})  # the spec's shape, smaller
    raw["space"]["mixup_alpha"] = {"choices": [0.2]}  # both trials mix, so the mixing path runs
    raw["best"] = {"epochs": 2, "seeds": 2}
    spec_path = tmp_path / "strong.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    run = subprocess.run(cli("run", str(spec_path), "--trials", "2", "--results", str(results), "--device", "cpu"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    study = journal_study(results, "strong")
    finished = check_exact(study, spec_path, 2)
    assert all(t.user_attrs["epochs"] == 1 and math.isfinite(t.user_attrs["best_val_acc"]) for t in finished)
    best = subprocess.run(cli("best", "--study", "strong", "--results", str(results), "--device", "cpu", "--json",
                              "--wandb", "disabled"), capture_output=True, text=True, timeout=600)
    assert best.returncode == 0, best.stderr
    metrics = json.loads(best.stdout)
    assert metrics["seeds"] == 2 and [r["epochs"] for r in metrics["runs"]] == [2, 2]  # the spec's `best:`


def test_spec_keep_is_validated(tmp_path):
    assert parse_spec({"data": "synthetic"}, "x.yaml").keep == 10
    with pytest.raises(SpecError, match="keep: must be >= 0"):
        parse_spec({"data": "synthetic", "keep": -1}, "x.yaml")


@pytest.mark.parametrize("train, space, expected", [
    ({"epochs": 7}, {}, 7),  # fixed
    ({}, {}, 15),  # neither: TrainConfig's default
    ({}, {"epochs": {"choices": [3, 20, 8]}}, 20),  # searched choices: the largest
    ({}, {"epochs": {"low": 2, "high": 30}}, 30),  # searched int range: its high
    ({}, {"epochs": {"low": 2, "high": 30, "step": 5}}, 27),  # with a step: the top value suggest_int can draw
])
def test_max_epochs_is_the_largest_budget_a_trial_can_have(train, space, expected):
    spec = parse_spec({"data": "synthetic", "train": train, "space": space}, "s.yaml")
    assert spec.max_epochs == expected


def test_arch_is_validated_against_the_model_registry(monkeypatch):
    """The registry (learn/models.py MODELS) is the one list of architectures: what it names, a spec may use."""
    from fer_sweep.learn import models

    for arch in models.MODELS:
        assert parse_spec({"data": "synthetic", "model": {"arch": arch}}, "s.yaml").model["arch"] == arch
    with pytest.raises(SpecError) as bad:
        parse_spec({"data": "synthetic", "space": {"arch": {"choices": ["cnn", "tiny"]}}}, "s.yaml")
    assert str(bad.value) == f"s.yaml: space.arch.choices[1]: unknown arch 'tiny' (known: {', '.join(models.MODELS)})"
    monkeypatch.setitem(models.MODELS, "tiny", models.cnn)  # registered: a spec may name it, nothing else to edit
    assert parse_spec({"data": "synthetic", "model": {"arch": "tiny"}}, "s.yaml").model["arch"] == "tiny"
