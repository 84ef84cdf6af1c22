"""Parameter importances (sweep/importances.py): they say how many trials they rest on, in `status`, its JSON and
the report."""

from __future__ import annotations

import json

from fer_sweep.cli import render as report
from fer_sweep.results import html as htmlreport
from fer_sweep.sweep import importances, summary
from tests.helpers import ROOT, fake_study, render_text


def test_importances_say_how_many_trials_they_rest_on(tmp_path):
    spec, study = fake_study(ROOT / "sweeps" / "cnn.yaml", 8)  # 6 complete: fANOVA runs, far from reliable
    st = summary.status(study, spec.trials, 15)
    assert st["importances"] and st["importance_basis"] == {"complete_trials": 6, "reliable_from": 20,
                                                            "reliable": False}
    json.dumps(st, default=str)  # what `status --json` prints
    text = render_text(report.status_view(st), 80)
    assert "fANOVA over 6 complete trials" in text and "unreliable" in text
    done = htmlreport.build_report(spec, study, tmp_path, load_data=_synthetic)
    page = (tmp_path / "report.html").read_text()
    assert 'class="note" id="importance-basis"' in page and "rest on 6 complete trials" in page
    assert done["importance_basis"]["reliable"] is False

    spec, study = fake_study(ROOT / "sweeps" / "cnn.yaml", 24, pruned_every=100)  # 24 complete >= 20 (6 params)
    assert importances.importance_basis(study) == {"complete_trials": 24, "reliable_from": 20, "reliable": True}
    st = summary.status(study, spec.trials, 15)
    assert st["importance_basis"] == {"complete_trials": 24, "reliable_from": 20, "reliable": True}
    assert "unreliable" not in render_text(report.status_view(st), 120)
    assert importances.importance_trials_needed(16) == 32  # vgg.yaml's 16 searched parameters need more


def _synthetic(spec):
    from fer_sweep.data.splits import load_splits

    return load_splits("synthetic", synthetic_n=140)
