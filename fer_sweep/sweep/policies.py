"""The sampler and the pruner a spec asks for, as Optuna objects."""

from __future__ import annotations

import optuna

from fer_sweep.sweep.spec import PrunerSpec, SweepSpec


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed)
    return optuna.samplers.RandomSampler(seed=spec.seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    return pruner_for(spec.pruner, int(spec.train.get("epochs", 15)))


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
