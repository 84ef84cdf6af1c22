"""What a W&B agent does with an exported sweep, offline: W&B's own `sweeps` package validates the config and samples
runs as its random controller would, and wandb's own formatting turns a sampled run into the agent's `${args}`."""

from __future__ import annotations

import json
import warnings

import pytest


def validated(config: dict) -> list:
    """W&B's `sweeps` package: no schema violation; sample runs as W&B's random controller would."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sweeps 0.2 uses pydantic v1-style config classes
        sweeps = pytest.importorskip("sweeps", reason="W&B's sweeps package is not installed (pip install -e '.[dev]')")
        assert sweeps.schema_violations_from_proposed_config(config) == []
        return [sweeps.next_run(config, []) for _ in range(6)]


def agent_args(run) -> list[str]:
    """The `${args}` an agent passes for a sampled run (wandb's own formatting), after the JSON trip from
    W&B's server that turns the local sampler's numpy scalars into plain numbers."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    config = json.loads(json.dumps(run.config, default=lambda v: v.item()))
    return create_sweep_command_args({"args": config})["args"]
