"""The sampler and the pruner a spec asks for, as Optuna objects."""

from __future__ import annotations

import optuna

from fer_sweep.sweep.spec import PrunerSpec, SweepSpec


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed)
    return optuna.samplers.RandomSampler(seed=spec.seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    return pruner_for(spec.pruner, spec.max_epochs)


def pruner_for(p: PrunerSpec, epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner of a spec's `pruner` section, for trials of at most `epochs` epochs."""
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_epochs, max_resource=max(epochs, p.min_epochs + 1),
                                              reduction_factor=p.reduction_factor)
    if p.type == "asha":
        # Asynchronous successive halving: rungs at min_epochs * reduction_factor**k epochs; at each rung a
        # trial goes on only if it is in the top 1/reduction_factor of the trials that reached that rung so
        # far. No brackets and no waiting for a full cohort, so K workers never idle (Li et al. 2020).
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_epochs, reduction_factor=p.reduction_factor,
                                                      min_early_stopping_rate=0)
    return optuna.pruners.NopPruner()


def rungs(p: PrunerSpec, epochs: int, bracket: int = 0) -> list[int]:
    """The epochs at which an asha/hyperband trial of at most `epochs` epochs may be stopped: min_epochs *
    reduction_factor**k below `epochs` (hyperband's bracket b starts at min_epochs * reduction_factor**b)."""
    found, at = [], p.min_epochs * p.reduction_factor ** bracket
    while at < epochs:
        found.append(at)
        at *= p.reduction_factor
    return found


def epochs_ahead(p: PrunerSpec, epochs: int, done: int = 0) -> float:
    """Epochs a trial that has trained `done` of at most `epochs` can be expected still to train under the pruner.

    asha: to the next rung for sure, then past each rung with chance 1/reduction_factor (the top 1/reduction_factor
    go on); hyperband: the same, averaged over its brackets. The median pruner and none have no rungs: every epoch
    is counted (what can still be trained, not what will be)."""
    if p.type not in ("asha", "hyperband"):
        return float(max(epochs - done, 0))
    brackets = range(len(rungs(p, epochs)) or 1) if p.type == "hyperband" else range(1)
    total = 0.0
    for b in brackets:
        expected, chance, at = 0.0, 1.0, done
        for stop in [r for r in rungs(p, epochs, b) if r > done] + [epochs]:
            expected += chance * max(stop - at, 0)
            at, chance = stop, chance / p.reduction_factor
        total += expected
    return total / len(brackets)
