"""Shared test set-up: a private parse cache, wandb never reaching the network, and the fixtures more than one
test file uses.

The fixtures that run a sweep are session-scoped: each is built once, by the first test that asks for it, and
shared by every folder's tests (a command's test in tests/cli and a module's test in tests/sweep read the same
study). Tests may add files to these studies' folders but must not change what the others check.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One OpenMP thread per test process and per process it starts (read when torch is imported, so set before any
# test imports it): tests train tiny models that gain nothing from a second thread, and with two test processes
# on two cores, threads that spin waiting on each other slow every op several-fold. `run`'s own worker_env keeps
# a value the parent set.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _private_env(tmp_path_factory):
    """Tests (and the worker processes they start) cache parsed data in a temp dir, not ~/.cache."""
    saved = {k: os.environ.get(k) for k in ("FER_SWEEP_CACHE", "WANDB_SILENT", "WANDB_DIR")}
    os.environ["FER_SWEEP_CACHE"] = str(tmp_path_factory.mktemp("fer-cache"))
    os.environ["WANDB_SILENT"] = "true"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# ------------------------------------------------------------------------------------------------- data
@pytest.fixture
def data_cache(tmp_path) -> Path:
    """A parse cache folder of this test's own (not created yet)."""
    return tmp_path / "cache"


@pytest.fixture
def no_default_cache(monkeypatch, tmp_path):
    """Never write to the user's real cache from tests: the default cache is this test's own."""
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="session")
def real_csv() -> Path:
    """The real FER2013 file named by $FER2013_CSV; the test is skipped where it is not set."""
    value = os.environ.get("FER2013_CSV")
    if not value:
        pytest.skip("FER2013_CSV is not set (point it at fer2013-dev.csv.gz to run the real-data tests)")
    if not Path(value).is_file():
        pytest.skip(f"FER2013_CSV={value} does not exist")
    return Path(value)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """One parse cache for the real-data tests, so the real file is parsed once."""
    return tmp_path_factory.mktemp("fer-cache")


# ------------------------------------------------------------------------------------------------ learn
@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy shared box OpenMP threads that wait
    on each other make every op up to 10x slower; one thread keeps these tests fast either way."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def learnable_splits():
    """(train, val) DeviceSplits on the CPU, 192 and 48 random faces with something learnable: a dark top half
    for even classes."""
    import numpy as np

    from fer_sweep.learn.device import to_device

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (240, 48, 48), dtype=np.uint8)
    y = rng.integers(0, 7, 240)
    x[y % 2 == 0, :24] //= 4
    return to_device(x[:192], y[:192], "cpu"), to_device(x[192:], y[192:], "cpu")


# ------------------------------------------------------------------------------------------------ sweeps
@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server's URL (tests/pg.py); skipped where none can start, unless
    FER_SWEEP_REQUIRE_POSTGRES=1."""
    from tests.pg import start_postgres

    url, stop = start_postgres()
    yield url
    stop()


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """(results/tiny, run's result, best's result): TINY_SPEC's 3 trials run with wandb offline, then `best
    --seeds 2`, through the in-process CLI."""
    from tests.helpers import invoke, write_tiny_spec

    root = tmp_path_factory.mktemp("sweep")
    spec = write_tiny_spec(root)
    results = root / "results"
    ran = invoke("run", str(spec), "--results", str(results), "--wandb", "offline", "--device", "cpu")
    best = invoke("best", "--results", str(results), "--device", "cpu", "--wandb", "offline", "--seeds", "2")
    return results / "tiny", ran, best


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory):
    """A finished 6-trial sweep on synthetic faces with offline wandb runs, and its winner retrained."""
    import yaml

    from tests.helpers import FINISHED_STUDY_SPEC, invoke

    root = tmp_path_factory.mktemp("results-cmds")
    spec = root / "small.yaml"
    spec.write_text(yaml.safe_dump(FINISHED_STUDY_SPEC))
    results = root / "results"
    invoke("run", spec, "--results", results, "--wandb", "offline", "--device", "cpu")
    invoke("best", "--results", results, "--device", "cpu", "--wandb", "offline")
    return {"spec": spec, "results": results, "folder": results / "small", "final": results / "small" / "final"}


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """A finished 2-trial study with its winner retrained (model for predict), and a bad CSV beside it."""
    from tests.helpers import invoke, make_spec

    root = tmp_path_factory.mktemp("usability")
    spec = make_spec(root, "small", 2)
    results = root / "results"
    invoke("run", spec, "--results", results, "--device", "cpu")
    invoke("best", "--results", results, "--device", "cpu", "--wandb", "disabled", "--epochs", "1")
    bad = root / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    return {"root": root, "spec": spec, "results": results, "bad": bad}


@pytest.fixture(scope="session")
def kept_sweep(tmp_path_factory):
    """Six trials by two worker processes, keeping the best three models."""
    import subprocess

    from tests.helpers import cli, journal_study, make_spec

    root = tmp_path_factory.mktemp("ensemble")
    spec = make_spec(root, "ens", 6, keep=3)
    results = root / "results"
    run = subprocess.run(cli("run", str(spec), "--workers", "2", "--results", str(results), "--device", "cpu"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return {"spec": spec, "results": results, "folder": results / "ens", "study": journal_study(results, "ens")}


@pytest.fixture(scope="session")
def quickstart_model(tmp_path_factory) -> Path:
    """results/<study>/final of a 1-trial, 1-epoch quickstart sweep on 280 synthetic faces, via `run` + `best`."""
    import yaml

    from tests.helpers import ROOT, invoke

    root = tmp_path_factory.mktemp("faces-model")
    spec = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    spec.update(study="faces", trials=1)
    spec["splits"]["synthetic_n"] = 280
    spec["train"].update(epochs=1, patience=0)
    path = root / "quickstart.yaml"
    path.write_text(yaml.safe_dump(spec))
    results = root / "results"
    invoke("run", path, "--results", results, "--wandb", "disabled", "--device", "cpu")
    invoke("best", "--results", results, "--device", "cpu", "--wandb", "disabled")
    return results / "faces" / "final"
