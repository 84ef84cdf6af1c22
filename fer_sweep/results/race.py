"""`best --race K`: before the retrain, the top K configurations of the sweep (its complete trials, best value first,
the older of equals first; where fewer completed, the pruned trials that went furthest) get more seeds at the
sweep's own budget until each has S; the winner is the best mean.

A sweep picks its winner from one seed per configuration (or `repeats: k` seeds), so the top few are often within a
seed's noise of each other: the race measures that noise. A trial's seeds are base, base + 1, ... (base: its config's
train seed); one with k seeds (user attrs `seed_values`, a `repeats: k` sweep's) has base .. base + k - 1 and one of
an older study or of `repeats: 1` has one, its value. The race trains base + k .. base + S - 1 (a trial with S or more
seeds trains none; all its seeds count; a pruned trial's run stopped short of the budget, so it has none and the race
trains base .. base + S - 1), each exactly as the sweep trained its trials (the trial's config: epochs,
patience, validation every epoch, `dead_after`; no pruning), each seed's value its best validation accuracy. The
test split is never read: the race selects, the retrain that follows tests once.

Resumable: each finished race seed is saved whole in <study>/race/t<N>-s<seed>/ (model.pt, config.json, run.json:
its value, epochs, history and what identifies it), written into race/.incoming-t<N>-s<seed>/ and renamed in, so a
kill leaves no half-written folder; a second race reuses every finished seed of the same trial, seed, configuration,
data and splits. A seed stopped mid-way (Ctrl-C, SIGTERM, a kill) goes on from its last epoch's checkpoint
(race/.checkpoints/t<N>-s<seed>.pt). `best --ensemble` pools the race's models (ensemble/pool.py).

p_best: each candidate's probability of having the best mean, by bootstrap over its seeds (`p_best`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import statistics
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from fer_sweep.config import EpochResult, Notice, RunConfig, UserError
from fer_sweep.data.splits import Splits
from fer_sweep.files import write_atomic
from fer_sweep.learn.checkpoint import CONFIG_FILE, MODEL_FILE, save_model, state_dict_cpu
from fer_sweep.sweep.checkpoints import load_checkpoint, remove_checkpoint, save_checkpoint
from fer_sweep.sweep.spec import SweepSpec
from fer_sweep.sweep.trial import (Training, TrialContext, checkpoint_config, finish_tracking, seed_config,
                                   trial_config)

RACE = "race"  # <study folder>/race/t<N>-s<seed>/: the race's finished seeds
RUN_FILE = "run.json"  # a finished race seed's value, epochs, history and identity
CHECKPOINTS = ".checkpoints"  # race/.checkpoints/t<N>-s<seed>.pt: the epoch checkpoint of a seed in training
DRAWS = 2000  # bootstrap draws of p_best
SEEDS = 3  # --race-seeds' default
DIGITS = 6  # decimals of a seed's value, the sweep's and the race's alike (the sweep stores `seed_values` so): equal
#             accuracies compare equal

RaceProgress = Callable[[int, int, EpochResult, int], None]  # on_epoch(trial, seed, result, epochs)


def race(spec: SweepSpec, study: optuna.Study, folder: Path, splits: Splits, *, k: int, seeds: int = SEEDS,
         device: str = "auto", wandb_mode: str = "disabled",
         on_epoch: Optional[RaceProgress] = None) -> dict[str, Any]:
    """Race the top `k` complete trials to `seeds` seeds each (module docstring). Returns {"race": one entry per
    candidate, best mean first ({trial, params, seeds, values, mean, std, p_best, ...}), "winner": the winning
    trial's number, "notes": [...], "draws": DRAWS}. `on_epoch(trial, seed, result, epochs)` sees every epoch
    trained."""
    trials, notes = candidates(study, k)
    ctx = TrialContext.open(spec, folder, device=device, wandb_mode=wandb_mode, splits=splits)
    entries = [_race_trial(ctx, t, seeds, on_epoch) for t in trials]
    for entry, p in zip(entries, p_best([e["values"] for e in entries])):
        entry["p_best"] = p
    # the best mean wins; of equal means, the better trial of the sweep (`trials` is in the sweep's order)
    order = sorted(range(len(entries)), key=lambda i: (-statistics.fmean(entries[i]["values"]), i))
    ranked = [entries[i] | {"rank": r + 1} for r, i in enumerate(order)]
    return {"race": ranked, "winner": ranked[0]["trial"], "notes": notes, "draws": DRAWS}


def candidates(study: optuna.Study, k: int) -> tuple[list[FrozenTrial], list[str]]:
    """The top `k` configurations: the complete trials by value, the older of equals first; where fewer than `k`
    completed (ASHA stops most trials early), then the pruned trials that went furthest (the most epochs reported,
    then the best validation accuracy reported, then the older). Failed trials and pruned ones without an epoch never
    race. A note says when pruned trials race, and when there are fewer than `k`; UserError when fewer than two
    (nothing to race)."""
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: (-float(t.value or 0.0), t.number))
    pruned = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
                     if t.intermediate_values),
                    key=lambda t: (-max(t.intermediate_values), -max(t.intermediate_values.values()), t.number))
    chosen = complete[:k] + pruned[:max(k - len(complete), 0)]
    if len(chosen) < 2:
        raise UserError(f"--race: study {study.study_name!r} has {len(complete)} complete trial"
                        f"{'s' * (len(complete) != 1)} and no pruned trial with an epoch to fill the race: nothing to "
                        "race (run or resume the sweep first)")
    notes = []
    if len(chosen) > len(complete):
        extra = chosen[len(complete):]
        furthest = sorted({max(t.intermediate_values) for t in extra}, reverse=True)
        notes.append(f"--race {k}: the study has {len(complete)} complete trial{'s' * (len(complete) != 1)}; "
                     f"{len(extra)} pruned one{'s' * (len(extra) != 1)} (stopped at epoch "
                     f"{'/'.join(map(str, furthest))}) race too, every seed trained to the full budget (a pruned "
                     "run does not count)")
    if len(chosen) < k:
        notes.append(f"--race {k}: the study has {len(chosen)} trials to race; racing all {len(chosen)}")
    return chosen, notes


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    """The study's trial `number` (the race's winner, for the retrain)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def sweep_values(trial: FrozenTrial) -> list[float]:
    """The values of the seeds the sweep trained for a trial, in seed order: its `seed_values` (a `repeats: k`
    sweep's), else its value (one seed); to DIGITS decimals, as the sweep stores seed values."""
    values = trial.user_attrs.get("seed_values")
    if isinstance(values, list) and values and all(isinstance(v, (int, float)) for v in values):
        return [round(float(v), DIGITS) for v in values]
    return [round(float(trial.value or 0.0), DIGITS)]


def p_best(values: Sequence[Sequence[float]], *, draws: int = DRAWS, seed: int = 0) -> list[float]:
    """Each candidate's probability of having the best mean: in each of `draws` draws every candidate's values are
    resampled with replacement (as many as it has) and the highest resampled mean wins the draw (equal means share
    it evenly); a candidate's p_best is its share of the draws. Reproducible (a fixed generator seed); the
    probabilities sum to 1 (up to float rounding, far below 1e-9)."""
    rng = np.random.default_rng(seed)
    means = np.stack([np.asarray(v, dtype=np.float64)[rng.integers(0, len(v), size=(draws, len(v)))].mean(axis=1)
                      for v in values]).round(12)  # rounded: equal seeds drawn in another order tie exactly
    best = means == means.max(axis=0)
    return [float(p) for p in (best / best.sum(axis=0)).sum(axis=1) / draws]


def _race_trial(ctx: TrialContext, trial: FrozenTrial, seeds: int, on_epoch: Optional[RaceProgress]) -> dict:
    """One candidate's entry: the sweep's seeds, then each missing seed reused from race/ or trained now."""
    params, cfg = trial_config(trial.params, ctx.spec)  # the sweep's own configuration and budget
    complete = trial.state == TrialState.COMPLETE
    values = sweep_values(trial) if complete else []  # a pruned run stopped short of the budget: it does not count
    have, reused = len(values), 0
    for r in range(have, seeds):
        value, fresh = _race_seed(ctx, trial.number, params, seed_config(cfg, r), on_epoch)
        values.append(value)
        reused += not fresh
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return {"trial": trial.number, "params": dict(trial.params), "seeds": len(values),
            "seed_numbers": [cfg.train.seed + r for r in range(len(values))], "values": values,
            "mean": round(statistics.fmean(values), 4), "std": round(std, 4), "sweep_value": trial.value,
            "sweep_state": "complete" if complete else "pruned",
            "from_sweep": have, "reused": reused, "trained_now": max(seeds - have, 0) - reused}


def _race_seed(ctx: TrialContext, number: int, params: Mapping[str, Any], cfg: RunConfig,
               on_epoch: Optional[RaceProgress]) -> tuple[float, bool]:
    """(value, trained now) of one race seed: its finished folder's value where a race saved it, else trained
    (from its epoch checkpoint where a stopped race left one) and saved."""
    seed = cfg.train.seed
    where, identity = seed_folder(ctx.folder, number, seed), _identity(ctx, params, cfg)
    finished = _finished(where, identity)
    if finished is not None:
        return float(finished["value"]), False
    t = _train(ctx, number, cfg, identity, on_epoch)
    assert t.last is not None  # `fit` yields at least one result (an oom raised in _train)
    value = round(float(t.last.best_val_acc), DIGITS)
    run = {"trial": number, "seed": seed, "value": value, "epochs": t.last.epoch, "best_epoch": t.last.best_epoch,
           "outcome": t.outcome, "message": t.message, "train_s": round(t.train_s, 3), "history": t.history,
           "identity": identity}
    config = checkpoint_config(cfg, ctx.norm(cfg.train.normalize), params, ctx.spec, number)
    _publish(where, state_dict_cpu(t.model), config, run)
    remove_checkpoint(_checkpoint(ctx.folder, number, seed))
    return value, True


def seed_folder(folder: Path, number: int, seed: int) -> Path:
    """Where a finished race seed of trial `number` is saved."""
    return Path(folder) / RACE / f"t{number}-s{seed}"


def race_models(folder: Path) -> list[Path]:
    """The finished race seeds' folders of a study (each with model.pt, config.json and run.json), by name."""
    race_dir = Path(folder) / RACE
    if not race_dir.is_dir():
        return []
    return sorted(p for p in race_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and all((p / name).is_file() for name in (MODEL_FILE, CONFIG_FILE, RUN_FILE)))


def _checkpoint(folder: Path, number: int, seed: int) -> Path:
    return Path(folder) / RACE / CHECKPOINTS / f"t{number}-s{seed}.pt"


def _identity(ctx: TrialContext, params: Mapping[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """What a saved race seed (or its checkpoint) must share with the seed that reuses it: the params, data and
    splits (the trial checkpoints' identity), the seed and the whole configuration; as JSON reads it back."""
    identity = {**ctx.identity(params), "seed": cfg.train.seed, "model": dataclasses.asdict(cfg.model),
                "train": dataclasses.asdict(cfg.train)}
    return json.loads(json.dumps(identity, default=str))


def _train(ctx: TrialContext, number: int, cfg: RunConfig, identity: dict[str, Any],
           on_epoch: Optional[RaceProgress]) -> Training:
    """Train one race seed as the sweep trains a trial (no pruning), its epochs checkpointed, tracked as a run of job
    type race; Ctrl-C or SIGTERM leaves its last epoch's checkpoint and says so (`e.stopped`)."""
    seed, path = cfg.train.seed, _checkpoint(ctx.folder, number, cfg.train.seed)
    resume = load_checkpoint(path, identity, cfg.train)
    if resume is not None:
        warnings.warn(Notice(f"race: trial {number} seed {seed} resumes at epoch {len(resume['history']) + 1} from "
                             "its checkpoint"), stacklevel=2)
    progress = (lambda r: on_epoch(number, seed, r, cfg.train.epochs)) if on_epoch else None
    run = ctx.track(cfg, f"{ctx.spec.study}-race-t{number}-s{seed}", job_type="race", trial=number)
    t = Training.start(cfg)
    try:
        ctx.fit(t, run, on_epoch=progress, resume=resume, save=partial(save_checkpoint, path, identity))
    except KeyboardInterrupt as e:  # the epochs saved so far are kept
        with contextlib.suppress(Exception):  # the stop is what the caller reports, not a tracking failure
            finish_tracking(run, t, "interrupted")
        e.stopped = f"race: trial {number} seed {seed} goes on from its last saved epoch"  # type: ignore[attr-defined]
        raise
    finish_tracking(run, t, t.outcome)
    if t.outcome == "oom" or t.last is None:
        raise UserError(f"race: trial {number} seed {seed}: {t.message or 'out of memory'} (the sweep's own "
                        "configuration; free memory or pick another --device, then run the same command)")
    return t


def _publish(where: Path, state: dict, config: dict, run: dict[str, Any]) -> None:
    """Save a finished race seed whole: into race/.incoming-<name>/, then renamed to `where` (a stale folder of
    another identity there is replaced)."""
    stage = where.with_name(f".incoming-{where.name}")
    shutil.rmtree(stage, ignore_errors=True)  # a killed publish's
    save_model(stage, state, config)
    write_atomic(stage / RUN_FILE, json.dumps(run, indent=2))
    shutil.rmtree(where, ignore_errors=True)
    stage.rename(where)


def _finished(where: Path, identity: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The run.json of a race seed saved whole in `where` for this identity, else None (train it)."""
    if not all((where / name).is_file() for name in (MODEL_FILE, CONFIG_FILE, RUN_FILE)):
        return None
    try:
        run = json.loads((where / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) and run.get("identity") == identity and "value" in run else None
