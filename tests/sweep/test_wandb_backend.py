"""The W&B backend (sweep/wandb_backend.py): exported sweeps that W&B's own `sweeps` package validates and whose
command trains one trial, every kind of searched parameter round-tripping through the agent's arguments, and
`sync` handing every offline run to `wandb sync`. Nothing here touches the network."""

from __future__ import annotations

import json
import subprocess
import warnings

import optuna
import pytest
import yaml

from fer_sweep.config import UserError
from fer_sweep.sweep import wandb_backend as wandb_sweeps
from fer_sweep.sweep import tracking
from fer_sweep.sweep.space import sample_params, to_run_config
from fer_sweep.sweep.spec import load_spec, parse_spec
from tests.helpers import ROOT, invoke


def _validated(config: dict) -> list:
    """W&B's `sweeps` package: no schema violation; sample runs as W&B's random controller would."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sweeps 0.2 uses pydantic v1-style config classes
        sweeps = pytest.importorskip("sweeps", reason="W&B's sweeps package is not installed (pip install -e '.[dev]')")
        assert sweeps.schema_violations_from_proposed_config(config) == []
        return [sweeps.next_run(config, []) for _ in range(6)]


def _agent_args(run) -> list[str]:
    """The `${args}` an agent passes for a sampled run (wandb's own formatting), after the JSON trip from
    W&B's server that turns the local sampler's numpy scalars into plain numbers."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    config = json.loads(json.dumps(run.config, default=lambda v: v.item()))
    return create_sweep_command_args({"args": config})["args"]


def test_export_wandb_is_a_valid_sweep_whose_command_trains_one_trial(finished_study, tmp_path, monkeypatch):
    config = yaml.safe_load(invoke("export-wandb", finished_study["spec"]).stdout)
    assert config["method"] == "random" and config["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert config["early_terminate"] == {"type": "hyperband", "min_iter": 1, "eta": 3}
    assert config["parameters"]["conv"] == {"values": ["[[4, 3], [8, 3]]", "[[8, 3], [8, 3]]"]}
    assert config["parameters"]["lr"] == {"distribution": "log_uniform_values", "min": 0.001, "max": 0.01}
    assert config["command"] == ["${env}", "${interpreter}", "-m", "fer_sweep.wandb_sweeps", str(finished_study["spec"]), "${args}"]
    runs = _validated(config)

    spec = load_spec(finished_study["spec"])
    logged, finished = [], {}

    class Recorder:  # stands in for the agent's wandb run
        def __init__(self, **kwargs):
            finished["group"] = kwargs["group"]

        def log(self, metrics, step):
            logged.append((step, dict(metrics)))

        def finish(self, tags, summary):
            finished.update(summary, tags=tags)

    monkeypatch.setattr(tracking, "TrialRun", Recorder)
    other = yaml.safe_load(invoke("export-wandb", finished_study["spec"], "--data", "synthetic", "--study", "other").stdout)
    assert other["name"] == "other" and other["command"][4:-1] == [str(finished_study["spec"]), "--data=synthetic", "--study=other"]
    argv = [*other["command"][4:-1], "--device=cpu", *_agent_args(runs[0])]  # what the agent runs, after `-m ...`
    assert wandb_sweeps.trial_main(argv) == 0
    assert [step for step, _ in logged] == [1, 2, 3]
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/macro_f1"} <= set(logged[0][1])
    assert finished["group"] == "other" and finished["outcome"] == "complete" and finished["best/val_acc"] == max(m["val/acc"] for _, m in logged)
    for run in runs:  # every sampled run replays through the sweep's own two functions
        params = wandb_sweeps.params_from_args(spec, _agent_args(run))
        assert sample_params(optuna.trial.FixedTrial(params), spec) == params
        assert to_run_config(params, spec).model.conv in ((((4, 3), (8, 3))), ((8, 3), (8, 3)))
        assert params["dropout"] in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5) and 0.001 <= params["lr"] <= 0.01

    out = tmp_path / "sweep.json"
    invoke("export-wandb", finished_study["spec"], "--out", out)
    assert json.loads(out.read_text()) == config


@pytest.mark.parametrize("name", ["quickstart", "cnn", "residual", "vgg"])
def test_every_shipped_spec_exports_to_a_valid_wandb_sweep(name):
    spec = load_spec(ROOT / "sweeps" / f"{name}.yaml", check_data=False)
    config = wandb_sweeps.sweep_config(spec, f"sweeps/{name}.yaml")
    assert set(config["parameters"]) == {p.name for p in spec.space}
    for run in _validated(config):
        params = wandb_sweeps.params_from_args(spec, _agent_args(run))
        assert sample_params(optuna.trial.FixedTrial(params), spec) == params
        to_run_config(params, spec)


def test_every_kind_of_searched_parameter_round_trips_through_wandb():
    spec = parse_spec({"data": "synthetic", "space": {
        "fc_units": {"low": 16, "high": 256, "log": True}, "depth": {"low": 1, "high": 5, "step": 2},
        "epochs": {"low": 2, "high": 5}, "dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
        "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "weight_decay": {"low": 0.0, "high": 0.01},
        "aug_flip": {"choices": [True, False]}, "conv": {"choices": [[[8, 3]], [[16, 5], [32, 3]]]},
        "label_smoothing": {"choices": [0.0, 0.1]}}}, "every-kind.yaml")
    config = wandb_sweeps.sweep_config(spec, "every-kind.yaml")
    assert config["parameters"]["fc_units"] == {"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 1}
    assert config["parameters"]["depth"] == {"values": [1, 3, 5]}
    assert config["parameters"]["epochs"] == {"distribution": "int_uniform", "min": 2, "max": 5}
    assert config["parameters"]["dropout"] == {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.1}
    for run in _validated(config):
        params = wandb_sweeps.params_from_args(spec, _agent_args(run))
        assert sample_params(optuna.trial.FixedTrial(params), spec) == params
        assert isinstance(params["fc_units"], int) and isinstance(params["aug_flip"], bool)
        assert to_run_config(params, spec).model.conv in (((8, 3),), ((16, 5), (32, 3)))


def test_agent_arguments_that_do_not_fit_the_spec_are_refused(finished_study):
    spec = load_spec(finished_study["spec"])
    good = ["--conv=[[4, 3], [8, 3]]", "--lr=0.002", "--norm=batch", "--dropout=0.2"]
    with pytest.raises(UserError, match="not one of"):
        wandb_sweeps.params_from_args(spec, [*good[1:], "--conv=[[16, 3]]"])
    with pytest.raises(UserError, match="not a parameter"):
        wandb_sweeps.params_from_args(spec, [*good, "--depth=2"])
    with pytest.raises(UserError, match="missing --lr"):
        wandb_sweeps.params_from_args(spec, [good[0], *good[2:]])
    assert wandb_sweeps.params_from_args(spec, ["--conv=[[4,3],[8,3]]", "--lr=0.5", "--norm=none", "--dropout=0.30000000004"]) \
        == {"conv": "[[4, 3], [8, 3]]", "lr": 0.01, "norm": "none", "dropout": 0.3}


def test_sync_hands_every_offline_run_to_wandb_sync(finished_study, tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs["env"]))
        return subprocess.CompletedProcess(cmd, 0, stdout="done", stderr="")

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    done = wandb_sweeps.sync_runs(finished_study["folder"], run=fake_run)
    (cmd, env), = calls
    assert cmd[1:4] == ["-m", "wandb", "sync"] and cmd[4:] == [str(p) for p in wandb_sweeps.offline_runs(finished_study["folder"])]
    assert "WANDB_MODE" not in env and len(done["runs"]) == 7
    with pytest.raises(UserError, match="no offline wandb runs"):
        wandb_sweeps.sync_runs(tmp_path, run=fake_run)
