"""`fer-sweep dashboard`: optuna-dashboard serves the study on loopback; without the extra, a clear error."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import cli, free_port, refused


def test_dashboard_serves_the_study_on_loopback(finished_study):
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[dashboard]')")
    port = free_port()
    proc = subprocess.Popen(cli("dashboard", "--results", str(finished_study["results"]), "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, status, studies = time.time() + 60, None, ""
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    status = response.status
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = response.read().decode()
                break
            except OSError:
                time.sleep(0.3)
        assert status == 200, f"dashboard did not answer: {proc.poll()}"
        assert '"study_name": "small"' in studies
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert f"http://127.0.0.1:{port}/" in output


def test_dashboard_without_the_extra_is_a_clear_error(finished_study, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    refused("dashboard", "--results", finished_study["results"],
            words=("optuna-dashboard is not installed", "fer-sweep[dashboard]"))
