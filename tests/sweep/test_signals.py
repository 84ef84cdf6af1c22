"""SIGTERM handled like Ctrl-C (sweep/signals.py): preempting a multi-worker run re-queues every running trial."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from optuna.trial import TrialState

from tests.helpers import check_exact, cli, journal_study, make_spec


def test_sigterm_to_a_multi_worker_run_requeues_every_running_trial(tmp_path):
    """Preemption of `run --workers 2`: the parent forwards SIGTERM, each worker fails its trial as
    `interrupted` and re-queues it at once, all exit promptly (143); a rerun ends with exactly N."""
    spec = make_spec(tmp_path, "preempt", 4, train={"epochs": 4, "patience": 0, "batch_size": 32},
                     pruner={"type": "none"},
                     splits={"synthetic_n": 1400, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                     model={"arch": "cnn", "fc_units": 32, "conv": [[16, 3], [32, 3]]},
                     space={"lr": {"low": 0.001, "high": 0.01, "log": True}})
    results = tmp_path / "results"
    args = ("run", str(spec), "--workers", "2", "--results", str(results), "--device", "cpu")
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            running = journal_study(results, "preempt").get_trials(states=(TrialState.RUNNING,))
        except (KeyError, FileNotFoundError, ValueError):  # journal or study not created yet
            continue
        if len([t for t in running if t.intermediate_values]) == 2:  # both workers mid-trial
            break
    else:
        pytest.fail("the two workers were never mid-trial at once")
    cut = {t.number: t for t in running}
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - signalled < 30 and proc.returncode == 143, stderr
    assert "terminated (SIGTERM): each worker re-queued the trial it was training" in stderr, stderr
    assert "Traceback" not in stderr
    trials = journal_study(results, "preempt").get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for number, t in cut.items():  # failed as interrupted (not crashed) and enqueued again, before any rerun
        assert trials[number].state == TrialState.FAIL and trials[number].user_attrs["outcome"] == "interrupted"
        assert trials[number].user_attrs["message"] == "SIGTERM"
        again = [w for w in trials if w.state == TrialState.WAITING and w.user_attrs.get("retry_of") == number]
        assert len(again) == 1 and again[0].user_attrs["ticket"] == t.user_attrs["ticket"]
    said = "".join((results / "preempt" / f"worker-{k}.log").read_text() for k in (0, 1))
    for number in cut:  # each worker names the trial it re-queued
        assert f"terminated (SIGTERM): trial {number} was re-queued; run the same command again" in said, said

    rerun = subprocess.run(cli(*args), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    finished = check_exact(journal_study(results, "preempt"), spec, 4)
    for number, t in cut.items():
        redone = [f for f in finished if f.user_attrs["ticket"] == t.user_attrs["ticket"]]
        assert redone[0].params == t.params and redone[0].number > number


def test_an_interrupt_inside_an_uninterrupted_section_lands_as_the_section_ends():
    import os

    from fer_sweep.sweep.signals import Terminated, deadline_alarm, interrupting, uninterrupted

    done = []
    with interrupting(signal.SIGTERM), pytest.raises(Terminated):
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run by now, and held the interrupt back
            with uninterrupted():  # nested: it lands as the outermost ends
                done.append("inner")
            done.append("outer")
        done.append("after")  # never: the interrupt is raised as the section ends
    assert done == ["inner", "outer"]
    with pytest.raises(KeyboardInterrupt) as raised:  # the deadline too waits for the section to end (retried)
        with deadline_alarm(time.time() + 0.05, retry_s=0.02):
            with uninterrupted():
                time.sleep(0.2)
                done.append("section")
            time.sleep(5)
    assert done[-1] == "section" and "deadline" in str(raised.value)
