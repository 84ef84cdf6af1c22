"""Sweep specs: the shipped ones load and encode the documented grid; every bad spec is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from fer_sweep.cli import app
from fer_sweep.sweep.space import sample_configs, sample_params, to_run_config
from fer_sweep.sweep.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
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


def test_fixed_trial_replays_the_same_config():
    spec = load_spec(ROOT / "sweeps" / "residual.yaml", check_data=False)
    params = sample_configs(spec, 3)[2]
    replay = sample_params(optuna.trial.FixedTrial(params), spec)
    assert replay == params
    assert to_run_config(replay, spec) == to_run_config(params, spec)


def test_seeded_configs_are_a_stable_prefix_and_distinct():
    spec = load_spec(ROOT / "sweeps" / "residual.yaml", check_data=False)
    twenty, thirty = sample_configs(spec, 20), sample_configs(spec, 30)
    assert thirty[:20] == twenty
    assert len({repr(sorted(c.items())) for c in thirty}) == 30


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
    result = CliRunner().invoke(app, ["run", str(path), "--results", str(tmp_path / "results")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(path) in lines[0], result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "results").exists()  # nothing trained, nothing written


def test_missing_spec_file(tmp_path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml: spec file not found" in result.stderr


def test_bad_flag_value_is_one_line(tmp_path):
    path = _write(tmp_path, GOOD, "good.yaml")
    result = CliRunner().invoke(app, ["run", str(path), "--wandb", "cloud", "--results", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--wandb: unknown value 'cloud'" in result.stderr
