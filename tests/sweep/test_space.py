"""The search space (sweep/space.py): a fixed trial replays the same config; seeded configs are a stable prefix
and distinct."""

from __future__ import annotations

import optuna

from fer_sweep.sweep.space import sample_configs, sample_params, to_run_config
from fer_sweep.sweep.spec import load_spec
from tests.helpers import ROOT


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
