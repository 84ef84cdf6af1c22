"""The result commands on a small finished study: report (checked in headless Chromium), predict (round trip,
every layout, malicious checkpoints refused), export-wandb (validated by W&B's own `sweeps` package), sync and
dashboard. Nothing here touches the network."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from fer_sweep.results import html as htmlreport
from fer_sweep.results import predict as prediction
from fer_sweep.sweep import tracking
from fer_sweep.sweep import wandb_backend as wandb_sweeps
from fer_sweep.cli import app
from fer_sweep.config import EMOTIONS
from fer_sweep.data.splits import load_splits
from fer_sweep.data.read import read_faces
from fer_sweep.sweep.space import sample_params, to_run_config
from fer_sweep.sweep.spec import load_spec, parse_spec
from fer_sweep.data.synthetic import synthetic_faces
from tests.helpers import one_line_error

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "study": "small", "data": "synthetic", "trials": 6, "seed": 1,
    "splits": {"synthetic_n": 280, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
    "pruner": {"type": "median", "startup_trials": 4, "warmup_epochs": 1},  # 4 complete: importances
    "wandb": {"project": "fer-sweep-tests", "mode": "offline"},
    "model": {"arch": "cnn", "fc_units": 16},
    "train": {"epochs": 3, "patience": 0, "batch_size": 32},
    "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]},
              "lr": {"low": 0.001, "high": 0.01, "log": True}, "norm": {"choices": ["batch", "none"]},
              "dropout": {"low": 0.0, "high": 0.5, "step": 0.1}},
}


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


refused = one_line_error  # exit 2, one line on stderr, no traceback, naming every word


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished 6-trial sweep on synthetic faces with offline wandb runs, and its winner retrained."""
    root = tmp_path_factory.mktemp("results-cmds")
    spec = root / "small.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    results = root / "results"
    invoke("run", spec, "--results", results, "--wandb", "offline", "--device", "cpu")
    invoke("best", "--results", results, "--device", "cpu", "--wandb", "offline")
    return {"spec": spec, "results": results, "folder": results / "small", "final": results / "small" / "final"}


# ------------------------------------------------------------------------------------------ report


def test_report_writes_self_contained_html_and_every_figure(study):
    result = invoke("report", "--results", study["results"], "--json")
    done = json.loads(result.stdout)
    assert done["html"] == str(study["folder"] / "report.html") and done["trials"] == 6
    assert done["importance_basis"] == {"complete_trials": done["importance_basis"]["complete_trials"],
                                        "reliable_from": 20, "reliable": False}  # 6 trials: flagged unreliable
    assert set(done["figures"]) == {"history", "importances", "parallel", "slices", "curves", "confusion", "f1",
                                    "classes"}, done["skipped"]
    for path in done["figures"].values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    page = Path(done["html"]).read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 8 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page.lower() and not re.search(r'(src|href)="(https?:|//|file:)', page)
    metrics = json.loads((study["final"] / "metrics.json").read_text())
    assert f"{100 * metrics['test/acc']['mean']:.2f}%" in page  # the final model's test accuracy is reported
    assert "report.html" in invoke("report", "--results", study["results"]).stdout


def test_report_of_a_study_without_best_shows_pruned_and_failed_trials(tmp_path):
    spec = parse_spec(SPEC, "small.yaml")
    st = optuna.create_study(direction="maximize")
    dists = {"conv": optuna.distributions.CategoricalDistribution([p.choices for p in spec.space][0]),
             "lr": optuna.distributions.FloatDistribution(0.001, 0.01, log=True),
             "norm": optuna.distributions.CategoricalDistribution(["batch", "none"]),
             "dropout": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.1)}
    rng = np.random.default_rng(0)
    for i in range(8):
        params = {"conv": dists["conv"].choices[i % 2], "lr": float(10 ** rng.uniform(-3, -2)),
                  "norm": ["batch", "none"][i % 3 == 0], "dropout": round(0.1 * (i % 6), 1)}
        curve = {e: 0.2 + 0.05 * e + 0.01 * i for e in (1, 2, 3)}
        state = optuna.trial.TrialState.PRUNED if i in (2, 5) else optuna.trial.TrialState.COMPLETE
        if state == optuna.trial.TrialState.PRUNED:
            curve = {1: 0.1, 2: 0.15}
        st.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, intermediate_values=curve, state=state,
            value=max(curve.values()) if state == optuna.trial.TrialState.COMPLETE else None,
            user_attrs={"outcome": state.name.lower(), "best_val_acc": max(curve.values()), "epochs": len(curve)}))
    st.add_trial(optuna.trial.create_trial(params={}, distributions={}, state=optuna.trial.TrialState.FAIL,
                                           user_attrs={"outcome": "diverged"}))
    done = htmlreport.build_report(spec, st, tmp_path)
    assert {"history", "importances", "parallel", "slices", "curves", "classes"} <= set(done["figures"])
    assert set(done["skipped"]) == {"confusion", "f1"} and "fer-sweep best" in done["skipped"]["confusion"]
    r, g, b = np.asarray(Image.open(done["figures"]["curves"]).convert("RGB")).astype(int).transpose(2, 0, 1)
    orange = (r > 200) & (g > 90) & (g < 190) & (b < 130)  # the pruned curves' colour (no other curve is orange)
    assert orange.sum() > 100, "pruned trials are not visible in the learning curves"
    assert 'id="skip-confusion"' in (tmp_path / "report.html").read_text()


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 in the child)."""

    def __init__(self, exe: str, profile: Path):
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()

        def child_fds():
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=child_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        self.buf, self.next_id, self.events = b"", 0, []

    def _recv(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.res_r], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.res_r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self.buf += chunk
        message, _, self.buf = self.buf.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout_s: float = 30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout_s
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply["error"]
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout_s: float = 30) -> dict:
        deadline = time.time() + timeout_s
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._recv(deadline))

    def open(self, url: str) -> str:
        """Load `url` in a fresh 1280x2000 tab; returns the tab's session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 2000, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired")
        return session

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append("Uncaught " + (details.get("exception", {}).get("description") or details.get("text", "")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console error " + json.dumps(params.get("args", []))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append("log error " + params["entry"].get("text", "")[:300])
        return found

    def images(self, session: str) -> list:
        expression = ("JSON.stringify(Array.from(document.images).map("
                      "i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]))")
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        return json.loads(result["result"]["value"])

    def close(self):
        try:
            self.call("Browser.close", timeout_s=10)
        except (TimeoutError, EOFError, OSError, AssertionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.res_r)


def test_report_renders_in_headless_chromium(study, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    invoke("report", "--results", study["results"])
    browser = Chromium(exe, tmp_path / "profile")
    try:
        # The harness itself must see a script error and a broken image, or its silence below means nothing.
        bad = browser.open("data:text/html,<script>throw new Error('boom')</script><img alt=x src='nope.png'>")
        assert any("boom" in e for e in browser.errors()) and browser.images(bad)[0][2] == 0
        session = browser.open((study["folder"] / "report.html").as_uri())
        assert browser.errors() == []
        images = browser.images(session)
        assert len(images) == 8 and all(done and w > 300 and h > 200 for _, done, w, h in images), images
        shot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"])
    finally:
        browser.close()
    (study["folder"] / "report-screenshot.png").write_bytes(shot)  # kept beside the report, for a human to look at
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2000, 1280)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # not blank, not one colour
    assert (pixels.min(axis=2) < 235).mean() > 0.03  # a fair share of non-white: text, tables and plots
    assert (np.ptp(pixels, axis=2) > 60).mean() > 0.005  # coloured plot marks, not just black text


# ----------------------------------------------------------------------------------------- predict


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_predict_round_trip_matches_best_on_the_test_split(study, tmp_path):
    out = tmp_path / "test.csv"
    result = invoke("predict", study["final"], "--data", "synthetic", "--split", "test", "--out", out, "--json")
    info = json.loads(result.stdout)
    metrics = json.loads((study["final"] / "metrics.json").read_text())
    saved = next(r for r in metrics["runs"] if r["seed"] == metrics["saved_seed"])
    assert info["n"] == metrics["n_test"] == 56
    assert info["acc"] == pytest.approx(saved["test/acc"], abs=1e-6)
    rows = _rows(out)
    assert list(rows[0]) == ["id", "emotion"] and len(rows) == 56
    splits = load_splits("synthetic", val_frac=0.2, test_frac=0.2, seed=0, synthetic_n=280)
    faces, _ = synthetic_faces(280, seed=0)
    ids = [int(r["id"]) for r in rows]
    assert np.array_equal(faces[ids], splits.test.x)  # ids are the rows of the data, in order
    assert np.mean([int(r["emotion"]) for r in rows] == splits.test.y) == pytest.approx(saved["test/acc"])
    shown = invoke("predict", study["folder"], "--data", "synthetic", "--split", "test", "--out", out).stdout
    assert f"accuracy: {100 * saved['test/acc']:.2f}%" in shown  # a study folder means its final/ model


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_predict_unlabeled_kaggle_test_csv_and_fer2013_csv(study, tmp_path):
    x, y = synthetic_faces(30, seed=5)
    pixels = [" ".join(map(str, face.ravel())) for face in x]
    kaggle = _write_csv(tmp_path / "test.csv", ["pixels"], [[p] for p in pixels])
    usage = ["Training"] * 10 + ["PublicTest"] * 10 + ["PrivateTest"] * 10
    fer = _write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"],
                     [[int(label), p, u] for label, p, u in zip(y, pixels, usage)])

    out = tmp_path / "kaggle-pred.csv"
    shown = invoke("predict", study["final"], "--data", kaggle, "--out", out, "--proba").stdout
    assert "no labels" in shown and "accuracy:" not in shown
    rows = _rows(out)
    assert list(rows[0]) == ["id", "emotion", *EMOTIONS] and [int(r["id"]) for r in rows] == list(range(30))
    proba = np.array([[float(r[c]) for c in EMOTIONS] for r in rows])
    assert np.allclose(proba.sum(1), 1, atol=1e-4) and all(int(r["emotion"]) == p.argmax() for r, p in zip(rows, proba))

    info = json.loads(invoke("predict", study["final"], "--data", fer, "--out", out, "--proba", "--json").stdout)
    assert info["n"] == 30 and info["layout"] == "fer2013" and 0 <= info["acc"] <= 1
    assert np.allclose(np.array([[float(r[c]) for c in EMOTIONS] for r in _rows(out)]), proba, atol=1e-6)
    invoke("predict", study["final"], "--data", fer, "--out", out, "--split", "test", "--tta")
    assert [int(r["id"]) for r in _rows(out)] == list(range(20, 30))  # PrivateTest rows, numbered in the file
    refused(CliRunner().invoke(app, ["predict", str(study["final"]), "--data", str(kaggle), "--out", str(out),
                                     "--split", "test"]), "unlabeled", "--split all")


def test_predict_folder_layout_ids_are_file_names(study, tmp_path):
    x, _ = synthetic_faces(4, seed=2)
    for i, (face, label) in enumerate(zip(x, ["happy", "sad", "happy", "fear"])):
        folder = tmp_path / "faces" / ("train" if i < 2 else "test") / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(folder / f"img{i}.png")
    out = tmp_path / "pred.csv"
    invoke("predict", study["final"], "--data", tmp_path / "faces", "--out", out)
    assert [r["id"] for r in _rows(out)] == ["test/fear/img3.png", "test/happy/img2.png",
                                              "train/happy/img0.png", "train/sad/img1.png"]


def test_split_rows_are_the_rows_load_splits_uses(tmp_path):
    x, y = synthetic_faces(120, seed=3)
    train_csv = _write_csv(tmp_path / "train.csv", ["emotion", "pixels"],
                           [[int(label), " ".join(map(str, face.ravel()))] for face, label in zip(x, y)])
    faces = read_faces(train_csv)
    splits = load_splits(train_csv, val_frac=0.2, test_frac=0.15, seed=7)
    for name in ("train", "val", "test"):
        rows = prediction.split_rows(faces, name, {"val_frac": 0.2, "test_frac": 0.15, "seed": 7})
        assert np.array_equal(faces.x[rows], getattr(splits, name).x)
        assert np.array_equal(faces.y[rows], getattr(splits, name).y)


class Payload:
    """Pickles as a call to os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Harmless:
    """A plain class instance: still code by reference, which weights_only refuses."""


@pytest.mark.parametrize("payload", ["reduce", "class"])
def test_predict_refuses_a_checkpoint_carrying_code(study, tmp_path, payload):
    model_dir = tmp_path / "model"
    shutil.copytree(study["final"], model_dir)
    marker = tmp_path / "pwned"
    state = torch.load(model_dir / "model.pt", weights_only=True)
    state["extra"] = Payload(marker) if payload == "reduce" else Harmless()
    torch.save(state, model_dir / "model.pt")
    result = CliRunner().invoke(app, ["predict", str(model_dir), "--data", "synthetic", "--out",
                                      str(tmp_path / "p.csv")])
    refused(result, "model.pt", "refused", "not a plain weights file")
    assert not marker.exists(), "the checkpoint's payload ran"
    assert not (tmp_path / "p.csv").exists()


def test_predict_bad_model_folder_and_weights(study, tmp_path):
    refused(CliRunner().invoke(app, ["predict", str(tmp_path), "--data", "synthetic", "--out", str(tmp_path / "p.csv")]),
            "no model here")
    model_dir = tmp_path / "model"
    shutil.copytree(study["final"], model_dir)
    torch.save({"weight": torch.zeros(3)}, model_dir / "model.pt")
    refused(CliRunner().invoke(app, ["predict", str(model_dir), "--data", "synthetic", "--out", str(tmp_path / "p.csv")]),
            "cannot load the model")
    refused(CliRunner().invoke(app, ["predict", str(study["final"]), "--data", "synthetic", "--split", "dev",
                                     "--out", str(tmp_path / "p.csv")]), "--split", "dev")


# ------------------------------------------------------------------------------------ export-wandb


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


def test_export_wandb_is_a_valid_sweep_whose_command_trains_one_trial(study, tmp_path, monkeypatch):
    config = yaml.safe_load(invoke("export-wandb", study["spec"]).stdout)
    assert config["method"] == "random" and config["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert config["early_terminate"] == {"type": "hyperband", "min_iter": 1, "eta": 3}
    assert config["parameters"]["conv"] == {"values": ["[[4, 3], [8, 3]]", "[[8, 3], [8, 3]]"]}
    assert config["parameters"]["lr"] == {"distribution": "log_uniform_values", "min": 0.001, "max": 0.01}
    assert config["command"] == ["${env}", "${interpreter}", "-m", "fer_sweep.wandb_sweeps", str(study["spec"]), "${args}"]
    runs = _validated(config)

    spec = load_spec(study["spec"])
    logged, finished = [], {}

    class Recorder:  # stands in for the agent's wandb run
        def __init__(self, **kwargs):
            finished["group"] = kwargs["group"]

        def log(self, metrics, step):
            logged.append((step, dict(metrics)))

        def finish(self, tags, summary):
            finished.update(summary, tags=tags)

    monkeypatch.setattr(tracking, "TrialRun", Recorder)
    other = yaml.safe_load(invoke("export-wandb", study["spec"], "--data", "synthetic", "--study", "other").stdout)
    assert other["name"] == "other" and other["command"][4:-1] == [str(study["spec"]), "--data=synthetic", "--study=other"]
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
    invoke("export-wandb", study["spec"], "--out", out)
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


def test_agent_arguments_that_do_not_fit_the_spec_are_refused(study):
    spec = load_spec(study["spec"])
    good = ["--conv=[[4, 3], [8, 3]]", "--lr=0.002", "--norm=batch", "--dropout=0.2"]
    with pytest.raises(Exception, match="not one of"):
        wandb_sweeps.params_from_args(spec, [*good[1:], "--conv=[[16, 3]]"])
    with pytest.raises(Exception, match="not a parameter"):
        wandb_sweeps.params_from_args(spec, [*good, "--depth=2"])
    with pytest.raises(Exception, match="missing --lr"):
        wandb_sweeps.params_from_args(spec, [good[0], *good[2:]])
    assert wandb_sweeps.params_from_args(spec, ["--conv=[[4,3],[8,3]]", "--lr=0.5", "--norm=none", "--dropout=0.30000000004"]) \
        == {"conv": "[[4, 3], [8, 3]]", "lr": 0.01, "norm": "none", "dropout": 0.3}


def _no_login(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))


def test_run_backend_wandb_offline_or_logged_out_is_a_clear_error(study, tmp_path, monkeypatch):
    import wandb

    def no_sweep(*args, **kwargs):
        raise AssertionError("a W&B sweep was created")

    monkeypatch.setattr(wandb, "sweep", no_sweep)
    _no_login(monkeypatch, tmp_path)
    args = ["run", str(study["spec"]), "--backend", "wandb", "--results", str(tmp_path / "r")]
    refused(CliRunner().invoke(app, args + ["--wandb", "offline"]), "--backend wandb needs W&B online")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    refused(CliRunner().invoke(app, args + ["--wandb", "online"]), "not logged in", "wandb login")
    refused(CliRunner().invoke(app, args + ["--wandb", "online", "--workers", "2"]), "--workers", "--backend optuna")
    refused(CliRunner().invoke(app, args + ["--backend", "ray"]), "--backend", "ray")


# -------------------------------------------------------------------------------------- sync, dashboard


def test_sync_without_a_login_uploads_nothing(study, tmp_path, monkeypatch):
    _no_login(monkeypatch, tmp_path)
    runs = wandb_sweeps.offline_runs(study["folder"])
    assert len(runs) == 6 + 1  # six trials and the final retrain
    result = CliRunner().invoke(app, ["sync", "--results", str(study["results"])])
    refused(result, "not logged in", "wandb login", "nothing was uploaded")
    assert not list(study["folder"].glob("wandb/offline-run-*/*.synced"))


def test_sync_hands_every_offline_run_to_wandb_sync(study, tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs["env"]))
        return subprocess.CompletedProcess(cmd, 0, stdout="done", stderr="")

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    done = wandb_sweeps.sync_runs(study["folder"], run=fake_run)
    (cmd, env), = calls
    assert cmd[1:4] == ["-m", "wandb", "sync"] and cmd[4:] == [str(p) for p in wandb_sweeps.offline_runs(study["folder"])]
    assert "WANDB_MODE" not in env and len(done["runs"]) == 7
    with pytest.raises(Exception, match="no offline wandb runs"):
        wandb_sweeps.sync_runs(tmp_path, run=fake_run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study_on_loopback(study):
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[dashboard]')")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fer_sweep", "dashboard", "--results", str(study["results"]),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def test_dashboard_without_the_extra_is_a_clear_error(study, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    refused(CliRunner().invoke(app, ["dashboard", "--results", str(study["results"])]),
            "optuna-dashboard is not installed", "fer-sweep[dashboard]")
