"""Storages and masked URLs (sweep/store.py): a real PostgreSQL storage shared by three workers, and storage
passwords kept out of every output and file."""

from __future__ import annotations

import subprocess

import optuna

from fer_sweep.sweep.store import mask_url
from tests.helpers import check_exact, cli, make_spec
from tests.pg import PASSWORD


def test_mask_url_hides_passwords():
    assert mask_url("postgresql://fer:pw@db.lab:5432/s") == "postgresql://fer:***@db.lab:5432/s"
    assert mask_url("postgresql+psycopg2://u:p%40ss@h/d") == "postgresql+psycopg2://u:***@h/d"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_postgres_workers_exact_total_and_password_never_shown(tmp_path, postgres_url):
    spec = make_spec(tmp_path, "pg3", 6, wandb={"project": "fer-sweep-tests", "mode": "offline"})
    results = tmp_path / "results"
    run = subprocess.run(cli("run", str(spec), "--workers", "3", "--storage", postgres_url, "--results",
                             str(results), "--device", "cpu"), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="pg3", storage=postgres_url)
    check_exact(study, spec, 6)
    status = subprocess.run(cli("status", "--storage", postgres_url, "--results", str(results), "--json"),
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and '"finished": 6' in status.stdout
    # the URL's password appears in no output and no file the sweep wrote (wandb runs included)
    for text in (run.stdout, run.stderr, status.stdout, status.stderr):
        assert PASSWORD not in text
    written = [p for p in results.rglob("*") if p.is_file()]
    assert any("wandb" in str(p) for p in written) and any(p.name == "trials.csv" for p in written)
    for path in written:
        assert PASSWORD.encode() not in path.read_bytes(), path
    assert (results / "pg3" / "storage.txt").read_text().strip() == mask_url(postgres_url)
    # without --storage, the study's folder says where it lives (masked)
    again = subprocess.run(cli("status", "--results", str(results)), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "fer:***@" in again.stderr and PASSWORD not in again.stderr


def test_bad_storage_url_is_one_masked_line(tmp_path):
    spec = make_spec(tmp_path, "badpg", 1)
    url = "postgresql://fer:hunter2-secret@127.0.0.1:1/none"
    run = subprocess.run(cli("run", str(spec), "--storage", url, "--results", str(tmp_path / "r")),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "hunter2-secret" not in run.stdout + run.stderr
    assert run.stderr.strip().count("\n") == 0 and "fer:***@127.0.0.1:1/none" in run.stderr
