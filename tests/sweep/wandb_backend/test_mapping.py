"""A spec in W&B's syntax and back (sweep/wandb_backend/mapping.py): exported sweeps that W&B's own `sweeps` package
validates, every kind of searched parameter round-tripping through the agent's arguments, and agent arguments that
do not fit the spec refused. Nothing here touches the network."""

from __future__ import annotations

import optuna
import pytest

from fer_sweep.config import UserError
from fer_sweep.sweep.space import sample_params, to_run_config
from fer_sweep.sweep.spec import load_spec, parse_spec
from fer_sweep.sweep.wandb_backend import mapping
from tests.helpers import ROOT
from tests.support.wandb_agent import agent_args, validated


@pytest.mark.parametrize("name", ["quickstart", "cnn", "residual", "vgg"])
def test_every_shipped_spec_exports_to_a_valid_wandb_sweep(name):
    spec = load_spec(ROOT / "sweeps" / f"{name}.yaml", check_data=False)
    config = mapping.sweep_config(spec, f"sweeps/{name}.yaml")
    assert set(config["parameters"]) == {p.name for p in spec.space}
    for run in validated(config):
        params = mapping.params_from_args(spec, agent_args(run))
        assert sample_params(optuna.trial.FixedTrial(params), spec) == params
        to_run_config(params, spec)


def test_every_kind_of_searched_parameter_round_trips_through_wandb():
    spec = parse_spec({"data": "synthetic", "space": {
        "fc_units": {"low": 16, "high": 256, "log": True}, "depth": {"low": 1, "high": 5, "step": 2},
        "epochs": {"low": 2, "high": 5}, "dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
        "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "weight_decay": {"low": 0.0, "high": 0.01},
        "aug_flip": {"choices": [True, False]}, "conv": {"choices": [[[8, 3]], [[16, 5], [32, 3]]]},
        "label_smoothing": {"choices": [0.0, 0.1]}}}, "every-kind.yaml")
    config = mapping.sweep_config(spec, "every-kind.yaml")
    assert config["parameters"]["fc_units"] == {"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 1}
    assert config["parameters"]["depth"] == {"values": [1, 3, 5]}
    assert config["parameters"]["epochs"] == {"distribution": "int_uniform", "min": 2, "max": 5}
    assert config["parameters"]["dropout"] == {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.1}
    for run in validated(config):
        params = mapping.params_from_args(spec, agent_args(run))
        assert sample_params(optuna.trial.FixedTrial(params), spec) == params
        assert isinstance(params["fc_units"], int) and isinstance(params["aug_flip"], bool)
        assert to_run_config(params, spec).model.conv in (((8, 3),), ((16, 5), (32, 3)))


def test_agent_arguments_that_do_not_fit_the_spec_are_refused(finished_study):
    spec = load_spec(finished_study["spec"])
    good = ["--conv=[[4, 3], [8, 3]]", "--lr=0.002", "--norm=batch", "--dropout=0.2"]
    with pytest.raises(UserError, match="not one of"):
        mapping.params_from_args(spec, [*good[1:], "--conv=[[16, 3]]"])
    with pytest.raises(UserError, match="not a parameter"):
        mapping.params_from_args(spec, [*good, "--depth=2"])
    with pytest.raises(UserError, match="missing --lr"):
        mapping.params_from_args(spec, [good[0], *good[2:]])
    assert mapping.params_from_args(spec, ["--conv=[[4,3],[8,3]]", "--lr=0.5", "--norm=none",
                                           "--dropout=0.30000000004"]) \
        == {"conv": "[[4, 3], [8, 3]]", "lr": 0.01, "norm": "none", "dropout": 0.3}
