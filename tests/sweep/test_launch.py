"""Worker processes (sweep/launch.py): three local workers end with exactly the seeded trials, and each worker's
environment maps GPUs through the visible list."""

from __future__ import annotations

import subprocess

import pytest

from fer_sweep.config import UserError
from fer_sweep.sweep.launch import worker_env
from fer_sweep.sweep.worker import SHARED_GPU_ENV
from tests.helpers import check_exact, cli, journal_study, make_spec


def test_worker_env_maps_gpus_through_the_visible_list():
    parent = {"CUDA_VISIBLE_DEVICES": "2,3", "PATH": "/bin"}
    envs = [worker_env(parent, k, 4, ["0", "1"], 16) for k in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "3", "2", "3"]
    assert all(e["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and e["OMP_NUM_THREADS"] == "4" for e in envs)
    assert all(e[SHARED_GPU_ENV] == "1" for e in envs)  # two workers per GPU: OOMs are retried
    assert worker_env({}, 0, 2, ["0", "1"], 8)[SHARED_GPU_ENV] == "0"
    assert worker_env({}, 1, 2, ["0", "1"], 8)["CUDA_VISIBLE_DEVICES"] == "1"  # no parent list: as given
    assert worker_env({"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}, 0, 1, ["0"], 8)["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
    uuid = "GPU-5d0d6f6e-0000-0000-0000-000000000000"
    assert worker_env({"CUDA_VISIBLE_DEVICES": "1"}, 0, 1, [uuid], 8)["CUDA_VISIBLE_DEVICES"] == uuid
    assert worker_env({"OMP_NUM_THREADS": "3"}, 0, 2, None, 8)["OMP_NUM_THREADS"] == "3"
    assert worker_env({}, 0, 3, None, 2)["OMP_NUM_THREADS"] == "1"
    with pytest.raises(UserError, match="GPU 2 is not among the 2 visible ones"):
        worker_env(parent, 0, 1, ["2"], 8)


def test_three_local_workers_end_with_exactly_nine(tmp_path):
    spec = make_spec(tmp_path, "local3", 9)
    results = tmp_path / "results"
    run = subprocess.run(cli("run", str(spec), "--workers", "3", "--results", str(results), "--device", "cpu"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "pruner.startup_trials=1 is below --workers 3" in run.stderr
    finished = check_exact(journal_study(results, "local3"), spec, 9)
    assert len({t.user_attrs["worker"] for t in finished}) >= 2  # the work was shared
    assert "9/9 finished" in run.stdout
