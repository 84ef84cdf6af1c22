"""Trial models kept in Optuna's artifact store: saved after each trial, pruned to the best `keep`, read back.

Each trial that trains at least one epoch and ends complete or pruned uploads three files (per seed, with spec
`repeats`) through
`optuna.artifacts.upload_artifact` (to a `FileSystemArtifactStore` in `<study folder>/artifacts/`):
`model.pt` (the best epoch's state dict, loads with torch.load(weights_only=True)), `val_proba.npy` (its
validation class probabilities, as the trial validated: same norm, TTA and precision) and `config.json`
(what rebuilds and evaluates it: the schema of `best`'s final/config.json). Only when all three are written
does the trial get the user attr `artifacts` (their ids), in one write: a trial killed mid-upload never has
it, so nothing half-written is ever read. Each file's id is recorded in the trial (system attr `upload:<id>`)
*before* the file is written, which is how pruning finds the files of such trials and deletes them too. The
record is fer-sweep's own: Optuna records each upload as well (`artifacts:<id>`), but before writing the file in
4.x and 5.0 and after it in 5.1, so a kill mid-write leaves no Optuna record there. Optuna's records are still
read, for files uploaded before fer-sweep kept its own.

Pruning is safe with any number of workers and machines without a lock: the candidates are the finished
(complete or pruned) trials that carry `artifacts`, ranked by a fixed total order on values that never change
once a trial is finished. Candidates only ever join, so a trial outside the top `keep` of any snapshot is
outside it in every later snapshot too: every deletion a worker decides, from however stale a view, is one
every later view agrees with. Deleting is idempotent (a file already gone is fine), and running trials are
never touched.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from fer_sweep.config import RunConfig
from fer_sweep.files import naming
from fer_sweep.learn.checkpoint import state_dict_cpu
from fer_sweep.learn.evaluate import predict_proba
from fer_sweep.sweep.optuna_api import recorded_artifact_ids, storage_of, trial_id
from fer_sweep.sweep.trial import TrialContext, checkpoint_config

ARTIFACTS = "artifacts"  # user attr: {"model": id, "val_proba": id, "config": id}, set once all three are written
ARTIFACTS_ERROR = "artifacts_error"  # user attr: why a trial's model could not be stored (the sweep went on)
FOLDER = "artifacts"  # <study folder>/artifacts/: the default FileSystemArtifactStore
FILES = {"model": "model.pt", "val_proba": "val_proba.npy", "config": "config.json"}
KEPT_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
UPLOAD_MARK = "upload:"  # trial system attr "upload:<id>" = file name, recorded before the file is written
# Test hook, set by the fault tests (tests/support/): seconds to pause after each upload, so a kill can land between
# two. 0 in use.
upload_delay_s = 0.0


def artifact_store(folder: Path) -> FileSystemArtifactStore:
    """The study's artifact store: <folder>/artifacts/ (one place for every worker of this machine; on several
    machines, make it one shared folder)."""
    path = Path(folder) / FOLDER
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(path)


def save_trial_models(ctx: TrialContext, trial: optuna.Trial, seeds: list[tuple[torch.nn.Module, RunConfig, Any]],
                      params: dict) -> Optional[Any]:
    """Store each seed's best-epoch model (`fit` has restored it), its validation probabilities and config: `seeds`
    holds (model, config, last EpochResult) per seed (spec `repeats`; one for a plain trial). Returns the artifact
    ids (`ARTIFACTS`: one {model, val_proba, config} per seed, a list when there are several), or None (spec `keep:
    0`, no epoch trained, or storing failed: then the reason is the trial's `artifacts_error` attr and the sweep goes
    on). `ctx` is the trial's context (its spec, validation split and folder)."""
    if ctx.spec.keep == 0 or any(result is None or result.best_epoch < 1 for _, _, result in seeds):
        return None
    try:
        sets = []
        for model, cfg, result in seeds:
            norm = ctx.norm(cfg.train.normalize)
            t = cfg.train
            proba = predict_proba(model, ctx.val.x, norm, tta=t.tta, tta_shift_px=t.tta_shift_px, amp=t.amp,
                                  batch_size=t.eval_batch_size).float().cpu().numpy()
            config = {**checkpoint_config(cfg, norm, params, ctx.spec, trial.number), "seed": t.seed,
                      "val/acc": result.best_val_acc, "best_epoch": result.best_epoch, "n_val": int(proba.shape[0])}
            sets.append(_upload(artifact_store(ctx.folder), ctx.folder / FOLDER, trial, state_dict_cpu(model), proba,
                                config))
        ids = sets[0] if len(sets) == 1 else sets
        trial.set_user_attr(ARTIFACTS, ids)  # last, in one write: only complete sets are ever named
        return ids
    except OSError:  # a full disk ends the run (the trial is re-queued); its half-written files are pruned later
        raise
    except Exception as e:  # noqa: BLE001 - a model that cannot be stored must not end the sweep
        try:
            trial.set_user_attr(ARTIFACTS_ERROR, f"{type(e).__name__}: {str(e).strip()[:300]}")
        except Exception:  # noqa: BLE001 - e.g. the trial was failed meanwhile (reaped as stale)
            pass
        return None


def kept_sets(t: FrozenTrial) -> list[dict[str, str]]:
    """The artifact ids of each seed's stored model of a trial (`ARTIFACTS`: one set, or a list of them with spec
    `repeats`), in seed order; [] when none is stored."""
    ids = t.user_attrs.get(ARTIFACTS)
    return [] if not ids else [ids] if isinstance(ids, dict) else list(ids)


def _upload(store, store_path: Path, trial: optuna.Trial, state: dict, proba: np.ndarray,
            config: dict) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="fer-sweep-trial-") as tmp:
        paths = {key: Path(tmp) / name for key, name in FILES.items()}
        torch.save(state, paths["model"])
        np.save(paths["val_proba"], proba, allow_pickle=False)
        paths["config"].write_text(json.dumps(config, indent=2))
        ids = {}
        with naming(store_path):  # a full disk names the store's folder
            for key, path in paths.items():
                ids[key] = upload(store, trial, path)
                time.sleep(upload_delay_s)  # test hook (0 in use): a kill can land between two uploads
        return ids


def upload(store, trial: optuna.Trial, path: Path) -> str:
    """Upload one file of `trial` to `store` through Optuna (`upload_artifact`, which records it for Optuna's own
    readers); its id is recorded in the trial first (`upload:<id>`), whenever Optuna records it. Returns the id."""
    storage, tid = storage_of(trial.study), trial_id(trial.study, trial.number)
    return upload_artifact(artifact_store=_RecordFirst(store, storage, tid, Path(path).name), file_path=str(path),
                           study_or_trial=trial)


class _RecordFirst:
    """The artifact store as `upload_artifact` sees it: each id is recorded in the trial before its file is written,
    so a kill mid-write leaves a file that pruning can find, whatever order the installed Optuna writes in."""

    def __init__(self, store, storage, tid: int, name: str):
        self.store, self.storage, self.tid, self.name = store, storage, tid, name

    def write(self, artifact_id: str, content_body) -> None:
        self.storage.set_trial_system_attr(self.tid, UPLOAD_MARK + artifact_id, self.name)
        self.store.write(artifact_id, content_body)

    def open_reader(self, artifact_id: str):  # the rest of Optuna's ArtifactStore protocol, as the store does it
        return self.store.open_reader(artifact_id)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(artifact_id)


def val_acc(t: FrozenTrial) -> float:
    return float(t.value or 0.0) if t.state == TrialState.COMPLETE else float(t.user_attrs.get("best_val_acc") or 0.0)


def ranked(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Finished trials with a stored model, best first: complete before pruned (so the winner is always first),
    then by validation accuracy, then the older one. A total order on values fixed at finish."""
    stored = [t for t in trials if t.state in KEPT_STATES and ARTIFACTS in t.user_attrs]
    return sorted(stored, key=lambda t: (t.state != TrialState.COMPLETE, -val_acc(t), t.number))


def uploaded_ids(t: FrozenTrial) -> list[str]:
    """Every artifact ever uploaded for the trial, half-written ones included: fer-sweep's records (made before each
    file is written) and Optuna's (which cover files uploaded before fer-sweep kept its own), each id once."""
    ours = [key[len(UPLOAD_MARK):] for key in t.system_attrs if key.startswith(UPLOAD_MARK)]
    return list(dict.fromkeys(ours + recorded_artifact_ids(t)))


def prune_trial_models(study: optuna.Study, folder: Path, keep: int) -> list[int]:
    """Delete the files of every finished trial outside the top `keep` of `ranked` (failed and crashed trials'
    partial uploads included); returns the numbers of the trials whose files were deleted now. Safe to run in
    every worker at once (see the module docstring)."""
    trials = study.get_trials(deepcopy=False)
    kept = {t.number for t in ranked(trials)[:max(keep, 0)]}
    store, removed = artifact_store(folder), []
    for t in trials:
        if t.number in kept or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        deleted = False
        for artifact_id in uploaded_ids(t):
            try:
                store.remove(artifact_id)
                deleted = True
            except ArtifactNotFound:  # deleted before (by this worker or another one), or never written
                pass
            except OSError:  # e.g. a read-only share: retried by the next prune, the sweep goes on
                pass
        if deleted:
            removed.append(t.number)
    return removed


@dataclass(frozen=True)
class TrialModel:
    """One kept trial's model as read back from the store."""

    number: int
    state: str  # complete | pruned
    val_acc: float
    config: dict
    val_proba: np.ndarray  # (N_val, 7) float32
    weights: bytes  # model.pt as stored (a state dict; load with torch.load(weights_only=True))
    repeat: Optional[int] = None  # which of the trial's seeds (spec `repeats` > 1), else None


def load_kept(study: optuna.Study, folder: Path, keep: int) -> tuple[list[TrialModel], list[str]]:
    """The kept trials' models, best first, and a note for each one whose files are not (or no longer) here."""
    store, models, notes = artifact_store(folder), [], []
    for t in ranked(study.get_trials(deepcopy=False))[:max(keep, 0)]:
        sets = kept_sets(t)
        for r, ids in enumerate(sets):
            try:
                blobs = {key: _read(store, ids[key]) for key in FILES}
                proba = np.load(io.BytesIO(blobs["val_proba"]), allow_pickle=False)
                config = json.loads(blobs["config"])
            except (ArtifactNotFound, KeyError, ValueError, OSError) as e:
                notes.append(f"trial {t.number}: stored model not readable here ({type(e).__name__}); left out")
                continue
            value = float(config.get("val/acc", val_acc(t))) if len(sets) > 1 else val_acc(t)
            models.append(TrialModel(t.number, "complete" if t.state == TrialState.COMPLETE else "pruned", value,
                                     config, proba, blobs["model"], r if len(sets) > 1 else None))
    return models, notes


def _read(store, artifact_id: str) -> bytes:
    with store.open_reader(artifact_id) as reader:
        return reader.read()
