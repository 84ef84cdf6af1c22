"""The one trial a W&B agent runs (sweep/wandb_backend/agent.py): `export-wandb` writes a valid sweep whose command
trains one trial with a sampled run's arguments, logging the sweep's metric keys. Nothing here touches the network."""

from __future__ import annotations

import json

import optuna
import yaml

from fer_sweep.sweep import tracking
from fer_sweep.sweep.space import sample_params, to_run_config
from fer_sweep.sweep.spec import load_spec
from fer_sweep.sweep.wandb_backend import agent, mapping
from tests.helpers import invoke
from tests.support.wandb_agent import agent_args, validated


def test_export_wandb_is_a_valid_sweep_whose_command_trains_one_trial(finished_study, tmp_path, monkeypatch):
    config = yaml.safe_load(invoke("export-wandb", finished_study["spec"]).stdout)
    assert config["method"] == "random" and config["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert config["early_terminate"] == {"type": "hyperband", "min_iter": 1, "eta": 3}
    assert config["parameters"]["conv"] == {"values": ["[[4, 3], [8, 3]]", "[[8, 3], [8, 3]]"]}
    assert config["parameters"]["lr"] == {"distribution": "log_uniform_values", "min": 0.001, "max": 0.01}
    assert config["command"] == ["${env}", "${interpreter}", "-m", "fer_sweep.wandb_sweeps",
                                 str(finished_study["spec"]), "${args}"]
    runs = validated(config)

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
    other = yaml.safe_load(invoke("export-wandb", finished_study["spec"], "--data", "synthetic", "--study",
                                  "other").stdout)
    assert other["name"] == "other" and other["command"][4:-1] == [str(finished_study["spec"]), "--data=synthetic",
                                                                   "--study=other"]
    argv = [*other["command"][4:-1], "--device=cpu", *agent_args(runs[0])]  # what the agent runs, after `-m ...`
    assert agent.trial_main(argv) == 0
    assert [step for step, _ in logged] == [1, 2, 3]
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/macro_f1"} <= set(logged[0][1])
    assert (finished["group"] == "other" and finished["outcome"] == "complete"
            and finished["best/val_acc"] == max(m["val/acc"] for _, m in logged))
    for run in runs:  # every sampled run replays through the sweep's own two functions
        params = mapping.params_from_args(spec, agent_args(run))
        assert sample_params(optuna.trial.FixedTrial(params), spec) == params
        assert to_run_config(params, spec).model.conv in ((((4, 3), (8, 3))), ((8, 3), (8, 3)))
        assert params["dropout"] in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5) and 0.001 <= params["lr"] <= 0.01

    out = tmp_path / "sweep.json"
    invoke("export-wandb", finished_study["spec"], "--out", out)
    assert json.loads(out.read_text()) == config
