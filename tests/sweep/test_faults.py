"""Faults a long sweep meets, with real processes and real files: a cut journal tail, a damaged record in the
middle, a full disk (a real tmpfs), `kill -9` at random moments. Each ends with the study readable by `status`,
`best --ensemble` and `report`, exactly N finished trials, no ticket run twice to completion, and no completed
trial's value lost."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

import optuna
import pytest

from fer_sweep.config import Notice
from fer_sweep.sweep.journal import TORN_SUFFIX
from fer_sweep.sweep.store import open_storage
from fer_sweep.sweep.summary import epochs_redone
from tests.helpers import check_exact, cli, invoke, make_spec
from tests.support.slow_checkpoints import checkpoint_events, slow_checkpoints_env
from tests.support.slow_writes import slow_writes_env

KEEP_SPEC = {"keep": 4}  # kept trial models: `best --ensemble` has members, and the disk fills with artifacts


def study_of(results: Path, name: str) -> optuna.Study:
    """The study as fer-sweep reads it (the healing journal), warnings of its healing silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Notice)
        return optuna.load_study(study_name=name, storage=open_storage(results / name, None))


def complete_values(study: optuna.Study) -> dict[int, float]:
    return {t.number: t.value for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE}


def run(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*map(str, args)), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def record(kind: str, injected: int, study: optuna.Study, target: int, seen: dict[int, float],
           kills: int | None = None) -> None:
    """With FER_SWEEP_FAULT_REPORT set (benchmarks/bench_faults.py), append what this fault run ended with: the
    fault matrix in RESULTS.md is built from these lines. Called before the test's own assertions. `kills`: the
    kill -9s among the faults (each may cost at most the epoch it cut: epochs_redone, as `status --json` counts it,
    is at most that); None for a fault that kills nothing."""
    path = os.environ.get("FER_SWEEP_FAULT_REPORT")
    if not path:
        return
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    tickets = [t.user_attrs.get("ticket") for t in finished]
    values = complete_values(study)
    with open(path, "a") as f:
        f.write(json.dumps({"kind": kind, "injected": injected, "target": target, "finished": len(finished),
                            "duplicates": len(tickets) - len(set(tickets)),
                            "lost_values": sum(1 for n, v in seen.items() if values.get(n) != v),
                            "epochs_redone": epochs_redone(trials), "kills": kills}) + "\n")


def readable_by_every_command(results: Path, name: str) -> None:
    """`status`, `best --ensemble` and `report` read the study after the fault (in this process: only `run` needs
    a process of its own, to be killed)."""
    for args in (("status", "--json"), ("best", "--ensemble", "3", "--device", "cpu", "--json"), ("report",)):
        done = invoke(*args, "--study", name, "--results", results)
        assert "Traceback" not in done.stderr, done.stderr
    assert (results / name / "final" / "ensemble.json").is_file() and (results / name / "report.html").is_file()


# ------------------------------------------------------------------------------------------- journals
def test_a_cut_tail_is_moved_aside_and_the_same_command_finishes(tmp_path):
    """A journal cut 37 bytes short (a crash mid-append): the next command moves the cut record aside, says so in
    one line, and the study goes on; without the healing, the next append glued itself to the cut line and every
    command failed from then on."""
    spec, results = make_spec(tmp_path, "cut", 3, **KEEP_SPEC), tmp_path / "r"
    assert run("run", spec, "--results", results, "--device", "cpu").returncode == 0
    journal = results / "cut" / "journal.log"
    before = complete_values(study_of(results, "cut"))
    size = journal.stat().st_size
    with open(journal, "rb+") as f:
        f.truncate(size - 37)
    status = run("status", "--study", "cut", "--results", results, "--json")
    assert status.returncode == 0, status.stderr
    line = [s for s in status.stderr.splitlines() if "warning:" in s]
    assert len(line) == 1 and "was cut at byte" in line[0] and "journal.log.torn" in line[0], status.stderr
    torn = [json.loads(s) for s in (results / "cut" / f"journal.log{TORN_SUFFIX}").read_text().splitlines()]
    assert len(torn) == 1 and torn[0]["offset"] + torn[0]["bytes"] == size - 37 and journal.read_bytes().endswith(b"\n")
    again = run("run", spec, "--results", results, "--device", "cpu", "--trials", "4")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    study = study_of(results, "cut")
    record("cut journal tail (37 bytes)", 1, study, 4, {})
    check_exact(study, spec, 4)
    after = complete_values(study)
    # the cut record was the last trial's final state: every other completed value is still there
    assert sum(1 for n, v in before.items() if after.get(n) == v) >= len(before) - 1, (before, after)
    readable_by_every_command(results, "cut")


def test_a_damaged_middle_record_is_skipped_named_and_repaired(tmp_path):
    """The sequence of the bug report: a cut record with the next append glued to it, in the middle of the journal.
    Every command still reads the study (one line names what was skipped); `repair` rewrites it clean with a
    backup; a rerun finishes with exactly N."""
    spec, results = make_spec(tmp_path, "mid", 3, **KEEP_SPEC), tmp_path / "r"
    assert run("run", spec, "--results", results, "--device", "cpu").returncode == 0
    journal = results / "mid" / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    k = len(lines) // 2
    lines[k] = lines[k][: len(lines[k]) // 2].rstrip(b"\n") + lines[k + 1]  # cut, then an append glued onto it
    del lines[k + 1]
    journal.write_bytes(b"".join(lines))
    with pytest.raises(ValueError):  # what Optuna's own reader makes of it: the study is unreadable
        optuna.load_study(study_name="mid", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal)))).get_trials()
    status = run("status", "--study", "mid", "--results", results)
    assert status.returncode == 0, status.stderr
    assert "skipped 1 damaged record(s)" in status.stderr and "fer-sweep repair" in status.stderr, status.stderr
    repaired = run("repair", "--study", "mid", "--results", results, "--json")
    assert repaired.returncode == 0, repaired.stderr
    done = json.loads(repaired.stdout)
    assert done["damaged"] == 1 and done["recovered"] == 1 and Path(done["backup"]).read_bytes() == b"".join(lines)
    optuna.load_study(study_name="mid", storage=optuna.storages.JournalStorage(  # Optuna's reader reads it again
        optuna.storages.journal.JournalFileBackend(str(journal)))).get_trials()
    again = run("run", spec, "--results", results, "--device", "cpu")
    assert again.returncode == 0 and "damaged" not in again.stderr, again.stderr
    record("damaged middle record, then repair", 1, study_of(results, "mid"), 3, {})
    check_exact(study_of(results, "mid"), spec, 3)
    readable_by_every_command(results, "mid")
    assert json.loads(run("repair", "--study", "mid", "--results", results, "--json").stdout)["damaged"] == 0


# ------------------------------------------------------------------------------------------ full disk
@pytest.fixture
def small_disk(tmp_path):
    """A real tmpfs of a few hundred KiB (root only), grown later with `remount,size=`."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("size_kib", [96, 160, 224])
def test_a_full_disk_is_one_line_and_the_same_command_resumes(tmp_path, small_disk, size_kib):
    """The results folder on a disk that fills during the sweep (at a different point for each size: a journal
    append, a kept model, trials.csv): one line naming the path and what to do, exit 75, no traceback; after more
    space the same command finishes the study, exactly N, readable by every command."""
    subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(small_disk)], check=True)
    spec, results = make_spec(tmp_path, "full", 6, **KEEP_SPEC), small_disk / "r"
    first = run("run", spec, "--results", results, "--device", "cpu")
    assert first.returncode == 75, (first.returncode, first.stdout, first.stderr)
    assert "Traceback" not in first.stderr, first.stderr
    error = [s for s in first.stderr.splitlines() if s.startswith("error:")]
    assert len(error) == 1 and "No space left on device" in error[0] and "free space, then run the same command" \
        in error[0] and str(results) in error[0], first.stderr
    before = complete_values(study_of(results, "full"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run("run", spec, "--results", results, "--device", "cpu")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    study = study_of(results, "full")
    record(f"full disk ({size_kib} KiB tmpfs), then more space", 1, study, 6, before)
    check_exact(study, spec, 6)
    after = complete_values(study)
    assert all(after.get(n) == v for n, v in before.items()), (before, after)
    readable_by_every_command(results, "full")
    leftovers = [p for p in (results / "full").rglob("*.tmp")]
    assert not leftovers, leftovers


def test_a_full_disk_while_best_saves_leaves_the_saved_retrain_as_it_was(tmp_path, small_disk):
    """`best` on a disk too full for its new retrain: one line, exit 75, final/ byte for byte as before (the retrain
    is written whole into final/.incoming/ and only then published); after more space the same command publishes
    it and keeps the first retrain in final/earlier/1/."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    spec, results = make_spec(tmp_path, "fullbest", 2), small_disk / "r"
    assert run("run", spec, "--results", results, "--device", "cpu").returncode == 0
    best = ("best", "--study", "fullbest", "--results", results, "--device", "cpu", "--seeds", "2", "--json")
    assert run(*best).returncode == 0
    final = results / "fullbest" / "final"

    def files(folder: Path) -> dict:
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    first = files(final)
    assert "model.pt" in first and "seeds/s1/model.pt" in first
    used_kib = shutil.disk_usage(small_disk).used // 1024
    subprocess.run(["mount", "-o", f"remount,size={used_kib + 8}k", str(small_disk)], check=True)
    full = run(*best)
    assert full.returncode == 75 and "Traceback" not in full.stderr, (full.returncode, full.stderr)
    error = [s for s in full.stderr.splitlines() if s.startswith("error:")]
    assert len(error) == 1 and "No space left on device" in error[0], full.stderr
    assert "/final/.seeds-done/" in error[0] or "/final/.incoming/" in error[0], error  # a seed kept, or the save
    assert files(final) == first and not (final / ".incoming").exists() and not (final / "earlier").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run(*best)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert files(final / "earlier" / "1") == first and (final / "model.pt").is_file()
    assert json.loads(again.stdout)["runs"] == json.loads((final / "metrics.json").read_text())["runs"]
    assert not (final / ".incoming").exists()


# ------------------------------------------------------------------------------------------- kill -9
def kill_at_random_moments(spec: Path, results: Path, name: str, kills: int, seed: int) -> dict[str, int]:
    """Start `run`, SIGKILL it at a random moment (writes slowed so some kills land mid-append or mid-upload),
    again and again; then let it finish. Asserts that no completed value ever changes; returns counts."""
    rng, seen, killed = random.Random(seed), {}, 0
    env = slow_writes_env(0.05)  # 50 ms half-way through each journal append and after each upload
    for _ in range(kills):
        proc = subprocess.Popen(cli("run", str(spec), "--results", str(results), "--device", "cpu"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env})
        time.sleep(rng.uniform(2.0, 7.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        _, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr
        if (results / name / "journal.log").is_file():
            values = complete_values(study_of(results, name))
            assert all(values.get(n) == v for n, v in seen.items()), (seen, values)
            seen.update(values)
    done = run("run", spec, "--results", results, "--device", "cpu")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    study = study_of(results, name)
    final = complete_values(study)
    assert all(final.get(n) == v for n, v in seen.items()), (seen, final)
    return {"kills": killed, "complete": len(final), "trials": len(study.trials), "seen": seen}


def test_kill_9_at_random_moments_loses_nothing(tmp_path):
    kills = int(os.environ.get("FER_SWEEP_FAULT_KILLS", "4"))
    spec, results = make_spec(tmp_path, "kills", 6, **KEEP_SPEC), tmp_path / "r"
    counts = kill_at_random_moments(spec, results, "kills", kills, seed=7)
    record("kill -9 of `run` at random moments (writes slowed)", counts["kills"], study_of(results, "kills"), 6,
           counts["seen"], kills=counts["kills"])
    assert counts["kills"] >= 1, counts
    check_exact(study_of(results, "kills"), spec, 6)
    readable_by_every_command(results, "kills")


# ----------------------------------------------------------------------------- kill -9 mid-checkpoint
CHECKPOINT_PAUSE_S = 0.5  # half-way through each checkpoint write of a run the test kills: the kill lands in it


def checkpoint_spec(tmp_path: Path, name: str, epochs: int) -> Path:
    """Two trials of `epochs` short epochs, no pruning: each trains to its end, writing a checkpoint every epoch."""
    return make_spec(tmp_path, name, 2, pruner={"type": "none"},
                     train={"epochs": epochs, "patience": 0, "batch_size": 32})


def kill_mid_checkpoint(spec: Path, results: Path, log: Path, nth: int) -> tuple[bool, str]:
    """Start `run` with its checkpoint writes slowed and logged to `log` (tests/support/slow_checkpoints) and SIGKILL
    it half-way through its `nth` checkpoint write; checks the kill cut that write (its temporary file is left
    shorter than the checkpoint). Returns whether it was killed (not when the run ended first) and its stderr."""
    proc = subprocess.Popen(cli("run", str(spec), "--results", str(results), "--device", "cpu"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **slow_checkpoints_env(log, CHECKPOINT_PAUSE_S)})
    deadline, killed = time.monotonic() + 120, False
    while not killed and proc.poll() is None and time.monotonic() < deadline:
        if sum(e["event"] == "half" and e["pid"] == proc.pid for e in checkpoint_events(log)) >= nth:
            proc.send_signal(signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    if proc.poll() is None and not killed:
        proc.kill()
        proc.communicate(timeout=60)
        raise AssertionError(f"`run` never reached its checkpoint write {nth}")
    _, stderr = proc.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr
    if killed:
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, stderr)
        writing = [e for e in checkpoint_events(log) if e["event"] == "writing" and e["pid"] == proc.pid][-1]
        tmp = Path(writing["tmp"])  # cut half-way for certain, not by chance
        assert tmp.is_file() and 0 < tmp.stat().st_size < writing["size"], (writing, tmp.exists())
    return killed, stderr


def test_kill_9_while_a_checkpoint_is_written_never_resumes_from_a_torn_one(tmp_path):
    """`run` killed half-way through writing an epoch checkpoint, N times (FER_SWEEP_FAULT_KILLS, 3 here), at its
    1st to 3rd write (over a trial's earlier checkpoint, a resumed trial's, a first one), then run plainly: exactly
    the target finished, no ticket finished twice, no completed value lost; every checkpoint at its own name was
    written whole and every trial that resumed read one written whole (none refused: the cut write never replaced
    the previous checkpoint); the kills cost at most an epoch each (epochs_redone, as `status --json` counts it)."""
    kills = int(os.environ.get("FER_SWEEP_FAULT_KILLS", "3"))
    name, results, log = "ckpt", tmp_path / "r", tmp_path / "checkpoints.jsonl"
    spec = checkpoint_spec(tmp_path, name, 2 + kills)  # each run the test kills trains at most 2 epochs for good
    seen: dict[int, float] = {}
    killed, said = 0, ""
    for i in range(kills):
        cut, stderr = kill_mid_checkpoint(spec, results, log, nth=(2, 3, 1)[i % 3])
        killed, said = killed + cut, said + stderr
        whole = {e["sha"] for e in checkpoint_events(log) if e["event"] == "writing"}
        for path in (results / name / "checkpoints").glob("ticket-*.pt"):  # what the next trial reads is whole
            assert hashlib.sha256(path.read_bytes()).hexdigest() in whole, path
        values = complete_values(study_of(results, name))
        assert all(values.get(n) == v for n, v in seen.items()), (seen, values)
        seen.update(values)
    done = run("run", spec, "--results", results, "--device", "cpu", env=slow_checkpoints_env(log))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    said += done.stderr
    study = study_of(results, name)
    record("kill -9 of `run` while an epoch checkpoint is written", killed, study, 2, seen, kills=killed)
    assert killed == kills
    check_exact(study, spec, 2)
    final = complete_values(study)
    assert all(final.get(n) == v for n, v in seen.items()), (seen, final)
    events = checkpoint_events(log)
    whole = {e["sha"] for e in events if e["event"] == "writing"}
    loads = [e for e in events if e["event"] == "loaded"]
    assert loads and all(e["used"] and e["sha"] in whole for e in loads), loads  # no torn checkpoint ever read
    assert "checkpoint not used" not in said and said.count("from its checkpoint") == len(loads), said
    assert any(t.user_attrs.get("resumed_from") for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.COMPLETE)
    assert epochs_redone(study.get_trials(deepcopy=False)) <= killed
    assert not list((results / name / "checkpoints").glob("ticket-*.pt"))  # every trial ended: none left to resume
    assert not list((results / name / "checkpoints").glob(".*.tmp"))  # nor a torn write: its ticket's next save went


def test_a_torn_checkpoint_is_refused_in_one_line_and_its_trial_starts_over(tmp_path):
    """A checkpoint torn at its own name (the half a kill mid-write leaves at the temporary name, put where a trial
    reads it, as a copy or a power cut after a rename not yet synced can leave it): the next run says so in one line
    naming the file, the trial trains from epoch 0 (the epoch it had is counted in epochs_redone) and the study ends
    exact."""
    name, results, log = "torn", tmp_path / "r", tmp_path / "checkpoints.jsonl"
    spec = checkpoint_spec(tmp_path, name, 4)
    assert kill_mid_checkpoint(spec, results, log, nth=2)[0]
    writing = [e for e in checkpoint_events(log) if e["event"] == "writing"][-1]
    os.replace(writing["tmp"], writing["path"])
    done = run("run", spec, "--results", results, "--device", "cpu", env=slow_checkpoints_env(log))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    refused = [s for s in done.stderr.splitlines() if "checkpoint not used" in s]
    assert len(refused) == 1 and writing["path"] in refused[0] and "starts from epoch 0" in refused[0], done.stderr
    assert "from its checkpoint" not in done.stderr, done.stderr
    assert [e["used"] for e in checkpoint_events(log) if e["event"] == "loaded"] == [False]
    study = study_of(results, name)
    finished = check_exact(study, spec, 2)
    again = [t for t in finished if t.user_attrs["ticket"] == 0][0]
    assert "resumed_from" not in again.user_attrs and sorted(again.intermediate_values) == [1, 2, 3, 4]
    assert epochs_redone(study.get_trials(deepcopy=False)) == 1  # the one epoch the cut attempt had reported


# ------------------------------------------------------------------------------------------ env values
@pytest.mark.parametrize("value", ["", "sometimes"])
def test_a_wandb_mode_that_wandb_refuses_is_named_in_one_line(tmp_path, value):
    spec = make_spec(tmp_path, "envmode", 1, wandb={"project": "p", "mode": "offline"})
    done = run("run", spec, "--results", tmp_path / "r", "--device", "cpu", "--wandb", "offline",
               env={"WANDB_MODE": value})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"WANDB_MODE={value!r}" in done.stderr and "unset WANDB_MODE" in done.stderr
    assert not (tmp_path / "r").exists()  # nothing written
    shutil.rmtree(tmp_path / "r", ignore_errors=True)


# ------------------------------------------------------------------------------------ a database that goes away
def _outage_mid_sweep(tmp_path, postgres_url, study: str, *flags: str) -> tuple[subprocess.Popen, str, tuple]:
    """Two workers on PostgreSQL; once a trial trains, the server stops (every connection cut) for 15 s, then
    starts again. Returns the process, its stderr (and the workers' logs), and the run's arguments."""
    from tests.pg import OUTAGES

    spec = make_spec(tmp_path, study, 6, train={"epochs": 3, "patience": 0, "batch_size": 32})
    results = tmp_path / "r"
    args = ("run", spec, "--results", results, "--workers", "2", "--storage", postgres_url, "--device", "cpu", *flags)
    proc = subprocess.Popen(cli(*map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = optuna.load_study(study_name=study, storage=postgres_url) if (results / study).is_dir() else None
        if found and any(t.state == optuna.trial.TrialState.RUNNING for t in found.get_trials(deepcopy=False)):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep ended before the outage"
    OUTAGES[postgres_url](15)
    _, stderr = proc.communicate(timeout=300)
    logs = "".join(p.read_text() for p in sorted((results / study).glob("worker-*.log")))
    return proc, stderr + logs, args


def test_a_15_s_postgres_outage_mid_sweep_is_ridden_out(tmp_path, postgres_url):
    """The workers wait for the database (`--db-wait`, 5 minutes by default), say so in one line each way, and the
    same run ends with exactly N finished trials: nothing to rerun, no ticket finished twice."""
    proc, said, _ = _outage_mid_sweep(tmp_path, postgres_url, "ridden")
    assert proc.returncode == 0 and "Traceback" not in said, said
    assert "stopped answering" in said and "trying again for up to 300 s" in said and "answers again" in said, said
    study = optuna.load_study(study_name="ridden", storage=postgres_url)
    record("PostgreSQL stopped 15 s mid-sweep, 2 workers, default --db-wait (no rerun)", 1, study, 6, {})
    check_exact(study, tmp_path / "ridden.yaml", 6)


def test_with_no_db_wait_a_postgres_outage_ends_the_run_then_a_rerun_ends_with_exactly_n(tmp_path, postgres_url):
    """`--db-wait 0`: the run ends with one line (exit 75), never a traceback; the same command then finishes the
    study: exactly N finished trials, no ticket finished twice."""
    proc, said, args = _outage_mid_sweep(tmp_path, postgres_url, "pgdown", "--db-wait", "0")
    assert "Traceback" not in said, said
    if proc.returncode != 0:  # (0 when the 15 s fell where no storage call was made)
        errors = [s for s in said.splitlines() if s.startswith("error:")]
        assert proc.returncode == 75 and "run the same command" in errors[-1], said
    again = run(*args)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    study = optuna.load_study(study_name="pgdown", storage=postgres_url)
    record(f"PostgreSQL stopped 15 s mid-sweep, 2 workers, --db-wait 0 (first run exit {proc.returncode})", 1, study,
           6, {})
    check_exact(study, tmp_path / "pgdown.yaml", 6)
