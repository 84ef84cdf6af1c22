"""What a sweep will take on this machine, measured before its first trial: `run` says it at the start, and warns
when `--timeout` is shorter than one trial.

Each configuration's cost is counted exactly (training FLOPs per image, torch's flop counter); the cheapest and the
dearest are timed for a few real training steps on the device the trials use (the trainer's own step, precision and
data) and for a validation pass over a few hundred validation faces (as `fit` validates: its TTA, batch size and
precision); the others' seconds per image are interpolated linearly in FLOPs between those two. An epoch is the
training images plus a validation pass. Validation is timed, not assumed a third of a training step: with flip TTA
and an eager (uncompiled) forward it cost 1.2-2.2x a training step per image on a CPU at eval batch 1024, ~0.5x at the
CPU's 128 (benchmarks/RESULTS.md), a large share of an epoch when a small slice trains and all of PublicTest
validates. The configurations costed are those left to run (random search fixed them as it enqueued them), not the
seeded search's first ones: a resumed or warm-started study has other ones left. The sweep's
likely time counts, per trial left, the epochs the pruner lets a trial train on average (policies.epochs_ahead,
the same as the ETA); the worst case every epoch of every trial. It rests on a few steps, not on whole epochs, so it
misses data loading and set-up; the ETA replaces it once epochs are timed."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from fer_sweep.config import RunConfig
from fer_sweep.learn.device import DeviceSplit
from fer_sweep.learn.models import model_for
from fer_sweep.learn.throughput import train_flops_per_image
from fer_sweep.learn.train import eval_seconds_per_image, train_throughput
from fer_sweep.sweep.policies import epochs_ahead
from fer_sweep.sweep.space import to_run_config
from fer_sweep.sweep.spec import SweepSpec

STEPS, WARMUP = 4, 2  # timed training steps per measured configuration, after warm-up steps
EVAL_IMAGES = 512  # validation faces timed per measured configuration


def estimate(spec: SweepSpec, train: DeviceSplit, val: DeviceSplit, left: Sequence[Mapping[str, Any]],
             devices: int = 1, steps: int = STEPS) -> Optional[dict[str, Any]]:
    """{s_per_epoch (of the first configuration's trial: all its seeds, spec `repeats`), s_per_epoch_mean (over the
    configurations: the ETA's prior), s_per_epoch_min, s_per_epoch_max, trial_s (the first configuration's whole
    trial), likely_s, worst_s, trials_left, devices, steps, costs (each configuration's training FLOPs per image of
    an epoch, all its seeds: the unit of the workers' COST)} for the configurations `left` (their params, in the
    order they run: `study.tickets_left`), or None when none is left. `devices`: GPUs the trials are spread over (CPU
    workers share the cores: 1)."""
    if not left:
        return None
    configs = [to_run_config(p, spec) for p in left]
    device = train.x.device
    counted: dict[str, float] = {}  # configurations that differ only in what costs no FLOPs are counted once

    def flops_of(c: RunConfig) -> float:
        key = repr((dataclasses.replace(c.model, dropout=0.0, stage_dropout=0.0), c.train.crop, c.train.amp))
        if key not in counted:
            counted[key] = train_flops_per_image(model_for(c, seed=0), c.train, device)
        return counted[key]

    flops = [flops_of(c) for c in configs]
    cheap, dear = flops.index(min(flops)), flops.index(max(flops))
    s_per_image, s_per_val_image = {}, {}
    for i in dict.fromkeys((cheap, dear)):
        model = model_for(configs[i], seed=0)
        timed = train_throughput(model, train, configs[i].train, steps=steps, warmup=WARMUP)
        s_per_image[i] = 1.0 / timed["train_img_per_s"]
        s_per_val_image[i] = eval_seconds_per_image(model, train, val, configs[i].train, EVAL_IMAGES)

    def between(per: dict[int, float], i: int) -> float:
        if flops[dear] == flops[cheap]:
            return per[cheap]
        share = (flops[i] - flops[cheap]) / (flops[dear] - flops[cheap])
        return per[cheap] + share * (per[dear] - per[cheap])

    def epoch_s(i: int) -> float:  # a trial's epoch trains and validates each of its seeds
        return (between(s_per_image, i) * len(train) + between(s_per_val_image, i) * len(val)) * spec.repeats

    per_epoch = [epoch_s(i) for i in range(len(configs))]
    budgets = [c.train.epochs for c in configs]
    likely = sum(s * min(epochs_ahead(spec.pruner, e), e) for s, e in zip(per_epoch, budgets))
    worst = sum(s * e for s, e in zip(per_epoch, budgets))
    k = max(devices, 1)
    return {"s_per_epoch": round(per_epoch[0], 4), "s_per_epoch_mean": round(sum(per_epoch) / len(per_epoch), 4),
            "s_per_epoch_min": round(min(per_epoch), 4),
            "s_per_epoch_max": round(max(per_epoch), 4), "trial_s": round(per_epoch[0] * budgets[0], 1),
            "likely_s": round(likely / k, 1), "worst_s": round(worst / k, 1), "trials_left": len(configs),
            "devices": k, "steps": steps, "costs": [round(f * spec.repeats) for f in flops]}
