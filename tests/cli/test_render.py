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
