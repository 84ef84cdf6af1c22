"""`predict` on videos (and on folders that mix photos and videos): sampled frames, the faces in each classified
with a saved model, one id per face across frames; the CSV, a timeline PNG per video and annotated copies."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from fer_sweep.config import EMOTIONS, UserError
from fer_sweep.data.photos import Face
from fer_sweep.data.video import Clip
from fer_sweep.results.predict import (
    PhotoPredictions,
    classify,
    load_members,
    photo_summary,
    read_photo_faces,
    write_text_file,
)

# progress(name of the video, sampled frames done, sampled frames expected or 0 when unknown)
Progress = Callable[[str, int, int], None]
MEDIA_COLUMNS = ("file", "time", "frame", "face", "x", "y", "w", "h", "angle", "emotion", "emotion_name")
TIMELINE_FACES = 8  # a timeline shows at most this many faces (those seen in the most sampled frames)


@dataclass(frozen=True)
class Sample:
    """One sampled frame: its index and time in the video, the faces found (left to right) and their ids."""

    index: int
    time_s: float
    faces: tuple[Face, ...]
    ids: tuple[int, ...]  # one per face: the same face keeps its id across frames


@dataclass(frozen=True)
class VideoPrediction:
    """Every sampled frame of one video; proba rows follow the samples' order, then their faces' order."""

    path: Path
    name: str  # as written in the CSV: the path relative to the folder given, or the file's name
    clip: Clip
    every_s: float  # seconds between sampled frames (0: every frame)
    samples: list[Sample]
    proba: np.ndarray  # (F, 7) float32, F = faces in all sampled frames

    def per_sample(self) -> list[tuple[Sample, np.ndarray]]:
        out, start = [], 0
        for sample in self.samples:
            out.append((sample, self.proba[start:start + len(sample.faces)]))
            start += len(sample.faces)
        return out

    def tracks(self) -> dict[int, list[tuple[float, np.ndarray]]]:
        """face id -> [(time, its 7 probabilities)] over the frames where that face was found."""
        out: dict[int, list] = {}
        for sample, probs in self.per_sample():
            for face_id, p in zip(sample.ids, probs):
                out.setdefault(face_id, []).append((sample.time_s, p))
        return out


@dataclass(frozen=True)
class MediaPredictions:
    """Photos and videos of one --data: the photos as PhotoPredictions (empty when there were none), the videos."""

    photos: PhotoPredictions
    videos: list[VideoPrediction]
    unreadable: list[str]  # one line per photo or video that could not be read (the others went on)
    source: str
    tta: bool
    trained_on: Optional[str] = None  # the data the model (or ensemble) was trained on: config.json's `data`


def predict_media(model_dir: Path, data: str, *, every: Optional[float] = None, tta: Optional[bool] = None,
                  device: str = "auto", batch_size: Optional[int] = None,
                  progress: Optional[Progress] = None) -> MediaPredictions:
    """Faces in every photo and video of `data` (a file or a folder, faces.is_photo_source) classified with the model
    (or ensemble) saved by `best`. A video is sampled at 0, every, 2 x every, ... seconds (None: data.video's
    default); its faces keep one id across frames. A file that cannot be read is listed in `unreadable` when it is
    one of a folder's; alone, or when nothing was readable, it is a UserError."""
    from fer_sweep.data.photos import list_media

    members, info = load_members(model_dir)
    source = Path(data)
    media = list_media(source)
    photos, crops, unreadable = read_photo_faces([(p, n) for p, n, kind in media if kind == "photo"])
    videos, video_crops = [], []
    for path, name, kind in media:
        if kind != "video":
            continue
        try:
            video, found = _video_faces(path, name, every, progress)
        except UserError as e:
            if source.is_file():
                raise
            unreadable.append(str(e))
            continue
        videos.append(video)
        video_crops += found
    if not photos and not videos:
        raise UserError(f"{data}: no readable photo or video ({unreadable[0]}"
                        f"{' and others' if len(unreadable) > 1 else ''})")
    proba, used_tta = classify(members, crops + video_crops, tta=tta, device=device, batch_size=batch_size)
    start = len(crops)
    for i, video in enumerate(videos):
        n = sum(len(s.faces) for s in video.samples)
        videos[i] = VideoPrediction(video.path, video.name, video.clip, video.every_s, video.samples,
                                    proba[start:start + n])
        start += n
    return MediaPredictions(
        photos=PhotoPredictions(photos=photos, proba=proba[:len(crops)], unreadable=[], source=str(data), tta=used_tta),
        videos=videos, unreadable=unreadable, source=str(data), tta=used_tta, trained_on=info.get("data"))


def _video_faces(path: Path, name: str, every: Optional[float],
                 progress: Optional[Progress]) -> tuple[VideoPrediction, list[np.ndarray]]:
    """The video's sampled frames with their faces and ids (proba still empty), and the faces' 48x48 crops."""
    from fer_sweep.data.photos import crop_face, detect_faces
    from fer_sweep.data.video import FaceTracker, default_every, open_clip, read_frames

    clip = open_clip(path)
    step = default_every(clip) if every is None else every
    expected = max(1, math.ceil(clip.duration_s / step - 1e-9)) if step > 0 and clip.duration_s else clip.frames
    tracker = FaceTracker(step)
    samples, crops = [], []
    for frame in read_frames(path, step):
        found = detect_faces(frame.image)
        ids = tracker.update(frame.time_s, found)
        samples.append(Sample(frame.index, frame.time_s, tuple(found), tuple(ids)))
        crops += [crop_face(frame.image, face) for face in found]
        if progress is not None:
            progress(name, len(samples), max(expected, len(samples)))
    if not samples:
        raise UserError(f"{path}: a video with no frames")
    return VideoPrediction(path, name, clip, step, samples, np.zeros((0, len(EMOTIONS)), np.float32)), crops


# ------------------------------------------------------------------------------------------------ write


def write_media_csv(pred: MediaPredictions, path: Path, *, proba: bool = False) -> Path:
    """One row per face: file, time (seconds into the video; empty for a photo), frame (0-based index in the
    video), face (in a video the face's id, the same across frames; in a photo 0-based left to right), its box
    x,y,w,h and angle, emotion and emotion_name, plus one probability column per class with proba. A photo or
    sampled frame with no face is one row with only its file (and time and frame)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*MEDIA_COLUMNS, *(EMOTIONS if proba else ())])
    width = len(MEDIA_COLUMNS) + (len(EMOTIONS) if proba else 0)
    rows: list[tuple[str, list]] = []
    for photo, probs in pred.photos.per_photo():
        lines = [[photo.name, "", "", i, *_face_cells(face, p, proba)]
                 for i, (face, p) in enumerate(zip(photo.faces, probs))]
        rows.append((photo.name, lines or [[photo.name]]))
    for video in pred.videos:
        lines = []
        for sample, probs in video.per_sample():
            when = [video.name, f"{sample.time_s:.3f}", sample.index]
            lines += [[*when, k, *_face_cells(face, p, proba)] for k, face, p in zip(sample.ids, sample.faces, probs)]
            if not sample.faces:
                lines.append(when)
        rows.append((video.name, lines))
    for _, lines in sorted(rows, key=lambda r: r[0]):
        for line in lines:
            writer.writerow(line + [""] * (width - len(line)))
    return write_text_file(path, buf.getvalue())


def _face_cells(face: Face, p: np.ndarray, proba: bool) -> list:
    label = int(p.argmax())
    return [*face.box, f"{face.angle_deg:g}", label, EMOTIONS[label], *([f"{v:.6f}" for v in p] if proba else ())]


def timeline_paths(pred: MediaPredictions, out_csv: Path) -> dict[str, Path]:
    """Where each video's timeline goes, next to the CSV: <stem>.timeline.png for the one video of a file given,
    else <stem>.timeline/<name of the video>.png."""
    out_csv = Path(out_csv)
    if Path(pred.source).is_file():
        return {v.name: out_csv.with_name(out_csv.stem + ".timeline.png") for v in pred.videos}
    return {v.name: out_csv.with_name(out_csv.stem + ".timeline") / (v.name + ".png") for v in pred.videos}


def write_timelines(pred: MediaPredictions, out_csv: Path) -> list[Path]:
    """A PNG per video: each face's 7 class probabilities over time (one panel per face id)."""
    written = []
    for video, path in zip(pred.videos, timeline_paths(pred, out_csv).values()):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(save_timeline_png(video, path))
        except OSError as e:
            raise UserError(f"cannot write the timeline {path} ({e.strerror or e})") from None
    return written


def save_timeline_png(video: VideoPrediction, path: Path) -> Path:
    """One panel per face (the TIMELINE_FACES seen most), its class probabilities against time in seconds; gaps
    where the face was not found. A video with no face gets one empty panel that says so."""
    from fer_sweep.data.photos import COLOURS
    from fer_sweep.results.plots import pyplot

    plt = pyplot()
    tracks = video.tracks()
    shown = sorted(sorted(tracks, key=lambda k: -len(tracks[k]))[:TIMELINE_FACES])
    times = np.array([s.time_s for s in video.samples])
    end = max(float(times[-1]) if len(times) else 0.0, video.clip.duration_s, 1e-3)
    fig, axes = plt.subplots(max(1, len(shown)), 1, figsize=(9, 1.0 + 1.7 * max(1, len(shown))), dpi=100,
                             sharex=True, squeeze=False)
    colours = [tuple(c / 255 for c in rgb) for rgb in COLOURS[:-1]] + [(0.45, 0.45, 0.45)]  # neutral: darker grey
    panels: list[Optional[int]] = list(shown) if shown else [None]  # None: the one empty panel
    for ax, face_id in zip(axes[:, 0], panels):
        ax.set_ylim(0, 1)
        ax.set_xlim(0, end)
        ax.grid(alpha=0.3)
        if face_id is None:
            ax.text(0.5, 0.5, "no face found in any sampled frame", ha="center", va="center", transform=ax.transAxes)
            ax.set_ylabel("probability")
            continue
        seen = {round(t, 6): p for t, p in tracks[face_id]}
        curve = np.array([seen.get(round(t, 6), np.full(len(EMOTIONS), np.nan)) for t in times])  # NaN: a gap
        for k, name in enumerate(EMOTIONS):
            ax.plot(times, curve[:, k], color=colours[k], label=name, lw=1.6, marker="." if len(times) < 80 else None)
        ax.set_ylabel(f"face {face_id}")
    axes[-1, 0].set_xlabel("time (s)")
    if shown:
        axes[0, 0].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(EMOTIONS), fontsize=8, frameon=False)
    more = f" ({len(shown)} of {len(tracks)} faces shown)" if len(tracks) > len(shown) else ""
    fig.suptitle(f"{video.name}: emotion probabilities per face{more}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def annotated_video_path(folder: Path, name: str) -> Path:
    """DIR/<name of the video>, with .mp4 added unless it already ends so."""
    target = Path(folder) / name
    return target if target.suffix.lower() == ".mp4" else target.with_name(target.name + ".mp4")


def write_annotated_videos(pred: MediaPredictions, folder: Path) -> list[Path]:
    """An MP4 copy of every video under `folder` (see annotated_video_path), every frame with the faces of the
    nearest sampled frames drawn (boxes moved in between where a face is in both) and their emotion."""
    written = []
    for video in pred.videos:
        target = annotated_video_path(folder, video.name)
        if target.resolve() == video.path.resolve():
            raise UserError(f"--annotate {folder}: would overwrite the video {video.path}: choose another folder")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--annotate {folder}: cannot write {target} ({e.strerror or e})") from None
        written.append(_annotate(video, target))
    return written


def _annotate(video: VideoPrediction, target: Path) -> Path:
    import cv2
    from PIL import Image

    from fer_sweep.data.photos import draw_faces
    from fer_sweep.data.video import read_frames

    fps = video.clip.fps or (1 / video.every_s if video.every_s > 0 else 10.0)
    writer = None
    tmp = target.with_name(f".{target.name}.tmp.mp4")
    per_sample = video.per_sample()
    times = [s.time_s for s, _ in per_sample]
    try:
        for frame in read_frames(video.path, 0, colour=True):
            h, w = frame.image.shape[:2]
            if writer is None:  # MPEG-4 wants even sides: an odd one gets its last row or column repeated
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w + w % 2, h + h % 2))
                if not writer.isOpened():
                    raise UserError(f"--annotate: OpenCV cannot write {target} (no MPEG-4 encoder)")
            faces, captions, labels = _faces_at(frame.time_s, per_sample, times)
            rgb = Image.fromarray(cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB))
            drawn = cv2.cvtColor(np.asarray(draw_faces(rgb, faces, captions, labels) if faces else rgb),
                                 cv2.COLOR_RGB2BGR)
            writer.write(cv2.copyMakeBorder(drawn, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE))
    finally:
        if writer is not None:
            writer.release()
    try:
        tmp.replace(target)
    except OSError as e:
        raise UserError(f"--annotate: cannot write {target} ({e.strerror or e})") from None
    return target


def _faces_at(t: float, per_sample: list, times: list[float]) -> tuple[list[Face], list[str], list[int]]:
    """The faces to draw on the frame at time t: of the sampled frames before (p) and after (n) it, a face in both
    moves from its box in p to its box in n; a face in one of them only is drawn while that one is the nearer."""
    import bisect

    i = bisect.bisect_right(times, t + 1e-9) - 1
    before = per_sample[i] if i >= 0 else None
    after = per_sample[i + 1] if i + 1 < len(per_sample) else None
    if before is not None and abs(before[0].time_s - t) < 1e-9:
        after = None  # a sampled frame itself: its own faces
    faces, captions, labels = [], [], []
    b = {k: (f, p) for k, f, p in zip(before[0].ids, before[0].faces, before[1])} if before else {}
    a = {k: (f, p) for k, f, p in zip(after[0].ids, after[0].faces, after[1])} if after else {}
    if before and after:
        span = after[0].time_s - before[0].time_s
        w = (t - before[0].time_s) / span if span > 0 else 0.0
    else:
        w = 0.0 if before else 1.0
    for k in sorted(set(b) | set(a)):
        if k in b and k in a:
            (f0, p0), (f1, p1) = b[k], a[k]
            face = Face(cx=f0.cx + w * (f1.cx - f0.cx), cy=f0.cy + w * (f1.cy - f0.cy),
                        size=f0.size + w * (f1.size - f0.size),
                        angle_deg=f0.angle_deg + w * (f1.angle_deg - f0.angle_deg))
            p = p0 if w < 0.5 else p1
        elif k in b and (w < 0.5 or not after):
            face, p = b[k]
        elif k in a and (w >= 0.5 or not before):
            face, p = a[k]
        else:
            continue
        label = int(p.argmax())
        faces.append(face)
        captions.append(f"{k}: {EMOTIONS[label]} {p[label]:.2f}")
        labels.append(label)
    return faces, captions, labels


def media_summary(pred: MediaPredictions) -> dict:
    """What the CLI prints for photos and videos: counts, and per video its sampled frames and faces."""
    out = photo_summary(PhotoPredictions(pred.photos.photos, pred.photos.proba, pred.unreadable, pred.source, pred.tta))
    labels = [int(p.argmax()) for v in pred.videos for p in v.proba]
    predicted = np.bincount(np.array(list(pred.photos.predicted) + labels, dtype=int), minlength=len(EMOTIONS))
    out.update(layout="videos" if not pred.photos.photos else "photos+videos", faces=int(len(pred.photos.proba)),
               predicted=dict(zip(EMOTIONS, predicted.tolist())),
               videos=[{"file": v.name, "duration_s": round(v.clip.duration_s, 3), "fps": round(v.clip.fps, 3),
                        "every_s": round(v.every_s, 6), "frames": len(v.samples),
                        "frames_with_face": sum(1 for s in v.samples if s.faces),
                        "faces": int(len(v.proba)), "face_ids": len(v.tracks())} for v in pred.videos])
    return out

