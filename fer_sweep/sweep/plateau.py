"""Stop a study on a plateau (spec `stop: {patience: P, min_delta: D}`): once P trials in a row have finished
without raising the best validation accuracy by D percentage points, no new trial starts; the ones running finish.

A pure function of the finished trials, in the order they finished: every worker, machine and later `run` reaches
the same verdict, and a larger `--trials` after a stop goes on only with `run --no-stop` or another `stop:`."""

from __future__ import annotations

from typing import Iterable, Optional

from optuna.trial import FrozenTrial, TrialState

from fer_sweep.sweep.spec import StopSpec


def plateau(trials: Iterable[FrozenTrial], stop: Optional[StopSpec]) -> Optional[str]:
    """The line saying the study stopped on a plateau ("stopped on a plateau: the last 2 finished trials did not raise
    the best validation accuracy by 0.5 points ..."), or None while it has not (or without `stop`). A trial gains
    when its value beats the best before it by at least D points (D = 0: beats it at all); the first complete trial
    always gains; pruned trials never do."""
    if stop is None:
        return None
    done = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                  key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    best: Optional[float] = None
    since = 0  # finished trials since the last gain
    for t in done:
        value = t.value if t.state == TrialState.COMPLETE else None
        gain = value is not None and (best is None or (value - best >= stop.min_delta / 100 if stop.min_delta > 0
                                                        else value > best))
        if gain:
            best, since = value, 0
        else:
            since += 1
    if since < stop.patience:
        return None
    by = f" by {stop.min_delta:g} points" if stop.min_delta > 0 else ""
    return (f"stopped on a plateau: the last {since} finished trials did not raise the best validation accuracy{by} "
            f"(stop: patience {stop.patience})")
