"""`predict`: a saved model's class probabilities for every face of any FER2013 layout, or one split of it."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from fer_sweep.config import EMOTIONS, UserError
from fer_sweep.data import Faces, read_faces, split_indices
from fer_sweep.summary import write_atomic

SPLITS = ("all", "train", "val", "test")


@dataclass(frozen=True)
class Predictions:
    """One row per face, in file order (or sorted path order for the folder layout)."""

    ids: list[Union[int, str]]  # 0-based row numbers in the file, or image paths relative to the folder
    proba: np.ndarray  # (N, 7) float32 class probabilities
    labels: Optional[np.ndarray]  # (N,) int64 true labels, None when the data is unlabeled
    layout: str
    source: str
    split: str
    tta: bool

    @property
    def predicted(self) -> np.ndarray:
        return self.proba.argmax(1)

    @property
    def accuracy(self) -> Optional[float]:
        if self.labels is None or len(self.labels) == 0:
            return None
        return float(np.mean(self.predicted == self.labels))


def predict(model_dir: Path, data: str, *, split: str = "all", tta: Optional[bool] = None, device: str = "auto",
            batch_size: Optional[int] = None) -> Predictions:
    """Predict every face of `data` (a file, a folder or "synthetic") with the model saved by `best`.

    split: "all" rows of the file, or the train/val/test split `best` used, rebuilt from the split options
    saved in config.json. tta: flip test-time augmentation (default: as the model was evaluated by `best`).
    """
    import torch

    from fer_sweep.evaluate import predict_proba
    from fer_sweep.train import pick_device

    if split not in SPLITS:
        raise UserError(f"--split: unknown split {split!r} (known: {', '.join(SPLITS)})")
    model, config = load_model(model_dir)
    faces, ids = _read(data, config)
    rows = split_rows(faces, split, config.get("splits") or {})
    tta = bool(config["train"].get("tta", False)) if tta is None else tta
    dev = pick_device(device)
    x = torch.from_numpy(np.ascontiguousarray(faces.x[rows])).to(dev)
    proba = predict_proba(model.to(dev), x, tuple(config["norm"]), tta=tta,
                          batch_size=batch_size or int(config["train"].get("eval_batch_size", 1024)))
    return Predictions(ids=[ids[i] for i in rows] if ids else rows.tolist(), proba=proba.float().cpu().numpy(),
                       labels=None if faces.y is None else faces.y[rows], layout=faces.layout, source=str(data),
                       split=split, tta=tta)


def load_model(model_dir: Path):
    """The model and config.json saved by `best` (a study folder is taken to mean its final/ sub-folder).

    Weights load with torch.load(weights_only=True): a checkpoint carrying pickled code is refused.
    """
    from fer_sweep.final import load_final

    folder = Path(model_dir)
    if not (folder / "model.pt").exists() and (folder / "final" / "model.pt").exists():
        folder = folder / "final"
    try:
        return load_final(folder)
    except UserError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:  # weights of another model, bad config
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise UserError(f"{folder}: cannot load the model ({type(e).__name__}: {first})") from None


def _read(data: str, config: dict) -> tuple[Faces, list[str]]:
    """Every face of the source and, for the folder layout, their paths (else [] and ids are row numbers)."""
    if data == "synthetic":
        from fer_sweep.synthetic import synthetic_faces

        opts = config.get("splits") or {}
        x, y = synthetic_faces(int(opts.get("synthetic_n", 2000)), seed=int(opts.get("seed", 0)))
        return Faces(x=x, y=y, usage=None, layout="synthetic", source=data), []
    faces = read_faces(data)
    if faces.layout != "folders":
        return faces, []
    from fer_sweep.readers import list_images

    root = Path(data)
    return faces, [path.relative_to(root).as_posix() for path, _, _ in list_images(root)]


def split_rows(faces: Faces, split: str, opts: dict) -> np.ndarray:
    """0-based rows of `faces` in `split`, chosen by the same function `data.load_splits` uses for `best`."""
    if split == "all":
        return np.arange(len(faces.x))
    if faces.y is None:
        raise UserError(f"{faces.source}: unlabeled data has no {split} split: use --split all")
    indices, _ = split_indices(faces, val_frac=float(opts.get("val_frac", 0.1)),
                               test_frac=float(opts.get("test_frac", 0.1)), seed=int(opts.get("seed", 0)))
    if indices[split] is None:
        raise UserError(f"{faces.source}: no {split} split in this data (and none carved: {split}_frac is 0)")
    return indices[split]


def write_csv(pred: Predictions, path: Path, *, proba: bool = False) -> Path:
    """`id,emotion` (emotion: the predicted label 0-6, as in FER2013's emotion column), plus one probability
    column per class name with proba."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "emotion", *(EMOTIONS if proba else ())])
    for i, (row_id, label) in enumerate(zip(pred.ids, pred.predicted.tolist())):
        writer.writerow([row_id, label, *([f"{p:.6f}" for p in pred.proba[i]] if proba else ())])
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise UserError(f"--out {path}: folder {path.parent} does not exist")
    write_atomic(path, buf.getvalue())
    return path


def summary(pred: Predictions) -> dict:
    """What the CLI prints: counts and, where the data has labels, accuracy."""
    out = {"n": len(pred.ids), "layout": pred.layout, "split": pred.split, "tta": pred.tta,
           "predicted": dict(zip(EMOTIONS, np.bincount(pred.predicted, minlength=len(EMOTIONS)).tolist()))}
    if pred.accuracy is not None:
        out["acc"] = round(pred.accuracy, 6)
    return out
