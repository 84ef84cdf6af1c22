"""report.html (results/html.py) of a study without `best`: pruned and failed trials shown, the final model's
figures skipped with a reason."""

from __future__ import annotations

import numpy as np
import optuna
from PIL import Image

from fer_sweep.results import html as htmlreport
from fer_sweep.sweep.spec import parse_spec
from tests.helpers import FINISHED_STUDY_SPEC


def test_report_of_a_study_without_best_shows_pruned_and_failed_trials(tmp_path):
    spec = parse_spec(FINISHED_STUDY_SPEC, "small.yaml")
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


def test_a_skipped_figure_reads_as_one_sentence_and_the_ranking_is_explained(tmp_path):
    """Before: "Parameter importances (fANOVA over complete trials).: needs ..." (a stray full stop), and a complete
    trial at 15.67% ranked above a pruned one at 92.00% with no word why."""
    spec = parse_spec(FINISHED_STUDY_SPEC, "small.yaml")
    st = optuna.create_study(direction="maximize")
    lr = {"lr": optuna.distributions.FloatDistribution(0.001, 0.01, log=True)}
    for i, (state, curve) in enumerate([("COMPLETE", {1: 0.1, 2: 0.1567}), ("COMPLETE", {1: 0.2, 2: 0.3}),
                                        ("PRUNED", {1: 0.92})]):
        st.add_trial(optuna.trial.create_trial(
            params={"lr": 0.001 * (i + 1)}, distributions=lr, intermediate_values=curve,
            state=optuna.trial.TrialState[state], value=max(curve.values()) if state == "COMPLETE" else None,
            user_attrs={"outcome": state.lower(), "best_val_acc": max(curve.values()), "epochs": len(curve)}))
    done = htmlreport.build_report(spec, st, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "importances" in done["skipped"] and ".: " not in page
    assert "Parameter importances (fANOVA over complete trials): needs at least 4 complete trials" in page
    assert page.index("15.67%") < page.index("92.00%")
    assert ('<p class="note" id="ranking">complete trials rank first, by val acc: `best` picks the winner from them; '
            "pruned trials follow, by the best val acc they reached in the fewer epochs before they were pruned</p>"
            in page)
