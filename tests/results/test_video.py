"""`predict` on videos in the results layer (results/video.py): a 4-second clip at 10 fps written with OpenCV, the
astronaut's portrait moving and growing across its first 3 seconds, then blank frames. Faces are found in the
sampled frames that show one and in none of the blank ones, with one id throughout; the CSV has the frames' times
and the timeline PNG is written. Also scikit-image's no_time_for_that_tiny.gif (frames too small for a face)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import skimage.data as skimage_data  # test-only (dev extra)
from PIL import Image

from fer_sweep.config import EMOTIONS, UserError
from fer_sweep.results import video as videos
from tests.helpers import astronaut_piece, tiny_model_folder

FPS, SECONDS, FACE_SECONDS = 10, 4, 3
GIF = Path(skimage_data.__file__).parent / "no_time_for_that_tiny.gif"


def write_portrait_clip(path: Path, fps: int = FPS, seconds: int = SECONDS, face_seconds: int = FACE_SECONDS,
                        size=(320, 240)) -> list:
    """The clip, and per frame (time, face centre x, y, side) or (time, None, None, None) for a blank frame: the
    portrait's face (95 px in astronaut.png) grows from 76 to 112 px while moving 100 px to the right."""
    import cv2

    piece = astronaut_piece()  # BGR; face at (120.5, 113.5)
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    truth = []
    for i in range(fps * seconds):
        t = i / fps
        frame = np.full((h, w, 3), 90, np.uint8)
        if i < fps * face_seconds:
            u = t / face_seconds
            scale, cx, cy = 0.8 + 0.4 * u, 110 + 100 * u, 120
            m = np.array([[scale, 0, cx - scale * 120.5], [0, scale, cy - scale * 113.5]])
            frame = cv2.warpAffine(piece, m, size, dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
            truth.append((t, cx, cy, 95 * scale))
        else:
            truth.append((t, None, None, None))
        writer.write(frame)
    writer.release()
    return truth


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("video-model") / "final")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "portrait.mp4"
    return path, write_portrait_clip(path)


@pytest.mark.parametrize("every", [0.0, 0.5])  # every frame, and the default's 0.5 s
def test_faces_in_frames_that_show_one_none_in_blank_frames_one_id(model, clip, every, tmp_path):
    path, truth = clip
    calls = []
    pred = videos.predict_media(model, str(path), every=every, device="cpu",
                                progress=lambda name, done, total: calls.append((name, done, total)))
    (video,) = pred.videos
    assert not pred.photos.photos and pred.unreadable == []
    expected_times = [round(k * (every or 1 / FPS), 6) for k in range(int(SECONDS / (every or 1 / FPS)))]
    assert [s.time_s for s in video.samples] == pytest.approx(expected_times, abs=1e-6)
    assert calls[-1] == ("portrait.mp4", len(expected_times), len(expected_times))  # progress, to the end

    with_face = [s for s in video.samples if s.time_s < FACE_SECONDS - 1e-6]
    blank = [s for s in video.samples if s.time_s >= FACE_SECONDS - 1e-6]
    found = [s for s in with_face if s.faces]
    assert len(found) >= 0.9 * len(with_face), [s.time_s for s in with_face if not s.faces]
    assert all(not s.faces for s in blank)
    assert {face_id for s in video.samples for face_id in s.ids} == {0}  # one face, one id throughout
    by_time = {round(t, 6): (cx, cy, side) for t, cx, cy, side in truth}
    for sample in found:
        (face,) = sample.faces
        cx, cy, side = by_time[round(sample.time_s, 6)]
        assert abs(face.cx - cx) < 0.15 * side and abs(face.cy - cy) < 0.15 * side and abs(face.size / side - 1) < 0.2
    assert video.proba.shape == (len(found), len(EMOTIONS)) and np.allclose(video.proba.sum(1), 1, atol=1e-4)


def test_csv_rows_per_frame_and_face_and_the_timeline(model, clip, tmp_path):
    path, _ = clip
    pred = videos.predict_media(model, str(path), every=0.5, device="cpu")
    out = videos.write_media_csv(pred, tmp_path / "faces.csv", proba=True)
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [*videos.MEDIA_COLUMNS, *EMOTIONS]
    assert [r["time"] for r in rows] == ["0.000", "0.500", "1.000", "1.500", "2.000", "2.500", "3.000", "3.500"]
    assert [r["frame"] for r in rows] == ["0", "5", "10", "15", "20", "25", "30", "35"]
    assert [r["face"] for r in rows] == ["0"] * 6 + ["", ""]  # blank frames: a row with the time only
    assert all(r["x"] == "" and r["emotion"] == "" for r in rows[6:]) and {r["file"] for r in rows} == {"portrait.mp4"}
    assert math.isclose(sum(float(rows[0][c]) for c in EMOTIONS), 1, abs_tol=1e-4)

    (png,) = videos.write_timelines(pred, tmp_path / "faces.csv")
    assert png == tmp_path / "faces.timeline.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 200


def test_annotated_copy_has_every_frame_and_boxes_where_the_face_is(model, clip, tmp_path):
    import cv2

    path, truth = clip
    pred = videos.predict_media(model, str(path), every=0.5, device="cpu")
    (copy,) = videos.write_annotated_videos(pred, tmp_path / "drawn")
    assert copy == tmp_path / "drawn" / "portrait.mp4"
    original, drawn = cv2.VideoCapture(str(path)), cv2.VideoCapture(str(copy))
    assert drawn.get(cv2.CAP_PROP_FRAME_COUNT) == FPS * SECONDS and drawn.get(cv2.CAP_PROP_FPS) == FPS
    changed = []
    for t, cx, cy, side in truth:
        (_, a), (_, b) = original.read(), drawn.read()
        diff = np.abs(a.astype(int) - b.astype(int)).sum(-1) > 120
        changed.append(diff.any())
        if cx is not None and diff.any():  # the box is drawn around the face, not elsewhere
            ys, xs = np.nonzero(diff)
            assert abs(xs.mean() - cx) < 0.5 * side and cx - side < xs.min() and xs.max() < cx + side
    assert all(changed[:FPS * FACE_SECONDS - 3]) and not any(changed[FPS * FACE_SECONDS + 3:])
    with pytest.raises(UserError, match="would overwrite"):
        videos.write_annotated_videos(pred, path.parent)


def test_the_tiny_animated_gif_frames_times_and_no_face(model, tmp_path):
    pred = videos.predict_media(model, str(GIF), every=None, device="cpu")
    (video,) = pred.videos
    assert video.name == "no_time_for_that_tiny.gif" and video.clip.frames == 24
    assert [s.index for s in video.samples] == [0, 7, 15, 22]
    assert [s.time_s for s in video.samples] == pytest.approx([0, 0.49, 1.05, 1.54])
    assert all(not s.faces for s in video.samples) and video.proba.shape == (0, 7)  # 14x25 px: no face fits
    rows = list(csv.DictReader(videos.write_media_csv(pred, tmp_path / "gif.csv").open()))
    assert [(r["time"], r["face"]) for r in rows] == [("0.000", ""), ("0.490", ""), ("1.050", ""), ("1.540", "")]
    (png,) = videos.write_timelines(pred, tmp_path / "gif.csv")  # a timeline that says no face was found
    assert png.is_file()


def test_a_file_that_is_not_a_video_is_a_user_error(model, tmp_path):
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(b"not a video at all")
    with pytest.raises(UserError, match="clip.mp4: not a readable video"):
        videos.predict_media(model, str(fake), device="cpu")
