"""benchmarks/bench_accuracy.py run as a program (tests never import benchmarks), small: a 2-trial sweep on synthetic
faces, `best --ensemble` and `best --seeds 2`, with the section written into a Markdown file of the test's own;
then `--recipe --report-only` over stage markers made of those commands' JSON. Checks the files and that every
number in the section is the CLI's JSON's, and that benchmarks/RESULTS.md is left alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers import ROOT

BENCH = ROOT / "benchmarks" / "bench_accuracy.py"
REPORT = ROOT / "benchmarks" / "RESULTS.md"
SPEC = {
    "study": "tiny", "data": "synthetic", "trials": 2, "seed": 1, "keep": 2,
    "splits": {"synthetic_n": 280, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
    "pruner": {"type": "none"}, "wandb": {"project": "fer-sweep-tests", "mode": "disabled"},
    "model": {"arch": "cnn", "fc_units": 8},
    "train": {"epochs": 1, "patience": 0, "batch_size": 32},
    "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]},
              "lr": {"low": 0.001, "high": 0.01, "log": True}},
}
HISTORY_KEYS = {"epoch", "train/loss", "train/acc", "val/loss", "val/acc", "lr", "time/epoch_s"}


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def bench(*args, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCH), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def section(md, title: str) -> str:
    """The body of `## title` in the Markdown file md (it must be there once)."""
    text = md.read_text()
    assert text.count(f"## {title}\n") == 1, text[:2000]
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].strip()


@pytest.fixture(scope="module")
def accuracy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-accuracy")
    spec = root / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    report_before = REPORT.read_bytes() if REPORT.exists() else None
    results, md = root / "results", root / "RESULTS.md"
    done = bench(spec, "--data", "synthetic", "--seeds", 2, "--best-epochs", 2, "--ensemble", 2, "--device", "cpu",
                 "--results", results, "--results-md", md)
    outputs = {k: json.loads((results / f"tiny-{k}.json").read_text()) for k in ("status", "ensemble", "best")}
    return {"root": root, "results": results, "md": md, "stdout": done.stdout, "report_before": report_before,
            **outputs}


@pytest.mark.slow
def test_a_sweep_and_best_are_reported_from_the_cli_json(accuracy_run):
    st, ens, best = accuracy_run["status"], accuracy_run["ensemble"], accuracy_run["best"]
    assert st["finished"] == 2 and st["counts"]["complete"] == 2 and best["seeds"] == 2 and best["split"] == "test"
    body = section(accuracy_run["md"], "Accuracy: tiny on synthetic")
    assert "Partial" not in body and body in accuracy_run["stdout"]  # printed, and written to --results-md
    assert "- trials: 2 of 2 finished: complete 2; training epochs spent 2 " in body
    assert f"- sweep winner: trial {st['best']['number']}, val acc {pct(st['best']['val_acc'])}" in body
    acc, f1 = best["test/acc"], best["test/macro_f1"]
    assert (f"- `best` (2 seeds, n_test = {best['n_test']}): **test acc {pct(acc['mean'])} ± {pct(acc['std'])}**, "
            f"test macro-F1 {pct(f1['mean'])} ± {pct(f1['std'])}") in body
    assert f"**test acc {pct(ens['test/acc'])}**, macro-F1 {pct(ens['test/macro_f1'])}" in body
    assert (accuracy_run["results"] / "tiny.log").read_text().count("$ fer-sweep ") == 3  # run, ensemble, best
    # the retrain curves: best --json's per-epoch history, one line per seed
    for run in best["runs"]:
        history = run.get("history")
        assert history and [h["epoch"] for h in history] == [1, 2], run
        assert HISTORY_KEYS <= set(history[0]), history[0]
        curve = ", ".join(f"{h['epoch']}: {pct(h['train/acc'])} / {pct(h['val/acc'])}" for h in history)
        assert f"- retrain curve, seed {run['seed']} (epoch: train acc / val acc): {curve}\n" in body + "\n"


@pytest.mark.slow
def test_the_recipe_report_reads_its_stage_markers(accuracy_run):
    """--recipe --report-only renders the recipe's section from the stages' markers (here made of the small run's
    real JSON) and runs nothing."""
    st, ens, best = accuracy_run["status"], accuracy_run["ensemble"], accuracy_run["best"]
    results, md = accuracy_run["root"] / "recipe", accuracy_run["root"] / "RECIPE.md"
    stages = results / "stages"
    stages.mkdir(parents=True)
    outputs = {"sweep:strong-sgd": st, "sweep:resnet": st, "best:strong-sgd": best, "best:resnet": best,
               "ensemble:trials": ens, "ensemble:final": ens, "ablation-sweep:ema": None, "ablation:ema": best}
    for name, output in outputs.items():
        (stages / f"{name.replace(':', '-')}.json").write_text(json.dumps(
            {"stage": name, "seconds": 60.0, "finished": time.time(), "output": output}))
    done = bench("--recipe", "--report-only", "--data", "synthetic", "--device", "cpu", "--results", results,
                 "--results-md", md, timeout=300)
    assert "fer-sweep" not in done.stdout  # no stage ran
    body = section(md, "Accuracy: the issue-20 recipe on synthetic")
    assert body.startswith("**Partial") and "- stages done: 8 of 14" in body
    acc = pct(best["test/acc"]["mean"])
    assert "- `sweeps/strong-sgd.yaml` sweep: 2 trials finished (complete 2); 2 epochs" in body
    assert f"winner trial {st['best']['number']}, val acc {pct(st['best']['val_acc'])}" in body
    assert f"- `best --study resnet` (2 seeds, 1 min): **test acc {acc} ± {pct(best['test/acc']['std'])}**" in body
    assert f"**test acc {pct(ens['test/acc'])}**" in body
    assert f"| baseline + a weight average (EMA, decay 0.999) validated and kept | " \
           f"{pct(best['val/acc']['mean'])} | {acc} |" in body
    assert "- target, best single model (mean of 2 seeds) >= 69.5%: strong-sgd " + acc in body


@pytest.mark.slow
def test_no_benchmark_report_was_written(accuracy_run):
    """Both runs above wrote into the test's own Markdown files: benchmarks/RESULTS.md is as it was."""
    after = REPORT.read_bytes() if REPORT.exists() else None
    assert after == accuracy_run["report_before"]
