"""Warm start (`run NEW.yaml --from OLD`): the finished trials of earlier studies on the same data and splits that fit
the new spec enter its study as finished trials, so nothing they trained is trained again.

A trial fits when every parameter NEW searches has, in that trial's configuration, a value inside NEW's range or
choices (a setting OLD fixed and NEW searches, a grid widened, maps to OLD's value), and every setting NEW fixes
equals the trial's. Imported trials keep their values, epochs, reports and kept models (copied into NEW's artifact
store, so NEW's pruning of kept models never touches OLD's), carry `imported_from` ("old#12"), and do not count
toward NEW's --trials; the random search does not draw their configurations again (study.ensure_tickets)."""

from __future__ import annotations

import dataclasses
import io
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from fer_sweep.config import RunConfig, UserError
from fer_sweep.sweep.artifacts import ARTIFACTS, FILES, UPLOAD_MARK, artifact_store, kept_sets
from fer_sweep.sweep.space import distributions, to_run_config
from fer_sweep.sweep.spec import ParamSpec, SweepSpec, decode_choice
from fer_sweep.sweep.summary import IMPORTED_FROM, OUTCOME, RESUMED_FROM, TICKET, is_imported

# user attrs of the old trial that describe its run in the old study, not the trial: not copied
NOT_COPIED = (TICKET, RESUMED_FROM, "progress", "retry_of", "oom_retries", ARTIFACTS, IMPORTED_FROM)


@dataclass(frozen=True)
class Source:
    """An earlier study to import from: its name, saved spec, study and results folder."""

    name: str
    spec: SweepSpec
    study: optuna.Study
    folder: Path


def check_source(new: SweepSpec, source: Source) -> None:
    """Refuse (one line) an earlier study whose trials' validation accuracies are not comparable with NEW's: other
    data, other splits, or NEW itself."""
    if source.name == new.study:
        raise UserError(f"--from {source.name}: that is the study being run; name an earlier one")
    same_data = source.spec.data == new.data or (
        "synthetic" not in (source.spec.data, new.data)
        and Path(source.spec.data).resolve() == Path(new.data).resolve())
    if not same_data or source.spec.splits != new.splits:
        what = f"data {source.spec.data} vs {new.data}" if not same_data else "splits"
        raise UserError(f"--from {source.name}: other {what} than {new.study}: its validation accuracies are not "
                        "comparable; import only from studies on the same data and splits")


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _setting(cfg: RunConfig, name: str) -> Any:
    return getattr(cfg.model, name) if hasattr(cfg.model, name) else getattr(cfg.train, name)


def _in_domain(p: ParamSpec, value: Any) -> Optional[Any]:
    """NEW's param value for a setting `value` of an old trial (a choice as Optuna stores it), or None outside."""
    if p.choices:
        return next((c for c in p.choices if decode_choice(p.name, c) == value), None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, high = p.bounds()
    if not low <= value <= high or (p.is_int and int(value) != value):
        return None
    if p.step and not math.isclose((value - low) / p.step, round((value - low) / p.step), abs_tol=1e-9):
        return None
    return int(value) if p.is_int else float(value)


def fit(new: SweepSpec, old: SweepSpec, trial: FrozenTrial) -> tuple[Optional[dict[str, Any]], str]:
    """(NEW's params for an old trial, "") when it fits NEW (module docstring), else (None, why not)."""
    try:
        before = to_run_config(trial.params, old)
    except (TypeError, ValueError) as e:
        return None, f"configuration not readable ({e})"
    params = {}
    for p in new.space:
        value = _setting(before, p.name)
        mapped = _in_domain(p, value)
        if mapped is None:
            return None, f"{p.name} {_fmt(value)} outside the new {'choices' if p.choices else 'range'}"
        params[p.name] = mapped
    after = to_run_config(params, new)
    for part in ("model", "train"):
        a, b = dataclasses.asdict(getattr(before, part)), dataclasses.asdict(getattr(after, part))
        for key in a:
            if a[key] != b[key]:
                return None, f"{key} {_fmt(a[key])}, not {_fmt(b[key])} as now"
    return params, ""


def import_trials(study: optuna.Study, new: SweepSpec, folder: Path, sources: list[Source]) -> dict[str, Any]:
    """Copy the fitting finished trials of `sources` into `study` (once: a trial imported before is skipped);
    returns {"imported": n, "already": k, "skipped": {reason: count}, "sources": [names]} for the run to show."""
    done = {t.user_attrs[IMPORTED_FROM] for t in study.get_trials(deepcopy=False) if is_imported(t)}
    dists, store = distributions(new), None
    imported, already, skipped = 0, 0, Counter[str]()
    for source in sources:
        for t in source.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            origin = t.user_attrs.get(IMPORTED_FROM) or f"{source.name}#{t.number}"
            if origin in done:
                already += 1
                continue
            params, why = fit(new, source.spec, t)
            if params is None:
                skipped[why] += 1
                continue
            store = store or artifact_store(folder)
            attrs = {k: v for k, v in t.user_attrs.items() if k not in NOT_COPIED}
            system, ids = _copy_models(source, t, store)
            if ids:
                attrs[ARTIFACTS] = ids
            attrs.update({IMPORTED_FROM: origin, OUTCOME: attrs.get(OUTCOME, t.state.name.lower())})
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, state=t.state,
                value=t.value if t.state == TrialState.COMPLETE else None,
                intermediate_values=dict(t.intermediate_values), user_attrs=attrs, system_attrs=system))
            done.add(origin)
            imported += 1
    return {"imported": imported, "already": already, "skipped": dict(skipped.most_common()),
            "sources": [s.name for s in sources]}


def _copy_models(source: Source, t: FrozenTrial, store) -> tuple[dict[str, str], Any]:
    """Copy an old trial's kept model files (each seed's, with spec `repeats`) into the new study's artifact store
    under the same ids (a rerun after a kill rewrites the same files); returns the upload records and the ids as the
    old trial named them, or empty ones when it kept none."""
    sets = kept_sets(t)
    if not sets or any(set(ids) != set(FILES) for ids in sets):
        return {}, {}
    old, blobs = artifact_store(source.folder), {}
    try:
        for ids in sets:
            for artifact_id in ids.values():
                with old.open_reader(artifact_id) as reader:
                    blobs[artifact_id] = reader.read()
    except (OSError, ArtifactNotFound):  # pruned from the old study (or its folder not here): imported without
        return {}, {}
    for artifact_id, blob in blobs.items():  # a full disk here ends the run with its one line (exit 75)
        store.write(artifact_id, io.BytesIO(blob))
    marks = {f"{UPLOAD_MARK}{ids[k]}": FILES[k] for ids in sets for k in FILES}
    return marks, t.user_attrs[ARTIFACTS]
