"""`predict`: a saved model's class probabilities for every face of any FER2013 layout (or one split of it), or
for every face found in ordinary photos."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from fer_sweep.config import EMOTIONS, IMAGE_SIZE, UserError
from fer_sweep.data.photos import Face, suffixes
from fer_sweep.data.read import read_faces
from fer_sweep.data.readers import Faces, UnknownLayout
from fer_sweep.data.splits import split_indices
from fer_sweep.files import write_atomic
from fer_sweep.learn.checkpoint import load_model

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
    """Predict every face of `data` (a file, a folder or "synthetic") with the model or ensemble saved by `best`.

    split: "all" rows of the file, or the train/val/test split `best` used, rebuilt from the split options
    saved in config.json (ensemble.json). tta: flip test-time augmentation (default: as `best` evaluated the
    model; in an ensemble, each member as it was evaluated).
    """
    import torch

    from fer_sweep.learn.device import pick_device
    from fer_sweep.results.ensemble.members import ensemble_proba

    if split not in SPLITS:
        raise UserError(f"--split: unknown split {split!r} (known: {', '.join(SPLITS)})")
    members, config = load_members(model_dir)
    faces, ids = _read(data, config)
    rows = split_rows(faces, split, config.get("splits") or {})
    dev = pick_device(device)
    x = torch.from_numpy(np.ascontiguousarray(faces.x[rows])).to(dev)
    proba = ensemble_proba([_on(m, dev) for m in members], x, tta=tta, batch_size=batch_size)
    tta = _uses_tta(members) if tta is None else tta
    return Predictions(ids=[ids[i] for i in rows] if ids else rows.tolist(), proba=proba.float().cpu().numpy(),
                       labels=None if faces.y is None else faces.y[rows], layout=faces.layout, source=str(data),
                       split=split, tta=tta)


def load_members(model_dir: Path) -> tuple[list, dict]:
    """What `best` saved in model_dir: an ensemble's members with their weights (ensemble.json in the folder or
    its final/; it wins over a retrained model.pt beside it), else the one model with weight 1. Also the config
    whose `splits` rebuild `best`'s splits (ensemble.json, or config.json)."""
    from fer_sweep.results.ensemble.folders import ensemble_folder, read_ensemble
    from fer_sweep.results.ensemble.members import Member

    folder = ensemble_folder(Path(model_dir)) if Path(model_dir).is_dir() else None
    if folder is None:
        model, config = load_model(model_dir)
        return [Member("model", 1.0, model, config)], config
    info = read_ensemble(folder)
    members = []
    for m in info["members"]:
        model, config = load_model(folder / m["path"])
        members.append(Member(str(m.get("name", m["path"])), float(m["weight"]), model, config))
    return members, info


def _on(member, device):
    member.model.to(device)
    return member


def _uses_tta(members) -> bool:
    return any(bool((m.config.get("train") or {}).get("tta", False)) for m in members)


def _read(data: str, config: dict) -> tuple[Faces, list[str]]:
    """Every face of the source and, for the folder layout, their paths (else [] and ids are row numbers)."""
    if data == "synthetic":
        from fer_sweep.data.synthetic import synthetic_faces

        opts = config.get("splits") or {}
        x, y = synthetic_faces(int(opts.get("synthetic_n", 2000)), seed=int(opts.get("seed", 0)))
        return Faces(x=x, y=y, usage=None, layout="synthetic", source=data), []
    try:
        faces = read_faces(data)
    except UnknownLayout as e:  # not FER2013, and not told as a photo or video either: say what else predict reads
        raise UnknownLayout(f"{e}; predict also reads photos ({suffixes('photo')}) and videos "
                            f"({suffixes('video')}), one file or a folder of them") from None
    if faces.layout != "folders":
        return faces, []
    from fer_sweep.data.readers import list_images

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
    rows = indices[split]
    if rows is None:
        raise UserError(f"{faces.source}: no {split} split in this data (and none carved: {split}_frac is 0)")
    return rows


def write_csv(pred: Predictions, path: Path, *, proba: bool = False) -> Path:
    """`id,emotion` (emotion: the predicted label 0-6, as in FER2013's emotion column), plus one probability
    column per class name with proba."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "emotion", *(EMOTIONS if proba else ())])
    for i, (row_id, label) in enumerate(zip(pred.ids, pred.predicted.tolist())):
        writer.writerow([row_id, label, *([f"{p:.6f}" for p in pred.proba[i]] if proba else ())])
    return write_text_file(path, buf.getvalue())


def write_text_file(path: Path, text: str) -> Path:
    """Write an output file of `predict` (`--out`) whole or not at all; a missing folder is a user error."""
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise UserError(f"--out {path}: folder {path.parent} does not exist")
    write_atomic(path, text)
    return path


def summary(pred: Predictions) -> dict:
    """What the CLI prints: counts and, where the data has labels, accuracy."""
    out = {"n": len(pred.ids), "layout": pred.layout, "split": pred.split, "tta": pred.tta,
           "predicted": dict(zip(EMOTIONS, np.bincount(pred.predicted, minlength=len(EMOTIONS)).tolist()))}
    if pred.accuracy is not None:
        out["acc"] = round(pred.accuracy, 6)
    return out


# ------------------------------------------------------------------------------------------- photos


@dataclass(frozen=True)
class Photo:
    """One photo that was read, and the faces found in it (left to right)."""

    path: Path
    name: str  # as written in the CSV: the path relative to the folder given, or the file's name
    faces: tuple[Face, ...]


@dataclass(frozen=True)
class PhotoPredictions:
    """Every face found in ordinary photos; proba rows follow the photos' order, then their faces' order."""

    photos: list[Photo]  # every photo read, in sorted path order
    proba: np.ndarray  # (F, 7) float32 class probabilities, F = all faces of all photos
    unreadable: list[str]  # one line per file that could not be decoded (the other photos went on)
    source: str
    tta: bool

    @property
    def predicted(self) -> np.ndarray:
        return self.proba.argmax(1)

    @property
    def no_face(self) -> list[str]:
        return [photo.name for photo in self.photos if not photo.faces]

    def per_photo(self) -> list[tuple[Photo, np.ndarray]]:
        """Each photo with the (faces, 7) probabilities of its faces."""
        out, start = [], 0
        for photo in self.photos:
            out.append((photo, self.proba[start:start + len(photo.faces)]))
            start += len(photo.faces)
        return out


def read_photo_faces(files) -> tuple[list[Photo], list[np.ndarray], list[str]]:
    """For each (path, name): the photo with the faces found in it, and their 48x48 crops (a 48x48 photo is one
    crop already); a file that cannot be decoded is one line in the third list."""
    from fer_sweep.data import photos as photo_faces

    photos, crops, unreadable = [], [], []
    for path, name in files:
        try:
            grey = np.asarray(photo_faces.read_photo(path, "L"))
        except UserError as e:
            unreadable.append(str(e))
            continue
        if grey.shape == (IMAGE_SIZE, IMAGE_SIZE):  # a FER2013-style crop already: classified as it is
            found = [photo_faces.whole_face(grey)]
            crops.append(grey)
        else:
            found = photo_faces.detect_faces(grey)
            crops += [photo_faces.crop_face(grey, face) for face in found]
        photos.append(Photo(path=path, name=name, faces=tuple(found)))
    return photos, crops, unreadable


def classify(members, crops, *, tta: Optional[bool] = None, device: str = "auto",
             batch_size: Optional[int] = None) -> tuple[np.ndarray, bool]:
    """(N, 7) float32 class probabilities of N 48x48 uint8 crops, and whether TTA was used."""
    import torch

    from fer_sweep.learn.device import pick_device
    from fer_sweep.results.ensemble.members import ensemble_proba

    dev = pick_device(device)
    x = torch.from_numpy(np.stack(crops) if len(crops) else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)).to(dev)
    proba = ensemble_proba([_on(m, dev) for m in members], x, tta=tta, batch_size=batch_size)
    return proba.float().cpu().numpy(), _uses_tta(members) if tta is None else tta


PHOTO_COLUMNS = ("file", "face", "x", "y", "w", "h", "angle", "emotion", "emotion_name")


def write_photo_csv(pred: PhotoPredictions, path: Path, *, proba: bool = False) -> Path:
    """One row per face: file, face (0-based, left to right), its box x,y,w,h in pixels of the photo, angle (the
    face's tilt in degrees, counter-clockwise; the box is turned by it about its centre), emotion (label 0-6,
    as in FER2013's emotion column) and emotion_name, plus one probability column per class with proba.
    A photo with no face is one row with only its file name."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*PHOTO_COLUMNS, *(EMOTIONS if proba else ())])
    for photo, probs in pred.per_photo():
        if not photo.faces:
            writer.writerow([photo.name] + [""] * (len(PHOTO_COLUMNS) - 1 + (len(EMOTIONS) if proba else 0)))
        for i, (face, p) in enumerate(zip(photo.faces, probs)):
            label = int(p.argmax())
            writer.writerow([photo.name, i, *face.box, f"{face.angle_deg:g}", label, EMOTIONS[label],
                             *([f"{v:.6f}" for v in p] if proba else ())])
    return write_text_file(path, buf.getvalue())


def write_annotated(pred: PhotoPredictions, folder: Path) -> list[Path]:
    """A copy of every photo under `folder` (same relative name) with each face's square and its emotion drawn."""
    from fer_sweep.data.photos import draw_faces, read_photo

    written = []
    for photo, probs in pred.per_photo():
        target = Path(folder) / photo.name
        if target.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
            target = target.with_name(target.name + ".png")
        if target.resolve() == photo.path.resolve():
            raise UserError(f"--annotate {folder}: would overwrite the photo {photo.path}: choose another folder")
        labels = [int(p.argmax()) for p in probs]
        captions = [f"{EMOTIONS[k]} {p[k]:.2f}" for k, p in zip(labels, probs)]
        image = draw_faces(read_photo(photo.path, "RGB"), photo.faces, captions, labels)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, **({"quality": 95} if target.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}))
        except OSError as e:
            raise UserError(f"--annotate {folder}: cannot write {target} ({e.strerror or e})") from None
        written.append(target)
    return written


def photo_summary(pred: PhotoPredictions) -> dict:
    """What the CLI prints for photos: counts of photos, faces, photos with no face, unreadable files."""
    return {"layout": "photos", "photos": len(pred.photos), "faces": int(len(pred.proba)),
            "no_face": len(pred.no_face), "unreadable": len(pred.unreadable), "tta": pred.tta,
            "predicted": dict(zip(EMOTIONS, np.bincount(pred.predicted, minlength=len(EMOTIONS)).tolist()))}
