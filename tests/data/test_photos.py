"""Faces in ordinary photos (data/photos.py): a turned face is found only by the turned passes, and cropped
upright."""

from __future__ import annotations

import numpy as np

from fer_sweep.data import photos as photo_faces
from tests.helpers import TURN_DEG, composite


def test_turned_faces_need_the_turned_passes_and_are_cropped_upright():
    grey = np.asarray(composite().convert("L"))
    assert len(photo_faces.detect_faces(grey, angles_deg=(0,))) == 1  # upright only: the turned face is missed
    left, right = photo_faces.detect_faces(grey)
    assert (left.angle_deg, right.angle_deg) == (0, TURN_DEG)
    a, b = (photo_faces.crop_face(grey, f).astype(float).ravel() for f in (left, right))
    assert a.shape == (48 * 48,) and np.corrcoef(a, b)[0, 1] > 0.8  # the turned face is cropped upright again
