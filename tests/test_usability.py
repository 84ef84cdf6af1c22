"""A new user's first hour (issue 13): tables that fit 80 columns, nothing written on bad input, flags named
in errors, SIGTERM handled like Ctrl-C in worker processes, importances flagged when they rest on few trials,
and report figures whose legends cover nothing."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console
from typer.testing import CliRunner

from fer_sweep.results import html as htmlreport
from fer_sweep.results import plots
from fer_sweep.cli import render as report
from fer_sweep.results.formats import param_label, pct
from fer_sweep.sweep import summary
from fer_sweep.cli import app
from fer_sweep.config import EMOTIONS
from fer_sweep.sweep.spec import load_spec
from tests.test_workers import check_exact, cli, journal_study, make_spec

ROOT = Path(__file__).resolve().parents[1]


def fake_study(spec_path: Path, n: int, seed: int = 0, pruned_every: int = 4) -> tuple:
    """An in-memory study over a spec's space: random configurations, every `pruned_every`-th pruned after
    one epoch, the others complete after 7."""
    spec = load_spec(spec_path, check_data=False)
    dists = {}
    for p in spec.space:
        if p.choices:
            dists[p.name] = optuna.distributions.CategoricalDistribution(p.choices)
        elif p.is_int:
            dists[p.name] = optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            dists[p.name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
    study = optuna.create_study(direction="maximize", study_name=spec.study)
    rng = np.random.default_rng(seed)
    for i in range(n):
        params = {k: d.choices[rng.integers(len(d.choices))]
                  if isinstance(d, optuna.distributions.CategoricalDistribution)
                  else float(np.exp(rng.uniform(np.log(d.low), np.log(d.high)))) if d.log
                  else float(rng.uniform(d.low, d.high)) for k, d in dists.items()}
        pruned = i % pruned_every == pruned_every - 1
        curve = {e: 0.3 + 0.03 * e + float(rng.normal(0, 0.02)) for e in range(1, 2 if pruned else 8)}
        state = TrialState.PRUNED if pruned else TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, intermediate_values=curve, state=state,
            value=None if pruned else max(curve.values()),
            user_attrs={"outcome": state.name.lower(), "best_val_acc": max(curve.values()), "epochs": len(curve),
                        "seconds": 1234.5 + i}))
    return spec, study


def render(renderable, width: int) -> str:
    console = Console(width=width, record=True, soft_wrap=True, file=io.StringIO())  # as the CLI's console prints
    console.print(renderable)
    return console.export_text()


# ------------------------------------------------------------------------------ 1. tables at 80 columns


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("spec_name", ["cnn", "vgg"])
def test_leaderboard_fits_the_terminal_without_cutting_numbers(spec_name, width):
    spec, study = fake_study(ROOT / "sweeps" / f"{spec_name}.yaml", 12)
    st = summary.status(study, spec.trials, 15)
    text = render(report.status_view(st), width)
    table = render(report.leaderboard(st["leaderboard"], "top trials"), width)
    assert "…" not in text and "..." not in text
    assert max(len(line) for line in table.splitlines()) <= width
    for row in st["leaderboard"]:
        assert pct(row["val_acc"]) in table
        for key in (k for k in row if k.startswith("params.")):
            assert param_label(key, row[key]) in table, (key, row[key])
    if spec_name == "cnn":  # the notebook grid's six parameters: one column each at both widths
        assert "conv" in table and ("batch_size" if width == 120 else "batch") in table
        assert ("seconds" in table) == (width == 120)  # the first column dropped for room
    else:  # 16 parameters: name=value pairs that wrap
        assert "weight_decay=" in table


@pytest.mark.parametrize("spec_name", ["cnn", "vgg"])
def test_no_value_is_cut_at_any_width_from_50_columns(spec_name):
    spec, study = fake_study(ROOT / "sweeps" / f"{spec_name}.yaml", 12)
    rows = summary.status(study, spec.trials, 15)["leaderboard"]
    values = [param_label(k, r[k]) for r in rows for k in r if k.startswith("params.")]
    for width in range(50, 161, 3):
        table = render(report.leaderboard(rows, "top trials"), width)
        assert "…" not in table and max(len(line) for line in table.splitlines()) <= width
        assert all(v in table for v in values), width


def test_numbers_are_short_but_never_cut():
    assert param_label("params.lr", 0.00123456) == "0.00123"
    assert param_label("lr", 1e-5) == "1e-05" and param_label("dropout", 0.2779) == "0.278"
    assert param_label("conv", "[[16, 3], [32, 3], [64, 3]]") == "16-32-64"
    assert param_label("conv", "[[16, 5], [32, 3]]") == "16k5-32"


def test_run_leaderboard_fits_80_columns(tmp_path):
    spec = make_spec(tmp_path, "fit80", 2, model={"arch": "cnn", "fc_units": 8}, train={"epochs": 1, "patience": 0},
                     space={"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]},
                            "lr": {"low": 0.0001, "high": 0.01, "log": True}, "norm": {"choices": ["batch", "none"]},
                            "dropout": {"low": 0.1, "high": 0.3}, "batch_size": {"choices": [32, 64]},
                            "weight_decay": {"low": 0.00001, "high": 0.001, "log": True}})
    run = subprocess.run(cli("run", str(spec), "--results", str(tmp_path / "r"), "--device", "cpu"),
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert run.returncode == 0, run.stderr
    assert "…" not in run.stdout and "2/2 finished" in run.stdout
    rows = json.loads(subprocess.run(cli("status", "--results", str(tmp_path / "r"), "--json"), capture_output=True,
                                     text=True, timeout=120).stdout)["leaderboard"]
    for row in rows:
        assert pct(row["val_acc"]) in run.stdout and param_label("lr", row["params.lr"]) in run.stdout


# ------------------------------------------------------------- 2./3. nothing written on bad input, flags named


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A finished 2-trial study with its winner retrained (model for predict)."""
    root = tmp_path_factory.mktemp("usability")
    spec = make_spec(root, "small", 2)
    results = root / "results"
    for args in (("run", spec, "--results", results, "--device", "cpu"),
                 ("best", "--results", results, "--device", "cpu", "--wandb", "disabled", "--epochs", "1")):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    bad = root / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    return {"root": root, "spec": spec, "results": results, "bad": bad}


BAD_INPUT = [  # (arguments, words the one error line must hold); {spec}, {results}, {bad}, {root} filled in
    (("run", "{spec}", "--device", "gpu", "--study", "x"), ["--device", "gpu"]),
    (("run", "{spec}", "--device", "cuda:7", "--study", "x"), ["--device", "cuda:7"]),
    (("run", "{spec}", "--gpus", "0", "--study", "x"), ["--gpus"]),
    (("run", "{spec}", "--data", "/nope.csv", "--study", "x"), ["--data: file not found: /nope.csv"]),
    (("run", "{spec}", "--data", "{bad}", "--study", "x"), ["bad.csv"]),
    (("run", "{spec}", "--study", "a b"), ["--study: must be a name"]),
    (("run", "{spec}", "--study", "x", "--wandb", "sometimes"), ["--wandb", "sometimes"]),
    (("run", "{spec}", "--study", "x", "--backend", "ray"), ["--backend", "ray"]),
    (("run", "{spec}", "--study", "x", "--storage", "nonsense://"), ["--storage nonsense://"]),
    (("run", "{spec}", "--study", "x", "--results", "{bad}"), ["--results", "not a folder"]),
    (("run", "{root}/changed.yaml", "--study", "small"), ["was started with other train"]),
    (("best", "--device", "gpu"), ["--device", "gpu"]),
    (("best", "--data", "/nope.csv"), ["--data: file not found: /nope.csv"]),
    (("best", "--wandb", "sometimes"), ["--wandb", "sometimes"]),
    (("best", "--study", "nope"), ["nope"]),
    (("report", "--study", "nope"), ["nope"]),
    (("report", "--storage", "nonsense://"), ["nonsense://"]),
    (("status", "--study", "nope"), ["nope"]),
    (("status", "--storage", "nonsense://"), ["nonsense://"]),
    (("predict", "{results}/small/final", "--data", "/nope.csv", "--out", "{root}/p.csv"), ["/nope.csv"]),
    (("predict", "{results}/small/final", "--data", "synthetic", "--device", "gpu", "--out", "{root}/p.csv"),
     ["gpu"]),
    (("predict", "{results}/small/final", "--data", "synthetic", "--split", "nope", "--out", "{root}/p.csv"),
     ["nope"]),
]


@pytest.mark.parametrize("args,words", BAD_INPUT, ids=[" ".join(a[:1] + a[2:4]) for a, _ in BAD_INPUT])
def test_bad_input_writes_nothing(small, args, words):
    root = small["root"]
    (root / "changed.yaml").write_text(small["spec"].read_text().replace("epochs: 2", "epochs: 3"))
    values = {"spec": small["spec"], "results": small["results"], "bad": small["bad"], "root": root}
    argv = [a.format(**values) for a in args]
    if "--results" not in argv and argv[0] != "predict":
        argv += ["--results", str(small["results"])]
    before = snapshot(root)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in line, line
    assert snapshot(root) == before  # no file or folder created, none changed (journal, lock, spec.yaml)
    assert not (small["results"] / "x").exists()


def test_reading_a_study_appends_nothing_to_its_journal(small):
    journal = small["results"] / "small" / "journal.log"
    before = journal.read_bytes()
    for args in (("status",), ("status", "--json"), ("best", "--no-retrain"), ("report",)):
        result = CliRunner().invoke(app, [*args, "--results", str(small["results"])])
        assert result.exit_code == 0, result.stderr
    again = CliRunner().invoke(app, ["run", str(small["spec"]), "--results", str(small["results"]), "--device", "cpu"])
    assert again.exit_code == 0 and "2/2 finished" in again.stdout
    assert journal.read_bytes() == before  # no create_study record per open, no write on a finished resume


# -------------------------------------------------------------------------------- 4. SIGTERM and workers


def test_sigterm_to_a_multi_worker_run_requeues_every_running_trial(tmp_path):
    """Preemption of `run --workers 2`: the parent forwards SIGTERM, each worker fails its trial as
    `interrupted` and re-queues it at once, all exit promptly (143); a rerun ends with exactly N."""
    spec = make_spec(tmp_path, "preempt", 4, train={"epochs": 4, "patience": 0, "batch_size": 32},
                     pruner={"type": "none"}, splits={"synthetic_n": 1400, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                     model={"arch": "cnn", "fc_units": 32, "conv": [[16, 3], [32, 3]]},
                     space={"lr": {"low": 0.001, "high": 0.01, "log": True}})
    results = tmp_path / "results"
    args = ("run", str(spec), "--workers", "2", "--results", str(results), "--device", "cpu")
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            running = journal_study(results, "preempt").get_trials(states=(TrialState.RUNNING,))
        except (KeyError, FileNotFoundError, ValueError):  # journal or study not created yet
            continue
        if len([t for t in running if t.intermediate_values]) == 2:  # both workers mid-trial
            break
    else:
        pytest.fail("the two workers were never mid-trial at once")
    cut = {t.number: t for t in running}
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - signalled < 30 and proc.returncode == 143, stderr
    assert "SIGTERM" in stderr and "Traceback" not in stderr
    trials = journal_study(results, "preempt").get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for number, t in cut.items():  # failed as interrupted (not crashed) and enqueued again, before any rerun
        assert trials[number].state == TrialState.FAIL and trials[number].user_attrs["outcome"] == "interrupted"
        assert trials[number].user_attrs["message"] == "SIGTERM"
        again = [w for w in trials if w.state == TrialState.WAITING and w.user_attrs.get("retry_of") == number]
        assert len(again) == 1 and again[0].user_attrs["ticket"] == t.user_attrs["ticket"]
    for k in (0, 1):
        assert "terminated (SIGTERM)" in (results / "preempt" / f"worker-{k}.log").read_text()

    rerun = subprocess.run(cli(*args), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    finished = check_exact(journal_study(results, "preempt"), spec, 4)
    for number, t in cut.items():
        redone = [f for f in finished if f.user_attrs["ticket"] == t.user_attrs["ticket"]]
        assert redone[0].params == t.params and redone[0].number > number


# ----------------------------------------------------------------------------- 5. importances' basis


def test_importances_say_how_many_trials_they_rest_on(tmp_path):
    spec, study = fake_study(ROOT / "sweeps" / "cnn.yaml", 8)  # 6 complete: fANOVA runs, far from reliable
    st = summary.status(study, spec.trials, 15)
    assert st["importances"] and st["importance_basis"] == {"complete_trials": 6, "reliable_from": 20,
                                                            "reliable": False}
    json.dumps(st, default=str)  # what `status --json` prints
    text = render(report.status_view(st), 80)
    assert "fANOVA over 6 complete trials" in text and "unreliable" in text
    done = htmlreport.build_report(spec, study, tmp_path, load_data=_synthetic)
    page = (tmp_path / "report.html").read_text()
    assert 'class="note" id="importance-basis"' in page and "rest on 6 complete trials" in page
    assert done["importance_basis"]["reliable"] is False

    spec, study = fake_study(ROOT / "sweeps" / "cnn.yaml", 24, pruned_every=100)  # 24 complete >= 20 (6 params)
    st = summary.status(study, spec.trials, 15)
    assert st["importance_basis"] == {"complete_trials": 24, "reliable_from": 20, "reliable": True}
    assert "unreliable" not in render(report.status_view(st), 120)
    assert summary.importance_trials_needed(16) == 32  # vgg.yaml's 16 searched parameters need more


def test_status_json_has_the_importance_basis(small):
    result = CliRunner().invoke(app, ["status", "--results", str(small["results"]), "--json"])
    basis = json.loads(result.stdout)["importance_basis"]
    assert basis["complete_trials"] <= 2 and basis["reliable"] is False and basis["reliable_from"] == 20


def _synthetic(spec):
    from fer_sweep.data.splits import load_splits

    return load_splits("synthetic", synthetic_n=140)


# ------------------------------------------------------------------------------------ 6. report figures


@pytest.fixture
def figures(monkeypatch):
    """Capture each figure before it is saved and closed, to check where its artists are drawn."""
    caught = []
    save = plots._save

    def keep(fig, path):
        fig.canvas.draw()
        caught.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(plots._pyplot(), "close", lambda fig: None)
    return caught


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legend_boxes(fig):
    return [legend.get_window_extent() for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if legend]


def test_bar_chart_legends_cover_no_bar(tmp_path, figures):
    per_class = [{"class": c, "precision": 0.95, "recall": 0.95, "f1": 0.95, "support": 10} for c in EMOTIONS]
    plots.save_f1_png(per_class, tmp_path / "f1.png")
    even = {c: 100 for c in EMOTIONS}  # synthetic data: every class as tall as neutral
    plots.save_class_counts_png({"train": even, "val": even, "test": even}, tmp_path / "classes.png")
    for fig in figures:
        bars = [p.get_window_extent() for ax in fig.axes for p in ax.patches]
        assert bars and _legend_boxes(fig)
        for box in _legend_boxes(fig):
            assert not any(_overlaps(box, bar) for bar in bars)


def _artists(artist):
    """Every artist under `artist` (a legend's boxes hold the sample lines it draws)."""
    for child in artist.get_children():
        yield child
        yield from _artists(child)


def test_one_epoch_pruned_trials_are_drawn_as_the_legend_says(tmp_path, figures):
    trials = [{"number": i, "state": "complete", "value": 0.5, "params": {}, "curve": [(1, 0.3), (2, 0.4), (3, 0.5)]}
              for i in range(3)]
    trials += [{"number": 3, "state": "pruned", "value": 0.2, "params": {}, "curve": [(1, 0.2)]},
               {"number": 4, "state": "pruned", "value": 0.25, "params": {}, "curve": [(1, 0.2), (2, 0.25)]}]
    plots.save_curves_png(trials, tmp_path / "curves.png")
    ax = figures[0].axes[0]
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert sorted(tuple(c.get_xydata()[-1]) for c in crosses) == [(1.0, 0.2), (2.0, 0.25)]  # the lone epoch: a ×
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [len(line.get_xydata()) for line in dashed] == [1, 2]
    legend = ax.get_legend()
    assert any(t.get_text().startswith("pruned (2)") for t in legend.get_texts())
    samples = [a for a in _artists(legend) if hasattr(a, "get_marker") and a.get_color() == plots.PRUNED]
    assert {a.get_marker() for a in samples} >= {"x"} and {a.get_linestyle() for a in samples} >= {"--"}
    assert not _overlaps(legend.get_window_extent(), ax.get_window_extent())  # beside the plot, not on it


def test_slices_legend_covers_no_point(tmp_path, figures):
    trials = [{"number": i, "state": ["complete", "pruned"][i % 2], "value": 0.3 + 0.02 * i,
               "params": {"lr": 0.001 * (i + 1), "norm": ["batch", "none"][i % 2]}, "curve": []} for i in range(10)]
    axes = [{"name": "lr", "low": 0.001, "high": 0.01, "log": True}, {"name": "norm", "choices": ["batch", "none"]}]
    plots.save_slices_png(trials, axes, tmp_path / "slices.png")
    fig = figures[0]
    assert _legend_boxes(fig)
    for legend_box in _legend_boxes(fig):  # above the panels, so on no point
        assert not any(_overlaps(legend_box, ax.get_window_extent()) for ax in fig.axes if ax.axison)
