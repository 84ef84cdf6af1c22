"""benchmarks/bench_search.py run as a program (tests never import benchmarks) on small synthetic learning-curve
tables written here: with no noise and a budget covering the table every strategy but the plateau stop finds the
best config and the epoch accounting is exact; with noise, a config of one seed and a diverged run, the table's
true qualities, the races and the baseline that spends the race's epochs on the winner are checked against the
table itself, and the section goes to the test's own Markdown file."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import ROOT
from tests.support.slow_checkpoints import checkpoint_events, slow_checkpoints_env

BENCH = ROOT / "benchmarks" / "bench_search.py"
REPORT = ROOT / "benchmarks" / "RESULTS.md"
STRATEGIES = ("random", "median", "hyperband", "asha3", "asha4", "tpe", "repeats2", "repeats3", "race3",
              "winner_more_seeds", "asha4+race3", "plateau5", "plateau10", "plateau15", "asha4+plateau15")
PRUNED = ("median", "hyperband", "asha3", "asha4")
EPOCHS = 6


def write_table(path, n_configs: int, seeds: int, noise: float, seed: int = 0, *, epochs: int = EPOCHS,
                with_spec: bool = True) -> list:
    """A gzip JSON table of configs drawn from sweeps/residual.yaml's space. Config i's clean curve rises to its
    level (0.40 to 0.62, shuffled) at the last epoch, the same shape for all; each run adds a per-run offset and
    per-epoch noise of sd `noise`. Returns the configs (as written)."""
    rng = np.random.default_rng(seed)
    spec = yaml.safe_load((ROOT / "sweeps" / "residual.yaml").read_text())
    spec["train"]["epochs"] = epochs
    space = spec["space"]
    levels = rng.permutation(np.linspace(0.40, 0.62, n_configs))
    shape = 1 - 0.4 * (1 - np.arange(1, epochs + 1) / epochs) ** 2
    configs = []
    for level in levels:
        params = {name: (space[name]["choices"][rng.integers(len(space[name]["choices"]))] if "choices" in space[name]
                         else float(rng.uniform(space[name]["low"], space[name]["high"]))) for name in space}
        curves = [level * shape + rng.normal(0, noise) + rng.normal(0, noise / 2, epochs) for _ in range(seeds)]
        runs = [{"seed": s, "val_acc": acc.tolist(), "val_loss": [1.0] * epochs, "seconds": [1.0] * epochs}
                for s, acc in enumerate(curves)]
        configs.append({"params": params, "runs": runs})
    meta = {"data": "synthetic-test", "slice": "none", "machine": "test box", "precision": "fp32", "date": "2026-12-03"}
    if with_spec:
        meta["spec"] = spec
    with gzip.open(path, "wt") as f:
        json.dump({"meta": meta, "configs": configs}, f)
    return configs


def bench(*args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCH), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def run_value(run: dict) -> float:
    """A run's value as the table defines it: its best epoch, a missing or NaN epoch counting as 0.25."""
    acc = [0.25 if v is None or v != v else v for v in run["val_acc"]]
    return max(acc + [0.25] * (EPOCHS - len(acc)))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """No noise: 12 configs x 3 identical seeds; budgets 12 (the whole table) and 5."""
    root = tmp_path_factory.mktemp("bench-search-clean")
    write_table(root / "table.json.gz", 12, 3, noise=0.0)
    done = bench("--table", root / "table.json.gz", "--replays", 5, "--budgets", "12,5", "--no-write",
                 "--json", root / "picks.json")
    return {"stdout": done.stdout, "json": json.loads((root / "picks.json").read_text())}


def test_without_noise_a_search_of_the_whole_table_finds_the_best(clean):
    out, got = clean["stdout"], clean["json"]
    best = int(np.argmax(got["table"]["q"]))
    assert "warning: budget 12 >= the table's 12 configs" in out and "budget 5 >=" not in out
    assert "12 configs x 3 seeds x 6 epochs" in out and "the table spec's space" in out
    for name in STRATEGIES:
        assert f"| {name} |" in out
        if "plateau" not in name:  # the plateau rule may stop before the best is met
            assert [p["chosen"] for p in got["budgets"]["12"][name]] == [best] * 5, name
    assert "| random | 72 ± 0 | 100% | 62.00 ± 0.00 | 0.00 ± 0.00 | 100% [" in out  # regret 0, P(top 3) 100%


def test_epochs_are_counted_as_the_strategies_train(clean):
    for budget in ("12", "5"):
        picks = clean["json"]["budgets"][budget]
        spent = {name: np.array([p["epochs"] for p in picks[name]]) for name in STRATEGIES}
        random = spent["random"]
        assert (random == int(budget) * EPOCHS).all()
        assert (spent["repeats2"] == 2 * random).all() and (spent["repeats3"] == 3 * random).all()
        assert (spent["race3"] == random + 3 * 2 * EPOCHS).all()  # 3 configs, 2 more seeds each
        assert (spent["winner_more_seeds"] == spent["race3"]).all()
        assert (spent["tpe"] == random).all() and all((spent[f"plateau{n}"] <= random).all() for n in (5, 10, 15))
        for name in PRUNED:  # at budget 5 the median pruner is still in its 5 start-up trials: it prunes none
            assert (spent[name] <= random).all(), name
            assert spent[name].mean() < random.mean() or (name, budget) == ("median", "5"), name
        boards = [p["detail"]["race"] for p in picks["asha4+race3"]]  # complete trials, then pruned ones: <= 3
        extra = np.array([sum(3 if b["pruned"] else 2 for b in board) * EPOCHS for board in boards])
        assert (spent["asha4+race3"] == spent["asha4"] + extra).all()
        assert all(len(board) == 3 or not board for board in boards)  # a budget of 5 or 12 leaves 3 to race
        assert any(b["pruned"] for board in boards for b in board)  # asha4 completes fewer than 3 of them
        evaluated = {n: np.array([p["detail"]["evaluated"] for p in picks[f"plateau{n}"]]) for n in (5, 10, 15)}
        for n in (5, 10, 15):  # `patience` trials without a better one are needed to stop, after the first
            assert (evaluated[n] >= min(int(budget), n + 1)).all(), n
        assert (evaluated[5] <= evaluated[10]).all() and (evaluated[10] <= evaluated[15]).all()
        assert (spent["asha4+plateau15"] <= spent["asha4"]).all()
    assert "(vs asha4) |" in clean["stdout"]  # a race after asha4 is weighed against asha4, not random search


def test_tpe_meets_the_configs_of_random_search_until_its_startup_trials_are_done(clean):
    """Optuna's TPE samples its first 10 trials at random: a budget of 5 must see random search's configs, not the
    configs nearest to random points (which favours configs far from the others)."""
    picks = clean["json"]["budgets"]["5"]
    assert [p["chosen"] for p in picks["tpe"]] == [p["chosen"] for p in picks["random"]]
    assert all(p["detail"]["guided"] == 0 for p in picks["tpe"])
    assert all(p["detail"]["guided"] == 2 for p in clean["json"]["budgets"]["12"]["tpe"])  # trials 11 and 12


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """Noise, one config recorded with a single seed, one diverged run (a NaN epoch, then none), no spec in meta."""
    root = tmp_path_factory.mktemp("bench-search-noisy")
    path = root / "table.json.gz"
    configs = write_table(path, 12, 3, noise=0.02, seed=1, with_spec=False)
    configs[0]["runs"] = configs[0]["runs"][:1]
    configs[1]["runs"][2]["val_acc"] = configs[1]["runs"][2]["val_acc"][:3] + [None]
    with gzip.open(path, "rt") as f:
        raw = json.load(f)
    raw["configs"] = configs
    with gzip.open(path, "wt") as f:
        json.dump(raw, f)
    md = root / "RESULTS.md"
    before = REPORT.read_bytes() if REPORT.exists() else None
    done = bench("--table", path, "--replays", 5, "--budgets", 8, "--results-md", md, "--json", root / "picks.json")
    return {"configs": configs, "stdout": done.stdout, "json": json.loads((root / "picks.json").read_text()),
            "md": md.read_text(), "before": before}


def test_the_true_qualities_are_the_mean_best_epoch_over_all_seeds(noisy):
    want = [np.mean([run_value(r) for r in c["runs"]]) for c in noisy["configs"]]
    assert noisy["json"]["table"]["q"] == pytest.approx(want)
    assert "11 configs x 3 seeds + 1 config x 1 seed x 6 epochs (1 diverged run)" in noisy["stdout"]
    assert "a space made from the table's params" in noisy["stdout"]


def test_a_race_is_won_by_the_best_mean_of_its_seeds(noisy):
    values = [[run_value(r) for r in c["runs"]] for c in noisy["configs"]]
    picks = noisy["json"]["budgets"]["8"]
    for name in ("race3", "asha4+race3"):
        for pick in picks[name]:
            board = pick["detail"]["race"]
            assert len({b["config"] for b in board}) == len(board) <= 3 and (len(board) == 3 or name != "race3")
            for b in board:
                runs = b["runs"]
                assert len(set(runs)) == len(runs) == min(3, len(values[b["config"]]))  # distinct seeds
                assert b["mean"] == pytest.approx(np.mean([values[b["config"]][r] for r in runs]))
            assert pick["chosen"] == max(board, key=lambda b: b["mean"])["config"]


def test_more_seeds_of_the_winner_change_no_pick(noisy):
    picks = noisy["json"]["budgets"]["8"]
    assert [p["chosen"] for p in picks["winner_more_seeds"]] == [p["chosen"] for p in picks["random"]]
    assert [p["epochs"] for p in picks["winner_more_seeds"]] == [p["epochs"] for p in picks["race3"]]
    for name in PRUNED:
        assert all(p["epochs"] <= r["epochs"] for p, r in zip(picks[name], picks["random"]))


def test_the_regret_against_random_is_the_mean_paired_difference(noisy):
    q, best = np.array(noisy["json"]["table"]["q"]), max(noisy["json"]["table"]["q"])
    picks = noisy["json"]["budgets"]["8"]
    random = 100 * (best - q[[p["chosen"] for p in picks["random"]]])
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in noisy["md"].splitlines()
            if line.startswith("| ") and not line.startswith("| strategy")}
    assert rows["random"][6] == "—"
    for name in ("asha4", "race3", "plateau5"):
        mean = np.mean(100 * (best - q[[p["chosen"] for p in picks[name]]]) - random)
        assert rows[name][6].startswith(f"{mean:+.2f} ["), (name, rows[name][6])


def test_a_pick_is_also_judged_on_the_seeds_its_choice_did_not_look_at(tmp_path):
    """With 5 seeds per config, the last column is the chosen config's mean over the seeds after those the strategy
    chose it by: 4 of them for a one-seed search, 2 after a race to 3 seeds or repeats 3."""
    configs = write_table(tmp_path / "table.json.gz", 8, 5, noise=0.02, seed=2)
    bench("--table", tmp_path / "table.json.gz", "--replays", 4, "--budgets", 6, "--no-write",
          "--json", tmp_path / "picks.json")
    picks = json.loads((tmp_path / "picks.json").read_text())["budgets"]["6"]
    values = [np.array([run_value(r) for r in c["runs"]]) for c in configs]

    def means_of(c: int, k: int) -> list[float]:  # every possible mean of k of config c's seeds
        return [float(np.mean(values[c][list(runs)])) for runs in combinations(range(5), k)]

    for name, left in (("random", 4), ("asha4", 4), ("tpe", 4), ("winner_more_seeds", 4), ("repeats2", 3),
                       ("repeats3", 2)):
        for p in picks[name]:
            assert min(abs(p["unseen"] - m) for m in means_of(p["chosen"], left)) < 1e-12, name
    for name in ("race3", "asha4+race3"):
        for p in picks[name]:
            raced = next(b["runs"] for b in p["detail"]["race"] if b["config"] == p["chosen"])
            rest = [r for r in range(5) if r not in raced]
            assert p["unseen"] == pytest.approx(np.mean(values[p["chosen"]][rest]))


def test_without_more_seeds_than_looked_at_there_is_nothing_unseen(noisy):
    picks = noisy["json"]["budgets"]["8"]
    assert all(p["unseen"] is None for p in picks["repeats3"] + picks["race3"])  # 3 seeds, all looked at
    assert all(p["unseen"] is not None for p in picks["random"] if p["chosen"] != 0)  # config 0: one seed only
    assert "| repeats3 |" in noisy["md"] and noisy["md"].count(" | — |\n") >= 2


def test_the_section_goes_to_the_given_file_only(noisy):
    md = noisy["md"]
    assert md.count("## Search strategies on the FER learning-curve table\n") == 1
    assert "data synthetic-test" in md and "recorded on test box, precision fp32, 2026-12-03" in md
    assert all(f"| {name} |" in md for name in STRATEGIES) and "Replayed on " in md
    assert (REPORT.read_bytes() if REPORT.exists() else None) == noisy["before"]


def test_a_table_recorded_by_the_real_sweep_is_what_the_replay_reads(tmp_path):
    """benchmarks/record_curves.py on a tiny synthetic spec (2 configurations x 2 seeds x 2 epochs through the real
    `fer-sweep run` with `repeats`, then the real `best --race 2 --race-seeds 3` for a third seed of each), then the
    replay on its table: the layout the issue names, every run complete, and a rerun (the sweep and the race are
    finished) trains nothing and writes the same table."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "study": "tiny", "data": "synthetic", "seed": 0, "splits": {"synthetic_n": 300},
        "model": {"arch": "cnn", "fc_units": 8}, "train": {"batch_size": 32},
        "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]}, "lr": {"choices": [0.001, 0.01]}}}))
    out, results = tmp_path / "curves.json.gz", tmp_path / "results"
    record = [sys.executable, str(ROOT / "benchmarks" / "record_curves.py"), "--data", "synthetic", "--slice", "0",
              "--spec", str(spec), "--configs", "2", "--seeds", "2", "--epochs", "2", "--results", str(results),
              "--out", str(out), "--device", "cpu", "--race-top", "2", "--race-seeds", "3"]
    # A SIGTERM to the script reaches its run: stopped half-way through the first checkpoint, it exports what is
    # complete (nothing yet) and leaves no run behind; the same command then resumes and finishes.
    log = tmp_path / "checkpoints.jsonl"
    first = subprocess.Popen(record, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, **slow_checkpoints_env(log, delay_s=3.0)})
    deadline = time.time() + 120
    while not any(e["event"] == "half" for e in checkpoint_events(log)):
        assert first.poll() is None and time.time() < deadline, "the run never wrote a checkpoint"
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    said = first.communicate(timeout=120)[0]
    assert first.returncode == 143, said  # (the shell's code for SIGTERM, as the run's)
    assert json.loads(gzip.decompress(out.read_bytes()))["configs"] == [] and "0 of 2 configurations" in said
    assert not [p for p in Path("/proc").glob("[0-9]*") if str(results) in _cmdline(p)], "a run outlived the script"
    done = subprocess.run(record, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    table = json.loads(gzip.decompress(out.read_bytes()))
    assert {"data", "slice", "machine", "precision", "date", "spec"} <= set(table["meta"])
    assert table["meta"]["spec"]["repeats"] == 2 and table["meta"]["spec"]["pruner"] == {"type": "none"}
    assert len(table["configs"]) == 2
    for c in table["configs"]:
        assert isinstance(c["params"]["conv"], list)  # as the spec writes it, not Optuna's JSON string
        assert [r["seed"] for r in c["runs"]] == [0, 1, 2]  # the sweep's 2, the race's third
        assert all(len(r["val_acc"]) == len(r["val_loss"]) == len(r["seconds"]) == 2 for r in c["runs"])
        assert all(isinstance(v, float) for r in c["runs"] for v in r["val_acc"] + r["seconds"])
    assert "--race 2 --race-seeds 3 --no-retrain" in done.stdout
    again = subprocess.run(record, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0  # the same seconds: nothing trained again
    assert json.loads(gzip.decompress(out.read_bytes()))["configs"] == table["configs"]
    replay = bench("--table", out, "--replays", "3", "--budgets", "2", "--no-write")
    assert "random" in replay.stdout and "race3" in replay.stdout


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # the process ended while we looked
        return ""


def test_a_recording_whose_folder_is_gone_goes_on_from_its_table(tmp_path):
    """The results folder of a recording lost (another machine): the same command with more --configs imports the
    table's configurations (not trained again: their curves stay as they were), records the configurations the
    sweep draws next, and the race runs on both; a table of other epochs is refused with one line, exit 2."""
    from fer_sweep.sweep.space import sample_configs
    from fer_sweep.sweep.spec import parse_spec

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "study": "tiny", "data": "synthetic", "seed": 0, "splits": {"synthetic_n": 300},
        "model": {"arch": "cnn", "fc_units": 8}, "train": {"batch_size": 32},
        "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]}, "lr": {"choices": [0.001, 0.01, 0.1]}}}))
    out, results = tmp_path / "curves.json.gz", tmp_path / "results"

    def record(configs: int, *more: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "record_curves.py"), "--data", "synthetic",
                               "--slice", "0", "--spec", str(spec), "--configs", str(configs), "--seeds", "2",
                               "--epochs", "2", "--results", str(results), "--out", str(out), "--device", "cpu", *more],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)

    first = record(2)
    assert first.returncode == 0, first.stdout + first.stderr
    before = json.loads(gzip.decompress(out.read_bytes()))
    shutil.rmtree(results)
    went_on = record(4, "--race-top", "2", "--race-seeds", "3")
    assert went_on.returncode == 0, went_on.stdout + went_on.stderr
    assert "going on from its 2 configurations" in went_on.stdout
    after = json.loads(gzip.decompress(out.read_bytes()))
    assert len(after["configs"]) == 4
    drawn = sample_configs(parse_spec({**after["meta"]["spec"], "trials": 4}, "spec", check_data=False), 4)
    assert [c["params"] for c in after["configs"]] == [
        {k: json.loads(v) if isinstance(v, str) and v.startswith("[") else v for k, v in p.items()} for p in drawn]
    for old, new in zip(before["configs"], after["configs"]):  # the same seconds: imported, not trained again
        assert new["runs"][:2] == old["runs"] and new["recorded"]["date"] == before["meta"]["date"]
    raced = sorted(after["configs"], key=lambda c: -sum(max(r["val_acc"]) for r in c["runs"][:2]))[:2]
    assert all([r["seed"] for r in c["runs"]] == [0, 1, 2] for c in raced)  # the race's third seed, imported or not
    shutil.rmtree(results)
    other = record(4, "--epochs", "3")
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and "epochs" in other.stderr, other.stderr
    assert json.loads(gzip.decompress(out.read_bytes())) == after and not (results / "fer-curves").exists()


def test_a_real_race_beside_the_table_finds_its_configurations_there(tmp_path):
    """benchmarks/race_real.py on a tiny table: the sweep as its spec ships it (one seed, its pruner), the real `best
    --race 2 --race-seeds 3`, each raced configuration found in the table with its rank, and the sweep's seed-0 curve
    beside the table's seed 0 (the same data, splits, seed and precision)."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "study": "tiny", "data": "synthetic", "seed": 0, "trials": 3, "splits": {"synthetic_n": 300},
        "pruner": {"type": "none"},  # (all three complete: a race needs two; the shipped spec's ASHA leaves many)
        "model": {"arch": "cnn", "fc_units": 8}, "train": {"batch_size": 32, "epochs": 2, "patience": 5},
        "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]}, "lr": {"choices": [0.001, 0.01, 0.1]}}}))
    out = tmp_path / "curves.json.gz"
    recorded = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "record_curves.py"), "--data", "synthetic",
                               "--slice", "0", "--spec", str(spec), "--configs", "3", "--seeds", "2", "--epochs", "2",
                               "--results", str(tmp_path / "curves"), "--out", str(out), "--device", "cpu"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    raced = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "race_real.py"), "--data", "synthetic",
                            "--spec", str(spec), "--table", str(out), "--race", "2", "--race-seeds", "3",
                            "--results", str(tmp_path / "race"), "--device", "cpu", "--no-write"],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert raced.returncode == 0, raced.stdout + raced.stderr
    rows = [line for line in raced.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and all(" of 3 |" in row and "(2 seeds)" in row for row in rows), raced.stdout
    assert "The race's winner (trial " in raced.stdout and "is the table's" in raced.stdout
    # seed 0 trained alone (the sweep) and in step with seed 1 (the table's `repeats: 2`): the same curve, exactly
    assert all("2 epochs, largest gap 0.00 pts" in row for row in rows), rows
