"""The start-of-run forecast (sweep/estimate.py): a few timed steps of the cheapest and dearest configurations,
every configuration costed between them, the sweep's likely and worst-case time; `run` says it and warns when
--timeout ends before one trial."""

from __future__ import annotations

from fer_sweep.learn.device import DeviceSplit, to_device
from fer_sweep.sweep.estimate import estimate
from fer_sweep.sweep.space import sample_configs
from fer_sweep.sweep.spec import load_spec
from fer_sweep.sweep.trial import load_data
from tests.helpers import invoke, make_spec


def test_the_forecast_spans_the_space_and_the_pruner_shortens_the_likely_time(tmp_path):
    spec = load_spec(make_spec(tmp_path, "est", 6, pruner={"type": "asha", "min_epochs": 1, "reduction_factor": 3},
                               train={"epochs": 9, "patience": 0, "batch_size": 32}))
    splits = load_data(spec)
    train = to_device(splits.train.x, splits.train.y, "cpu")
    val = to_device(splits.val.x, splits.val.y, "cpu")
    e = estimate(spec, train, val, sample_configs(spec, 6))
    assert e is not None and e["trials_left"] == 6 and e["steps"] >= 1
    assert 0 < e["s_per_epoch_min"] <= e["s_per_epoch"] <= e["s_per_epoch_max"]
    assert abs(e["trial_s"] - 9 * e["s_per_epoch"]) < 0.1
    assert 6 * 9 * e["s_per_epoch_min"] - 0.1 <= e["worst_s"] <= 6 * 9 * e["s_per_epoch_max"] + 0.1
    assert e["likely_s"] < e["worst_s"] / 2  # asha: most trials stop at an early rung
    assert estimate(spec, train, val, []) is None  # nothing left to forecast
    halved = estimate(spec, train, val, sample_configs(spec, 6), devices=2)
    assert halved is not None and halved["devices"] == 2
    # validation is timed, not assumed: 50x the validation faces (~8x an epoch's work at a validation face costing half
    # a training one) must make an epoch dearer by far more than timing noise
    many = DeviceSplit(val.x.repeat(50, 1, 1), val.y.repeat(50))
    dearer = estimate(spec, train, many, sample_configs(spec, 6))
    assert dearer is not None and dearer["s_per_epoch_min"] > 2 * e["s_per_epoch_min"], (dearer, e, len(train))


def test_run_forecasts_its_time_and_warns_when_the_timeout_is_shorter_than_a_trial(tmp_path):
    spec = make_spec(tmp_path, "long", 3, train={"epochs": 5000, "patience": 0, "batch_size": 32})  # minutes a trial
    ran = invoke("run", spec, "--results", tmp_path / "r", "--device", "cpu", "--timeout", "3s")
    said = " ".join(ran.stderr.split())
    assert "s/epoch here" in said and "timed in 4 training steps: the 3 trials left ~" in said, ran.stderr
    assert "warning: --timeout leaves" in said and "less than one trial here" in said, ran.stderr
    enough = invoke("run", make_spec(tmp_path, "short", 1), "--results", tmp_path / "r", "--device", "cpu",
                    "--timeout", "1h")
    assert "s/epoch here" in enough.stderr and "--timeout leaves" not in enough.stderr


def test_the_forecast_costs_the_tickets_left_not_the_search_s_first_draws(tmp_path):
    """A resumed (or warm-started) study has other configurations left than the seeded search's first ones: run
    costs the waiting tickets' configurations, in the order workers take them."""
    from fer_sweep.sweep.study import prepare_study, tickets_left

    spec = load_spec(make_spec(tmp_path, "left", 6, train={"epochs": 2, "batch_size": 32}))
    study = prepare_study(spec, tmp_path / "r", None)
    drawn = sample_configs(spec, 6)
    assert tickets_left(study, spec) == list(enumerate(drawn))
    study.ask()  # ticket 0 taken
    assert tickets_left(study, spec) == list(enumerate(drawn))[1:]
    tpe = load_spec(make_spec(tmp_path, "tpe", 3, sampler="tpe"))  # TPE draws as it goes: costed on the seeded draws
    assert tickets_left(prepare_study(tpe, tmp_path / "r", None), tpe) == [(None, p) for p in sample_configs(tpe, 3)]
    splits = load_data(spec)
    train = to_device(splits.train.x, splits.train.y, "cpu")
    val = to_device(splits.val.x, splits.val.y, "cpu")
    e = estimate(spec, train, val, [p for _, p in tickets_left(study, spec)], steps=1)
    assert e is not None and e["trials_left"] == 5 and len(e["costs"]) == 5 and min(e["costs"]) > 0
