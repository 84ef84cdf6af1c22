"""The ETA (sweep/eta.py, policies.epochs_ahead) and how `run` and `status` show it (cli/render.py): epochs still
possible under the pruner's rungs x measured seconds per epoch, per worker."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from fer_sweep.cli import render
from fer_sweep.sweep import eta, summary
from fer_sweep.sweep.policies import epochs_ahead, rungs
from fer_sweep.sweep.spec import PrunerSpec, parse_spec

ASHA = PrunerSpec(type="asha", min_epochs=1, reduction_factor=3)


def test_rungs_and_expected_epochs():
    assert rungs(ASHA, 15) == [1, 3, 9] and rungs(ASHA, 15, bracket=1) == [3, 9]
    # 1 epoch for sure, then 2 more with chance 1/3, 6 with 1/9, the last 6 with 1/27
    assert epochs_ahead(ASHA, 15) == pytest.approx(1 + 2 / 3 + 6 / 9 + 6 / 27)
    assert epochs_ahead(ASHA, 15, done=4) == pytest.approx(5 + 6 / 3)  # to rung 9 for sure, then 1/3 of the rest
    assert epochs_ahead(ASHA, 15, done=15) == 0
    assert epochs_ahead(PrunerSpec(type="median"), 15, done=4) == 11  # no rungs: every epoch still possible
    assert epochs_ahead(PrunerSpec(type="none"), 15) == 15
    hb = epochs_ahead(PrunerSpec(type="hyperband", min_epochs=1, reduction_factor=3), 15)
    assert epochs_ahead(ASHA, 15) < hb < 15  # later brackets start at larger budgets


def study_with(finished: int, running: int, target: int, epochs: int = 10, s_per_epoch: float = 30.0,
               setup_s: float = 5.0) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for i in range(finished):
        study.add_trial(create_trial(value=0.5, params={}, distributions={}, user_attrs={
            "ticket": i, "epochs": epochs, "train_seconds": epochs * s_per_epoch,
            "seconds": epochs * s_per_epoch + setup_s}))
    for i in range(running):
        t = study.ask()
        for e in (1, 2):
            t.report(0.4, e)
        t.set_user_attr(eta.PROGRESS, [2, 2 * s_per_epoch])
    for i in range(finished + running, target):
        study.enqueue_trial({}, user_attrs={"ticket": i})
    return study


def test_eta_from_measured_epochs_per_worker():
    study = study_with(finished=2, running=2, target=10)
    snap = summary.snapshot(study, 10, 10, PrunerSpec(type="none"), workers=1)
    b = snap["eta_basis"]
    assert b["s_per_epoch"] == 30 and b["workers"] == 2 and b["trials_left"] == 8
    assert b["timed_epochs"] == 2 * 2 + 10  # the running trials, then the latest finished one (>= RECENT_EPOCHS)
    assert b["epochs_left"] == 6 * 10 + 2 * 8
    assert snap["eta_s"] == pytest.approx((76 * 30 + 6 * 5) / 2)  # 6 fresh trials pay their set-up too
    assert snap["eta_max_s"] == snap["eta_s"]  # no pruner: what is possible is what is counted
    assert summary.snapshot(study, 10, 10, PrunerSpec(type="none"), workers=4)["eta_s"] == pytest.approx(
        (76 * 30 + 6 * 5) / 4)  # four workers started by run, two of them busy now
    line = render.eta_line(snap)
    assert line.startswith("ETA ~") and "76 epochs left x 30.0 s/epoch over 2 workers" in line, line


def test_eta_is_timed_by_the_latest_epochs_not_a_resumed_study_s_first_session():
    """A study resumed on a faster (or less busy) machine: its first session's slow epochs do not set the speed."""
    study = optuna.create_study(direction="maximize")
    for i, (epochs, s_per_epoch) in enumerate([(3, 440.0), (3, 420.0), (9, 400.0), (3, 43.0), (9, 42.0)]):
        study.add_trial(create_trial(value=0.5, params={}, distributions={}, user_attrs={
            "ticket": i, "epochs": epochs, "train_seconds": epochs * s_per_epoch}))
    crashed = create_trial(state=TrialState.FAIL, user_attrs={"ticket": 5, "epochs": 1, "train_seconds": 41.0})
    study.add_trial(crashed)  # cut short, latest: its epoch ran and counts
    t = study.ask()
    t.set_user_attr(eta.PROGRESS, [4, 4 * 44.0])
    b = summary.snapshot(study, 8, 24, PrunerSpec(type="none"), workers=1)["eta_basis"]
    assert b["timed_epochs"] == 4 + 1 + 9  # the running trial, then the latest ended ones until >= 12 epochs
    assert b["s_per_epoch"] == pytest.approx((4 * 44 + 41 + 9 * 42) / 14)
    assert eta.recent_epoch_seconds(study.get_trials()) == (14, pytest.approx(4 * 44 + 41 + 9 * 42))


def test_eta_scales_the_latest_epochs_by_cost_to_the_configurations_met():
    """Configurations differ ~4x in cost (conv widths): the latest trial, a cheap one, times the machine (seconds per
    FLOP), and an epoch of the configurations met costs their mean FLOPs. Without costs on every trial of the window
    the latest epochs' mean stands (an older study)."""
    study = optuna.create_study(direction="maximize")
    for i, (cost, s_per_epoch) in enumerate([(4e8, 160.0), (1e8, 40.0), (4e8, 160.0), (1e8, 40.0)]):
        study.add_trial(create_trial(value=0.5, params={}, distributions={}, user_attrs={
            "ticket": i, "epochs": 12, "train_seconds": 12 * s_per_epoch, eta.COST: cost}))
    trials = study.get_trials()
    assert eta.measured_speed(trials) == pytest.approx(40.0 / 1e8 * 2.5e8)  # 100 s: not the latest trial's 40
    b = summary.snapshot(study, 8, 12, PrunerSpec(type="none"), workers=1)["eta_basis"]
    assert b["s_per_epoch"] == pytest.approx(100.0) and b["timed_epochs"] == 12
    t = study.ask()  # running, its cost not yet written: the window's cost is unknown, the plain mean stands
    t.set_user_attr(eta.PROGRESS, [2, 2 * 150.0])
    assert eta.measured_speed(study.get_trials()) == pytest.approx((300 + 12 * 40) / 14)
    t.set_user_attr(eta.COST, 4e8)  # a dear one running: 5 trials met (mean 2.8e8), the window 2 dear + 12 cheap
    assert eta.measured_speed(study.get_trials()) == pytest.approx((300 + 480) / (2 * 4e8 + 12 * 1e8) * 2.8e8)


def test_eta_under_asha_rungs_and_its_upper_bound():
    study = study_with(finished=1, running=0, target=30, epochs=15, s_per_epoch=40.0, setup_s=0)
    snap = summary.snapshot(study, 30, 15, ASHA)
    assert snap["eta_s"] == pytest.approx(29 * epochs_ahead(ASHA, 15) * 40.0, abs=0.1)
    assert snap["eta_max_s"] == pytest.approx(29 * 15 * 40.0)  # nothing pruned: 4 h 50 min
    line = render.eta_line(snap)
    assert "(at most 4 h 50 min if nothing is pruned)" in line, line


def test_no_eta_before_the_first_epoch_and_none_left_at_the_end():
    fresh = study_with(finished=0, running=0, target=4)
    snap = summary.snapshot(fresh, 4, 10)
    assert snap["eta_s"] is None and render.eta_line(snap) == "ETA: once the first epoch is timed (4 trials left)"
    done = study_with(finished=4, running=0, target=4)
    snap = summary.snapshot(done, 4, 10)
    assert snap["eta_s"] == 0 and render.eta_line(snap) == ""


def test_status_carries_the_eta_as_data():
    st = summary.status(study_with(finished=2, running=1, target=5), 5, 10, pruner=PrunerSpec(type="median"))
    assert {"eta_s", "eta_max_s", "eta_basis"} <= set(st) and st["eta_basis"]["pruner"] == "median"
    assert "ETA ~" in str(render.status_view(st).renderables)


def test_a_searched_epochs_sets_the_eta_and_the_budget():
    """`space: {epochs: ...}` with no train.epochs: the ETA's upper bound and the unpruned budget count the searched
    top (20 epochs), not TrainConfig's default 15 (what `status` said before SweepSpec.max_epochs)."""
    spec = parse_spec({"data": "synthetic", "trials": 5, "pruner": {"type": "none"},
                       "space": {"epochs": {"choices": [10, 20]}}}, "s.yaml")
    st = summary.status(study_with(finished=2, running=1, target=5, epochs=10), spec.trials, spec.max_epochs,
                        pruner=spec.pruner)  # the two finished trials drew 10 epochs
    assert st["epochs_trained"] == 2 * 10 and st["epochs_budget"] == 2 * 20
    assert st["eta_basis"]["epochs_left_max"] == 2 * 20 + (20 - 2)  # two fresh trials and the running one's rest
    assert [r["epochs"] for r in st["running"]] == [20]
    assert st["eta_max_s"] == pytest.approx(58 * 30 + 2 * 5)  # 30 s an epoch, 5 s set-up per fresh trial, 1 worker


def test_progress_lines_one_per_epoch_and_per_finished_trial():
    lines = []
    view = render.ProgressLines(lines.append)
    snap = {"target": 3, "finished": 1, "recent": [{"number": 0, "state": "complete", "val_acc": 0.5, "epochs": 2,
                                                    "seconds": 60.0}],
            "running": [{"number": 1, "epoch": 1, "epochs": 2, "val_acc": 0.25, "progress": [1, 20.0]}],
            "eta_s": None, "eta_basis": {}}
    other = {"number": 9, "epoch": 1, "epochs": 2, "val_acc": 0.3, "progress": [1, 5.0], "ours": False}
    view.update({**snap, "running": [*snap["running"], other]})  # trial 0 finished before this run: not news,
    assert lines == ["trial 1 epoch 1/2: val/acc 0.2500 (20.0 s)"]  # and trial 9 is another run's to print
    view.update(snap)  # nothing new, nothing printed
    snap = {**snap, "finished": 2, "running": [], "recent": [{"number": 1, "state": "pruned", "val_acc": 0.25,
                                                              "epochs": 1, "seconds": 21.0}, *snap["recent"]],
            "eta_s": 50.0, "eta_max_s": 50.0, "eta_basis": {"trials_left": 1, "epochs_left": 2, "s_per_epoch": 20.0,
                                                            "workers": 1}}
    view.update(snap)
    assert lines[1] == "trial 1 pruned: val/acc 0.2500 after 1 epochs (21 s); 2/3 finished; ETA ~50 s: 2 epochs " \
                       "left x 20.0 s/epoch over 1 worker"
    assert len(lines) == 2


@pytest.mark.parametrize("seconds,text", [(45, "45 s"), (600, "10 min"), (3 * 3600 + 300, "3 h 05 min"),
                                          (3 * 86400, "3.0 days")])
def test_durations_read_as_people_say_them(seconds, text):
    assert render.duration(seconds) == text


def test_in_process_epochs_print_as_the_worker_reports_them():
    from fer_sweep.config import EpochResult

    lines = []
    view = render.ProgressLines(lines.append, epochs=15)
    view.epoch(4, EpochResult(3, {"val/acc": 0.61234, "time/epoch_s": 41.04}, 0.61, 3))
    view.epoch(4, EpochResult(4, {"val/acc": 0.2, "time/epoch_s": 40.0}, 0.61, 3, stop="diverged",
                              message="loss is nan"))
    assert lines == ["trial 4 epoch 3/15: val/acc 0.6123 (41.0 s)",
                     "trial 4 epoch 4/15: val/acc 0.2000 (40.0 s); loss is nan"]
    view.update({"target": 5, "finished": 0, "recent": [], "eta_s": None, "eta_basis": {},
                 "running": [{"number": 4, "epoch": 4, "epochs": 15, "val_acc": 0.2, "progress": [4, 160.0]}]})
    assert len(lines) == 2  # the snapshot brings nothing the worker had not said


def test_running_trials_only_count_what_they_may_still_train():
    study = study_with(finished=0, running=1, target=1, epochs=10, s_per_epoch=10.0)
    snap = summary.snapshot(study, 1, 10)
    assert snap["eta_basis"]["epochs_left"] == 8 and snap["eta_s"] == pytest.approx(80.0)
    assert [r["progress"] for r in snap["running"]] == [[2, 20.0]]
    assert study.get_trials(states=(TrialState.RUNNING,))


def test_the_start_of_run_forecast_steadies_the_eta_until_trials_are_timed():
    """The first trial may be the space's dearest (or cheapest) configuration: `run`'s forecast over the whole space
    weighs as PRIOR_TRIALS trials, so one timed trial moves the speed a quarter of the way, not all of it."""
    study = study_with(finished=0, running=0, target=10)
    study.set_user_attr(eta.FORECAST, {"s_per_epoch": 20.0})
    snap = summary.snapshot(study, 10, 10, PrunerSpec(type="none"))
    assert snap["eta_s"] == pytest.approx(10 * 10 * 20.0)  # before any epoch: the forecast alone
    assert "(the forecast 20.0: no epoch timed yet)" in render.eta_line(snap)
    dear = study_with(finished=1, running=0, target=10, s_per_epoch=80.0, setup_s=0)
    dear.set_user_attr(eta.FORECAST, {"s_per_epoch": 20.0})
    b = summary.snapshot(dear, 10, 10, PrunerSpec(type="none"))["eta_basis"]
    assert b["s_per_epoch"] == pytest.approx((3 * 20 + 1 * 80) / 4) and b["timed_trials"] == 1
    alone = summary.snapshot(study_with(finished=1, running=0, target=10, s_per_epoch=80.0, setup_s=0), 10, 10,
                             PrunerSpec(type="none"))["eta_basis"]
    assert alone["s_per_epoch"] == 80.0  # (without a forecast: the measurement alone, as before)
    many = study_with(finished=12, running=0, target=20, epochs=12, s_per_epoch=80.0, setup_s=0)
    many.set_user_attr(eta.FORECAST, {"s_per_epoch": 20.0})  # (the speed from the last trial's 12 epochs alone)
    b = summary.snapshot(many, 20, 12)["eta_basis"]
    assert b["timed_epochs"] == 12 and b["timed_trials"] == 12  # the prior fades with every configuration timed
    assert b["s_per_epoch"] == pytest.approx((3 * 20 + 12 * 80) / 15)


def test_eta_scales_by_the_cost_of_the_configurations_left_when_run_costed_them():
    """Random search fixes each ticket's configuration: `run` costs those left (FORECAST's ticket costs), and the
    ETA's speed is the machine's seconds per FLOP x the mean cost of the tickets not finished, not of the trials met
    (a resumed recording had met mostly cheap configurations and had mostly dear ones left: its ETA said 1 h 37 min
    for ~2 h 35 min)."""
    study = optuna.create_study(direction="maximize")
    for i in range(4):  # four cheap ones met, each 40 s an epoch
        study.add_trial(create_trial(value=0.5, params={}, distributions={}, user_attrs={
            "ticket": i, "epochs": 12, "train_seconds": 12 * 40.0, eta.COST: 1e8}))
    for i in range(4, 8):
        study.enqueue_trial({}, user_attrs={"ticket": i})
    study.set_user_attr(eta.FORECAST, {"s_per_epoch": 100.0, eta.TICKET_COSTS: {str(i): 4e8 for i in range(4, 8)}})
    b = summary.snapshot(study, 8, 12, PrunerSpec(type="none"))["eta_basis"]
    # measured: 40 s an epoch x 4, the dear ones left
    assert b["s_per_epoch"] == pytest.approx((3 * 100.0 + 4 * 160.0) / 7, abs=1e-3)
    assert eta.measured_speed(study.get_trials()) == pytest.approx(40.0)  # (unknown costs left: the trials met)
    t = study.ask()  # one starts: its own cost now, the others' as `run` costed them
    t.set_user_attr(eta.COST, 2e8)
    assert summary.costs_left(study.get_trials(), {str(i): 4e8 for i in range(4, 8)}) == [2e8, 4e8, 4e8, 4e8]
    assert summary.costs_left(study.get_trials(), {"5": 4e8}) is None  # one unknown: the mean of those met stands
