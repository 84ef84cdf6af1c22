"""What the terminal shows (cli/render.py): leaderboards that fit 80 columns and never cut a value."""

from __future__ import annotations

import pytest

from fer_sweep.cli import render as report
from fer_sweep.results.formats import param_label, pct
from fer_sweep.sweep import summary
from tests.helpers import ROOT, fake_study, render_text


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("spec_name", ["cnn", "vgg"])
def test_leaderboard_fits_the_terminal_without_cutting_numbers(spec_name, width):
    spec, study = fake_study(ROOT / "sweeps" / f"{spec_name}.yaml", 12)
    st = summary.status(study, spec.trials, 15)
    text = render_text(report.status_view(st), width)
    table = render_text(report.leaderboard(st["leaderboard"], "top trials"), width)
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
        table = render_text(report.leaderboard(rows, "top trials"), width)
        assert "…" not in table and max(len(line) for line in table.splitlines()) <= width
        assert all(v in table for v in values), width


@pytest.mark.parametrize("results,storage,wandb,next_flags,sync_flags", [
    ("results", None, "offline", "--study cnn", "--study cnn"),  # the defaults are not repeated
    ("/scratch/r", None, "offline", "--study cnn --results /scratch/r", "--study cnn --results /scratch/r"),
    ("results", "postgresql://u:secret@db/x", "disabled", "--study cnn --storage URL", None),
])
def test_the_end_of_a_sweep_names_only_flags_that_are_not_defaults(results, storage, wandb, next_flags, sync_flags):
    """Before: `next: fer-sweep best --study cnn --results results` (a default repeated) and, offline, `upload them
    with `wandb sync results/cnn/wandb/offline-run-*``; now `fer-sweep sync`, this CLI's own command."""
    from pathlib import Path

    from fer_sweep.sweep.launch import LaunchPlan

    spec, study = fake_study(ROOT / "sweeps" / "cnn.yaml", 6)
    plan = LaunchPlan(spec, Path(results), storage_url=storage, wandb_mode=wandb)
    text = "\n".join(render_text(line, 200) for line in report.sweep_end(summary.status(study, 6, 15), plan, None))
    assert f"next: fer-sweep best {next_flags}\n" in text
    assert "secret" not in text and "wandb sync" not in text
    if sync_flags:
        assert f"wandb runs are offline: upload them with `fer-sweep sync {sync_flags}`" in text
    else:
        assert "fer-sweep sync" not in text


def _rows(*trials: tuple[str, float]) -> list[dict]:
    return [{"number": i, "state": state, "val_acc": acc, "epochs": 6 if state == "complete" else 1, "seconds": 60.0,
             "params.lr": 0.001} for i, (state, acc) in enumerate(trials)]


def test_a_pruned_trial_above_a_complete_ones_accuracy_is_explained_under_the_leaderboard():
    """Before: a complete trial at 15.67% above a pruned one at 92.00%, with no word why."""
    note = ("complete trials rank first, by val acc: `best` picks the winner from them; pruned trials follow, by the "
            "best val acc they reached in the fewer epochs before they were pruned")
    shown = render_text(report.leaderboard(_rows(("complete", 0.1567), ("pruned", 0.92)), "top trials"), 200)
    assert shown.index("15.67%") < shown.index("92.00%") and shown.rstrip().endswith(note)
    for rows in (_rows(("complete", 0.5), ("pruned", 0.3)), _rows(("complete", 0.5)), _rows(("pruned", 0.9))):
        assert "rank first" not in render_text(report.leaderboard(rows, "top trials"), 200)  # nothing looks odd
    assert summary.ranking_note(_rows(("complete", 0.1567), ("pruned", 0.92))) == note
    narrow = render_text(report.leaderboard(_rows(("complete", 0.1567), ("pruned", 0.92)), "top trials"), 60)
    assert note in narrow and "…" not in narrow  # one line the terminal wraps (soft wrap, as every CLI line), uncut


def _study_of(values, pruned=0, seeds_std=None):
    """An in-memory study: a complete trial per value (with `seeds` 3 and that `val_acc_std` when given) and
    `pruned` pruned trials with one epoch each."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(0.001, 0.1)}
    attrs = {} if seeds_std is None else {"seeds": 3, "val_acc_std": seeds_std}
    for i, v in enumerate(values):
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.001 + i / 1000}, distributions=dist, value=v,
                                                  user_attrs=attrs, intermediate_values={1: v}))
    for i in range(pruned):
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.05 + i / 1000}, distributions=dist, value=0.3,
                                                  state=TrialState.PRUNED, intermediate_values={1: 0.3}))
    return study


def _hint(*args, **kwargs):
    return report.race_hint(summary.close_call(_study_of(*args, **kwargs).get_trials()))


def test_status_suggests_a_race_only_when_the_top_trials_are_within_a_seeds_noise():
    close = summary.close_call(_study_of([0.60, 0.655, 0.50, 0.652, 0.648]).get_trials())
    assert close["top"] == [1, 3, 4] and close["spread"] == pytest.approx(0.007) and not close["measured"]
    hint = report.race_hint(close)
    assert "top 3 complete trials are within 0.70 points" in hint and "1.00 points, typical of FER2013" in hint
    assert "`fer-sweep best --race 3`" in hint
    assert _hint([0.60, 0.655, 0.63]) is None  # 2.5 points apart: more than a seed's noise
    measured = _hint([0.60, 0.62], seeds_std=0.06)  # 3 seeds each, sd 6 points: 3.46 for a mean of 3
    assert "`fer-sweep best --race 2 --race-seeds 6` picks among them by a mean of 6 seeds" in measured
    assert "under a mean of 3 seeds' seed-to-seed sd (3.46 points, this study's seeds)" in measured
    assert _hint([0.60, 0.62], seeds_std=0.03) is None  # 2 points apart, a mean of 3 seeds' sd 1.73
    assert summary.close_call(_study_of([], pruned=2).get_trials()) is None and report.race_hint(None) is None
    asha = _hint([0.6], pruned=2)  # ASHA left one complete trial
    assert "1 complete trial, 2 pruned ones with epochs" in asha and "fills a race" in asha
    assert _hint([0.6]) is None  # nothing to race beside it
    text = render_text(report.status_view(summary.status(_study_of([0.648, 0.655, 0.652]), 3, 5)), 200)
    assert "`fer-sweep best --race 3` picks among them" in text
