"""`fer-sweep best` end to end: the retrained winner's files; `--ensemble` (the kept trial models combined,
`predict` on the ensemble folder reproducing it, the report showing it); `--seeds` (the seeds' average)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from optuna.trial import TrialState

from fer_sweep.results.best import pick_winner
from tests.helpers import invoke, journal_study, refused, snapshot


def test_best_writes_weights_config_metrics_and_confusion(tiny_sweep):
    folder, _, best = tiny_sweep
    final = folder / "final"
    state = torch.load(final / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    metrics = json.loads((final / "metrics.json").read_text())
    config = json.loads((final / "config.json").read_text())
    study = journal_study(folder.parent, "tiny")
    winner = max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    assert metrics["winner"]["number"] == winner.number == config["trial"]
    assert config["params"] == winner.params
    assert metrics["split"] == "test" and metrics["seeds"] == 2 and len(metrics["runs"]) == 2
    assert 0.0 <= metrics["test/acc"]["mean"] <= 1.0 and metrics["test/acc"]["std"] >= 0.0
    assert sum(map(sum, metrics["confusion"])) == metrics["n_test"] == 280 * 0.2
    assert [r["class"] for r in metrics["per_class"]] == ["angry", "disgust", "fear", "happy", "sad", "surprise",
                                                          "neutral"]
    assert (final / "confusion.png").stat().st_size > 1000
    assert "winner" in best.stdout and "test: acc" in best.stdout


def _predict(folder, out):
    shown = invoke("predict", folder, "--data", "synthetic", "--split", "test", "--out", out, "--proba", "--json")
    return json.loads(shown.stdout)["acc"], [row for row in csv.reader(out.open())]


def test_best_ensemble_predict_and_report(kept_sweep, tmp_path):
    final = kept_sweep["folder"] / "final"
    results = kept_sweep["results"]
    info = json.loads(invoke("best", "--results", results, "--device", "cpu", "--ensemble", 5, "--json").stdout)
    assert info == json.loads((final / "ensemble.json").read_text())
    assert info["single"]["trial"] == pick_winner(kept_sweep["study"]).number and info["split"] == "test"
    assert {m["trial"] for m in info["members"]} <= set(info["candidates"]) and len(info["candidates"]) == 3
    for m in info["members"]:
        assert torch.load(final / m["path"] / "model.pt", weights_only=True)  # plain weights, loadable
    acc, _ = _predict(final, tmp_path / "ens.csv")
    assert acc == pytest.approx(info["test/acc"], abs=1e-6)  # predict on the folder reproduces best --ensemble
    page = invoke("report", "--results", results, "--json").stdout
    html = (kept_sweep["folder"] / "report.html").read_text()
    assert '"ensemble"' in page and 'id="ensemble"' in html and 'id="fig-ensemble"' in html
    # an ensemble of one model is that model: same accuracy, same probabilities as its own folder
    one = json.loads(invoke("best", "--results", results, "--device", "cpu", "--ensemble", 1, "--json").stdout)
    assert [(m["trial"], m["weight"]) for m in one["members"]] == [(one["single"]["trial"], 1.0)]
    assert one["test/acc"] == one["single"]["test/acc"]
    acc_ens, rows_ens = _predict(final, tmp_path / "one.csv")
    acc_member, rows_member = _predict(final / one["members"][0]["path"], tmp_path / "member.csv")
    assert rows_ens == rows_member and acc_ens == pytest.approx(one["test/acc"], abs=1e-6)


def test_ensemble_takes_no_retrain_flags(kept_sweep):
    before = snapshot(kept_sweep["folder"])
    refused("best", "--results", kept_sweep["results"], "--ensemble", 3, "--seeds", 2,
            words=("--ensemble combines the kept trial models",))
    assert snapshot(kept_sweep["folder"]) == before  # nothing retrained, nothing written


def test_seeds_are_kept_and_averaged_as_an_ensemble(kept_sweep, tmp_path):
    metrics = json.loads(invoke("best", "--results", kept_sweep["results"], "--device", "cpu", "--seeds", 2,
                                "--epochs", 1, "--wandb", "disabled", "--json").stdout)
    seeds = metrics["seeds_ensemble"]
    assert seeds["seeds"] == [0, 1] and seeds["weights"] == [0.5, 0.5] and "test/acc" in seeds
    folder = kept_sweep["folder"] / "final" / "seeds"
    assert sorted(p.name for p in folder.iterdir()) == ["ensemble.json", "s0", "s1"]
    acc, _ = _predict(folder, tmp_path / "seeds.csv")
    assert acc == pytest.approx(seeds["test/acc"], abs=1e-6)


def test_a_stopped_best_resumes_with_its_next_seed(tmp_path):
    """Ctrl-C in the second seed of `best --seeds 2`: nothing is published, the first seed waits in
    final/.seeds-done/; the same command trains only the second seed and reports the first as resumed, with the
    numbers a retrain of both from scratch gives (CPU training here is deterministic)."""
    import signal
    import subprocess

    from tests.helpers import cli, make_spec

    results = tmp_path / "r"
    ran = subprocess.run(cli("run", str(make_spec(tmp_path, "resume", 1)), "--results", str(results), "--device",
                             "cpu"), capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    best = cli("best", "--study", "resume", "--results", str(results), "--device", "cpu", "--seeds", "2",
               "--epochs", "40", "--json")
    proc = subprocess.Popen(best, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:
        if "seed 1 epoch 1/" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, said = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted: seed 1 goes on from its last saved epoch; run the same command" \
        in said and "Traceback" not in said, said
    final = results / "resume" / "final"
    assert not (final / "model.pt").exists() and len(list((final / ".seeds-done").rglob("s0.pt"))) == 1
    resumed = subprocess.run(best, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "seed 0 epoch" not in resumed.stderr and "seed 1 epoch 40/40" in resumed.stderr
    assert "seed 1 epoch 1/40" not in resumed.stderr  # seed 1 goes on from its last epoch's checkpoint
    m = json.loads(resumed.stdout)
    assert m["runs"][0]["resumed"] is True and "resumed" not in m["runs"][1]
    assert not (final / ".seeds-done").exists() and (final / "seeds" / "s0" / "model.pt").is_file()
    fresh = json.loads(subprocess.run(best, capture_output=True, text=True, timeout=300).stdout)
    def untimed(run):  # the numbers of a run; its epochs' seconds differ from run to run
        return {k: v for k, v in run.items() if k != "resumed"} | {
            "history": [{k: v for k, v in row.items() if k != "time/epoch_s"} for row in run["history"]]}
    assert [untimed(r) for r in m["runs"]] == [untimed(r) for r in fresh["runs"]]
    assert m["test/acc"] == fresh["test/acc"] and m["seeds_ensemble"] == fresh["seeds_ensemble"]


def test_a_longer_best_continues_the_saved_retrain_and_equals_a_fresh_one(tmp_path):
    """best --epochs 3, then best --epochs 5: the second trains epochs 4 and 5 only, from the first's saved training
    state (constant lr: the schedule does not depend on the budget), reports continued_from_epoch 3, and ends with
    the numbers of a fresh 5-epoch retrain (deterministic CPU training); the 3-epoch retrain stays in
    final/earlier/1/."""
    import shutil
    import subprocess

    from tests.helpers import cli, make_spec

    results = tmp_path / "r"
    spec = make_spec(tmp_path, "longer", 1, train={"epochs": 2, "patience": 0, "batch_size": 32, "deterministic": True})
    ran = subprocess.run(cli("run", str(spec), "--results", str(results), "--device", "cpu"), capture_output=True,
                         text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    fresh_results = tmp_path / "fresh"
    shutil.copytree(results, fresh_results)

    def best(where, epochs):
        out = subprocess.run(cli("best", "--study", "longer", "--results", str(where), "--device", "cpu", "--epochs",
                                 str(epochs), "--json"), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout), out.stderr

    first, _ = best(results, 3)
    assert "continued_from_epoch" not in first
    longer, log = best(results, 5)
    assert longer["continued_from_epoch"] == 3
    assert "epoch 1/5" not in log and "epoch 3/5" not in log and "epoch 4/5" in log and "epoch 5/5" in log
    fresh, _ = best(fresh_results, 5)
    assert longer["test/acc"] == fresh["test/acc"] and longer["val/acc"] == fresh["val/acc"]
    untimed = [[{k: v for k, v in row.items() if k != "time/epoch_s"} for row in m["runs"][0]["history"]]
               for m in (longer, fresh)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 5
    final = results / "longer" / "final"
    assert (final / "earlier" / "1" / "model.pt").is_file() and (final / "train-state" / "s0.pt").is_file()


# ------------------------------------------------------------------------------------------------- --race
@pytest.fixture(scope="module")
def race_study(tmp_path_factory):
    """3 complete trials (no pruning, no kept trial models), 2 epochs each."""
    from tests.helpers import make_spec

    root = tmp_path_factory.mktemp("race")
    results = root / "results"
    invoke("run", make_spec(root, "race", 3, pruner={"type": "none"}, keep=0), "--results", results,
           "--device", "cpu")
    return {"results": results, "folder": results / "race", "study": journal_study(results, "race")}


def _race_best(race_study, *args, code: int = 0):
    return invoke("best", "--results", race_study["results"], "--device", "cpu", "--wandb", "disabled", *args,
                  code=code)


def test_best_race_reports_p_best_and_retrains_the_best_mean(race_study):
    import statistics

    done = _race_best(race_study, "--race", 2, "--epochs", 1, "--json")
    m = json.loads(done.stdout)
    race = m["race"]
    top = sorted(race_study["study"].get_trials(states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number))
    assert sorted(e["trial"] for e in race) == sorted(t.number for t in top[:2])
    assert [e["seeds"] for e in race] == [3, 3] and all(len(e["values"]) == 3 for e in race)
    assert all((e["from_sweep"], e["reused"], e["trained_now"]) == (1, 0, 2) for e in race)
    for e in race:  # the sweep's own seed first (seed values are kept to 6 decimals)
        assert e["values"][0] == pytest.approx(race_study["study"].trials[e["trial"]].value, abs=1e-6)
    assert sum(e["p_best"] for e in race) == pytest.approx(1.0, abs=1e-9)
    best = max(race, key=lambda e: (statistics.fmean(e["values"]), -race.index(e)))
    assert m["winner"]["number"] == race[0]["trial"] == best["trial"]  # the retrain trained the best mean
    assert json.loads((race_study["folder"] / "final" / "metrics.json").read_text())["race"] == race
    folder = race_study["folder"] / "race"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        f"t{e['trial']}-s{s}" for e in race for s in e["seed_numbers"][1:])
    assert "race: trial" in done.stderr  # one line per race epoch

    before = snapshot(folder)
    again = _race_best(race_study, "--race", 2, "--no-retrain", "--json")
    reused = json.loads(again.stdout)["race"]
    assert [(e["trial"], e["values"]) for e in reused] == [(e["trial"], e["values"]) for e in race]
    assert all((e["reused"], e["trained_now"]) == (2, 0) for e in reused) and "race: trial" not in again.stderr
    shown = _race_best(race_study, "--race", 2, "--no-retrain").stdout
    assert snapshot(folder) == before  # nothing trained, nothing rewritten
    assert "won the race" in shown and "p(best)" in shown and "0 trained now" in shown


def test_race_k_above_the_complete_trials_races_them_all_with_a_note(race_study):
    out = json.loads(_race_best(race_study, "--race", 5, "--race-seeds", 2, "--no-retrain", "--json").stdout)
    assert len(out["race"]) == 3 and all(e["seeds"] == 2 for e in out["race"])
    assert "racing all 3" in out["race_notes"][0] and out["winner"]["number"] == out["race"][0]["trial"]


def test_best_ensemble_pools_the_race_models(race_study):
    race = json.loads(_race_best(race_study, "--race", 2, "--no-retrain", "--json").stdout)["race"]
    info = json.loads(invoke("best", "--results", race_study["results"], "--device", "cpu", "--ensemble", 3,
                             "--json").stdout)
    labels = {f"t{e['trial']}-s{s}" for e in race for s in e["seed_numbers"][1:]}
    assert labels <= set(info["candidates"])  # the study keeps no trial model: the rest are retrained ones
    assert all(m["source"] == "race" for m in info["members"] if m["trial"] in labels)


@pytest.mark.parametrize("flags,words", [
    (("--race", 1), ("--race 1", "nothing to race")),
    (("--race", 2, "--ensemble", 2), ("--race", "--ensemble")),
    (("--race-seeds", 2), ("--race-seeds 2", "--race K")),
    (("--race", 2, "--race-seeds", 1), ("--race-seeds 1", "at least 2")),
    (("--race", 2, "--data", "synthetic"), ("--race", "drop --data")),
])
def test_bad_race_flags_are_refused_before_anything_is_written(race_study, flags, words):
    before = snapshot(race_study["folder"])
    refused("best", "--results", race_study["results"], "--device", "cpu", *flags, words=words)
    assert snapshot(race_study["folder"]) == before
