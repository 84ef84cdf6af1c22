"""The labelled face set of bench_faces.py (faceset/faces_labels.json), built from pictures installed packages ship:
scikit-image's skimage/data (astronaut, camera, lfw_subset.npy's 100 faces and 100 non-faces, the face-free
pictures), matplotlib's sample data (grace_hopper.jpg, logo2.png, ...), text rendered in matplotlib's DejaVu font,
and composites with several faces at known boxes, tilted and scaled. Nothing is downloaded and no image is stored:
each is made here. The face finder's tests (tests/data/test_face_detection.py) build the pictures they name from it.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

LABELS = Path(__file__).with_name("faces_labels.json")
MATCH_CENTRE, MATCH_SIZE = 0.5, 1.6  # centres closer than half the face's size, sizes within a factor 1.6


@dataclass(frozen=True)
class Labelled:
    """One image of the set: grey pixels, what kind of image it is, and its faces as (cx, cy, size, angle)."""

    name: str
    kind: str  # portrait | profile | lfw-face | lfw-non-face | face-free | text | composite
    grey: np.ndarray
    faces: tuple[tuple[float, float, float, float], ...]


@functools.lru_cache(maxsize=1)
def labels() -> dict:
    return json.loads(LABELS.read_text())


def _file(ref: str) -> Path:
    """'skimage:NAME' or 'matplotlib:NAME' -> the file inside the installed package."""
    package, name = ref.split(":", 1)
    if package == "skimage":
        import skimage.data

        return Path(skimage.data.__file__).parent / name
    if package == "matplotlib":
        import matplotlib.cbook

        return Path(matplotlib.cbook._get_data_path("sample_data", name))
    raise ValueError(ref)


@functools.lru_cache(maxsize=None)
def _grey(ref: str) -> np.ndarray:
    from fer_sweep.data.photos import read_photo

    return np.asarray(read_photo(_file(ref), "L"))  # as `predict` reads a photo


@functools.lru_cache(maxsize=1)
def _lfw() -> np.ndarray:
    return (np.load(_file(labels()["sources"]["lfw"]["file"])) * 255).round().astype(np.uint8)


def lfw_image(index: int) -> np.ndarray:
    """lfw_subset.npy's 25x25 crop `index`, enlarged (scale) and framed by its own repeated border (pad)."""
    import cv2

    lfw = labels()["sources"]["lfw"]
    big = cv2.resize(_lfw()[index], None, fx=lfw["scale"], fy=lfw["scale"], interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, *[lfw["pad"]] * 4, cv2.BORDER_REPLICATE)


def _source(name: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A face to paste: its picture and the face's (cx, cy, size) in it."""
    if name.startswith("lfw:"):
        return lfw_image(int(name[4:])), tuple(labels()["sources"]["lfw"]["face"])
    source = labels()["sources"][name]
    return _grey(source["file"]), tuple(source["face"])


def _background(ref: str, size: tuple[int, int]) -> np.ndarray:
    import cv2

    w, h = size
    if ref == "grey":  # a soft diagonal gradient
        yy, xx = np.mgrid[0:h, 0:w]
        return (90 + 60 * (xx / w) + 40 * (yy / h)).astype(np.uint8)
    grey = _grey(ref)
    scale = max(w / grey.shape[1], h / grey.shape[0])
    big = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[:h, :w])


def composite(spec: dict) -> np.ndarray:
    """A background with each face pasted at its box: the face's picture scaled to the box's size, turned by its
    angle (counter-clockwise) about the face's centre, inside a soft disc 1.6x the face."""
    import cv2

    w, h = spec["size"]
    canvas = _background(spec["background"], (w, h)).astype(np.float32)
    for face in spec["faces"]:
        picture, (sx, sy, ssize) = _source(face["from"])
        cx, cy, size, angle = face["box"]
        m = cv2.getRotationMatrix2D((sx, sy), angle, size / ssize)
        m[:, 2] += (cx - sx, cy - sy)
        warped = cv2.warpAffine(picture.astype(np.float32), m, (w, h), flags=cv2.INTER_AREA if size < ssize
                                else cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot(xx - cx, yy - cy) / (0.8 * size)
        mask = np.clip((1.0 - r) / 0.15, 0, 1).astype(np.float32)  # 1 inside, fading over the disc's edge
        canvas = canvas * (1 - mask) + warped * mask
    return np.clip(canvas.round(), 0, 255).astype(np.uint8)


def text_image(words: str, font_px: int, angle: float) -> np.ndarray:
    """Black words in matplotlib's DejaVu Sans on white, turned by angle (counter-clockwise)."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), font_px)
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), words, font=font)
    image = Image.new("L", (x1 - x0 + font_px, y1 - y0 + font_px), 255)
    ImageDraw.Draw(image).text((font_px // 2 - x0, font_px // 2 - y0), words, font=font, fill=0)
    return np.asarray(image.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=255))


def images(lfw_step: int = 1, names=None) -> Iterator[Labelled]:
    """Every image of the set (or those named), in the file's order, then LFW's faces and non-faces (every
    lfw_step-th; none with lfw_step=0)."""
    info = labels()
    for item in info["images"]:
        if names is not None and item["name"] not in names:
            continue
        faces = item["faces"]
        if item["kind"] == "composite":
            grey = composite(item)
            faces = [f["box"] for f in faces]
        elif item["kind"] == "text":
            grey = text_image(item["text"], item["font_px"], item["angle"])
        else:
            grey = _grey(item["file"])
        yield Labelled(item["name"], item["kind"], grey, tuple(tuple(map(float, f)) for f in faces))
    if not lfw_step:
        return
    face = tuple(float(v) for v in info["sources"]["lfw"]["face"]) + (0.0,)
    for kind, key in (("lfw-face", "faces"), ("lfw-non-face", "non_faces")):
        start, stop = info["lfw"][key]
        for i in range(start, stop, lfw_step):
            yield Labelled(f"lfw-{i:03d}", kind, lfw_image(i), (face,) if kind == "lfw-face" else ())


def matches(found, face: tuple[float, float, float, float]) -> bool:
    """A detection (anything with cx, cy, size) is the labelled face: centres closer than MATCH_CENTRE x the
    face's size, sizes within a factor MATCH_SIZE."""
    cx, cy, size, _ = face
    ratio = found.size / size
    return math.hypot(found.cx - cx, found.cy - cy) < MATCH_CENTRE * size and 1 / MATCH_SIZE <= ratio <= MATCH_SIZE


def score(image: Labelled, found) -> tuple[list[bool], int]:
    """(for each labelled face: was it found, the number of false detections). Each detection matches at most one
    face, the nearest one not yet found."""
    hit = [False] * len(image.faces)
    false = 0
    for f in found:
        candidates = [i for i, face in enumerate(image.faces) if not hit[i] and matches(f, face)]
        if candidates:
            hit[min(candidates, key=lambda i: math.hypot(f.cx - image.faces[i][0], f.cy - image.faces[i][1]))] = True
        else:  # nothing there, or a second box on a face already found
            false += 1
    return hit, false
