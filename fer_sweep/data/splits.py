"""FER2013 (any layout, or synthetic faces) split into train/val/test: Usage where the file has it, else carved
stratified with a fixed seed; and plain-data summaries of splits and sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from fer_sweep.config import EMOTIONS, NUM_CLASSES
from fer_sweep.data.read import PathLike, read_faces
from fer_sweep.data.readers import USAGES, DataError, Faces
from fer_sweep.data.synthetic import synthetic_faces


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
    labels = faces.y
    assert labels is not None  # split_indices raised DataError for unlabeled faces
    subsets = {name: None if idx is None else Split(x=faces.x[idx], y=labels[idx]) for name, idx in indices.items()}
    train, val = subsets["train"], subsets["val"]
    assert train is not None and val is not None  # only test can be absent
    return Splits(train=train, val=val, test=subsets["test"], layout=faces.layout, source=source, notes=notes)


def split_indices(faces: Faces, *, val_frac: float = 0.1, test_frac: float = 0.1,
                  seed: int = 0) -> tuple[dict[str, Optional[np.ndarray]], tuple[str, ...]]:
    """The rows of faces that load_splits puts in train/val/test (sorted; test None when absent and
    test_frac == 0), and the notes saying how they were chosen. For callers that need row numbers (predict)."""
    if faces.y is None:
        raise DataError(f"{faces.source}: unlabeled (no emotion column); usable with `predict` only")
    usage = faces.usage if faces.usage is not None else np.full(len(faces.y), USAGES[0])
    indices = {name: np.flatnonzero(usage == u) for name, u in zip(("train", "val", "test"), USAGES)}
    notes = list(faces.notes)
    carve = {
        name: frac for name, frac in (("val", val_frac), ("test", test_frac)) if indices[name].size == 0 and frac > 0
    }
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
    chosen: dict[str, Optional[np.ndarray]] = dict(indices)
    if indices["test"].size == 0 and test_frac == 0:
        chosen["test"] = None
        notes.append("no PrivateTest rows and test_frac is 0: no test split")
    for name, idx in chosen.items():
        if idx is not None and idx.size == 0:
            raise DataError(f"{faces.source}: the {name} split would be empty ({len(faces.y)} labelled rows; "
                            f"val_frac={val_frac}, test_frac={test_frac})")
    return chosen, tuple(notes)


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
