"""Deterministic synthetic FER-like 48x48 grey faces for the 7 expressions (numpy only, vectorised)."""

from __future__ import annotations

import numpy as np

# FER2013 Training rows per class (angry, disgust, fear, happy, sad, surprise, neutral), for imbalance=True
FER_TRAIN_COUNTS = (3995, 436, 4097, 7215, 4830, 3171, 4965)
SIZE = 48
BATCH = 512  # faces drawn per vectorised pass: bounds the float32 working arrays to ~5 MB each

# Expression geometry per class, as offsets from a neutral face (pixels unless noted); each face shows its
# expression at a random intensity, plus per-face noise, so classes overlap a little.
#   eye_open: eye height / width; brow_up: brow lift; brow_in: inner-end drop (+ frowning, - worried);
#   mouth_w: width factor; curve: centre below corners (+ smile, - frown); open: mouth gap; tilt: one corner
#   up (disgust's sneer, side random); wrinkle: nose-bridge creases; lip: lip stroke thickness
_FIELDS = ("eye_open", "brow_up", "brow_in", "mouth_w", "curve", "open", "tilt", "wrinkle", "lip")
_EXPRESSIONS = np.array([
    # eye_open brow_up brow_in mouth_w curve open tilt wrinkle lip
    [0.45, -1.5, 2.8, 0.80, -0.6, 0.0, 0.0, 0.0, 1.0],  # angry: lowered inward brows, tight thin mouth
    [0.50, -0.5, 0.6, 0.95, -1.0, 1.2, 3.2, 1.0, 1.6],  # disgust: wrinkled nose, one lip corner raised
    [1.05, 1.8, -2.2, 1.35, -1.2, 2.2, 0.0, 0.0, 1.3],  # fear: wide eyes, raised worried brows, wide flat open mouth
    [0.50, 0.6, 0.0, 1.30, 3.4, 1.2, 0.0, 0.0, 1.5],  # happy: wide smile, squinted eyes
    [0.55, 0.4, -2.2, 0.95, -2.8, 0.0, 0.0, 0.0, 1.4],  # sad: frown, inner brow ends raised
    [1.15, 3.6, 0.0, 0.50, 0.0, 5.0, 0.0, 0.0, 1.4],  # surprise: high straight brows, wide eyes, round open mouth
    [0.70, 0.0, 0.0, 1.00, 0.0, 0.0, 0.0, 0.0, 1.4],  # neutral
], dtype=np.float32)
_NOISE = np.array([0.08, 0.5, 0.5, 0.08, 0.5, 0.4, 0.4, 0.15, 0.2], dtype=np.float32)  # per-face spread


def synthetic_faces(n: int, seed: int = 0, imbalance: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """n faces as ((n, 48, 48) uint8, (n,) int64 labels 0..6); the same (n, seed, imbalance) gives the same faces.

    Balanced classes by default; imbalance=True follows FER2013's Training class proportions.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    y = _labels(n, imbalance, rng)
    x = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    for start in range(0, n, BATCH):
        x[start:start + BATCH] = _draw(y[start:start + BATCH], rng)
    return x, y


def _labels(n: int, imbalance: bool, rng: np.random.Generator) -> np.ndarray:
    weights = np.array(FER_TRAIN_COUNTS if imbalance else (1,) * 7, dtype=np.float64)
    shares = n * weights / weights.sum()
    counts = np.floor(shares).astype(np.int64)
    if n >= 7:
        counts = np.maximum(counts, 1)  # every class present, even disgust in a small imbalanced set
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    order = np.argsort(-(shares - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(7, dtype=np.int64), counts))


def _draw(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render one batch: identity, pose and lighting are random; expression geometry follows the label."""
    m = len(y)

    def draw(low, high):  # one value per face, shaped to broadcast over (m, 48, 48)
        return rng.uniform(low, high, size=(m, 1, 1)).astype(np.float32)

    intensity = draw(0.7, 1.0)
    neutral = _EXPRESSIONS[6]
    expr = neutral + intensity[..., None] * (_EXPRESSIONS[y][:, None, None, :] - neutral)
    expr = expr + _NOISE * rng.standard_normal((m, 1, 1, len(_FIELDS)), dtype=np.float32)
    e = dict(zip(_FIELDS, np.moveaxis(expr, -1, 0)))
    e["tilt"] = e["tilt"] * np.where(rng.random((m, 1, 1)) < 0.5, -1, 1).astype(np.float32)

    # face frame: u right (m, 1, 48), v down (m, 48, 1), centred on the face; kept separable (no head
    # rotation) so most shape arithmetic runs on rows and columns, not on whole images
    cx, cy = draw(21.5, 26.5), draw(22.5, 27.5)
    cols = np.arange(SIZE, dtype=np.float32)
    u, v = cols - cx, cols[:, None] - cy
    au = np.abs(u)  # the face is symmetric but for the sneer: draw both eyes/brows at once
    a, b = draw(12.5, 16.5), draw(16.0, 20.5)  # face half-width / half-height

    background, skin = draw(20, 235), draw(110, 205)
    image = np.broadcast_to(background, (m, SIZE, SIZE)).copy()
    face = _ellipse(u, v, 0, 0, a, b)
    radial = (u / a) ** 2 + (v / b) ** 2
    image += face * (skin * (1 - 0.18 * radial) - image)  # darker towards the jaw and cheeks
    hair_tone, hairline = draw(10, 90), -b * draw(0.45, 0.8)
    hair = _ellipse(u, v, 0, -1.0, a + 1.8, b + 1.5) * _soft(hairline - v) * (draw(0, 1) < 0.75)
    image += hair * (hair_tone - image)

    eye_y, eye_dx, eye_r = -b * draw(0.10, 0.20), a * draw(0.36, 0.46), draw(2.3, 3.1)
    eye_h = eye_r * e["eye_open"]
    sclera = _ellipse(au, v, eye_dx, eye_y, eye_r, eye_h)
    iris = _ellipse(au, v, eye_dx, eye_y, eye_r * 0.55, eye_r * 0.55) * sclera
    image += sclera * (draw(170, 235) - image)
    image += iris * (draw(15, 55) - image)

    brow_y = eye_y - eye_r * 0.9 - draw(2.0, 3.2) - e["brow_up"]
    brow_len = eye_r + draw(1.0, 2.0)
    brow_in, brow_out = brow_y + e["brow_in"], brow_y - 0.3 * e["brow_in"]  # heights of inner / outer ends
    brow_centre = brow_in + (brow_out - brow_in) * (au - eye_dx + brow_len) / (2 * brow_len)
    brow = _soft(draw(0.7, 1.1) - np.abs(v - brow_centre)) * _soft(brow_len - np.abs(au - eye_dx))
    image += brow * (hair_tone * 0.7 - image) * 0.85

    nose_y = b * draw(0.22, 0.30)
    nostrils = _ellipse(au, v, draw(1.6, 2.2), nose_y, 1.0, 0.7)
    bridge = _soft(2.5 - au) * (v > eye_y + 1.5) * (v < eye_y + 6.5)
    creases = bridge * np.clip(1.6 * np.cos((v - eye_y) * 4.2), 0, 1)  # three short horizontal folds
    image *= 1 - 0.45 * nostrils - 0.5 * np.clip(e["wrinkle"], 0, 1) * np.clip(creases, 0, 1)

    mouth_y, mouth_w = b * draw(0.50, 0.60), a * draw(0.36, 0.44) * e["mouth_w"]
    image += _mouth(u, v, mouth_y, mouth_w, e) * (draw(25, 70) - image)

    return _photograph(image, rng)


def _photograph(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Side lighting gradient, contrast and sensor noise; then to uint8."""
    m = len(image)
    light, strength, contrast, noise = (rng.uniform(low, high, size=(m, 1, 1)).astype(np.float32)
                                        for low, high in ((0, 2 * np.pi), (0, 0.35 / 24), (0.7, 1.2), (2, 8)))
    axis = np.arange(SIZE, dtype=np.float32) - SIZE / 2
    image *= 1 + strength * np.cos(light) * axis + strength * np.sin(light) * axis[:, None]
    mean = image.mean(axis=(1, 2), keepdims=True)
    image = mean + (image - mean) * contrast
    image += noise * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _soft(signed_distance):
    """Coverage from a signed distance (positive inside), anti-aliased over about one pixel."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def _ellipse(u, v, cu, cv, ru, rv):
    ru, rv = np.maximum(ru, 0.3), np.maximum(rv, 0.3)
    d2 = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2
    return _soft((1 - d2) * 0.5 * np.minimum(ru, rv))  # (1 - d^2) / 2 ~ 1 - d near the edge: no sqrt


def _mouth(u, v, mouth_y, mouth_w, e):
    """Lips as a parabola (curve > 0: corners up) with an optional open gap and a one-sided sneer (tilt)."""
    s = u / mouth_w
    inside = np.clip(1 - s * s, 0, 1)
    centre = mouth_y + e["curve"] * inside - e["tilt"] * 0.5 * (s + 1) * (np.abs(s) <= 1)
    half_gap = 0.5 * e["open"] * np.sqrt(inside)
    lips = _soft(e["lip"] / 2 + half_gap - np.abs(v - centre)) * _soft((1 - np.abs(s)) * mouth_w)
    return lips
