"""Faces in videos: read a clip's frames at chosen times (OpenCV; an animated GIF, PNG or WebP through Pillow where
OpenCV cannot read it), and follow faces from one sampled frame to the next by the overlap of their boxes."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from fer_sweep.config import UserError
from fer_sweep.data.photos import Face

DEFAULT_EVERY_S = 0.5  # seconds between sampled frames, for clips up to MAX_SAMPLES x this long (8m20s)
MAX_SAMPLES = 1000  # a longer clip is sampled more sparsely: at most this many frames by default (1 h: every 3.6 s)
# A face in the next sampled frame is the same face when their boxes overlap this much (intersection over union);
# a face not matched for TRACK_GAP_SAMPLES samples (and at least TRACK_GAP_S seconds) is gone: a new one gets a new id.
MIN_IOU, TRACK_GAP_SAMPLES, TRACK_GAP_S = 0.3, 3, 1.0


@dataclass(frozen=True)
class Clip:
    """What a video declares about itself (OpenCV's properties; an animated image's frames and durations)."""

    path: Path
    fps: float  # 0.0 when the container does not say
    frames: int  # the declared frame count, 0 when unknown (an estimate for some containers)
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps if self.fps > 0 and self.frames > 0 else 0.0


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its 0-based index in the video, its time in seconds, and its pixels."""

    index: int
    time_s: float
    image: np.ndarray  # (H, W) uint8 grey, or (H, W, 3) uint8 BGR with colour=True


# ---------------------------------------------------------------------------------------------- times


def parse_every(text: Optional[str]) -> Optional[float]:
    """`--every`: seconds between sampled frames, as "0.5", "0.5s" or "500ms"; "0" samples every frame; None or
    "auto" is the default (see default_every)."""
    if text is None or text.strip().lower() == "auto":
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|ms)?\s*", text.lower())
    if not match:
        raise UserError(f"--every {text}: not a time (seconds between sampled frames: 0.5, 0.5s, 500ms, 0 for every "
                        "frame, or auto)")
    value = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if not math.isfinite(value):
        raise UserError(f"--every {text}: not a time")
    return value


def default_every(clip: Clip) -> float:
    """DEFAULT_EVERY_S, or for a clip longer than MAX_SAMPLES of those, its duration / MAX_SAMPLES."""
    return max(DEFAULT_EVERY_S, clip.duration_s / MAX_SAMPLES)


# ---------------------------------------------------------------------------------------------- read


def _capture(path: Path):
    # FFmpeg's own messages ("moov atom not found") would go to stderr beside our one-line error: quiet, unless the
    # user asked for them (read by OpenCV when its FFmpeg backend starts, on the first capture)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        return None
    return capture


def _animated(path: Path):
    """The file as an animated Pillow image (GIF, APNG, WebP with 2+ frames), else None."""
    from PIL import Image

    try:
        image = Image.open(path)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None
    if getattr(image, "n_frames", 1) > 1:
        return image
    image.close()
    return None


def open_clip(path: Path) -> Clip:
    """What the video declares; UserError naming the file when it is not a readable video or has no frame."""
    _cv2()
    import cv2

    path = Path(path)
    capture = _capture(path)
    if capture is None:
        image = _animated(path)
        if image is None:
            raise UserError(f"{path}: not a readable video (OpenCV cannot open it: damaged, empty, or a format its "
                            "FFmpeg lacks)")
        with image:
            durations = _durations(image)
            fps = len(durations) / sum(durations) if sum(durations) > 0 else 0.0
            return Clip(path, fps, len(durations), image.width, image.height)
    try:
        ok, first = capture.read()
        if not ok or first is None:
            raise UserError(f"{path}: a video with no frames")
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if math.isfinite(fps) and 0 < fps < 1000 else 0.0
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        count = int(count) if math.isfinite(count) and count > 0 else 0
        return Clip(path, fps, count, int(first.shape[1]), int(first.shape[0]))
    finally:
        capture.release()


def _cv2():
    try:
        import cv2  # noqa: F401 - only whether OpenCV is installed
    except ImportError:
        raise UserError("videos need OpenCV: pip install 'fer-sweep[export]'") from None


def _durations(image) -> list[float]:
    """Seconds each frame of an animated Pillow image is shown (100 ms where it does not say)."""
    out = []
    for i in range(image.n_frames):
        image.seek(i)
        out.append(max(0.0, float(image.info.get("duration") or 100)) / 1000)
    image.seek(0)
    return out


def read_frames(path: Path, every: Optional[float] = None, *, colour: bool = False) -> Iterator[Frame]:
    """The frames at 0, every, 2 x every, ... seconds (each the first frame at or after that time; every=0: every
    frame; None: default_every), grey or, with colour, BGR. UserError for a file that is not a readable video
    or has no frame."""
    clip = open_clip(path)
    step = default_every(clip) if every is None else max(0.0, float(every))
    tolerance = 0.25 / clip.fps if clip.fps > 0 else 1e-3  # a frame a hair before a sample time is that sample
    next_s = 0.0
    for index, time_s, grab in _all_frames(clip):
        if time_s + tolerance < next_s:
            continue
        image = grab(colour)
        if image is None:
            break
        yield Frame(index, round(time_s, 6), image)
        if step > 0:  # the next multiple of step after this frame (counted, not summed: no drift)
            next_s = (math.floor((time_s + tolerance) / step) + 1) * step
        else:
            next_s = math.nextafter(time_s + tolerance, math.inf)


def _all_frames(clip: Clip):
    """(index, time in seconds, a function returning that frame's pixels) for every frame, in order. Times are
    the frames' own timestamps where the container gives increasing ones, else index / fps."""
    import cv2

    capture = _capture(clip.path)
    if capture is None:
        yield from _pil_frames(clip)
        return
    try:
        index, last = 0, -1.0
        while capture.grab():
            stamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
            if not (math.isfinite(stamp) and (stamp > last or index == 0)):  # no usable timestamp: the frame rate's
                stamp = max(index / clip.fps if clip.fps > 0 else 0.0, last + 1e-3) if index else 0.0
            last = stamp

            def retrieve(colour: bool):
                ok, image = capture.retrieve()
                if not ok or image is None:
                    return None
                if image.ndim == 2:
                    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if colour else image
                return image if colour else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)

            yield index, stamp, retrieve
            index += 1
    finally:
        capture.release()


def _pil_frames(clip: Clip):
    image = _animated(clip.path)
    if image is None:
        return
    with image:
        durations = _durations(image)
        start = 0.0
        for index, duration in enumerate(durations):
            image.seek(index)
            rgb = np.asarray(image.convert("RGB"))

            def pixels(colour: bool, rgb=rgb):
                import cv2

                return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR if colour else cv2.COLOR_RGB2GRAY)

            yield index, start, pixels
            start += duration


# ---------------------------------------------------------------------------------------------- track


def box_iou(a: Face, b: Face) -> float:
    """Intersection over union of the two faces' squares (their tilt left aside)."""
    ax, ay, aw, _ = a.cx - a.size / 2, a.cy - a.size / 2, a.size, a.size
    bx, by, bw, _ = b.cx - b.size / 2, b.cy - b.size / 2, b.size, b.size
    w = min(ax + aw, bx + bw) - max(ax, bx)
    h = min(ay + aw, by + bw) - max(ay, by)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (aw * aw + bw * bw - inter)


class FaceTracker:
    """Gives each face of each sampled frame an id that stays with that face across frames: a face takes the id
    of the face of an earlier frame whose box it overlaps most (MIN_IOU at least; each id once per frame), else a
    new id (0, 1, 2, ... in order of first appearance). A face unseen for longer than the gap is forgotten."""

    def __init__(self, every_s: float = DEFAULT_EVERY_S):
        self.gap_s = max(TRACK_GAP_S, TRACK_GAP_SAMPLES * every_s)
        self.last: dict[int, tuple[float, Face]] = {}  # id -> (time last seen, its face then)
        self.next_id = 0

    def update(self, time_s: float, faces: Sequence[Face]) -> list[int]:
        """The ids of `faces` (found in the frame at time_s), in their order."""
        live = {k: v for k, v in self.last.items() if time_s - v[0] <= self.gap_s + 1e-9}
        pairs = sorted(((box_iou(face, old), i, k) for i, face in enumerate(faces) for k, (_, old) in live.items()),
                       reverse=True)
        ids: list[Optional[int]] = [None] * len(faces)
        taken = set()
        for iou, i, k in pairs:
            if iou < MIN_IOU:
                break
            if ids[i] is None and k not in taken:
                ids[i] = k
                taken.add(k)
        assigned: list[int] = []
        for track in ids:  # a face no live track matched starts a new one
            if track is None:
                track = self.next_id
                self.next_id += 1
            assigned.append(int(track))
        self.last = {k: v for k, v in live.items()}
        for k, face in zip(assigned, faces):
            self.last[k] = (time_s, face)
        return assigned
