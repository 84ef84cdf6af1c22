"""Load and validate a sweep spec (`sweeps/*.yaml`) into a frozen `SweepSpec`; errors name file and key."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NoReturn

import yaml

from fer_sweep.config import (
    AMP_MODES,
    FER2013_SOURCE,
    HEADS,
    IMAGE_SIZE,
    NORMALIZATIONS,
    NORMS,
    OPTIMIZERS,
    POOLINGS,
    SCHEDULES,
    TTA_MODES,
    ModelConfig,
    TrainConfig,
    UserError,
)

SAMPLERS = ("random", "tpe")
PRUNERS = ("median", "hyperband", "asha", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")
DEAD_AFTER = 2  # spec `dead_after`: epochs at the majority-class rate (or of rising loss) that end a trial
MAX_REPEATS = 10  # spec `repeats`: seeds per configuration (each one a whole training)
KEEP = 10  # trial models kept by default (~5 MB each for the shipped specs' CNNs: docs/ensembles.md)
TOP_KEYS = ("study", "data", "splits", "trials", "seed", "sampler", "pruner", "wandb", "model",
            "train", "space", "best", "keep", "stop", "dead_after", "repeats")
# The names each setting allows; `arch` is checked against the model registry itself (`known_names`).
NAMED = {"norm": NORMS, "pooling": POOLINGS, "head": HEADS, "optimizer": OPTIMIZERS,
         "schedule": SCHEDULES, "normalize": NORMALIZATIONS, "amp": AMP_MODES}
# (min, max, max inclusive) for numeric settings; min is always inclusive.
BOUNDS = {"dropout": (0, 1, False), "stage_dropout": (0, 1, False), "fc_units": (0, None, True),
          "depth": (1, 8, True), "epochs": (1, None, True), "batch_size": (1, None, True),
          "lr": (1e-12, None, True), "weight_decay": (0, None, True), "momentum": (0, 1, False),
          "warmup_epochs": (0, None, True), "label_smoothing": (0, 1, False), "grad_clip": (0, None, True),
          "patience": (0, None, True), "aug_translate_px": (0, 24, True), "aug_rotate_deg": (0, 180, True),
          "aug_scale": (0, 1, False), "aug_erase_p": (0, 1, True), "eval_batch_size": (1, None, True),
          "mixup_alpha": (0, None, True), "cutmix_alpha": (0, None, True), "mix_prob": (0, 1, True),
          "tta_shift_px": (0, 8, True), "crop": (0, IMAGE_SIZE, True), "ema": (0, 1, False),
          "plateau_factor": (1e-6, 1, False), "plateau_patience": (0, None, True)}
INTERNAL_FIELDS = ("lr_plan",)  # TrainConfig fields that `best` sets, never a spec
MODEL_FIELDS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
UNSET_AS = {"eval_batch_size": 1024}  # a field whose default None means "the device's", checked as this type
TRAIN_FIELDS = {f.name: UNSET_AS.get(f.name, f.default) for f in dataclasses.fields(TrainConfig)
                if f.name not in INTERNAL_FIELDS}  # each setting's type exemplar (check_value)


class SpecError(UserError):
    """A sweep spec that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: categorical `choices`, or a numeric range `low`..`high`."""

    name: str
    choices: tuple = ()  # optuna-ready values (lists are JSON-encoded strings)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    is_int: bool = False

    def bounds(self) -> tuple[float, float]:
        """(low, high) of a numeric parameter: parse_spec sets both whenever a parameter has no choices."""
        assert self.low is not None and self.high is not None, f"{self.name}: no numeric range"
        return self.low, self.high


@dataclass(frozen=True)
class SplitOptions:
    val_frac: float = 0.1  # carved from train where the data has no PublicTest rows
    test_frac: float = 0.1  # carved from train where the data has no PrivateTest rows (0 = no test)
    seed: int = 0
    synthetic_n: int = 2000  # faces generated for `data: synthetic`


@dataclass(frozen=True)
class PrunerSpec:
    type: str = "median"
    startup_trials: int = 5  # median: trials finished before pruning starts
    warmup_epochs: int = 2  # median: epochs a trial runs before it can be pruned
    min_epochs: int = 1  # hyperband, asha: epochs of the first rung (the smallest budget)
    reduction_factor: int = 3  # hyperband, asha: 1/reduction_factor of a rung's trials go on to the next


@dataclass(frozen=True)
class BestSpec:
    """How `fer-sweep best` retrains the winner unless its flags say otherwise."""

    epochs: int = 0  # epochs of the retrain (0 = the sweep's `train.epochs`)
    seeds: int = 1  # seeds retrained; test accuracy is reported as mean ± std


@dataclass(frozen=True)
class StopSpec:
    """Stop the study on a plateau: once `patience` trials in a row have finished without raising the best
    validation accuracy by `min_delta` percentage points, no new trial starts (sweep/plateau.py)."""

    patience: int = 15  # 5 stopped searches of the notebook grid too soon (docs/strategies.md)
    min_delta: float = 0.0  # in percentage points of validation accuracy (0.5 = half a point)


@dataclass(frozen=True)
class WandbSpec:
    project: str = "fer-sweep"
    entity: str | None = None
    mode: str = "auto"


@dataclass(frozen=True)
class SweepSpec:
    path: str
    study: str
    data: str
    splits: SplitOptions
    trials: int
    seed: int
    sampler: str
    pruner: PrunerSpec
    wandb: WandbSpec
    model: Mapping[str, Any]  # fixed ModelConfig fields
    train: Mapping[str, Any]  # fixed TrainConfig fields
    space: tuple[ParamSpec, ...]
    best: BestSpec
    resolved: Mapping[str, Any]  # the spec as a plain dict with overrides applied (saved as spec.yaml)
    keep: int = KEEP  # trial models kept for ensembles: the best `keep` by val accuracy (0 = none; artifacts.py)
    stop: StopSpec | None = None  # stop on a plateau (spec `stop:`; None: run to `trials`)
    dead_after: int = DEAD_AFTER  # epochs after which a trial that learned nothing ends as diverged (0 = never)
    repeats: int = 1  # seeds per configuration: a trial trains them in step, its value at each epoch is their mean

    @property
    def max_epochs(self) -> int:
        """The largest epoch budget a trial of this spec can have: the top of a searched `epochs` (its largest choice,
        or the top of its range), else the fixed `train.epochs` (TrainConfig's default where the spec sets none).
        The pruner's maximum resource, the ETA and the unpruned budget all use it."""
        for p in self.space:
            if p.name == "epochs" and p.choices:
                return int(max(p.choices))
            if p.name == "epochs":  # an int range: its top step (what Optuna's suggest_int can draw)
                low, high, step = int(p.low), int(p.high), int(p.step or 1)  # type: ignore[arg-type]
                return low + (high - low) // step * step
        return int(self.train.get("epochs", TrainConfig.epochs))


def load_spec(path: str | Path, *, overrides: Mapping[str, Any] | None = None,
              check_data: bool = True) -> SweepSpec:
    """Read, validate and resolve a spec; `overrides` (study, data, trials, seed) win over the file."""
    path = Path(path)
    raw = _read_yaml(path)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    return parse_spec(raw, str(path), check_data=check_data)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise SpecError(f"{path}: {where}invalid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of settings at the top level")
    return raw


def parse_spec(raw: Mapping[str, Any], where: str, *, check_data: bool = True) -> SweepSpec:
    """Validate a spec dict; every error is a SpecError naming `where` and the key."""
    def fail(key: str, msg: str) -> NoReturn:
        raise SpecError(f"{where}: {key}: {msg}")

    _no_unknown(raw, TOP_KEYS, "", fail)
    data = raw.get("data")
    if not isinstance(data, str) or not data:
        fail("data", "required: a FER2013 file or folder, or 'synthetic'")
    if check_data and data != "synthetic" and not Path(data).exists():
        fail("data", f"file not found: {data}: pass --data PATH or set the spec's data: to your FER2013 file "
                     f"({FER2013_SOURCE}), or data: synthetic to try it without")
    study = raw.get("study", Path(where).stem)
    if not isinstance(study, str) or not study or any(c in study for c in "/\\ "):
        fail("study", f"must be a name without spaces or slashes, got {study!r}")
    trials = _number(raw.get("trials", 20), "trials", fail, is_int=True, low=1)
    keep = _number(raw.get("keep", KEEP), "keep", fail, is_int=True, low=0)
    dead_after = _number(raw.get("dead_after", DEAD_AFTER), "dead_after", fail, is_int=True, low=0)
    seed = _number(raw.get("seed", 0), "seed", fail, is_int=True, low=0)
    repeats = _number(raw.get("repeats", 1), "repeats", fail, is_int=True, low=1, high=MAX_REPEATS)
    sampler = raw.get("sampler", "random")
    if sampler not in SAMPLERS:
        fail("sampler", f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
    model = _fixed(raw.get("model") or {}, "model", MODEL_FIELDS, fail)
    train = _fixed(raw.get("train") or {}, "train", TRAIN_FIELDS, fail)
    space = _space(raw.get("space") or {}, fail, fixed=set(model) | set(train))
    _check_recipe(train, space, fail)
    if repeats > 1 and any(p.name == "seed" for p in space):
        fail("repeats", "the seeds of a configuration are seed, seed + 1, ...: do not also search `seed` in space")
    return SweepSpec(
        path=where, study=study, data=data, trials=trials, seed=seed, sampler=sampler,
        splits=_record(SplitOptions, raw.get("splits"), "splits", fail),
        pruner=_pruner(raw.get("pruner"), fail), wandb=_wandb(raw.get("wandb"), fail),
        model=model, train=train, space=space, best=_best(raw.get("best"), fail), resolved=dict(raw), keep=keep,
        stop=_stop(raw.get("stop"), fail) if raw.get("stop") is not None else None, dead_after=dead_after,
        repeats=repeats)


def _check_recipe(train: Mapping[str, Any], space: tuple, fail) -> None:
    """Settings that only make sense together: ten-crop testing needs models trained on random crops."""
    searched = {p.name: p.choices for p in space}
    tta = train.get("tta") if "tta" in train else None
    tencrop = tta == "tencrop" or "tencrop" in (searched.get("tta") or ())
    crops = [train.get("crop", 0)] if "crop" not in searched else [c for c in searched["crop"] or (1,)]
    if tencrop and 0 in crops:
        fail("train.tta" if tta == "tencrop" else "space.tta", "tencrop needs train.crop > 0 (ten crops of crop x "
             "crop pixels from models trained on random crops)")


def _no_unknown(section: Mapping, known, prefix: str, fail) -> None:
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            fail(f"{prefix}{key}", f"unknown key ({hint}known: {', '.join(known)})")


def _number(value, key: str, fail, *, is_int: bool = False, low=None, high=None, high_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (is_int and not isinstance(value, int)):
        fail(key, f"expected {'an integer' if is_int else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        fail(key, f"expected a finite number, got {value!r}")
    if low is not None and value < low:
        fail(key, f"must be >= {low}, got {value!r}")
    if high is not None and (value > high or (not high_inclusive and value == high)):
        fail(key, f"must be {'<=' if high_inclusive else '<'} {high}, got {value!r}")
    return value


def check_value(name: str, value, key: str, fail, default=None):
    """Validate one setting against the type of its dataclass default and its allowed names/bounds."""
    default = default if default is not None else {**MODEL_FIELDS, **TRAIN_FIELDS}[name]
    if name == "conv":
        ok = isinstance(value, (list, tuple)) and value and all(
            isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 and v > 0 for v in s) for s in value)
        if not ok:
            fail(key, f"expected a non-empty list of [channels, kernel] pairs of positive integers, got {value!r}")
        return tuple(tuple(s) for s in value)
    if name == "amp" and isinstance(value, bool):  # older specs: true/false = auto/off
        return "auto" if value else "off"
    if name == "tta":  # true/false (flip/none, as ever) or a mode's name; to_run_config stores it canonically
        if not isinstance(value, bool) and value not in TTA_MODES:
            fail(key, f"unknown tta {value!r} (known: true, false, {', '.join(TTA_MODES)})")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            fail(key, f"expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        lo, hi, inclusive = BOUNDS.get(name, (None, None, True))
        return _number(value, key, fail, is_int=isinstance(default, int), low=lo, high=hi,
                       high_inclusive=inclusive) * (1.0 if isinstance(default, float) else 1)
    known = known_names(name)
    if known and value not in known:
        fail(key, f"unknown {name} {value!r} (known: {', '.join(known)})")
    if not isinstance(value, str):
        fail(key, f"expected a string, got {value!r}")
    return value


def known_names(name: str) -> tuple[str, ...]:
    """The values a named setting allows (empty for a free one): `arch` from the model registry, the only list of
    architectures (imported here, when a spec names one, so importing this module stays free of torch)."""
    if name == "arch":
        from fer_sweep.learn.models import MODELS

        return tuple(MODELS)
    return NAMED.get(name, ())


def _fixed(section, prefix: str, fields: Mapping[str, Any], fail) -> dict:
    if not isinstance(section, dict):
        fail(prefix, "expected a mapping of settings")
    _no_unknown(section, list(fields), f"{prefix}.", fail)
    return {k: check_value(k, v, f"{prefix}.{k}", fail, fields[k]) for k, v in section.items()}


def _space(section, fail, fixed: set[str]) -> tuple[ParamSpec, ...]:
    if not isinstance(section, dict):
        fail("space", "expected a mapping of parameter name to {choices: [...]} or {low, high}")
    fields = {**MODEL_FIELDS, **TRAIN_FIELDS}
    _no_unknown(section, list(fields), "space.", fail)
    params = []
    for name, p in section.items():
        key = f"space.{name}"
        if name in fixed:
            fail(key, "is both fixed (model/train) and searched (space)")
        if not isinstance(p, dict):
            fail(key, "expected {choices: [...]} or {low: ..., high: ...}")
        _no_unknown(p, ("choices", "low", "high", "log", "step"), f"{key}.", fail)
        if "choices" in p:
            params.append(_categorical(name, p, key, fail))
        else:
            params.append(_range(name, p, key, fail, fields[name]))
    return tuple(params)


def _categorical(name: str, p: dict, key: str, fail) -> ParamSpec:
    if set(p) != {"choices"}:
        fail(key, "choices cannot be combined with low/high/log/step")
    choices = p["choices"]
    if not isinstance(choices, list) or not choices:
        fail(f"{key}.choices", "expected a non-empty list")
    values = [check_value(name, c, f"{key}.choices[{i}]", fail) for i, c in enumerate(choices)]
    encoded = tuple(encode_choice(v) for v in values)
    if len(set(encoded)) != len(encoded):
        fail(f"{key}.choices", "has duplicates")
    return ParamSpec(name=name, choices=encoded)


def _range(name: str, p: dict, key: str, fail, default) -> ParamSpec:
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        fail(key, f"{name} is not numeric: give choices: [...]")
    for bound in ("low", "high"):
        if bound not in p:
            fail(key, "needs both low and high (or choices)")
    low = check_value(name, p["low"], f"{key}.low", fail)
    high = check_value(name, p["high"], f"{key}.high", fail)
    if low >= high:
        fail(key, f"low must be < high (got low={p['low']}, high={p['high']})")
    log = p.get("log", False)
    if not isinstance(log, bool):
        fail(f"{key}.log", f"expected true or false, got {log!r}")
    if log and low <= 0:
        fail(f"{key}.log", f"log scale needs low > 0 (got low={p['low']})")
    step = p.get("step")
    if step is not None:
        _number(step, f"{key}.step", fail, is_int=isinstance(default, int), low=0)
        if step <= 0 or log:
            fail(f"{key}.step", "must be > 0 and cannot be combined with log")
    return ParamSpec(name=name, low=low, high=high, log=log, step=step, is_int=isinstance(default, int))


def _record(cls, section, prefix: str, fail):
    section = section or {}
    if not isinstance(section, dict):
        fail(prefix, "expected a mapping")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    _no_unknown(section, list(defaults), f"{prefix}.", fail)
    values = {}
    for k, v in section.items():
        d = defaults[k]
        if isinstance(d, str) or d is None:
            if not isinstance(v, str) and v is not None:
                fail(f"{prefix}.{k}", f"expected a string, got {v!r}")
            values[k] = v
        else:
            values[k] = _number(v, f"{prefix}.{k}", fail, is_int=isinstance(d, int), low=0,
                                high=0.9 if k.endswith("_frac") else None)
    return cls(**values)


def _pruner(section, fail) -> PrunerSpec:
    spec = _record(PrunerSpec, section, "pruner", fail)
    if spec.type not in PRUNERS:
        fail("pruner.type", f"unknown pruner {spec.type!r} (known: {', '.join(PRUNERS)})")
    if spec.min_epochs < 1 or spec.reduction_factor < 2:
        fail("pruner", "min_epochs must be >= 1 and reduction_factor >= 2")
    return spec


def _best(section, fail) -> BestSpec:
    spec = _record(BestSpec, section, "best", fail)
    if spec.seeds < 1:
        fail("best.seeds", f"must be >= 1, got {spec.seeds}")
    return spec


def _stop(section, fail) -> StopSpec:
    spec = _record(StopSpec, section, "stop", fail)
    if spec.patience < 1:
        fail("stop.patience", f"must be >= 1 (finished trials without a gain), got {spec.patience}")
    if spec.min_delta >= 100:
        fail("stop.min_delta", f"in percentage points of accuracy: must be < 100, got {spec.min_delta}")
    return spec


def _wandb(section, fail) -> WandbSpec:
    spec = _record(WandbSpec, section, "wandb", fail)
    if spec.mode not in WANDB_MODES:
        fail("wandb.mode", f"unknown mode {spec.mode!r} (known: {', '.join(WANDB_MODES)})")
    if not spec.project:
        fail("wandb.project", "must not be empty")
    return spec


def encode_choice(value):
    """Optuna categorical choices must be primitives: encode lists/tuples (conv) as JSON strings."""
    return json.dumps([list(v) for v in value]) if isinstance(value, tuple) else value


def decode_choice(name: str, value):
    return tuple(tuple(s) for s in json.loads(value)) if name == "conv" and isinstance(value, str) else value


def dump_spec(spec: SweepSpec) -> str:
    """The resolved spec as YAML text (what `run` saves as <results>/<study>/spec.yaml)."""
    return yaml.safe_dump(dict(spec.resolved), sort_keys=False)
