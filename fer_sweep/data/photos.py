"""Faces in ordinary photos: tell photos (and videos) from FER2013 files, find faces (OpenCV's Haar cascade, also a
little rotated, each candidate confirmed by its eyes or a second cascade), crop them the way FER2013 framed its faces,
and draw what was found. Reading videos and following their faces: data/video.py."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fer_sweep.config import IMAGE_SIZE, UserError, first_line

# A photo is told by its first bytes (PNG, JPEG, GIF, BMP, TIFF, WebP), or by one of these suffixes (so that a
# damaged .jpg is reported as an unreadable photo, not parsed as a CSV).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
# A video is told the same way: a suffix OpenCV's FFmpeg reads, or its first bytes (MP4/MOV/3GP: "ftyp" at byte 4;
# Matroska/WebM; AVI; Ogg; MPEG program and video streams; FLV; ASF/WMV). An animated GIF, PNG or WebP (two frames
# or more) is a video too.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".3gp",
                  ".ts", ".mts", ".m2ts")
_VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3", b"OggS", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"FLV",
                b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")
CASCADE = "haarcascade_frontalface_default.xml"  # ships in opencv-python-headless 4.x (cv2.data.haarcascades)
# The upright cascade finds faces tilted up to about +-15 degrees (astronaut.png turned -35..35 degrees: found
# upright from -15 to +20); two more passes on the photo turned by +-20 degrees reach about +-30.
ANGLES_DEG = (0.0, 20.0, -20.0)
# FER2013's frame is this cascade's box, barely grown: on 2,250 FER2013 faces upscaled 4x (replicated border),
# the cascade's box was a median 47.0 of the 48 px, centred to 0.1 px (frame / box = 1.02). So a face is cropped
# as a square 1.025 x its box around the box centre: the tight framing with the brow-to-chin extent FER2013 has.
CROP_SCALE = 1.025
DETECT_MAX_SIDE = 1280  # photos are searched at most this many pixels on the longer side (speed); crops use full size
MIN_FACE_PX = 24  # the cascade's own window: smaller faces cannot be found
SCALE_FACTOR, MIN_NEIGHBORS = 1.1, 5  # OpenCV's usual settings: 10% steps between scales, 5 overlapping hits
# The turned passes add false faces, so they need more overlapping hits. Without the checks below (check=False, the
# finder before issue 22) that was 15; with them 10, which finds more tilted faces (benchmarks/bench_faces.py).
ROTATED_MIN_NEIGHBORS = 10
UNCHECKED_ROTATED_MIN_NEIGHBORS = 15
# The checks. On the labelled set of benchmarks/bench_faces.py (faceset/faces_labels.json) the cascade alone
# also found faces in coins, a cell, text and gravel: upright with up to 12 overlapping hits, turned with up to 26.
# So a candidate face is kept only when it is confirmed by what a face has and those pictures lack: a pair of eyes
# side by side in the top of its upright square (OpenCV's two eye cascades, EYE_HITS hits on each eye), or a
# second opinion: OpenCV's independently trained alt2 face cascade, run again on the square, hits its centre
# SECOND_OPINION_HITS times or more (the set's false faces: 17 at most). An upright candidate with STRONG_NEIGHBORS
# hits needs no check (the false ones had at most 12); a turned one is always checked.
EYE_CASCADES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")
SECOND_CASCADE = "haarcascade_frontalface_alt2.xml"
EYE_HITS, SECOND_OPINION_HITS, STRONG_NEIGHBORS = 3, 20, 25


@dataclass(frozen=True)
class Face:
    """One face in a photo: a square of side `size` px around (cx, cy), tilted by angle_deg."""

    cx: float
    cy: float
    size: float
    angle_deg: float = 0.0  # in-plane tilt of the face, counter-clockwise as seen; 0 for an upright face
    score: float = 0.0  # the cascade's overlapping hits on this face (its support), to rank turned passes

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the face's square before its tilt, in pixels of the photo."""
        side = round(self.size)
        return round(self.cx - self.size / 2), round(self.cy - self.size / 2), side, side

    def corners(self, scale: float = 1.0) -> list[tuple[float, float]]:
        """The four corners of the (tilted) square grown by `scale`, clockwise from top-left."""
        half = self.size * scale / 2
        cos, sin = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        # counter-clockwise as seen, with y pointing down: (dx, dy) -> (dx cos + dy sin, -dx sin + dy cos)
        return [(self.cx + dx * cos + dy * sin, self.cy - dx * sin + dy * cos)
                for dx, dy in ((-half, -half), (half, -half), (half, half), (-half, half))]


# ------------------------------------------------------------------------------------------ which files


def _first_bytes(path: Path, n: int = 12) -> bytes:
    """The first `n` bytes of a file (its signature); b"" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def looks_like_photo(path: Path) -> bool:
    """A file whose first bytes are an image signature, or whose suffix is an image suffix."""
    if path.suffix.lower() in PHOTO_SUFFIXES:
        return True
    head = _first_bytes(path)
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def looks_like_video(path: Path) -> bool:
    """A file whose suffix is a video suffix, or whose first bytes are a video container's signature."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return True
    head = _first_bytes(path)
    return head[4:8] == b"ftyp" or head.startswith(_VIDEO_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def is_animated(path: Path) -> bool:
    """An image file with two frames or more (an animated GIF, PNG or WebP): read as a video."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return False


def is_video(path: Path) -> bool:
    """A video file (see looks_like_video), or an animated image."""
    return looks_like_video(path) or (looks_like_photo(path) and is_animated(path))


def is_photo_source(data: str) -> bool:
    """Photos or videos, not FER2013: an image or video file, or a folder with no train/ or test/ sub-folder (those
    are FER2013's image-folder edition). "synthetic", CSVs and missing paths go to the FER2013 readers."""
    path = Path(data)
    try:
        if data == "synthetic" or not path.exists():
            return False
        if path.is_dir():
            return not any(d.is_dir() and d.name.lower() in ("train", "test") for d in path.iterdir())
    except OSError:  # an unreadable folder: the FER2013 reader says so
        return False
    return looks_like_photo(path) or looks_like_video(path)


def suffixes(kind: str) -> str:
    """The suffixes photos ("photo") or videos ("video") are told by, for messages: "jpg, jpeg, png, ..."."""
    return ", ".join(s[1:] for s in (PHOTO_SUFFIXES if kind == "photo" else VIDEO_SUFFIXES))


def list_media(source: Path) -> list[tuple[Path, str, str]]:
    """(path, name for the output, "photo" or "video") of the file itself, or of every photo and video under the
    folder (sorted, sub-folders included, hidden files and other files skipped), named by its path relative to the
    folder. An animated image is a video."""
    if source.is_file():
        return [(source, source.name, "video" if is_video(source) else "photo")]
    try:
        found = sorted(p for p in source.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(source).parts) and (looks_like_photo(p) or
                                                                                looks_like_video(p)))
    except OSError as e:
        raise UserError(f"{source}: cannot read ({e.strerror or e})") from None
    if not found:
        raise UserError(f"{source}: no photos here ({suffixes('photo')}) and no videos ({suffixes('video')}), and "
                        "no train/ or test/ sub-folders of FER2013's image-folder edition")
    return [(p, p.relative_to(source).as_posix(), "video" if is_video(p) else "photo") for p in found]


def read_photo(path: Path, mode: str = "L"):
    """The photo as a Pillow image in `mode` ("L": grey, "RGB"), turned upright by its EXIF orientation.
    Raises UserError naming the file when it cannot be decoded."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert(mode)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        reason = first_line(e, 160)
        raise UserError(f"{path}: not a readable image ({reason})") from None


# ------------------------------------------------------------------------------------ detect and crop


@functools.lru_cache(maxsize=None)
def _cascade(name: str = CASCADE):
    try:
        import cv2
        import cv2.data  # loaded by cv2 itself; named here so the type checker knows the submodule
    except ImportError:
        raise UserError("photos need OpenCV: pip install 'fer-sweep[export]'") from None
    path = Path(cv2.data.haarcascades) / name
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise UserError(f"{path}: OpenCV's face cascade is missing (opencv-python-headless 5 no longer ships it: "
                        "pip install 'opencv-python-headless<5')")
    return classifier


def _rotation(shape: tuple[int, int], angle_deg: float) -> tuple[np.ndarray, tuple[int, int]]:
    """2x3 matrix rotating an image of `shape` counter-clockwise by angle_deg onto a canvas that holds all of
    it, and that canvas's (width, height)."""
    import cv2

    h, w = shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    size = (int(math.ceil(h * sin + w * cos)), int(math.ceil(h * cos + w * sin)))
    m[0, 2] += size[0] / 2 - w / 2
    m[1, 2] += size[1] / 2 - h / 2
    return m, size


def detect_faces(grey: np.ndarray, *, angles_deg: Sequence[float] = ANGLES_DEG, check: bool = True) -> list[Face]:
    """Faces in a (H, W) uint8 photo, left to right. The photo is searched upright, then turned by each other
    angle; the turned passes only add faces the upright pass missed (so an upright face keeps angle 0), the
    best-supported first. check: keep only candidates confirmed by eyes or a second cascade (see EYE_HITS);
    check=False is the finder before issue 22 (no checks, 15 hits for a turned face), kept for the benchmark."""
    _cascade()  # one clear line where OpenCV is missing, before cv2 is imported below
    import cv2

    scale = min(1.0, DETECT_MAX_SIDE / max(grey.shape))
    small = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    upright: list[Face] = []
    turned: list[Face] = []
    for angle in angles_deg:
        if angle:
            m, size = _rotation(small.shape, angle)
            image = cv2.warpAffine(small, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            back = cv2.invertAffineTransform(m)
        else:
            image, back = small, np.array([[1.0, 0, 0], [0, 1.0, 0]])
        needed = MIN_NEIGHBORS if not angle else ROTATED_MIN_NEIGHBORS if check else UNCHECKED_ROTATED_MIN_NEIGHBORS
        boxes, hits = _cascade().detectMultiScale2(image, scaleFactor=SCALE_FACTOR, minSize=(MIN_FACE_PX, MIN_FACE_PX),
                                                   minNeighbors=needed)
        for (x, y, w, h), n in zip(np.asarray(boxes).reshape(-1, 4).tolist(), np.ravel(hits).tolist()):
            cx, cy = back @ np.array([x + w / 2, y + h / 2, 1.0])
            # Turning the photo counter-clockwise by `angle` made this face upright: it is tilted by -angle.
            face = Face(cx=float(cx) / scale, cy=float(cy) / scale, size=w / scale, angle_deg=-angle if angle else 0.0,
                        score=float(n))
            (turned if angle else upright).append(face)
    found: list[Face] = []
    for face in upright + sorted(turned, key=lambda f: -f.score):
        if any(_same_face(face, other) for other in found):
            continue  # a face already found (not checked again: the check is the slow part)
        strong = face.angle_deg == 0 and face.score >= STRONG_NEIGHBORS
        if not check or strong or confirmed(grey, face):
            found.append(face)
    return sorted(found, key=lambda f: (f.cx, f.cy))


def confirmed(grey: np.ndarray, face: Face) -> bool:
    """A candidate face is a face: a pair of eyes in its upright square, or the second cascade agrees."""
    return _eye_pair(_upright_square(grey, face, 1.0, 96)) or _second_opinion(grey, face) >= SECOND_OPINION_HITS


def _upright_square(grey: np.ndarray, face: Face, scale: float, side: int) -> np.ndarray:
    """The square `scale` x the face's box, turned upright, as side x side pixels (border pixels repeated)."""
    import cv2

    extent = max(1, round(face.size * scale))
    m = cv2.getRotationMatrix2D((face.cx, face.cy), -face.angle_deg, 1.0)
    m[0, 2] += extent / 2 - face.cx
    m[1, 2] += extent / 2 - face.cy
    square = cv2.warpAffine(grey, m, (extent, extent), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA if extent > side else cv2.INTER_LINEAR)


def _eye_pair(square: np.ndarray) -> bool:
    """Two eyes side by side in the top two thirds of a 96x96 upright face square: clusters of EYE_HITS or more
    eye-cascade hits, 21-62 px apart across, at most 19 px apart up or down, of similar size."""
    import cv2

    rects = []
    for name in EYE_CASCADES:
        hits = _cascade(name).detectMultiScale(square[:64], scaleFactor=1.05, minNeighbors=0, minSize=(12, 12),
                                               maxSize=(44, 44))
        rects += np.asarray(hits).reshape(-1, 4).tolist()
    if len(rects) < 2 * EYE_HITS:
        return False
    eyes, _ = cv2.groupRectangles(rects, EYE_HITS - 1, 0.3)
    eyes = [(x + w / 2, y + h / 2, w) for x, y, w, h in np.asarray(eyes).reshape(-1, 4).tolist()]
    return any(21 <= abs(ax - bx) <= 62 and abs(ay - by) <= 19 and max(aw, bw) <= 1.8 * min(aw, bw)
               and 10 <= ay <= 60 and 10 <= by <= 60
               for i, (ax, ay, aw) in enumerate(eyes) for bx, by, bw in eyes[i + 1:])


def _second_opinion(grey: np.ndarray, face: Face) -> int:
    """Hits of the second face cascade (every window, no grouping) centred within 25 px of the face's centre,
    searched in 5% steps on the square 1.6x the face's box, turned upright, at 160x160 (the face ~100 px)."""
    square = _upright_square(grey, face, 1.6, 160)
    hits = _cascade(SECOND_CASCADE).detectMultiScale(square, scaleFactor=1.05, minNeighbors=0, minSize=(60, 60),
                                                     maxSize=(140, 140))
    return sum(1 for x, y, w, h in np.asarray(hits).reshape(-1, 4).tolist()
               if abs(x + w / 2 - 80) < 25 and abs(y + h / 2 - 80) < 25)


def _same_face(a: Face, b: Face) -> bool:
    """Two hits on one face: their centres are closer than half the larger square."""
    return math.hypot(a.cx - b.cx, a.cy - b.cy) < max(a.size, b.size) / 2


def whole_face(grey: np.ndarray) -> Face:
    """The whole image as one face: a 48x48 image is taken to be a FER2013-style crop already."""
    h, w = grey.shape
    return Face(cx=w / 2, cy=h / 2, size=float(min(h, w)))


def crop_face(grey: np.ndarray, face: Face) -> np.ndarray:
    """The face as a (48, 48) uint8 FER2013-style crop: upright, CROP_SCALE x its box, border pixels repeated
    where the square leaves the photo."""
    import cv2

    side = max(1, round(face.size * CROP_SCALE))
    m = cv2.getRotationMatrix2D((face.cx, face.cy), -face.angle_deg, 1.0)  # turn the face upright
    m[0, 2] += side / 2 - face.cx
    m[1, 2] += side / 2 - face.cy
    square = cv2.warpAffine(grey, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if side == IMAGE_SIZE:
        return square
    shrink = side > IMAGE_SIZE  # area averaging when shrinking (no aliasing), bicubic when enlarging
    return cv2.resize(square, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# ----------------------------------------------------------------------------------------------- draw

COLOURS = ((220, 40, 40), (120, 160, 30), (150, 60, 200), (250, 200, 0), (40, 110, 230), (250, 120, 20),
           (200, 200, 200))  # per class: angry, disgust, fear, happy, sad, surprise, neutral


def draw_faces(image, faces: Sequence[Face], captions: Sequence[str], classes: Sequence[int]):
    """A copy of the RGB Pillow image with each face's (tilted) square and its caption drawn; "no face found"
    in the corner when there is none."""
    from PIL import ImageDraw, ImageFont

    out = image.copy()
    draw = ImageDraw.Draw(out)
    line = max(2, round(min(out.size) / 200))
    if not faces:
        font = ImageFont.load_default(size=max(12, min(out.size) // 20))
        draw.text((line * 3, line * 3), "no face found", fill=(255, 255, 255), font=font, stroke_width=line,
                  stroke_fill=(0, 0, 0))
        return out
    for face, caption, label in zip(faces, captions, classes):
        colour = COLOURS[label % len(COLOURS)]
        corners = face.corners(CROP_SCALE)
        draw.polygon(corners, outline=colour, width=line)
        font = ImageFont.load_default(size=max(12, round(face.size / 6)))
        left, top = min(x for x, _ in corners), min(y for _, y in corners)
        x0, y0, x1, y1 = draw.textbbox((left, top - line), caption, font=font, anchor="ld")
        if y0 < line:  # no room above the face: move the caption down, over the face's top edge
            y0, y1 = line, y1 + line - y0
        draw.rectangle((x0 - line, y0 - line, x1 + line, y1 + line), fill=colour)
        draw.text((x0, y1), caption, fill=(0, 0, 0), font=font, anchor="ld")
    return out
