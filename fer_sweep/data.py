"""Load FER2013 (any Kaggle layout, or synthetic faces) as cached uint8 arrays split into train/val/test."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from fer_sweep.config import EMOTIONS, NUM_CLASSES
from fer_sweep.readers import USAGES, DataError, Faces, read_csv_faces, read_folder_faces
from fer_sweep.synthetic import synthetic_faces

__all__ = [
    "DataError", "Faces", "Split", "Splits", "USAGES", "class_counts", "default_cache_dir", "describe", "info",
    "load_splits", "read_faces", "split_indices",
]

CACHE_VERSION = 1  # bump when the parsed arrays or the npz contents change, so old caches are ignored
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Split:
    """One split: images and their labels."""

    x: np.ndarray  # (N, 48, 48) uint8, C-contiguous
    y: Optional[np.ndarray]  # (N,) int64 labels 0..6, None when unlabeled


@dataclass(frozen=True)
class Splits:
    """train/val/test of one source, and how they were made."""

    train: Split
    val: Split
    test: Optional[Split]  # None only when test_frac == 0 and the source has no test rows
    layout: str  # icml | fer2013 | kaggle_train | folders | synthetic
    source: str  # path as given, or "synthetic"
    notes: tuple[str, ...]  # human sentences on how the splits were made


def default_cache_dir() -> Path:
    """$FER_SWEEP_CACHE, else ~/.cache/fer-sweep."""
    return Path(os.environ.get("FER_SWEEP_CACHE") or Path.home() / ".cache" / "fer-sweep")


# ------------------------------------------------------------------------------------ read + cache


def read_faces(path: PathLike, *, resize: bool = False, cache_dir: Optional[PathLike] = None,
               nrows: Optional[int] = None) -> Faces:
    """Read every face of a CSV (.csv or .csv.gz) or an image-folder tree; the layout comes from the content.

    resize: accept folder images that are not 48x48 by resizing them (CSV rows are 48x48 by definition).
    cache_dir: where parsed arrays are cached (default: default_cache_dir()); a changed source is re-read.
    nrows: read only the first nrows data rows (CSV) or images (folders, in sorted path order), e.g. for
    quick tests; a partial read is cached under its own key.
    """
    source, root = str(path), Path(path)
    if not root.exists():
        raise DataError(f"{source}: no such file or directory")
    try:
        if root.is_dir():
            state = _folder_state(root)
        else:
            stat = root.stat()
            if stat.st_size == 0:
                raise DataError(f"{source}: empty file")
            state = [stat.st_size, stat.st_mtime_ns]
        cache_file = _cache_file(Path(cache_dir) if cache_dir else default_cache_dir(), root, state, resize, nrows)
        faces = _load_cache(cache_file, source)
        if faces is None:
            if root.is_dir():
                faces = read_folder_faces(root, source, resize=resize, nrows=nrows)
            else:
                faces = read_csv_faces(root, source, nrows=nrows)
            _save_cache(cache_file, faces)
    except (PermissionError, IsADirectoryError, NotADirectoryError) as e:
        raise DataError(f"{source}: cannot read ({e.strerror})") from None
    return faces


def _folder_state(root: Path) -> list:
    """Cheap fingerprint of a folder tree: a hash over every file's relative path, size and mtime."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            stat = os.stat(os.path.join(dirpath, name))
            digest.update(f"{os.path.relpath(os.path.join(dirpath, name), root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return [digest.hexdigest()]


def _cache_file(cache_dir: Path, root: Path, state: list, resize: bool, nrows: Optional[int]) -> Path:
    """<name>-<hash of absolute path and read options>-<hash of the source's state>.npz: entries that share
    the first two parts are older states of the same read, dropped when a new one is written."""
    what = json.dumps([str(root.resolve()), bool(resize) and root.is_dir(), nrows])
    when = json.dumps([CACHE_VERSION, state])
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", root.name)[:40] or "root"
    return cache_dir / f"{stem}-{_digest(what)[:10]}-{_digest(when)[:16]}.npz"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _load_cache(cache_file: Path, source: str) -> Optional[Faces]:
    """The cached Faces, or None on a miss (absent, unreadable or half-deleted files are just misses)."""
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            return Faces(
                x=z["x"], y=z["y"] if "y" in z.files else None, usage=z["usage"] if "usage" in z.files else None,
                layout=str(z["layout"]), source=source, notes=tuple(str(note) for note in z["notes"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _save_cache(cache_file: Path, faces: Faces) -> None:
    """Write atomically (temp file + os.replace) so concurrent workers never read half a file; drop stale
    entries of the same source. A cache that cannot be written only costs speed."""
    arrays = {"x": faces.x, "layout": np.array(faces.layout), "notes": np.array(faces.notes, dtype=str)}
    arrays.update({name: value for name, value in (("y", faces.y), ("usage", faces.usage)) if value is not None})
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=cache_file.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, cache_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        prefix = cache_file.name.rsplit("-", 1)[0]
        for stale in cache_file.parent.glob(f"{prefix}-*.npz"):
            if stale != cache_file:
                stale.unlink(missing_ok=True)
    except OSError:
        pass


# ------------------------------------------------------------------------------------------ splits


def load_splits(source: PathLike, *, val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0,
                synthetic_n: int = 2000, resize: bool = False, cache_dir: Optional[PathLike] = None) -> Splits:
    """train/val/test from a file, a folder tree or "synthetic" (synthetic_n generated faces).

    Training rows train, PublicTest rows validate, PrivateTest rows test. A missing split is carved from the
    Training rows, stratified by class with a fixed seed (val_frac / test_frac of them), and a note says so.
    """
    source = str(source)
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"{source}: val_frac ({val_frac}) and test_frac ({test_frac}) must be in [0, 1) with sum < 1")
    if source == "synthetic":
        x, y = synthetic_faces(synthetic_n, seed=seed)
        faces = Faces(x=x, y=y, usage=None, layout="synthetic", source=source)
    else:
        faces = read_faces(source, resize=resize, cache_dir=cache_dir)
    indices, notes = split_indices(faces, val_frac=val_frac, test_frac=test_frac, seed=seed)
    subsets = {name: None if idx is None else Split(x=faces.x[idx], y=faces.y[idx]) for name, idx in indices.items()}
    return Splits(**subsets, layout=faces.layout, source=source, notes=notes)


def split_indices(faces: Faces, *, val_frac: float = 0.1, test_frac: float = 0.1,
                  seed: int = 0) -> tuple[dict[str, Optional[np.ndarray]], tuple[str, ...]]:
    """The rows of faces that load_splits puts in train/val/test (sorted; test None when absent and
    test_frac == 0), and the notes saying how they were chosen. For callers that need row numbers (predict)."""
    if faces.y is None:
        raise DataError(f"{faces.source}: unlabeled (no emotion column); usable with `predict` only")
    usage = faces.usage if faces.usage is not None else np.full(len(faces.y), USAGES[0])
    indices = {name: np.flatnonzero(usage == u) for name, u in zip(("train", "val", "test"), USAGES)}
    notes = list(faces.notes)
    carve = {name: frac for name, frac in (("val", val_frac), ("test", test_frac)) if indices[name].size == 0 and frac > 0}
    if carve:
        indices.update(_carve(faces.y, indices["train"], carve, seed))
    for name, frac in carve.items():
        if faces.usage is not None:
            missing = f"no {USAGES[1] if name == 'val' else USAGES[2]} rows"
        elif faces.layout == "synthetic":
            missing = f"{len(faces.y)} synthetic faces (seed {seed}) have no usage"
        else:
            missing = "no Usage column"
        notes.append(f"{missing}: carved a stratified {frac * 100:g}% of train as {name} (seed {seed})")
    if indices["test"].size == 0 and test_frac == 0:
        indices["test"] = None
        notes.append("no PrivateTest rows and test_frac is 0: no test split")
    for name, idx in indices.items():
        if idx is not None and idx.size == 0:
            raise DataError(f"{faces.source}: the {name} split would be empty ({len(faces.y)} labelled rows; "
                            f"val_frac={val_frac}, test_frac={test_frac})")
    return indices, tuple(notes)


def _carve(y: np.ndarray, train: np.ndarray, fracs: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Split train rows into {"train", *fracs}: per class, a shuffled prefix goes to each carved split, with
    per-class sizes rounded by largest remainder so each total is round(frac * len(train))."""
    rng = np.random.default_rng(seed)
    labels = y[train]
    counts = class_counts(labels)
    taken = np.zeros(NUM_CLASSES, dtype=np.int64)
    quotas = {}
    for name, frac in fracs.items():
        quotas[name] = np.minimum(_largest_remainder(counts * frac, round(frac * len(train))), counts - taken)
        taken += quotas[name]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("train", *fracs)}
    for c in range(NUM_CLASSES):
        members = rng.permutation(train[labels == c])
        start = 0
        for name in fracs:
            parts[name].append(members[start:start + quotas[name][c]])
            start += quotas[name][c]
        parts["train"].append(members[start:])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers, each floor(share) or one more, summing to total (capped at what the shares allow)."""
    base = np.floor(shares).astype(np.int64)
    extra = min(max(total - int(base.sum()), 0), len(shares))
    order = np.argsort(-(shares - base), kind="stable")
    base[order[:extra]] += 1
    return base


# ----------------------------------------------------------------------------------------- summary


def class_counts(y) -> np.ndarray:
    """(7,) int64 number of samples per class."""
    counts = np.bincount(np.asarray(y, dtype=np.int64).ravel(), minlength=NUM_CLASSES)
    if counts.size > NUM_CLASSES:
        raise ValueError(f"labels outside 0..{NUM_CLASSES - 1}")
    return counts


def describe(splits: Splits) -> dict:
    """Plain-data summary (JSON-ready) of the splits: sizes and per-class counts."""
    parts = {name: getattr(splits, name) for name in ("train", "val", "test")}
    return {
        "layout": splits.layout,
        "source": splits.source,
        "notes": list(splits.notes),
        "splits": {name: None if part is None else _summary(part.y, len(part.x)) for name, part in parts.items()},
    }


def info(source: PathLike, *, resize: bool = False, cache_dir: Optional[PathLike] = None) -> dict:
    """describe()-shaped summary of a source as it is, for `data info`: rows per Usage (Training as train,
    PublicTest as val, PrivateTest as test), nothing carved; unlabeled sources too (classes None)."""
    if str(source) == "synthetic":
        return describe(load_splits("synthetic"))
    faces = read_faces(source, resize=resize, cache_dir=cache_dir)
    usage = faces.usage if faces.usage is not None else np.full(len(faces.x), USAGES[0])
    notes = list(faces.notes)
    if faces.usage is None:
        notes.append(f"no Usage column: all {len(faces.x)} rows shown as train")
    if faces.y is None:
        notes.append("unlabeled (no emotion column); usable with `predict` only")
    parts = {}
    for name, name_in_file in zip(("train", "val", "test"), USAGES):
        mask = usage == name_in_file
        parts[name] = _summary(None if faces.y is None else faces.y[mask], int(mask.sum())) if mask.any() else None
        if parts[name] is None and faces.usage is not None and faces.y is not None:
            notes.append(f"no {name_in_file} rows: training carves {name}_frac of train as {name}")
    return {"layout": faces.layout, "source": str(source), "notes": notes, "splits": parts}


def _summary(y: Optional[np.ndarray], n: int) -> dict:
    classes = None if y is None else dict(zip(EMOTIONS, map(int, class_counts(y))))
    return {"n": n, "classes": classes}
