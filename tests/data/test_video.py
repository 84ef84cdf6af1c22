"""Videos in the data layer (data/video.py, data/photos.py): which files are videos, frames read at the sampled
times (OpenCV, and Pillow for animated images), and face ids that follow a face from frame to frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data as skimage_data  # test-only (dev extra): no_time_for_that_tiny.gif, a 24-frame animated GIF
from PIL import Image

from fer_sweep.config import UserError
from fer_sweep.data import photos as photo_faces
from fer_sweep.data import video

GIF = Path(skimage_data.__file__).parent / "no_time_for_that_tiny.gif"  # 14x25 px, 24 frames of 70 ms


def write_clip(path: Path, frames: int = 25, fps: float = 10.0, size=(64, 48)) -> Path:
    """An MP4 of `frames` frames whose grey level is 10 x the frame's index (so a frame read tells its index)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 10 * i, np.uint8))
    writer.release()
    return path


def test_frames_are_sampled_at_their_times(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    info = video.open_clip(clip)
    assert (info.fps, info.frames, info.width, info.height, info.duration_s) == (10.0, 25, 64, 48, 2.5)
    half = list(video.read_frames(clip, 0.5))
    assert [(f.index, f.time_s) for f in half] == [(0, 0.0), (5, 0.5), (10, 1.0), (15, 1.5), (20, 2.0)]
    assert [int(np.median(f.image)) for f in half] == pytest.approx([0, 50, 100, 150, 200], abs=4)  # the right frame
    assert half[0].image.shape == (48, 64) and half[0].image.dtype == np.uint8  # grey
    every = list(video.read_frames(clip, 0))
    assert [f.index for f in every] == list(range(25)) and every[7].time_s == pytest.approx(0.7)
    assert next(video.read_frames(clip, 0.3, colour=True)).image.shape == (48, 64, 3)
    assert [f.index for f in video.read_frames(clip, 0.35)] == [0, 4, 7, 11, 14, 18, 21]  # the first at or after
    assert [f.index for f in video.read_frames(clip)] == [0, 5, 10, 15, 20]  # default: every 0.5 s


def test_default_sampling_is_sparser_for_long_clips():
    short = video.Clip(Path("a.mp4"), fps=30.0, frames=30 * 60, width=640, height=480)  # 1 minute
    long = video.Clip(Path("b.mp4"), fps=25.0, frames=25 * 3600, width=640, height=480)  # 1 hour
    assert video.default_every(short) == 0.5
    assert video.default_every(long) == pytest.approx(3.6)  # at most 1000 sampled frames
    assert video.default_every(video.Clip(Path("c.gif"), 0.0, 0, 10, 10)) == 0.5  # nothing declared


def test_animated_gif_through_opencv_and_through_pillow(monkeypatch):
    for reader in ("opencv", "pillow"):
        if reader == "pillow":  # an OpenCV build without FFmpeg's GIF reader: Pillow reads it
            monkeypatch.setattr(video, "_capture", lambda path: None)
        info = video.open_clip(GIF)
        assert (info.frames, info.width, info.height) == (24, 14, 25) and info.fps == pytest.approx(1 / 0.07)
        frames = list(video.read_frames(GIF, 0.5))
        assert [f.index for f in frames] == [0, 7, 15, 22], reader  # 70 ms frames: the first at or after each 0.5 s
        assert [f.time_s for f in frames] == pytest.approx([0, 0.49, 1.05, 1.54])
        assert frames[0].image.shape == (25, 14)


def test_which_files_are_videos(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=3)
    renamed = tmp_path / "clip-without-suffix"
    renamed.write_bytes(clip.read_bytes())  # told by its first bytes ("ftyp")
    still = tmp_path / "still.gif"
    Image.new("L", (30, 30), 128).save(still)
    assert photo_faces.is_video(clip) and photo_faces.is_video(renamed) and photo_faces.is_video(GIF)
    assert not photo_faces.is_video(still)  # a GIF of one frame is a photo
    assert photo_faces.is_photo_source(str(clip)) and photo_faces.is_photo_source(str(renamed))
    (tmp_path / "notes.txt").write_text("not a video")
    assert [(name, kind) for _, name, kind in photo_faces.list_media(tmp_path)] == [
        ("clip-without-suffix", "video"), ("clip.mp4", "video"), ("still.gif", "photo")]


def test_what_is_not_a_video_is_one_user_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42 but nothing else")
    with pytest.raises(UserError, match="junk.mp4: not a readable video"):
        video.open_clip(junk)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty.avi"):
        list(video.read_frames(empty))


@pytest.mark.parametrize("text, seconds", [("0.5", 0.5), ("0.5s", 0.5), ("2", 2.0), ("250ms", 0.25), ("0", 0.0),
                                           (" 1.5 s ", 1.5), ("auto", None), (None, None)])
def test_every_is_read_in_seconds(text, seconds):
    assert video.parse_every(text) == seconds


@pytest.mark.parametrize("text", ["fast", "-1", "1x", "1e9999", "s"])
def test_every_refuses_what_is_not_a_time(text):
    with pytest.raises(UserError, match="--every"):
        video.parse_every(text)


def test_a_face_keeps_its_id_while_it_moves_and_scales():
    tracker = video.FaceTracker(every_s=0.5)
    ids = []
    for k in range(8):  # moving 12 px and growing 5% per frame: boxes overlap well from one frame to the next
        ids.append(tracker.update(0.5 * k, [photo_faces.Face(100 + 12 * k, 80, 60 * 1.05 ** k)]))
    assert ids == [[0]] * 8


def test_faces_are_matched_by_overlap_and_new_or_returning_faces_get_ids():
    face = photo_faces.Face
    tracker = video.FaceTracker(every_s=0.5)
    assert tracker.update(0.0, [face(50, 50, 40), face(200, 50, 40)]) == [0, 1]
    assert tracker.update(0.5, [face(205, 52, 40), face(52, 50, 42)]) == [1, 0]  # order of the list does not matter
    assert tracker.update(1.0, [face(54, 50, 42)]) == [0]  # face 1 not found in this frame ...
    assert tracker.update(1.5, [face(54, 50, 42), face(206, 50, 40)]) == [0, 1]  # ... and back within the gap
    assert tracker.update(2.0, [face(400, 300, 40)]) == [2]  # somewhere else: a new face
    assert tracker.update(4.0, [face(54, 50, 42)]) == [3]  # gone longer than max(1 s, 3 samples): a new id
    assert video.box_iou(face(0, 0, 10), face(0, 0, 10)) == 1 and video.box_iou(face(0, 0, 10), face(20, 0, 10)) == 0
