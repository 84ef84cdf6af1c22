"""The search space: the only place that calls `trial.suggest_*`, and the only place params become a RunConfig."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import optuna

from fer_sweep.config import ModelConfig, RunConfig, TrainConfig, canonical_tta
from fer_sweep.sweep.optuna_api import replay_study
from fer_sweep.sweep.spec import MODEL_FIELDS, SweepSpec, decode_choice


def sample_params(trial: optuna.trial.BaseTrial, spec: SweepSpec) -> dict[str, Any]:
    """Suggest every searched parameter of `spec` on `trial` (a live Trial or a FixedTrial replay)."""
    params: dict[str, Any] = {}
    for p in spec.space:
        if p.choices:
            params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.is_int:
            low, high = p.bounds()
            params[p.name] = trial.suggest_int(p.name, int(low), int(high), step=int(p.step or 1), log=p.log)
        else:
            low, high = p.bounds()
            params[p.name] = trial.suggest_float(p.name, low, high, step=p.step, log=p.log)
    return params


def distributions(spec: SweepSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each searched parameter's Optuna distribution, as `sample_params`' suggest_* calls make it (a trial added
    from outside the sweep, such as one imported by `run --from`, must carry the same ones)."""
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    for p in spec.space:
        if p.choices:
            dists[p.name] = optuna.distributions.CategoricalDistribution(list(p.choices))
        elif p.is_int:
            low, high = p.bounds()
            dists[p.name] = optuna.distributions.IntDistribution(int(low), int(high), step=int(p.step or 1), log=p.log)
        else:
            low, high = p.bounds()
            dists[p.name] = optuna.distributions.FloatDistribution(low, high, step=p.step, log=p.log)
    return dists


def to_run_config(params: Mapping[str, Any], spec: SweepSpec, **train_overrides: Any) -> RunConfig:
    """Merge fixed settings and sampled params into a typed RunConfig (params win; overrides win over both)."""
    values = {**spec.model, **spec.train, **{k: decode_choice(k, v) for k, v in params.items()}}
    values.update({k: v for k, v in train_overrides.items() if v is not None})
    model = {k: v for k, v in values.items() if k in MODEL_FIELDS}
    train = {k: v for k, v in values.items() if k not in MODEL_FIELDS}
    if "tta" in train:  # flip/none as true/false: model folders read as they always did; tencrop by name
        train["tta"] = canonical_tta(train["tta"])
    return RunConfig(model=ModelConfig(**model), train=TrainConfig(**train))


def config_key(params: Mapping[str, Any]) -> str:
    """One configuration's identity among the searched params (what the random search draws once)."""
    return repr(sorted(params.items()))


def sample_configs(spec: SweepSpec, n: int, avoid: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The first `n` configurations of the seeded random search, the same whatever the worker count.

    Config i depends only on the spec's seed and i, so `--trials 30` extends `--trials 20` with
    10 new configs and leaves the first 20 as they were.
    Duplicates are redrawn (a random search that tries one config twice wastes a trial) until the
    space runs out of new configs. Configurations in `avoid` (trials imported by `run --from`, already known) are
    not drawn either.
    """
    study = replay_study(spec.seed)
    configs: list[dict[str, Any]] = []
    seen: set[str] = {config_key(a) for a in avoid}
    for _ in range(100 * n):
        if len(configs) == n:
            break
        trial = study.ask()
        params = sample_params(trial, spec)
        study.tell(trial, 0.0)
        key = config_key(params)
        if key not in seen or _draws_exhausted(len(seen), spec):
            seen.add(key)
            configs.append(params)
    return configs


def _draws_exhausted(n_seen: int, spec: SweepSpec) -> bool:
    """True when every config of a finite space has been drawn, so repeats are unavoidable."""
    size = 1
    for p in spec.space:
        if p.choices:
            size *= len(p.choices)
        elif p.is_int and p.log:
            size *= 10**9
        elif p.is_int:
            low, high = p.bounds()
            size *= (int(high) - int(low)) // int(p.step or 1) + 1
        else:
            return False
    return n_seen >= size
