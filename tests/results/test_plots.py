"""Report figures (results/plots.py): legends that cover nothing and show what is drawn."""

from __future__ import annotations

import pytest

from fer_sweep.config import EMOTIONS
from fer_sweep.results import plots


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
    monkeypatch.setattr(plots.pyplot(), "close", lambda fig: None)
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
