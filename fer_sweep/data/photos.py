"""Faces in ordinary photos: tell photos from FER2013 files, find faces (OpenCV's Haar cascade, also a little
rotated), crop them the way FER2013 framed its faces, and draw what was found."""

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
# The turned passes add false faces, so they need more overlapping hits: on astronaut.png turned -30..30
# degrees they found the face with 12-50 hits (27+ within 10 degrees of the pass's angle), and other things in
# scikit-image's photos (coffee, motorcycle, camera, astronaut) with at most 11; only coins keep a few.
ROTATED_MIN_NEIGHBORS = 15


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


def looks_like_photo(path: Path) -> bool:
    """A file whose first bytes are an image signature, or whose suffix is an image suffix."""
    if path.suffix.lower() in PHOTO_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def is_photo_source(data: str) -> bool:
    """Photos, not FER2013: an image file, or a folder with no train/ or test/ sub-folder (those are FER2013's
    image-folder edition). "synthetic", CSVs and missing paths go to the FER2013 readers."""
    path = Path(data)
    try:
        if data == "synthetic" or not path.exists():
            return False
        if path.is_dir():
            return not any(d.is_dir() and d.name.lower() in ("train", "test") for d in path.iterdir())
    except OSError:  # an unreadable folder: the FER2013 reader says so
        return False
    return looks_like_photo(path)


def list_photos(source: Path) -> list[tuple[Path, str]]:
    """(path, name for the output) of every photo: the file itself, or every photo under the folder (sorted,
    sub-folders included, hidden files skipped), named by its path relative to the folder."""
    if source.is_file():
        return [(source, source.name)]
    try:
        found = sorted(p for p in source.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(source).parts) and looks_like_photo(p))
    except OSError as e:
        raise UserError(f"{source}: cannot read ({e.strerror or e})") from None
    if not found:
        raise UserError(f"{source}: no photos here ({', '.join(s[1:] for s in PHOTO_SUFFIXES)}), and no train/ or "
                        "test/ sub-folders of FER2013's image-folder edition")
    return [(p, p.relative_to(source).as_posix()) for p in found]


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


@functools.lru_cache(maxsize=1)
def _cascade():
    try:
        import cv2
    except ImportError:
        raise UserError("photos need OpenCV: pip install 'fer-sweep[export]'") from None
    path = Path(cv2.data.haarcascades) / CASCADE
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


def detect_faces(grey: np.ndarray, *, angles_deg: Sequence[float] = ANGLES_DEG) -> list[Face]:
    """Faces in a (H, W) uint8 photo, left to right. The photo is searched upright, then turned by each other
    angle; the turned passes only add faces the upright pass missed (so an upright face keeps angle 0), the
    best-supported first."""
    _cascade()  # one clear line where OpenCV is missing, before cv2 is imported below
    import cv2

    scale = min(1.0, DETECT_MAX_SIDE / max(grey.shape))
    small = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    upright, turned = [], []
    for angle in angles_deg:
        if angle:
            m, size = _rotation(small.shape, angle)
            image = cv2.warpAffine(small, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            back = cv2.invertAffineTransform(m)
        else:
            image, back = small, np.array([[1.0, 0, 0], [0, 1.0, 0]])
        boxes, hits = _cascade().detectMultiScale2(image, scaleFactor=SCALE_FACTOR, minSize=(MIN_FACE_PX, MIN_FACE_PX),
                                                   minNeighbors=ROTATED_MIN_NEIGHBORS if angle else MIN_NEIGHBORS)
        for (x, y, w, h), n in zip(np.asarray(boxes).reshape(-1, 4).tolist(), np.ravel(hits).tolist()):
            cx, cy = back @ np.array([x + w / 2, y + h / 2, 1.0])
            # Turning the photo counter-clockwise by `angle` made this face upright: it is tilted by -angle.
            face = Face(cx=float(cx) / scale, cy=float(cy) / scale, size=w / scale, angle_deg=-angle if angle else 0.0,
                        score=float(n))
            (turned if angle else upright).append(face)
    found: list[Face] = []
    for face in upright + sorted(turned, key=lambda f: -f.score):
        if not any(_same_face(face, other) for other in found):
            found.append(face)
    return sorted(found, key=lambda f: (f.cx, f.cy))


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
