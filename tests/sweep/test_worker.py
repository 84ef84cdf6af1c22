"""Workers (sweep/worker.py): an out-of-memory on a GPU shared with other workers is retried, not taken as the
configuration's verdict; a trial reaped while it trains is left to whoever reaped it."""

from __future__ import annotations

from fer_sweep.sweep.spec import load_spec
from fer_sweep.sweep.study import prepare_study
from fer_sweep.sweep.summary import outcome
from fer_sweep.sweep.worker import MAX_OOM_RETRIES, OOM_RETRIES, make_worker, worker_loop
from tests.helpers import make_spec


def test_out_of_memory_on_a_shared_gpu_is_retried_then_final(tmp_path):
    """A real allocation failure (a 3 TB head layer) in a worker that shares its device: re-queued
    MAX_OOM_RETRIES times as `oom_retry` (not finished), then recorded as the configuration's `oom`."""
    huge = {"arch": "cnn", "fc_units": 10_000_000_000}
    spec = load_spec(make_spec(tmp_path, "oom", 1, model=huge, space={"lr": {"choices": [0.001]}}))
    results = tmp_path / "results"
    study = prepare_study(spec, results, None)
    w = make_worker(spec, study, results / "oom", device="cpu", wandb_mode="disabled")
    w.shared_device = True
    assert worker_loop(w) == MAX_OOM_RETRIES + 1
    trials = study.get_trials()
    assert [outcome(t) for t in trials] == ["oom_retry"] * MAX_OOM_RETRIES + ["oom"]
    assert [t.user_attrs.get(OOM_RETRIES, 0) for t in trials] == list(range(MAX_OOM_RETRIES + 1))
    assert {t.user_attrs["ticket"] for t in trials} == {0}
    assert ("re-queued" in trials[0].user_attrs["message"]
            and "can't allocate memory" in trials[-1].user_attrs["message"])
    w.shared_device = False  # a worker alone on its device takes the first OOM as the verdict
    spec2 = load_spec(make_spec(tmp_path, "oom2", 1, model=huge, space={"lr": {"choices": [0.001]}}))
    study2 = prepare_study(spec2, results, None)
    w2 = make_worker(spec2, study2, results / "oom2", device="cpu", wandb_mode="disabled")
    assert worker_loop(w2) == 1 and outcome(study2.get_trials()[0]) == "oom"


def test_a_trial_reaped_while_it_trains_is_left_to_whoever_reaped_it(tmp_path):
    """Another worker failed and re-queued this trial (its heartbeat went quiet in a database outage): the worker
    notices at its next write and moves on, without a verdict of its own and without a traceback."""
    from optuna.trial import TrialState

    from fer_sweep.sweep.study import claim, release_own
    from fer_sweep.sweep.worker import run_trial

    spec = load_spec(make_spec(tmp_path, "gone", 1, train={"epochs": 3, "patience": 0}, pruner={"type": "none"}))
    results = tmp_path / "results"
    study = prepare_study(spec, results, None)
    w = make_worker(spec, study, results / "gone", device="cpu", wandb_mode="disabled")
    epochs: list[int] = []

    def reaped_after_the_first_epoch(number, result) -> None:
        epochs.append(result.epoch)
        if result.epoch == 1:  # what a reaper does: failed as interrupted, its configuration queued again
            release_own(study, "w9")

    w.on_epoch = reaped_after_the_first_epoch
    assert run_trial(w, claim(study, spec.trials, "w0")) == "reaped"
    assert epochs == [1]  # it stopped at the next write, not after its 3 epochs
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and outcome(trials[0]) == "interrupted"  # the reaper's verdict stands
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]
