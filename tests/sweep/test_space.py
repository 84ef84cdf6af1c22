"""The search space (sweep/space.py): a fixed trial replays the same config; seeded configs are a stable prefix
and distinct."""

from __future__ import annotations

import subprocess
import sys

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


def test_drawing_configs_alone_prints_no_optuna_chatter():
    """Found in use: a process that drew configs before importing the study module printed Optuna's INFO line
    "A new study created in memory" (the verbosity was set by sweep/study.py's import)."""
    code = ("from fer_sweep.sweep.spec import load_spec; from fer_sweep.sweep.space import sample_configs; "
            f"print(len(sample_configs(load_spec({str(ROOT / 'sweeps' / 'residual.yaml')!r}, check_data=False), 2)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    assert "created in memory" not in done.stderr, done.stderr
