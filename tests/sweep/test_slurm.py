"""A sweep on a real scheduler: examples/slurm/sweep.sbatch, the very script the docs tell users to submit, run as
array jobs on a single-node Slurm cluster (tests/slurm.py) over one PostgreSQL study (tests/pg.py).

Every job runs unchanged but for sbatch options on the command line (array size, time limit, output file) and the
environment the script documents. Trials are small (synthetic faces, tiny CNNs); what is tested is the scheduler:
an array ends with exactly N trials, a cancelled task loses nothing, and a task at its time limit is stopped by
Slurm's warning signal, its trial re-queued in the study and the task re-queued in Slurm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import check_exact, make_spec
from tests.pg import PASSWORD
from tests.slurm import start_slurm

pytestmark = pytest.mark.slurm

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "slurm" / "sweep.sbatch"
SLOWER = {  # trials of a few seconds each, so a signal finds one mid-training
    "train": {"epochs": 4, "patience": 0, "batch_size": 32}, "pruner": {"type": "none"},
    "splits": {"synthetic_n": 1400, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
    "model": {"arch": "cnn", "fc_units": 32, "conv": [[16, 3], [32, 3]]},
    "space": {"lr": {"low": 0.001, "high": 0.01, "log": True}, "dropout": {"low": 0.0, "high": 0.5}},
}


@pytest.fixture(scope="module")
def cluster():
    c = start_slurm()
    yield c
    c.stop()


def job_env(tmp_path: Path, spec: Path, postgres_url: str) -> dict:
    """What a user exports before `sbatch`: the spec, the study's URL with its password in PGPASSWORD instead."""
    fer_sweep = Path(sys.executable).with_name("fer-sweep")
    return {"FER_SPEC": str(spec), "FER_STORAGE": postgres_url.replace(f":{PASSWORD}@", "@"), "PGPASSWORD": PASSWORD,
            "FER_RESULTS": str(tmp_path / "results"), "FER_ARGS": "--device cpu --wandb disabled",
            "FER_SWEEP": str(fer_sweep), "OMP_NUM_THREADS": "1"}


_STORAGES: dict = {}


def load(url: str, name: str) -> optuna.Study:
    """The study, through one storage per URL (a new one per poll would leave its pooled connections open)."""
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url)
    return optuna.load_study(study_name=name, storage=_STORAGES[url])


def trials_now(url: str, name: str) -> list:
    try:
        return load(url, name).get_trials()
    except KeyError:  # the study is not created yet
        return []


def task_logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(tmp_path.glob("slurm-*.out")))


def test_three_task_array_ends_with_exactly_n(cluster, postgres_url, tmp_path):
    spec = make_spec(tmp_path, "slurm3", 6)
    job = cluster.sbatch(SCRIPT, "--array=0-2", f"--output={tmp_path}/slurm-%A_%a.out",
                         env=job_env(tmp_path, spec, postgres_url), cwd=tmp_path)
    jobs = cluster.wait(job, 120)
    assert len(jobs) == 3 and {j["JobState"] for j in jobs} == {"COMPLETED"}, task_logs(tmp_path)
    check_exact(load(postgres_url, "slurm3"), spec, 6)
    logs = task_logs(tmp_path)
    assert logs.count("fer-sweep task") == 3 and "6/6 finished" in logs
    assert "Traceback" not in logs and PASSWORD not in logs


def test_cancelled_task_and_resubmitted_array_end_with_exactly_n(cluster, postgres_url, tmp_path):
    """`scancel` of the task whose trial is mid-training: its trial is failed as `interrupted` and re-queued at
    once; the array submitted again (as a user would) joins the tasks still running and the study ends exact."""
    spec = make_spec(tmp_path, "cancel", 9, **SLOWER)
    env = job_env(tmp_path, spec, postgres_url)
    job = cluster.sbatch(SCRIPT, "--array=0-2", f"--output={tmp_path}/slurm-%A_%a.out", env=env, cwd=tmp_path)
    until, victim = time.monotonic() + 90, None
    while victim is None and time.monotonic() < until:
        for t in trials_now(postgres_url, "cancel"):
            if t.state == TrialState.RUNNING and len(t.intermediate_values) == 1:  # mid-training, 3 epochs to go
                environ = Path(f"/proc/{t.system_attrs['owner']['pid']}/environ").read_bytes().split(b"\0")
                env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
                task = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"  # (22.05's scancel refuses a
                # task's own job id: "invalid job id")
                victim = (t, task)
                break
        time.sleep(0.1)
    assert victim, f"no trial was ever mid-training\n{task_logs(tmp_path)}"
    trial, task = victim
    cluster.run("scancel", task)
    cancelled = cluster.wait(task, 60)
    assert cancelled[0]["JobState"] == "CANCELLED", f"{task}: {cancelled}\n{task_logs(tmp_path)}"
    cut = [t for t in load(postgres_url, "cancel").get_trials() if t.number == trial.number][0]
    assert cut.state == TrialState.FAIL and cut.user_attrs["outcome"] == "interrupted", cut.user_attrs
    again = cluster.sbatch(SCRIPT, "--array=0-1", f"--output={tmp_path}/slurm-%A_%a.out", env=env, cwd=tmp_path)
    for j in (job, again):
        cluster.wait(j, 150)
    finished = check_exact(load(postgres_url, "cancel"), spec, 9)
    redone = [f for f in finished if f.user_attrs["ticket"] == trial.user_attrs["ticket"]]
    assert redone[0].params == trial.params and redone[0].number > trial.number
    assert PASSWORD not in task_logs(tmp_path)


def test_time_limit_signal_requeues_the_task_and_loses_no_finished_trial(cluster, postgres_url, tmp_path):
    """`--time=2 --signal=B:USR1@15`: Slurm sends USR1 75 to 105 s into the task (its timer ticks every 30 s; a
    minute less left no time to finish a trial first on a loaded 2-core machine, and the test had nothing to check); the
    script stops fer-sweep (the trial training then is failed as `interrupted` and re-queued in the study) and
    re-queues the task, which runs again and goes on with the study. The sweep is far too long to end first; once
    the re-queued task has finished a trial of its own, the test cancels it (exactness after a cancel is the test
    above). A trial the signal cut resumes at its epoch from the checkpoint the task left (its retry is queued
    behind every other ticket, so the test runs it on its own once the task is cancelled)."""
    spec = make_spec(tmp_path, "limit", 200, **SLOWER)
    job = cluster.sbatch(SCRIPT, "--array=0", "--time=2", "--signal=B:USR1@15", f"--output={tmp_path}/slurm-%A_%a.out",
                         env=job_env(tmp_path, spec, postgres_url), cwd=tmp_path)
    until, before, restarted = time.monotonic() + 210, None, None
    while time.monotonic() < until:
        jobs = cluster.jobs(job)
        assert not jobs or jobs[0]["JobState"] not in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"), \
            f"the task ended instead of being re-queued: {jobs[0]['JobState']}\n{task_logs(tmp_path)}"
        if before is None and jobs and int(jobs[0].get("Restarts", 0)) >= 1:  # stopped by the signal, re-queued
            before = trials_now(postgres_url, "limit")
        if before is not None:
            now = trials_now(postgres_url, "limit")
            earlier = {t.number for t in before if t.state == TrialState.COMPLETE}
            done = [t for t in now if t.state == TrialState.COMPLETE and t.number not in earlier]
            if done:  # the re-queued task has run again and finished a trial of its own
                restarted = done[0]
                break
        time.sleep(0.5)
    assert before is not None and restarted, \
        f"not re-queued and resumed in time\n{task_logs(tmp_path)}\n{cluster.logs()}"
    cluster.run("scancel", job)
    cluster.wait(job, 60)
    logs = task_logs(tmp_path)
    assert "time limit near, trial re-queued; re-queueing job" in logs and "start 1)" in logs, logs
    kept = [t for t in before if t.state == TrialState.COMPLETE]
    cut = [t for t in before if t.state == TrialState.FAIL]
    assert kept, f"no trial had finished before the signal came\n{logs}"
    first = logs.split("start 1)")[0]  # the task's first start, which the signal stopped (the test's cancel stops
    # the second one, often right after its trial finished: "no trial was training" there says nothing of the signal)
    if "terminated (SIGTERM): no trial was training" in first:  # the signal fell between two trials (Slurm's timer
        assert not cut, logs                                       # picks the moment): nothing to re-queue
    else:  # (a cut mid-training for certain: the test above)
        assert len(cut) == 1 and f"terminated (SIGTERM): trial {cut[0].number} was re-queued" in first, logs
    assert all(t.user_attrs["outcome"] == "interrupted" and t.user_attrs["message"] == "SIGTERM" for t in cut)
    for t in cut:  # the trial the signal cut short was re-queued at once, not left running for a reaper
        retry = [r for r in before if r.user_attrs.get("retry_of") == t.number]
        assert len(retry) == 1 and retry[0].user_attrs["ticket"] == t.user_attrs["ticket"]
    assert all(t.datetime_start > cut[-1].datetime_complete for t in before if t.state == TrialState.RUNNING and cut)
    trials = {t.number: t for t in load(postgres_url, "limit").get_trials()}
    for t in kept:  # every trial finished before the signal is still there, as it was
        assert trials[t.number].state == TrialState.COMPLETE and trials[t.number].value == t.value
    tickets = [t.user_attrs["ticket"] for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(tickets) == len(set(tickets))  # and none was run again
    assert "Traceback" not in logs
    for t in cut:
        resumes_at_its_epoch(t, spec, postgres_url, tmp_path)


def resumes_at_its_epoch(cut, spec: Path, postgres_url: str, tmp_path: Path) -> None:
    """The retry of the trial the signal cut ends having taken from its ticket's checkpoint the epochs the cut trial
    had reported: `run --trials` up to its ticket (every lower ticket finished before it) runs it, and only it,
    unless a task already has."""
    study = load(postgres_url, "limit")
    (retry,) = [r for r in study.get_trials() if r.user_attrs.get("retry_of") == cut.number]
    said = ""
    if retry.state != TrialState.COMPLETE:
        done = subprocess.run([str(Path(sys.executable).with_name("fer-sweep")), "run", str(spec), "--storage",
                               postgres_url, "--results", str(tmp_path / "results"), "--trials",
                               str(cut.user_attrs["ticket"] + 1), "--device", "cpu", "--wandb", "disabled"],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        said = done.stderr
        (retry,) = [r for r in study.get_trials() if r.user_attrs.get("retry_of") == cut.number]
    assert retry.state == TrialState.COMPLETE, (retry.state, retry.user_attrs, said)
    epochs, resumed = len(cut.intermediate_values), int(retry.user_attrs.get("resumed_from", 0))
    # (the signal can also fall between an epoch's checkpoint and its report: that epoch is not trained again either)
    assert epochs <= resumed <= epochs + 1, (epochs, retry.user_attrs, said)
    if said and resumed:
        assert f"resumes at epoch {resumed + 1} from its checkpoint" in said, said
    assert sorted(retry.intermediate_values) == list(range(1, len(retry.intermediate_values) + 1))
    assert {e: v for e, v in retry.intermediate_values.items() if e <= epochs} == cut.intermediate_values
