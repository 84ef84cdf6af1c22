"""The ETA of a study: epochs still possible under the pruner's rungs x measured seconds per epoch, per worker."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

from fer_sweep.sweep.policies import epochs_ahead
from fer_sweep.sweep.spec import PrunerSpec

PROGRESS = "progress"  # user attr of a trial while it trains: [epochs, train seconds so far] (times the ETA)
RECENT_EPOCHS = 12  # the ETA's speed: at least this many of the latest timed epochs
FORECAST = "forecast"  # study user attr: {"s_per_epoch": the start-of-run forecast over the space, per worker}
PRIOR_TRIALS = 3  # the forecast weighs as much as this many timed trials in the ETA's speed
COST = "cost"  # user attr of a trial: training FLOPs per image of one epoch, all its seeds (the worker counts them)
TICKET_COSTS = "ticket_costs"  # in FORECAST: {ticket: COST} of the configurations left when `run` started


def recent_epochs(trials: list[FrozenTrial]) -> list[tuple[int, float, float | None]]:
    """(epochs, seconds, cost or None) of each trial timed latest: every running trial's progress, then trials that
    ended (finished, and cut short: interrupted, crashed; their epochs ran), latest end first, until `RECENT_EPOCHS`
    epochs."""
    def ended_at(t: FrozenTrial) -> tuple[float, int]:
        return (t.datetime_complete.timestamp() if t.datetime_complete else 0.0, t.number)

    now = [(int(p[0]), float(p[1]), _cost(t)) for t in trials
           if t.state == TrialState.RUNNING and isinstance(p := t.user_attrs.get(PROGRESS), list)]
    ended = [(int(t.user_attrs.get("epochs") or 0), float(t.user_attrs.get("train_seconds") or 0), _cost(t))
             for t in sorted(trials, key=ended_at, reverse=True)
             if t.state not in (TrialState.RUNNING, TrialState.WAITING)]
    window: list[tuple[int, float, float | None]] = []
    for i, (e, s, c) in enumerate(now + ended):
        if i >= len(now) and sum(w[0] for w in window) >= RECENT_EPOCHS:
            break
        if e > 0 and s > 0:
            window.append((e, s, c))
    return window


def recent_epoch_seconds(trials: list[FrozenTrial]) -> tuple[int, float]:
    """(epochs, seconds) of the latest timed epochs (`recent_epochs`)."""
    window = recent_epochs(trials)
    return sum(e for e, _, _ in window), sum(s for _, s, _ in window)


def _cost(t: FrozenTrial) -> float | None:
    c = t.user_attrs.get(COST)
    return float(c) if isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 else None


def measured_speed(trials: list[FrozenTrial], costs_left: list[float] | None = None) -> float | None:
    """Seconds per epoch of the configurations left, measured: the latest timed epochs' seconds per unit of cost
    (the machine's speed now) x the mean cost of the trials left (`costs_left`, where each is known: random search
    fixed them as it enqueued them), else of the trials met so far (each once: what an epoch of the space costs).
    Configurations differ ~4x in cost (conv widths), so the latest trial's seconds alone say as much about which
    configuration ran last as about the machine. Without every cost of the window known (a study of an older
    version): the latest epochs' mean. None before any epoch is timed."""
    window = recent_epochs(trials)
    epochs, seconds = sum(e for e, _, _ in window), sum(s for _, s, _ in window)
    if not epochs:
        return None
    costs = costs_left or [c for t in trials if (c := _cost(t)) is not None]
    if any(c is None for *_, c in window) or not costs:
        return seconds / epochs
    work = sum(e * c for e, _, c in window if c is not None)
    return seconds / work * (sum(costs) / len(costs))


def epoch_speed(trials: list[FrozenTrial], forecast: float | None,
                costs_left: list[float] | None = None) -> tuple[float | None, int, int]:
    """(seconds per epoch, epochs timed, trials timed) the ETA uses: the latest timed epochs' speed
    (`measured_speed`: the machine's speed now, scaled by cost to the configurations met), pulled towards the
    start-of-run forecast over the whole space (`forecast`, when `run` stored one) as if it were PRIOR_TRIALS more
    trials against the trials timed so far (the configurations met: what the forecast stands in for). The
    configurations of a search differ 3-4x in cost, so the first one or two timed trials alone would make the ETA
    swing; as trials are timed, the measurement takes over. None before any epoch is timed and without a
    forecast."""
    epochs, _ = recent_epoch_seconds(trials)
    measured = measured_speed(trials, costs_left)
    timed = sum(1 for t in trials if (t.user_attrs.get("epochs") or (t.user_attrs.get(PROGRESS) or [0])[0]))
    if forecast is None or forecast <= 0:
        return measured, epochs, timed
    if measured is None:
        return forecast, 0, 0
    return (PRIOR_TRIALS * forecast + timed * measured) / (PRIOR_TRIALS + timed), epochs, timed


def eta(trials: list[FrozenTrial], finished: list[FrozenTrial], target: int, max_epochs: int, pruner: PrunerSpec,
        workers: int = 1, forecast: float | None = None, costs_left: list[float] | None = None) -> dict[str, Any]:
    """The projected time to finish the study: epochs still possible under the pruner's rungs x measured seconds
    per epoch (plus each trial's set-up), divided among the workers.

    Seconds per epoch are pooled over the most recent timed epochs in the storage (running trials from their
    `progress` first, then trials that ended, finished or cut short, latest first, until `RECENT_EPOCHS` epochs), so
    they are measured on the machines and with the worker count running now, whoever reads them: a study resumed on
    another machine, or on one less busy, is not timed by its first session; where the trials carry their cost
    (COST, FLOPs), as seconds per unit of cost, times the mean cost of the trials left (`costs_left`: each
    unfinished ticket's, when all are known) or else of the trials met (`measured_speed`).
    Epochs left: for each ticket not
    started, `policies.epochs_ahead` (asha/hyperband: to each rung with the chance of being promoted; median/none:
    every epoch), or the mean epochs of the finished trials where that is fewer (early stopping, the median pruner);
    for each running trial, what it may still train. `eta_max_s` counts every epoch of every unfinished trial (no
    pruning at all). Workers: those running a trial now, or `workers`, whichever is more. None until the first epoch
    is timed, unless `run` stored its start-of-run forecast (`forecast`: seconds per epoch over the space), which
    then sets the speed, and weighs as PRIOR_TRIALS trials once epochs are timed (`epoch_speed`). `finished`: the
    trials of `trials` that reached a verdict (`summary.is_finished`)."""
    running = [t for t in trials if t.state == TrialState.RUNNING]
    spe, epochs_timed, trials_timed = epoch_speed(trials, forecast, costs_left)
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
             "s_per_epoch": round(spe, 3) if spe is not None else None,
             "s_per_epoch_forecast": round(forecast, 3) if forecast else None, "timed_trials": trials_timed,
             "s_setup_per_trial": round(setup, 2),
             "timed_epochs": epochs_timed, "workers": k, "pruner": pruner.type}
    if fresh + len(running) == 0:
        return {"eta_s": 0.0, "eta_max_s": 0.0, "eta_basis": basis}
    if spe is None:
        return {"eta_s": None, "eta_max_s": None, "eta_basis": basis}
    return {"eta_s": round((left * spe + fresh * setup) / k, 1),
            "eta_max_s": round((left_max * spe + fresh * setup) / k, 1), "eta_basis": basis}
