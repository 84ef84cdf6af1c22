"""Plain-data views of a study: trial rows, trials.csv, the live snapshot and the status leaderboard."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Collection

import optuna
from optuna.trial import FrozenTrial, TrialState

from fer_sweep.files import write_atomic
from fer_sweep.sweep.policies import epochs_ahead
from fer_sweep.sweep.spec import PrunerSpec

TICKET = "ticket"  # user attr: index of the configuration in the seeded search (0..N-1)
OUTCOME = "outcome"  # user attr: complete | pruned | diverged | oom | oom_retry | error | crashed | interrupted | duplicate
FINISHED_FAILS = ("diverged", "oom", "error")  # failed trials that still count as finished (not re-run)
IMPORTANCE_MIN_TRIALS = 4  # complete trials before fANOVA is run at all (fewer: its forest has nothing to split)
PROGRESS = "progress"  # user attr of a trial while it trains: [epochs, train seconds so far] (times the ETA)
RECENT = 10  # finished trials a snapshot lists, the most recent first


def outcome(t: FrozenTrial) -> str:
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.PRUNED:
        return "pruned"
    if t.state == TrialState.FAIL:
        return t.user_attrs.get(OUTCOME, "crashed")
    return t.state.name.lower()  # running | waiting


def is_finished(t: FrozenTrial) -> bool:
    """A trial that reached a verdict: it counts towards --trials and is never re-run."""
    return outcome(t) in ("complete", "pruned", *FINISHED_FAILS)


def trial_row(t: FrozenTrial) -> dict[str, Any]:
    u = t.user_attrs
    value = t.value if t.state == TrialState.COMPLETE else u.get("best_val_acc")
    return {"number": t.number, "state": outcome(t), "val_acc": _round(value),
            "best_epoch": u.get("best_epoch"), "epochs": u.get("epochs", len(t.intermediate_values)),
            "seconds": _round(u.get("seconds"), 2), "worker": u.get("worker", ""),
            "message": u.get("message", ""), **{f"params.{k}": v for k, v in t.params.items()}}


def _round(x, digits: int = 4):
    return None if x is None else round(float(x), digits)


def write_trials_csv(study: optuna.Study, folder: Path) -> Path:
    """Rewrite <folder>/trials.csv from the storage (atomic: readers never see half a file)."""
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)
            if t.state != TrialState.WAITING and outcome(t) != "duplicate"]
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["number", "state", "val_acc"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    path = folder / "trials.csv"
    write_atomic(path, buf.getvalue())
    return path


def snapshot(study: optuna.Study, target: int, max_epochs: int, pruner: PrunerSpec | None = None,
             workers: int = 1, ours: tuple[str, Collection[int]] | None = None) -> dict[str, Any]:
    """What the live view and `status` show: counts, the best trial, the trials running now, the most recently
    finished ones, and the ETA (see `eta`; `workers`: how many this run started, when it knows). With `ours`
    (host, worker pids), each running and recent trial says whether one of those workers ran it (`ours`)."""
    trials = [t for t in study.get_trials(deepcopy=False) if outcome(t) != "duplicate"]
    counts: dict[str, int] = {}
    for t in trials:
        counts[outcome(t)] = counts.get(outcome(t), 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    running = [{"number": t.number, "worker": t.user_attrs.get("worker") or t.system_attrs.get("owner", {}).get("worker", ""),
                "epoch": len(t.intermediate_values), "epochs": max_epochs,
                "val_acc": _round(list(t.intermediate_values.values())[-1]) if t.intermediate_values else None,
                "progress": t.user_attrs.get(PROGRESS), "ours": _is_ours(t, ours), "params": t.params}
               for t in trials if t.state == TrialState.RUNNING]
    finished = sorted((t for t in trials if is_finished(t)), key=lambda t: (t.datetime_complete is None,
                                                                          t.datetime_complete), reverse=True)
    recent = [{**{k: trial_row(t)[k] for k in ("number", "state", "val_acc", "epochs", "seconds")},
               "ours": _is_ours(t, ours)} for t in finished[:RECENT]]
    snap = {"study": study.study_name, "target": target, "finished": len(finished), "counts": counts,
            "running": running, "recent": recent,
            "best": None if best is None else {"number": best.number, "val_acc": _round(best.value),
                                               "epochs": best.user_attrs.get("epochs"), "params": best.params}}
    snap.update(eta(trials, target, max_epochs, pruner or PrunerSpec(type="none"), workers))
    return snap


def _is_ours(t: FrozenTrial, ours: tuple[str, Collection[int]] | None) -> bool:
    owner = t.system_attrs.get("owner") or {}
    return ours is None or (owner.get("host") == ours[0] and owner.get("pid") in ours[1])


RECENT_EPOCHS = 12  # the ETA's speed: at least this many of the latest timed epochs


def recent_epoch_seconds(trials: list[FrozenTrial]) -> tuple[int, float]:
    """(epochs, seconds) of the latest timed epochs: every running trial's progress, then trials that ended
    (finished, and cut short: interrupted, crashed; their epochs ran), latest end first, until `RECENT_EPOCHS`."""
    def ended_at(t: FrozenTrial) -> tuple[float, int]:
        return (t.datetime_complete.timestamp() if t.datetime_complete else 0.0, t.number)

    now = [(int(p[0]), float(p[1])) for t in trials
           if t.state == TrialState.RUNNING and isinstance(p := t.user_attrs.get(PROGRESS), list)]
    ended = [(int(t.user_attrs.get("epochs") or 0), float(t.user_attrs.get("train_seconds") or 0))
             for t in sorted(trials, key=ended_at, reverse=True) if t.state not in (TrialState.RUNNING, TrialState.WAITING)]
    epochs, seconds = 0, 0.0
    for i, (e, s) in enumerate(now + ended):
        if i >= len(now) and epochs >= RECENT_EPOCHS:
            break
        if e > 0 and s > 0:
            epochs, seconds = epochs + e, seconds + s
    return epochs, seconds


def eta(trials: list[FrozenTrial], target: int, max_epochs: int, pruner: PrunerSpec, workers: int = 1) -> dict[str, Any]:
    """The projected time to finish the study: epochs still possible under the pruner's rungs x measured seconds
    per epoch (plus each trial's set-up), divided among the workers.

    Seconds per epoch are pooled over the most recent timed epochs in the storage (running trials from their
    `progress` first, then trials that ended, finished or cut short, latest first, until `RECENT_EPOCHS` epochs), so
    they are measured on the machines and with the worker count running now, whoever reads them: a study resumed on
    another machine, or on one less busy, is not timed by its first session. Epochs left: for each ticket not started, `policies.epochs_ahead` (asha/hyperband: to each rung
    with the chance of being promoted; median/none: every epoch), or the mean epochs of the finished trials where
    that is fewer (early stopping, the median pruner); for each running trial, what it may still train. `eta_max_s`
    counts every epoch of every unfinished trial (no pruning at all). Workers: those running a trial now, or
    `workers`, whichever is more. None until the first epoch is timed."""
    finished = [t for t in trials if is_finished(t)]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    epochs_timed, seconds = recent_epoch_seconds(trials)
    fresh = max(target - len(finished) - len(running), 0)
    done = [min(len(t.intermediate_values), max_epochs) for t in running]
    per_trial = epochs_ahead(pruner, max_epochs)
    epoch_counts = [int(t.user_attrs.get("epochs") or 0) for t in finished if t.user_attrs.get("epochs")]
    if len(epoch_counts) >= 3:  # trials stop early here (patience, the median pruner): count what they do
        per_trial = min(per_trial, sum(epoch_counts) / len(epoch_counts))
    left = fresh * per_trial + sum(epochs_ahead(pruner, max_epochs, d) for d in done)
    left_max = fresh * max_epochs + sum(max_epochs - d for d in done)
    overheads = [float(t.user_attrs["seconds"]) - float(t.user_attrs["train_seconds"]) for t in finished
                 if t.user_attrs.get("seconds") is not None and t.user_attrs.get("train_seconds") is not None]
    setup = max(sum(overheads) / len(overheads), 0.0) if overheads else 0.0
    k = max(len(running), workers, 1)
    basis = {"epochs_left": round(left, 1), "epochs_left_max": left_max, "trials_left": fresh + len(running),
             "s_per_epoch": round(seconds / epochs_timed, 3) if epochs_timed else None, "s_setup_per_trial": round(setup, 2),
             "timed_epochs": epochs_timed, "workers": k, "pruner": pruner.type}
    if fresh + len(running) == 0:
        return {"eta_s": 0.0, "eta_max_s": 0.0, "eta_basis": basis}
    if not epochs_timed:
        return {"eta_s": None, "eta_max_s": None, "eta_basis": basis}
    spe = seconds / epochs_timed
    return {"eta_s": round((left * spe + fresh * setup) / k, 1), "eta_max_s": round((left_max * spe + fresh * setup) / k, 1),
            "eta_basis": basis}


def status(study: optuna.Study, target: int, max_epochs: int, top: int = 10, pruner: PrunerSpec | None = None,
           workers: int = 1) -> dict[str, Any]:
    """The leaderboard, counts by state, epochs trained vs. the unpruned budget, param importances, the ETA."""
    snap = snapshot(study, target, max_epochs, pruner, workers)
    trials = study.get_trials(deepcopy=False)
    ranked = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                    key=lambda t: (t.state != TrialState.COMPLETE, -(trial_row(t)["val_acc"] or 0)))
    finished = [t for t in trials if is_finished(t)]
    epochs_run = sum(int(trial_row(t)["epochs"] or 0) for t in finished)
    snap.update(leaderboard=[trial_row(t) for t in ranked[:top]], epochs_trained=epochs_run,
                epochs_budget=len(finished) * max_epochs, importances=importances(study),
                importance_basis=importance_basis(study))
    return snap


def importance_trials_needed(n_params: int) -> int:
    """Complete trials from which fANOVA importances are more than a hint: 20, or 2 per searched parameter.

    Why: simulated random searches of cnn.yaml's grid (6 parameters; lr, norm and dropout worth 1-4 accuracy
    points, the rest nothing; ±1 point of seed noise; 30 draws per size) had fANOVA rank the truly most
    important parameter first in 23-60% of draws with 4-15 complete trials, 73% with 20 and 80% with 30.
    With 16 searched parameters (vgg.yaml's size): 20% at 10, 63% at 20, 77% at 30, 93% at 50. Below this count,
    importances are shown but flagged unreliable. (One dominant parameter, such as an lr that fails to
    learn, is found sooner; the flag is for the usual case of effects of a few points.)
    """
    return max(20, 2 * n_params)


def importance_basis(study: optuna.Study) -> dict[str, Any]:
    """What the importances rest on: complete trials, how many they need to be reliable, and whether they are."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    needed = importance_trials_needed(len({k for t in complete for k in t.params}))
    return {"complete_trials": len(complete), "reliable_from": needed, "reliable": len(complete) >= needed}


def importance_warning(basis: dict[str, Any]) -> str:
    """The line that flags importances resting on too few complete trials (terminal and HTML report)."""
    return (f"unreliable: these importances rest on {basis['complete_trials']} complete trials and need "
            f"{basis['reliable_from']} here (20, or 2 per searched parameter) before their ranking means much; "
            "read them as hints")


def importances(study: optuna.Study, min_trials: int = IMPORTANCE_MIN_TRIALS) -> dict[str, float]:
    """fANOVA parameter importances over complete trials, once there are enough of them."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    varied = {k for t in complete for k in t.params if len({str(c.params.get(k)) for c in complete}) > 1}
    if len(complete) < min_trials or not varied:
        return {}
    try:
        result = optuna.importance.get_param_importances(study, params=sorted(varied))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {k: round(float(v), 4) for k, v in result.items()}
