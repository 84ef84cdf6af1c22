"""The study and its ticket queue: create or resume it, claim a ticket, reap dead workers' trials, re-queue.

Every configuration of a sweep is a *ticket*: a WAITING Optuna trial enqueued once, up front, with
user attr `ticket` = its index. Workers (threads of this process, other processes, other machines)
claim tickets atomically through the storage, so a study ends with exactly `trials` finished trials
whatever the number of workers, and seeded random search gives the same configurations for 1 or 8
workers. A trial whose worker died is failed (`crashed`) and its ticket enqueued again.
"""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from fer_sweep.config import UserError
from fer_sweep.files import write_atomic
from fer_sweep.sweep.journal import rewrite_clean
from fer_sweep.sweep.optuna_api import fixed_params, storage_of, trial_id, trial_object
from fer_sweep.sweep.policies import make_pruner, make_sampler
from fer_sweep.sweep.space import sample_configs
from fer_sweep.sweep.spec import SweepSpec, dump_spec, parse_spec
from fer_sweep.sweep.store import JOURNAL, STORAGE_NOTE, find_study, folder_lock, mask_url, open_storage, study_dir
from fer_sweep.sweep.summary import OUTCOME, TICKET, is_finished, is_imported

CLAIM_MARK = "claim:"  # system attr prefix: a process about to try to take a ticket
ORPHAN_AFTER_S = 120  # a trial running this long with no owner stamped, taken on another machine, is reaped
SAME_STUDY_KEYS = ("data", "splits", "seed", "sampler", "model", "train", "space")  # may not change on resume


def open_study(spec: SweepSpec, folder: Path, storage_url: str | None, heartbeat_s: int = 30) -> optuna.Study:
    storage = open_storage(folder, storage_url, heartbeat_s=heartbeat_s, on_stale=requeue)
    try:  # load an existing study: create_study would append another create record to a journal each time
        storage.get_study_id_from_name(spec.study)
    except KeyError:
        return optuna.create_study(study_name=spec.study, storage=storage, direction="maximize",
                                   sampler=make_sampler(spec), pruner=make_pruner(spec), load_if_exists=True)
    return optuna.load_study(study_name=spec.study, storage=storage, sampler=make_sampler(spec),
                             pruner=make_pruner(spec))


def prepare_study(spec: SweepSpec, results: Path, storage_url: str | None, heartbeat_s: int = 30,
                  before_tickets: Callable[[optuna.Study], None] | None = None) -> optuna.Study:
    """Create or resume the study: check the spec matches, save it, and fill the ticket queue to `trials`
    (`before_tickets` first, under the same lock: `run --from` imports trials whose configurations are not drawn)."""
    folder = study_dir(results, spec.study)
    with folder_lock(folder):
        saved_path = folder / "spec.yaml"
        if saved_path.is_file():
            saved = yaml.safe_load(saved_path.read_text()) or {}
            changed = [k for k in SAME_STUDY_KEYS if saved.get(k) != spec.resolved.get(k)]
            if changed:
                raise UserError(f"{saved_path}: study {spec.study!r} was started with other {', '.join(changed)}; "
                                "resume with the same spec, or pass --study NEW_NAME")
        study = open_study(spec, folder, storage_url, heartbeat_s)
        write_atomic(saved_path, dump_spec(spec))
        if storage_url:
            write_atomic(folder / STORAGE_NOTE, mask_url(storage_url) + "\n")
        reap(study)
        if before_tickets:
            before_tickets(study)
        ensure_tickets(study, spec)
    return study


def load_saved_spec(folder: Path) -> SweepSpec:
    """The resolved spec a study was started with (workers and `best` read this, not the user's file)."""
    raw = yaml.safe_load((folder / "spec.yaml").read_text())
    return parse_spec(raw, str(folder / "spec.yaml"), check_data=False)


def ensure_tickets(study: optuna.Study, spec: SweepSpec) -> int:
    """Enqueue the configurations 0..trials-1 that have no live or finished trial yet; returns how many."""
    live = {t.user_attrs.get(TICKET) for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.WAITING, TrialState.RUNNING) or is_finished(t)}
    missing = [i for i in range(spec.trials) if i not in live]
    if not missing:
        return 0
    imported = [t.params for t in study.get_trials(deepcopy=False) if is_imported(t)]  # drawn once already
    configs = sample_configs(spec, spec.trials, avoid=imported) if spec.sampler == "random" else [{}] * spec.trials
    for i in missing:
        study.enqueue_trial(configs[i], user_attrs={TICKET: i}, skip_if_exists=False)
    return len(missing)


def tickets_left(study: optuna.Study, spec: SweepSpec) -> list[tuple[int | None, dict[str, Any]]]:
    """(ticket, configuration) of each waiting ticket, re-queued ones first (as workers take them), then by ticket:
    random search fixes a ticket's configuration as it enqueues it (`ensure_tickets`), so these are the trials left.
    A ticket without one (TPE draws as it goes) stands as the seeded random draw of its index, with no ticket (what
    the forecast costs it as: TPE starts with those draws)."""
    waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if isinstance(t.user_attrs.get(TICKET), int) and t.user_attrs[TICKET] < spec.trials]
    waiting.sort(key=lambda t: ("retry_of" not in t.user_attrs, t.user_attrs[TICKET]))
    drawn: list[dict[str, Any]] = []
    left: list[tuple[int | None, dict[str, Any]]] = []
    for t in waiting:
        fixed = fixed_params(t)
        if fixed:
            left.append((t.user_attrs[TICKET], dict(fixed)))
        else:
            drawn = drawn or sample_configs(spec, spec.trials)
            left.append((None, drawn[t.user_attrs[TICKET]]))
    return left


def requeue(study: optuna.Study, failed: FrozenTrial, **attrs: Any) -> None:
    """Enqueue a dead worker's trial again with the same configuration (also Optuna's stale-trial callback);
    `attrs` are extra user attrs of the new ticket."""
    params = fixed_params(failed) or failed.params
    study.enqueue_trial(params, user_attrs={TICKET: failed.user_attrs.get(TICKET), "retry_of": failed.number, **attrs},
                        skip_if_exists=False)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against pid reuse); None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
            return "?"
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def reap(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose owner is gone and enqueue their configurations again.

    RDB storages also use Optuna's heartbeat (for workers on other machines); owners on this host are
    checked directly by pid and start time, which works for every storage.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    host, reaped = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = _dead_holder(t, host)
        if owner is not None and _put_back(study, t, "crashed",
                                           f"worker {owner.get('worker')} (pid {owner['pid']}) died"):
            reaped.append(t.number)
    return reaped


def release_own(study: optuna.Study, worker: str) -> list[int]:
    """Fail and enqueue again the RUNNING trials this process holds, called by a worker between trials once the
    storage answers again after an outage: the trial it was training or taking when the storage stopped answering
    (its owner stamp, or only its claim mark when the stamp was never written). A trial that other processes also
    tried to take and no one stamped is left to `reap`: it may be theirs."""
    host, pid, released = socket.gethostname(), os.getpid(), []
    mark = f"{CLAIM_MARK}{host}:{pid}"
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.system_attrs.get("owner")
        marks = [k for k in t.system_attrs if k.startswith(CLAIM_MARK)]
        mine = (owner.get("host") == host and owner.get("pid") == pid) if owner else marks == [mark]
        if mine and _put_back(study, t, "interrupted", f"worker {worker}: the study's storage stopped answering "
                                                       "while this trial ran"):
            released.append(t.number)
    return released


def _put_back(study: optuna.Study, t: FrozenTrial, outcome: str, message: str) -> bool:
    """Fail a RUNNING trial with `outcome` and enqueue its configuration again; False if it had already finished."""
    storage = storage_of(study)
    try:
        tid = trial_id(study, t.number)
        storage.set_trial_user_attr(tid, OUTCOME, outcome)
        storage.set_trial_user_attr(tid, "message", message)
        if storage.set_trial_state_values(tid, TrialState.FAIL):
            requeue(study, t)
            return True
    except UpdateFinishedTrialError:
        pass  # another worker reaped it first
    return False


def _dead_holder(t: FrozenTrial, host: str) -> dict | None:
    """The holder of a RUNNING trial when it is gone (its process on this host has ended), else None. A trial
    whose owner was never stamped (a fault between taking the ticket and the stamp: a database gone away) is held
    by the processes that tried to take it (their `claim:` marks): gone when all of them are, or, on other hosts,
    once it has been running for ORPHAN_AFTER_S without an owner."""
    owner = t.system_attrs.get("owner")
    holders = [owner] if owner else [v for k, v in t.system_attrs.items() if k.startswith(CLAIM_MARK)]
    if not holders:
        return None  # not taken by a fer-sweep worker
    if all(h.get("host") == host for h in holders):
        alive = [h for h in holders if _process_start(h["pid"]) in (h.get("start"), "?")]
        return None if alive else holders[0]
    if owner is None and t.datetime_start and time.time() - t.datetime_start.timestamp() > ORPHAN_AFTER_S:
        return holders[0]
    return None  # another machine's worker: Optuna's heartbeat fails it when it stops beating


def claim(study: optuna.Study, target: int, worker: str) -> optuna.Trial | None:
    """Atomically take a WAITING ticket (storage compare-and-set) and stamp it with its owner. Before the attempt
    the process marks the ticket (`claim:<host>:<pid>`), so a fault between the two writes leaves a trial that
    `reap` can still trace to a process."""
    storage, pid = storage_of(study), os.getpid()
    me: dict[str, Any] = {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid), "worker": worker}
    for t in _claim_order(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), target):
        index = t.user_attrs.get(TICKET)
        if index is None or index >= target:
            continue
        tid = trial_id(study, t.number)
        try:
            storage.set_trial_system_attr(tid, f"{CLAIM_MARK}{me['host']}:{pid}", me)
            if not storage.set_trial_state_values(tid, TrialState.RUNNING):
                continue
        except UpdateFinishedTrialError:
            continue
        if _is_duplicate(study, t, index):
            storage.set_trial_user_attr(tid, OUTCOME, "duplicate")
            storage.set_trial_state_values(tid, TrialState.FAIL)
            continue
        storage.set_trial_system_attr(tid, "owner", me)
        return trial_object(study, t.number)
    return None


def _claim_order(waiting: list[FrozenTrial], target: int) -> list[FrozenTrial]:
    """The order to try tickets in: the head of the queue first (re-queued trials before new ones, so a cut trial
    goes on from its checkpoint next, not after every other ticket; one worker takes them in order), then the rest at
    random, so workers that lose the head to another do not all go on to try the same next one (64 workers starting
    together otherwise queue on one row's lock after another: benchmarks/RESULTS.md, coordination at scale)."""
    eligible = [t for t in waiting if t.user_attrs.get(TICKET) is not None and t.user_attrs[TICKET] < target]
    eligible.sort(key=lambda t: "retry_of" not in t.user_attrs)  # a cut trial first: it resumes from its checkpoint
    return eligible[:1] + random.sample(eligible[1:], len(eligible) - 1) if eligible else []


def _is_duplicate(study: optuna.Study, mine: FrozenTrial, index: int) -> bool:
    """Two tickets for one index (a requeue racing a resume): the finished or older one wins."""
    return any(t.number != mine.number and t.user_attrs.get(TICKET) == index
               and (is_finished(t) or (t.state == TrialState.RUNNING and t.number < mine.number))
               for t in study.get_trials(deepcopy=False, states=_NOT_WAITING))  # (the queue itself need not be read)


_NOT_WAITING = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def open_existing(results: Path, study: str | None, storage_url: str | None) -> tuple[SweepSpec, optuna.Study, Path]:
    """A study that `run` started (the named one, else the most recent under `results`): its saved spec, the
    study and its folder. What `status`, `best` and `report` open."""
    folder = study_dir(results, find_study(results, study))
    spec = load_saved_spec(folder)
    return spec, open_study(spec, folder, storage_url), folder


def repair_journal(results: Path, study: str | None) -> dict[str, Any]:
    """`fer-sweep repair`: rewrite a study's journal without its damaged records (journal.rewrite_clean, which
    keeps a backup). Refused while a trial of the study runs on this machine, and for database storages."""
    folder = study_dir(results, find_study(results, study))
    if (folder / STORAGE_NOTE).is_file():
        raise UserError(f"{folder}: this study lives in {(folder / STORAGE_NOTE).read_text().strip()}: repair "
                        "rewrites journal files; a database is repaired with its own tools")
    path = folder / JOURNAL
    if not path.is_file():
        raise UserError(f"{path}: no journal here")
    spec = load_saved_spec(folder)
    live = [t.number for t in open_study(spec, folder, None).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if _owner_alive(t)]
    if live:
        raise UserError(f"{folder}: trial(s) {', '.join(map(str, live))} are running: stop the sweep, then repair")
    return rewrite_clean(path)


def _owner_alive(t: FrozenTrial) -> bool:
    owner = t.system_attrs.get("owner") or {}
    if not owner.get("pid") or owner.get("host") != socket.gethostname():
        return False
    return _process_start(owner["pid"]) in (owner.get("start"), "?")
