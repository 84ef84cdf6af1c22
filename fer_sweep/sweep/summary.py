"""Plain-data views of a study: trial rows, trials.csv, the live snapshot and the status leaderboard."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Collection, Mapping, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from fer_sweep.files import write_atomic
from fer_sweep.sweep.eta import COST, FORECAST, PROGRESS, TICKET_COSTS, eta
from fer_sweep.sweep.importances import importance_basis, importances
from fer_sweep.sweep.plateau import plateau
from fer_sweep.sweep.spec import PrunerSpec, StopSpec

TICKET = "ticket"  # user attr: index of the configuration in the seeded search (0..N-1)
IMPORTED_FROM = "imported_from"  # user attr: "<study>#<number>" of a finished trial `run --from` copied in
RESUMED_FROM = "resumed_from"  # user attr: the epochs a trial took from its ticket's checkpoint (not trained again)
# user attr: complete | pruned | diverged | oom | oom_retry | error | crashed | interrupted | duplicate
OUTCOME = "outcome"
FINISHED_FAILS = ("diverged", "oom", "error")  # failed trials that still count as finished (not re-run)
REQUEUED = ("interrupted", "crashed", "oom_retry")  # attempts cut short whose configuration was queued again
RECENT = 10  # finished trials a snapshot lists, the most recent first
RACE_TOP = 3  # the candidates `status` weighs for `best --race`
SEED_NOISE = 0.01  # a FER2013 run's seed-to-seed sd of val acc where a study measured none (docs/strategies.md:
#                    0.5-0.8 points for full-data retrains, 1.56 on the learning-curve table's 3,000-face slice)


def outcome(t: FrozenTrial) -> str:
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.PRUNED:
        return "pruned"
    if t.state == TrialState.FAIL:
        return t.user_attrs.get(OUTCOME, "crashed")
    return t.state.name.lower()  # running | waiting


def is_imported(t: FrozenTrial) -> bool:
    """A finished trial of an earlier study copied in by `run --from`: on the leaderboard, for `best`, TPE and
    ensembles, but not one of this study's --trials (nor trained, nor timed here)."""
    return IMPORTED_FROM in t.user_attrs


def is_finished(t: FrozenTrial) -> bool:
    """A trial that reached a verdict: it counts towards --trials and is never re-run."""
    return outcome(t) in ("complete", "pruned", *FINISHED_FAILS)


def trial_row(t: FrozenTrial) -> dict[str, Any]:
    u = t.user_attrs
    value = t.value if t.state == TrialState.COMPLETE else u.get("best_val_acc")
    return {"number": t.number, "state": outcome(t), "val_acc": _round(value),
            "val_acc_std": _round(u.get("val_acc_std")), "seeds": u.get("seeds", 1),
            "best_epoch": u.get("best_epoch"), "epochs": u.get("epochs", len(t.intermediate_values)),
            "seconds": _round(u.get("seconds"), 2), "worker": u.get("worker", ""),
            "message": u.get("message", ""), **({"imported_from": u[IMPORTED_FROM]} if IMPORTED_FROM in u else {}),
            **{f"params.{k}": v for k, v in t.params.items()}}


def ranking_note(rows: Collection[Mapping[str, Any]]) -> str | None:
    """Why a pruned trial sits below a complete one with a lower val acc on the leaderboard (`status` ranks complete
    trials first): the line said under it, or None where no row looks out of order."""
    complete = [r["val_acc"] for r in rows if r["state"] == "complete" and r["val_acc"] is not None]
    pruned = [r["val_acc"] for r in rows if r["state"] == "pruned" and r["val_acc"] is not None]
    if not complete or not pruned or max(pruned) <= min(complete):
        return None
    return ("complete trials rank first, by val acc: `best` picks the winner from them; pruned trials follow, by the "
            "best val acc they reached in the fewer epochs before they were pruned")


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
    every = [t for t in study.get_trials(deepcopy=False) if outcome(t) != "duplicate"]
    trials = [t for t in every if not is_imported(t)]  # this study's own: what --trials counts
    counts: dict[str, int] = {}
    for t in trials:
        counts[outcome(t)] = counts.get(outcome(t), 0) + 1
    complete = [t for t in every if t.state == TrialState.COMPLETE]  # the best may be an imported trial
    best = max(complete, key=lambda t: cast(float, t.value)) if complete else None  # complete: value set
    running = [{"number": t.number,
                "worker": t.user_attrs.get("worker") or t.system_attrs.get("owner", {}).get("worker", ""),
                "epoch": len(t.intermediate_values), "epochs": max_epochs,
                "val_acc": _round(list(t.intermediate_values.values())[-1]) if t.intermediate_values else None,
                "progress": t.user_attrs.get(PROGRESS), "ours": _is_ours(t, ours), "params": t.params}
               for t in trials if t.state == TrialState.RUNNING]
    finished = sorted((t for t in trials if is_finished(t)), key=lambda t: (t.datetime_complete is None,
                                                                          t.datetime_complete), reverse=True)
    recent = [{**{k: trial_row(t)[k] for k in ("number", "state", "val_acc", "epochs", "seconds", "message")},
               "ours": _is_ours(t, ours)} for t in finished[:RECENT]]
    snap = {"study": study.study_name, "target": target, "finished": len(finished), "counts": counts,
            "imported": len(every) - len(trials),
            "requeued": sum(1 for t in trials if t.state == TrialState.WAITING and "retry_of" in t.user_attrs),
            "running": running, "recent": recent,
            "best": None if best is None else {"number": best.number, "val_acc": _round(best.value),
                                               "epochs": best.user_attrs.get("epochs"), "params": best.params}}
    forecast = study.user_attrs.get(FORECAST) or {}  # `run`'s, timed on its machine
    snap.update(eta(trials, finished, target, max_epochs, pruner or PrunerSpec(type="none"), workers,
                    forecast.get("s_per_epoch"), costs_left(trials, forecast.get(TICKET_COSTS) or {})))
    return snap


def costs_left(trials: list[FrozenTrial], ticket_costs: Mapping[str, float]) -> list[float] | None:
    """The cost (eta.COST) of every ticket not finished: a running trial's own, a waiting one's as `run` costed it at
    its start (`ticket_costs`); None when one is unknown (TPE's tickets, a study `run` started before these existed)."""
    costs = []
    for t in trials:
        if t.state in (TrialState.WAITING, TrialState.RUNNING):
            c = t.user_attrs.get(COST) or ticket_costs.get(str(t.user_attrs.get(TICKET)))
            if not isinstance(c, (int, float)) or c <= 0:
                return None
            costs.append(float(c))
    return costs or None


def _is_ours(t: FrozenTrial, ours: tuple[str, Collection[int]] | None) -> bool:
    owner = t.system_attrs.get("owner") or {}
    return ours is None or (owner.get("host") == ours[0] and owner.get("pid") in ours[1])


def status(study: optuna.Study, target: int, max_epochs: int, top: int = 10, pruner: PrunerSpec | None = None,
           workers: int = 1, stop: StopSpec | None = None) -> dict[str, Any]:
    """The leaderboard, counts by state, epochs trained vs. the unpruned budget, param importances, the ETA,
    whether the study stopped on a plateau (`plateau`: the line saying so, or None) and whether its top trials are
    a close call for `best --race` (`close_call`)."""
    snap = snapshot(study, target, max_epochs, pruner, workers)
    trials = study.get_trials(deepcopy=False)
    ranked = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                    key=lambda t: (t.state != TrialState.COMPLETE, -(trial_row(t)["val_acc"] or 0)))
    finished = [t for t in trials if is_finished(t) and not is_imported(t)]
    epochs_run = sum(int(trial_row(t)["epochs"] or 0) for t in finished)
    snap.update(leaderboard=[trial_row(t) for t in ranked[:top]], epochs_trained=epochs_run,
                epochs_redone=epochs_redone(trials), epochs_budget=len(finished) * max_epochs,
                importances=importances(study), plateau=plateau(trials, stop),
                importance_basis=importance_basis(study), close_call=close_call(trials))
    return snap


def close_call(trials: list[FrozenTrial]) -> dict[str, Any] | None:
    """Whether `best --race` has something to settle: the top RACE_TOP complete trials (by value) and their spread
    (best minus the last of them), beside a run's seed-to-seed sd (`noise`): the pooled `val_acc_std` of the study's
    own seeds (spec `repeats`) where it has some, else SEED_NOISE; the fewest seeds a top trial's value is the mean
    of (`seeds`); and how many complete and pruned trials (with an epoch) there are to race. None without a complete
    trial."""
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                      key=lambda t: (-float(t.value or 0.0), t.number))
    if not complete:
        return None
    top = complete[:RACE_TOP]
    stds = [float(s) for t in complete if int(t.user_attrs.get("seeds") or 1) > 1
            for s in [t.user_attrs.get("val_acc_std")] if isinstance(s, (int, float))]
    noise = math.sqrt(sum(s * s for s in stds) / len(stds)) if stds else SEED_NOISE
    pruned = sum(1 for t in trials if t.state == TrialState.PRUNED and t.intermediate_values)
    spread = float(top[0].value or 0.0) - float(top[-1].value or 0.0)
    seeds = min(int(t.user_attrs.get("seeds") or 1) for t in top)  # each value is a mean of this many seeds, or more
    return {"top": [t.number for t in top], "spread": round(spread, 6), "noise": round(noise, 6),
            "measured": bool(stds), "seeds": seeds, "complete": len(complete), "pruned": pruned}


def epochs_redone(trials: list[FrozenTrial]) -> int:
    """Epochs trained more than once across interruptions: per ticket, the epochs its attempts trained themselves
    (an attempt resumed from a checkpoint starts after the checkpoint's epochs: RESUMED_FROM) beyond the furthest
    epoch any attempt reached. A kill between two checkpoints costs the epoch in progress, which never finished,
    so 0 here; an attempt that started over (no checkpoint, or one refused) counts the epochs it repeated."""
    by_ticket: dict[Any, list[tuple[int, int]]] = {}
    for t in trials:
        ticket = t.user_attrs.get(TICKET)
        progress = t.user_attrs.get(PROGRESS) or [0]  # (a kill can land between an epoch's report and its progress)
        reached = max(int(t.user_attrs.get("epochs") or 0), int(progress[0]), len(t.intermediate_values))
        own = max(reached - int(t.user_attrs.get(RESUMED_FROM) or 0), 0)
        if ticket is not None and reached:
            by_ticket.setdefault(ticket, []).append((reached, own))
    return sum(max(sum(own for _, own in runs) - max(reached for reached, _ in runs), 0) for runs in by_ticket.values())
