"""`fer-sweep predict` through the real CLI: on FER2013 data (the round trip with `best`, every layout, malicious
or broken checkpoints refused) and on real photographs (scikit-image's astronaut.png and a composite built from
it: two faces, one turned 20 degrees, and a photo with no face)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_sweep.config import EMOTIONS
from fer_sweep.data import photos as photo_faces
from fer_sweep.data.splits import load_splits
from fer_sweep.data.synthetic import synthetic_faces
from tests.helpers import astronaut_path, composite, csv_rows, invoke, refused, write_rows_csv

# Where the face is in astronaut.png (512x512): centre and side of a face-sized square, in pixels.
ASTRONAUT_FACE = (224.5, 113.5, 95)
TOLERANCE_PX = 12


def test_predict_round_trip_matches_best_on_the_test_split(finished_study, tmp_path):
    out = tmp_path / "test.csv"
    result = invoke("predict", finished_study["final"], "--data", "synthetic", "--split", "test", "--out", out,
                    "--json")
    info = json.loads(result.stdout)
    metrics = json.loads((finished_study["final"] / "metrics.json").read_text())
    saved = next(r for r in metrics["runs"] if r["seed"] == metrics["saved_seed"])
    assert info["n"] == metrics["n_test"] == 56
    assert info["acc"] == pytest.approx(saved["test/acc"], abs=1e-6)
    rows = csv_rows(out)
    assert list(rows[0]) == ["id", "emotion"] and len(rows) == 56
    splits = load_splits("synthetic", val_frac=0.2, test_frac=0.2, seed=0, synthetic_n=280)
    faces, _ = synthetic_faces(280, seed=0)
    ids = [int(r["id"]) for r in rows]
    assert np.array_equal(faces[ids], splits.test.x)  # ids are the rows of the data, in order
    assert np.mean([int(r["emotion"]) for r in rows] == splits.test.y) == pytest.approx(saved["test/acc"])
    shown = invoke("predict", finished_study["folder"], "--data", "synthetic", "--split", "test", "--out", out).stdout
    assert f"accuracy: {100 * saved['test/acc']:.2f}%" in shown  # a study folder means its final/ model


def test_predict_unlabeled_kaggle_test_csv_and_fer2013_csv(finished_study, tmp_path):
    x, y = synthetic_faces(30, seed=5)
    pixels = [" ".join(map(str, face.ravel())) for face in x]
    kaggle = write_rows_csv(tmp_path / "test.csv", ["pixels"], [[p] for p in pixels])
    usage = ["Training"] * 10 + ["PublicTest"] * 10 + ["PrivateTest"] * 10
    fer = write_rows_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"],
                         [[int(label), p, u] for label, p, u in zip(y, pixels, usage)])

    out = tmp_path / "kaggle-pred.csv"
    shown = invoke("predict", finished_study["final"], "--data", kaggle, "--out", out, "--proba").stdout
    assert "no labels" in shown and "accuracy:" not in shown
    rows = csv_rows(out)
    assert list(rows[0]) == ["id", "emotion", *EMOTIONS] and [int(r["id"]) for r in rows] == list(range(30))
    proba = np.array([[float(r[c]) for c in EMOTIONS] for r in rows])
    assert np.allclose(proba.sum(1), 1, atol=1e-4)
    # the label is the most probable class: its probability is the row's largest as written (6 decimals: a barely
    # trained model's near-uniform rows can tie there, or differ from the unrounded order by 1e-6)
    assert all(p[int(r["emotion"])] >= p.max() - 1e-6 for r, p in zip(rows, proba))

    info = json.loads(invoke("predict", finished_study["final"], "--data", fer, "--out", out, "--proba",
                             "--json").stdout)
    assert info["n"] == 30 and info["layout"] == "fer2013" and 0 <= info["acc"] <= 1
    assert np.allclose(np.array([[float(r[c]) for c in EMOTIONS] for r in csv_rows(out)]), proba, atol=1e-6)
    invoke("predict", finished_study["final"], "--data", fer, "--out", out, "--split", "test", "--tta")
    assert [int(r["id"]) for r in csv_rows(out)] == list(range(20, 30))  # PrivateTest rows, numbered in the file
    refused("predict", finished_study["final"], "--data", kaggle, "--out", out, "--split", "test",
            words=("unlabeled", "--split all"))


def test_predict_folder_layout_ids_are_file_names(finished_study, tmp_path):
    x, _ = synthetic_faces(4, seed=2)
    for i, (face, label) in enumerate(zip(x, ["happy", "sad", "happy", "fear"])):
        folder = tmp_path / "faces" / ("train" if i < 2 else "test") / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(folder / f"img{i}.png")
    out = tmp_path / "pred.csv"
    invoke("predict", finished_study["final"], "--data", tmp_path / "faces", "--out", out)
    assert [r["id"] for r in csv_rows(out)] == ["test/fear/img3.png", "test/happy/img2.png",
                                                "train/happy/img0.png", "train/sad/img1.png"]


class Payload:
    """Pickles as a call to os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Harmless:
    """A plain class instance: still code by reference, which weights_only refuses."""


@pytest.mark.parametrize("payload", ["reduce", "class"])
def test_predict_refuses_a_checkpoint_carrying_code(finished_study, tmp_path, payload):
    model_dir = tmp_path / "model"
    shutil.copytree(finished_study["final"], model_dir)
    marker = tmp_path / "pwned"
    state = torch.load(model_dir / "model.pt", weights_only=True)
    state["extra"] = Payload(marker) if payload == "reduce" else Harmless()
    torch.save(state, model_dir / "model.pt")
    refused("predict", model_dir, "--data", "synthetic", "--out", tmp_path / "p.csv",
            words=("model.pt", "refused", "not a plain weights file"))
    assert not marker.exists(), "the checkpoint's payload ran"
    assert not (tmp_path / "p.csv").exists()


def test_predict_bad_model_folder_and_weights(finished_study, tmp_path):
    out = tmp_path / "p.csv"
    refused("predict", tmp_path, "--data", "synthetic", "--out", out, words=("no model here",))
    model_dir = tmp_path / "model"
    shutil.copytree(finished_study["final"], model_dir)
    torch.save({"weight": torch.zeros(3)}, model_dir / "model.pt")
    refused("predict", model_dir, "--data", "synthetic", "--out", out, words=("cannot load the model",))
    refused("predict", finished_study["final"], "--data", "synthetic", "--split", "dev", "--out", out,
            words=("--split", "dev"))
    assert not out.exists()


# ------------------------------------------------------------------------------------------ on photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of photos: the real one, the composite (in a sub-folder), a gradient with no face, a 48x48 face
    crop, a damaged JPEG and a text file (not a photo: ignored)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "astronaut.png").write_bytes(astronaut_path().read_bytes())
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


SYNTHETIC_WARNING = ("warning: this model was trained on synthetic faces (data: synthetic), not on FER2013: its "
                     "emotions for real photos and videos mean nothing (train on FER2013 for real ones)")


def test_only_a_model_trained_on_synthetic_faces_warns_on_photos(quickstart_model, photos, tmp_path):
    """Before: no word that a `data: synthetic` model's emotions for a real face are noise. Now one line on stderr,
    for photos and videos only (its own synthetic faces are what it was made for)."""
    photo = photos / "astronaut.png"
    assert invoke("predict", quickstart_model, "--data", photo, "--out", tmp_path / "a.csv").stderr.strip() == \
        SYNTHETIC_WARNING
    assert "warning" not in invoke("predict", quickstart_model, "--data", "synthetic", "--out",
                                   tmp_path / "s.csv").stderr
    other = tmp_path / "fer-model"  # the same model, trained (its config.json says) on a FER2013 file
    shutil.copytree(quickstart_model, other)
    config = json.loads((other / "config.json").read_text())
    assert config["data"] == "synthetic"
    (other / "config.json").write_text(json.dumps({**config, "data": "data/icml_face_data.csv"}))
    assert invoke("predict", other, "--data", photo, "--out", tmp_path / "b.csv").stderr == ""


def _centre(row: dict) -> tuple[float, float]:
    return int(row["x"]) + int(row["w"]) / 2, int(row["y"]) + int(row["h"]) / 2


def _near(row: dict, cx: float, cy: float, side: float) -> bool:
    x, y = _centre(row)
    return abs(x - cx) <= TOLERANCE_PX and abs(y - cy) <= TOLERANCE_PX and abs(int(row["w"]) - side) <= 0.25 * side


def test_predict_finds_every_face_in_a_folder_of_photos(quickstart_model, photos, tmp_path):
    out, drawn = tmp_path / "faces.csv", tmp_path / "annotated"
    result = invoke("predict", quickstart_model, "--data", photos, "--out", out, "--proba", "--annotate", drawn)
    skipped, warned = result.stderr.strip().splitlines()  # the quickstart model learnt synthetic faces: it says so
    assert "broken.jpg" in skipped and "not a readable image" in skipped, result.stderr
    assert warned == SYNTHETIC_WARNING
    assert "photos with no face: 1" in result.stdout and "unreadable files skipped: 1" in result.stdout

    rows = csv_rows(out)
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
        label = int(row["emotion"])  # the most probable class (as written, to 6 decimals: ties are possible)
        assert proba[label] >= proba.max() - 1e-6 and row["emotion_name"] == EMOTIONS[label]

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


def test_predict_one_photo_json_and_same_probabilities_as_fer2013_input(quickstart_model, photos, tmp_path):
    out = tmp_path / "one.csv"
    shown = invoke("predict", quickstart_model, "--data", photos / "astronaut.png", "--out", out, "--json").stdout
    info = json.loads(shown)
    assert info["layout"] == "photos"
    assert (info["photos"], info["faces"], info["no_face"], info["unreadable"]) == (1, 1, 0, 0)
    assert [r["file"] for r in csv_rows(out)] == ["astronaut.png"] and "angry" not in csv_rows(out)[0]

    # The 48x48 photo goes through the photo path; the same pixels as a Kaggle test.csv row give the same numbers.
    face = np.asarray(Image.open(photos / "crop48.png"))
    kaggle = tmp_path / "test.csv"
    kaggle.write_text("pixels\n" + " ".join(map(str, face.ravel())) + "\n")
    invoke("predict", quickstart_model, "--data", kaggle, "--out", tmp_path / "fer.csv", "--proba")
    invoke("predict", quickstart_model, "--data", photos / "crop48.png", "--out", tmp_path / "photo.csv", "--proba")
    fer, photo = csv_rows(tmp_path / "fer.csv")[0], csv_rows(tmp_path / "photo.csv")[0]
    assert [float(fer[c]) for c in EMOTIONS] == pytest.approx([float(photo[c]) for c in EMOTIONS], abs=1e-6)


def test_photos_or_fer2013_is_decided_by_content(quickstart_model, photos, tmp_path):
    folder = tmp_path / "fer"
    for split, label in (("train", "happy"), ("test", "sad")):
        (folder / split / label).mkdir(parents=True)
        Image.fromarray(synthetic_faces(1, seed=1)[0][0]).save(folder / split / label / "a.png")
    renamed = tmp_path / "astronaut-photo"  # a photo without a suffix is still a photo (its first bytes)
    renamed.write_bytes(astronaut_path().read_bytes())
    assert photo_faces.is_photo_source(str(photos)) and photo_faces.is_photo_source(str(renamed))
    assert not photo_faces.is_photo_source(str(folder)) and not photo_faces.is_photo_source("synthetic")

    out = tmp_path / "p.csv"
    invoke("predict", quickstart_model, "--data", folder, "--out", out)
    assert list(csv_rows(out)[0]) == ["id", "emotion"]  # still FER2013's image-folder edition
    invoke("predict", quickstart_model, "--data", renamed, "--out", out)
    assert [r["file"] for r in csv_rows(out)] == ["astronaut-photo"]

    model = quickstart_model
    refused("predict", model, "--data", photos, "--out", out, "--split", "test", words=("--split", "photos"))
    refused("predict", model, "--data", folder, "--out", out, "--annotate", tmp_path / "a", words=("--annotate",))
    refused("predict", model, "--data", photos / "broken.jpg", "--out", out,
            words=("broken.jpg", "not a readable image"))
    refused("predict", model, "--data", photos, "--out", out, "--annotate", photos, words=("would overwrite",))
    (tmp_path / "empty").mkdir()
    refused("predict", model, "--data", tmp_path / "empty", "--out", out, words=("no photos here", "train/"))
    # not a photo, a video or FER2013: before, only the CSV headers were named; now also what else predict reads
    line = refused("predict", model, "--data", photos / "notes.txt", "--out", out,
                   words=("unknown layout", "'emotion,Usage,pixels'", "predict also reads",
                          f"photos ({photo_faces.suffixes('photo')}) and videos ({photo_faces.suffixes('video')})"))
    assert "photos (jpg, jpeg, png, bmp, gif, webp, tif, tiff) and videos (mp4, m4v, mov, avi, mkv" in line
    refused("predict", tmp_path / "nope", "--data", photos, "--out", out, words=("nope", "no such folder"))
