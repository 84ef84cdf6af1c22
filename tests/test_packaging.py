"""What a user installs: a wheel built from this checkout ships every layer's subpackage, and that wheel alone (no
checkout on the path) runs the CLI's worker processes and the W&B agent's entry module."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "No module named" in done.stderr:
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    return next(out.glob("fer_sweep-*.whl"))


def test_the_wheel_ships_every_module_of_the_package(wheel):
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("fer_sweep/")}
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fer_sweep").rglob("*.py")}
    assert expected <= shipped, sorted(expected - shipped)


def test_the_installed_wheel_runs_a_sweep_with_two_workers_and_the_wandb_entry(wheel, tmp_path):
    """Unpacked as pip installs it (the checkout is not importable from the working folder), `python -m fer_sweep
    run` trains 2 trials in 2 worker processes (`python -m fer_sweep.sweep.worker`), and the exported W&B
    command `python -m fer_sweep.wandb_sweeps` still answers."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    spec = tmp_path / "tiny.yaml"
    spec.write_text("study: wheel\ndata: synthetic\ntrials: 2\nsplits: {synthetic_n: 300}\nwandb: {mode: disabled}\n"
                    "model: {arch: cnn, conv: [[4, 3]], fc_units: 8}\ntrain: {epochs: 1, batch_size: 32}\n"
                    "space: {lr: {low: 0.001, high: 0.01, log: true}}\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-m", "fer_sweep", "run", str(spec), "--results", str(tmp_path / "r"),
                          "--workers", "2", "--device", "cpu"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "2/2 finished" in run.stdout
    logs = " ".join(p.read_text() for p in (tmp_path / "r" / "wheel").glob("worker-*.log"))
    assert "ran" in logs, logs
    where = subprocess.run([sys.executable, "-c", "import fer_sweep; print(fer_sweep.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(site)), where.stdout
    agent = subprocess.run([sys.executable, "-m", "fer_sweep.wandb_sweeps", "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert agent.returncode == 0 and "--study" in agent.stdout, agent.stderr
