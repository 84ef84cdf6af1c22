"""Use the model: `predict` on real photographs (scikit-image's astronaut.png and a composite built from it: two
faces, one turned 20 degrees, and a photo with no face) and `export --onnx`, checked with onnxruntime. A small
model is trained on synthetic faces through the real CLI first (the quickstart spec, cut to seconds)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data as skimage_data  # test-only (dev extra): real photographs inside its wheel
import yaml
from PIL import Image
from typer.testing import CliRunner

from fer_sweep.data import photos as photo_faces
from fer_sweep.cli import app
from fer_sweep.config import EMOTIONS
from fer_sweep.data.synthetic import synthetic_faces
from tests.helpers import one_line_error

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = Path(skimage_data.__file__).parent / "astronaut.png"
# Where the face is in astronaut.png (512x512): centre and side of a face-sized square, in pixels.
ASTRONAUT_FACE = (224.5, 113.5, 95)
CROP = (104, 0, 344, 240)  # a 240x240 piece of astronaut.png around the face: the face centre lands at (120.5, 113.5)
TURN_DEG = -20  # the composite's right-hand face is turned 20 degrees clockwise (PIL: negative = clockwise)
TOLERANCE_PX = 12


def invoke(*args, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


def refused(*args, words: tuple[str, ...]) -> str:
    """A user error: exit 2, one line on stderr, no traceback, naming every word."""
    return one_line_error(invoke(*args, code=2), *words)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """results/<study>/final of a 1-trial, 1-epoch quickstart sweep on 280 synthetic faces, via `run` + `best`."""
    root = tmp_path_factory.mktemp("faces-model")
    spec = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    spec.update(study="faces", trials=1)
    spec["splits"]["synthetic_n"] = 280
    spec["train"].update(epochs=1, patience=0)
    path = root / "quickstart.yaml"
    path.write_text(yaml.safe_dump(spec))
    results = root / "results"
    invoke("run", path, "--results", results, "--wandb", "disabled", "--device", "cpu")
    invoke("best", "--results", results, "--device", "cpu", "--wandb", "disabled")
    return results / "faces" / "final"


def composite() -> Image.Image:
    """Two copies of the astronaut's face side by side, the right one turned by TURN_DEG about the face centre:
    faces centred at (120.5, 113.5) and (360.5, 113.5)."""
    piece = Image.open(ASTRONAUT).convert("RGB").crop(CROP)
    turned = piece.rotate(TURN_DEG, resample=Image.BICUBIC, center=(120.5, 113.5), fillcolor=(90, 90, 90))
    out = Image.new("RGB", (480, 240))
    out.paste(piece, (0, 0))
    out.paste(turned, (240, 0))
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of photos: the real one, the composite (in a sub-folder), a gradient with no face, a 48x48 face
    crop, a damaged JPEG and a text file (not a photo: ignored)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "astronaut.png").write_bytes(ASTRONAUT.read_bytes())
    (root / "group").mkdir()
    composite().save(root / "group" / "composite.jpg", quality=95)
    ramp = np.tile(np.linspace(0, 255, 320, dtype=np.float32), (200, 1))
    Image.fromarray(np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 128)], -1).astype(np.uint8)).save(
        root / "gradient.png")
    face, _ = synthetic_faces(1, seed=3)
    Image.fromarray(face[0]).save(root / "crop48.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not a photo")
    return root


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def _centre(row: dict) -> tuple[float, float]:
    return int(row["x"]) + int(row["w"]) / 2, int(row["y"]) + int(row["h"]) / 2


def _near(row: dict, cx: float, cy: float, side: float) -> bool:
    x, y = _centre(row)
    return abs(x - cx) <= TOLERANCE_PX and abs(y - cy) <= TOLERANCE_PX and abs(int(row["w"]) - side) <= 0.25 * side


# ---------------------------------------------------------------------------------------- predict on photos


def test_predict_finds_every_face_in_a_folder_of_photos(model, photos, tmp_path):
    out, drawn = tmp_path / "faces.csv", tmp_path / "annotated"
    result = invoke("predict", model, "--data", photos, "--out", out, "--proba", "--annotate", drawn)
    skipped = result.stderr.strip().splitlines()
    assert len(skipped) == 1 and "broken.jpg" in skipped[0] and "not a readable image" in skipped[0], result.stderr
    assert "photos with no face: 1" in result.stdout and "unreadable files skipped: 1" in result.stdout

    rows = _rows(out)
    assert list(rows[0]) == ["file", "face", "x", "y", "w", "h", "angle", "emotion", "emotion_name", *EMOTIONS]
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    assert list(by_file) == ["astronaut.png", "crop48.png", "gradient.png", "group/composite.jpg"]  # sorted paths

    (real,) = by_file["astronaut.png"]
    assert _near(real, *ASTRONAUT_FACE) and real["angle"] == "0", real
    left, right = by_file["group/composite.jpg"]
    assert [left["face"], right["face"]] == ["0", "1"]
    assert _near(left, 120.5, 113.5, ASTRONAUT_FACE[2]) and left["angle"] == "0", left
    assert _near(right, 360.5, 113.5, ASTRONAUT_FACE[2]) and right["angle"] == "-20", right  # found turned, clockwise
    (crop,) = by_file["crop48.png"]
    assert [crop[k] for k in ("x", "y", "w", "h")] == ["0", "0", "48", "48"]  # a 48x48 photo is one face crop
    (empty,) = by_file["gradient.png"]
    assert all(value == "" for key, value in empty.items() if key != "file")  # no face: a row with no box

    for row in (real, left, right, crop):
        proba = np.array([float(row[c]) for c in EMOTIONS])
        assert proba.sum() == pytest.approx(1, abs=1e-4)
        assert int(row["emotion"]) == proba.argmax() and row["emotion_name"] == EMOTIONS[proba.argmax()]

    _check_annotated(photos, drawn, by_file)


def _check_annotated(photos: Path, drawn: Path, by_file: dict[str, list[dict]]) -> None:
    """A copy of every readable photo, same size; pixels changed on each box's outline, none far from the faces."""
    written = sorted(p.relative_to(drawn).as_posix() for p in drawn.rglob("*") if p.is_file())
    assert written == sorted(by_file)
    for name, rows in by_file.items():
        original = np.asarray(Image.open(photos / name).convert("RGB")).astype(int)
        copy = np.asarray(Image.open(drawn / name).convert("RGB")).astype(int)
        assert copy.shape == original.shape
        changed = np.abs(copy - original).sum(-1) > 60
        if rows[0]["x"] == "":
            assert changed[:40, :200].any() and not changed[100:].any(), name  # "no face found", top left
            continue
        for row in rows:
            x, y, w, h = (int(row[k]) for k in ("x", "y", "w", "h"))
            if row["angle"] == "0":  # the outline runs along the box's left edge
                assert changed[y + h // 4:y + 3 * h // 4, max(0, x - 6):x + 6].any(1).all(), (name, row)
        lowest = max(int(r["y"]) + int(r["h"]) for r in rows)
        assert not changed[min(lowest + 40, copy.shape[0]):].any(), name  # nothing drawn well below the faces


def test_predict_one_photo_json_and_same_probabilities_as_fer2013_input(model, photos, tmp_path):
    out = tmp_path / "one.csv"
    info = json.loads(invoke("predict", model, "--data", photos / "astronaut.png", "--out", out, "--json").stdout)
    assert info["layout"] == "photos"
    assert (info["photos"], info["faces"], info["no_face"], info["unreadable"]) == (1, 1, 0, 0)
    assert [r["file"] for r in _rows(out)] == ["astronaut.png"] and "angry" not in _rows(out)[0]

    # The 48x48 photo goes through the photo path; the same pixels as a Kaggle test.csv row give the same numbers.
    face = np.asarray(Image.open(photos / "crop48.png"))
    kaggle = tmp_path / "test.csv"
    kaggle.write_text("pixels\n" + " ".join(map(str, face.ravel())) + "\n")
    invoke("predict", model, "--data", kaggle, "--out", tmp_path / "fer.csv", "--proba")
    invoke("predict", model, "--data", photos / "crop48.png", "--out", tmp_path / "photo.csv", "--proba")
    fer, photo = _rows(tmp_path / "fer.csv")[0], _rows(tmp_path / "photo.csv")[0]
    assert [float(fer[c]) for c in EMOTIONS] == pytest.approx([float(photo[c]) for c in EMOTIONS], abs=1e-6)


def test_turned_faces_need_the_turned_passes_and_are_cropped_upright():
    grey = np.asarray(composite().convert("L"))
    assert len(photo_faces.detect_faces(grey, angles_deg=(0,))) == 1  # upright only: the turned face is missed
    left, right = photo_faces.detect_faces(grey)
    assert (left.angle_deg, right.angle_deg) == (0, TURN_DEG)
    a, b = (photo_faces.crop_face(grey, f).astype(float).ravel() for f in (left, right))
    assert a.shape == (48 * 48,) and np.corrcoef(a, b)[0, 1] > 0.8  # the turned face is cropped upright again


def test_photos_or_fer2013_is_decided_by_content(model, photos, tmp_path):
    folder = tmp_path / "fer"
    for split, label in (("train", "happy"), ("test", "sad")):
        (folder / split / label).mkdir(parents=True)
        Image.fromarray(synthetic_faces(1, seed=1)[0][0]).save(folder / split / label / "a.png")
    renamed = tmp_path / "astronaut-photo"  # a photo without a suffix is still a photo (its first bytes)
    renamed.write_bytes(ASTRONAUT.read_bytes())
    assert photo_faces.is_photo_source(str(photos)) and photo_faces.is_photo_source(str(renamed))
    assert not photo_faces.is_photo_source(str(folder)) and not photo_faces.is_photo_source("synthetic")

    out = tmp_path / "p.csv"
    invoke("predict", model, "--data", folder, "--out", out)
    assert list(_rows(out)[0]) == ["id", "emotion"]  # still FER2013's image-folder edition
    invoke("predict", model, "--data", renamed, "--out", out)
    assert [r["file"] for r in _rows(out)] == ["astronaut-photo"]

    refused("predict", model, "--data", photos, "--out", out, "--split", "test", words=("--split", "photos"))
    refused("predict", model, "--data", folder, "--out", out, "--annotate", tmp_path / "a", words=("--annotate",))
    refused("predict", model, "--data", photos / "broken.jpg", "--out", out,
            words=("broken.jpg", "not a readable image"))
    refused("predict", model, "--data", photos, "--out", out, "--annotate", photos, words=("would overwrite",))
    (tmp_path / "empty").mkdir()
    refused("predict", model, "--data", tmp_path / "empty", "--out", out, words=("no photos here", "train/"))
    refused("predict", tmp_path / "nope", "--data", photos, "--out", out, words=("nope", "no such folder"))


# ----------------------------------------------------------------------------------------------- export


def test_export_onnx_matches_torch(model, tmp_path):
    import torch

    from fer_sweep.learn.augment import normalize_batch
    from fer_sweep.learn.checkpoint import load_model

    path = tmp_path / "fer.onnx"
    shown = invoke("export", model, "--onnx", path).stdout
    diff = re.search(r"onnxruntime vs torch on 64 faces: max abs logit difference (\S+)", shown)
    assert diff and float(diff.group(1)) < 1e-4 and str(path) in shown, shown

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    config = json.loads((model / "config.json").read_text())
    assert (float(meta["norm_mean"]), float(meta["norm_std"])) == tuple(config["norm"])
    assert json.loads(meta["classes"]) == list(EMOTIONS) and "0..255" in meta["fer_sweep.input"]

    torch_model, _ = load_model(model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("faces", "logits") and inp.shape[1:] == [1, 48, 48]
    for n in (1, 5, 33):  # any batch size
        faces, _ = synthetic_faces(n, seed=n)
        x = normalize_batch(torch.from_numpy(faces), (float(meta["norm_mean"]), float(meta["norm_std"])))
        with torch.no_grad():
            expected = torch_model(x).numpy()
        got = session.run(None, {"faces": x.numpy()})[0]
        assert got.shape == (n, 7) and np.abs(got - expected).max() < 1e-4


def test_export_refuses_what_is_not_one_model(model, tmp_path):
    out = tmp_path / "m.onnx"
    refused("export", tmp_path / "nope", "--onnx", out, words=("nope", "no such folder"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    refused("export", tmp_path / "junk", "--onnx", out, words=("junk", "no model here"))
    ensemble = tmp_path / "study" / "final"
    ensemble.mkdir(parents=True)
    (ensemble / "ensemble.json").write_text(json.dumps({"members": ["a", "b"]}))
    refused("export", tmp_path / "study", "--onnx", out, words=("ensemble", "one of its members"))
    refused("export", model, "--onnx", tmp_path / "missing" / "m.onnx", words=("--onnx", "does not exist"))
    assert not out.exists()
