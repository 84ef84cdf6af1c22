"""`fer-sweep predict` on videos through the real CLI: a clip written with OpenCV (a portrait for 1.5 s, then blank
frames), --every, the CSV with times, the timeline PNG beside it, --annotate's MP4, a folder that mixes photos and
videos, and what is not a video refused in one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_sweep.config import EMOTIONS
from tests.helpers import astronaut_path, astronaut_piece, csv_rows, invoke, refused, tiny_model_folder


def write_clip(path: Path, frames: int = 20, face_frames: int = 15, fps: int = 10) -> Path:
    """`frames` frames of 240x240 at `fps`: the astronaut's face (95 px, centred at (120.5, 113.5)) in the first
    `face_frames`, drifting 2 px right per frame; grey after."""
    import cv2

    piece = astronaut_piece()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (240, 240))
    for i in range(frames):
        frame = np.full((240, 240, 3), 90, np.uint8)
        if i < face_frames:
            frame = cv2.warpAffine(piece, np.float32([[1, 0, 2 * i], [0, 1, 0]]), (240, 240), dst=frame,
                                   borderMode=cv2.BORDER_TRANSPARENT)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("cli-video-model") / "final")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("cli-clips") / "talk.mp4")


def test_predict_a_video_rows_per_sampled_frame_timeline_and_annotated_copy(model, clip, tmp_path):
    out, drawn = tmp_path / "faces.csv", tmp_path / "drawn"
    shown = invoke("predict", model, "--data", clip, "--out", out, "--every", "0.5s", "--proba", "--annotate", drawn)
    rows = csv_rows(out)
    assert list(rows[0]) == ["file", "time", "frame", "face", "x", "y", "w", "h", "angle", "emotion",
                             "emotion_name", *EMOTIONS]
    assert [(r["time"], r["frame"], r["face"]) for r in rows] == [
        ("0.000", "0", "0"), ("0.500", "5", "0"), ("1.000", "10", "0"), ("1.500", "15", "")]  # 1.5 s: blank
    assert all(r["file"] == "talk.mp4" for r in rows) and rows[3]["x"] == rows[3]["emotion_name"] == ""
    assert [int(r["x"]) + int(r["w"]) / 2 for r in rows[:3]] == pytest.approx([120.5, 130.5, 140.5], abs=6)
    timeline = tmp_path / "faces.timeline.png"
    assert Image.open(timeline).format == "PNG"
    assert (drawn / "talk.mp4").is_file()
    text = shown.stdout
    assert "from 1 video (4 sampled frames)" in text and "faces in 3, 1 face id" in text and str(timeline) in text
    assert "annotated copies: 1" in text and "photos with no face" not in text

    info = json.loads(invoke("predict", model, "--data", clip, "--out", out, "--every", "250ms", "--json").stdout)
    (video,) = info["videos"]
    assert info["layout"] == "videos" and info["timelines"] == [str(timeline)]
    assert (video["frames"], video["frames_with_face"], video["face_ids"], video["every_s"]) == (8, 6, 1, 0.25)
    assert video["fps"] == 10 and video["duration_s"] == 2


def test_a_folder_mixing_photos_and_videos(model, clip, tmp_path):
    import skimage.data as skimage_data

    folder = tmp_path / "media"
    (folder / "clips").mkdir(parents=True)
    (folder / "astronaut.png").write_bytes(astronaut_path().read_bytes())
    (folder / "clips" / "talk.mp4").write_bytes(clip.read_bytes())
    (folder / "tiny.gif").write_bytes((Path(skimage_data.__file__).parent / "no_time_for_that_tiny.gif").read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom and then nothing")
    out = tmp_path / "all.csv"
    result = invoke("predict", model, "--data", folder, "--out", out, "--every", "1", "--annotate", tmp_path / "drawn")
    skipped = result.stderr.strip().splitlines()
    assert len(skipped) == 1 and "broken.mp4" in skipped[0] and "not a readable video" in skipped[0], result.stderr
    rows = csv_rows(out)
    assert [(r["file"], r["time"], r["face"]) for r in rows] == [
        ("astronaut.png", "", "0"), ("clips/talk.mp4", "0.000", "0"), ("clips/talk.mp4", "1.000", "0"),
        ("tiny.gif", "0.000", ""), ("tiny.gif", "1.050", "")]  # sorted by path; a photo has no time
    timelines = tmp_path / "all.timeline"
    assert sorted(p.relative_to(timelines).as_posix() for p in timelines.rglob("*.png")) == [
        "clips/talk.mp4.png", "tiny.gif.png"]
    drawn = sorted(p.relative_to(tmp_path / "drawn").as_posix() for p in (tmp_path / "drawn").rglob("*") if p.is_file())
    assert drawn == ["astronaut.png", "clips/talk.mp4", "tiny.gif.mp4"]
    assert "1 photo and 2 videos" in result.stdout and "unreadable files skipped: 1" in result.stdout


def test_what_is_not_a_readable_video_is_one_line_exit_2(model, clip, tmp_path):
    out = tmp_path / "x.csv"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42 and no frames")
    refused("predict", model, "--data", junk, "--out", out, words=("junk.mp4", "not a readable video"))
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    refused("predict", model, "--data", empty, "--out", out, words=("empty.avi", "not a readable video"))
    refused("predict", model, "--data", clip, "--out", out, "--every", "often", words=("--every", "often"))
    refused("predict", model, "--data", clip, "--out", out, "--annotate", clip.parent, words=("would overwrite",))
    refused("predict", model, "--data", "synthetic", "--out", out, "--every", "1", words=("--every", "videos"))
