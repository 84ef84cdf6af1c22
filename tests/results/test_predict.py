"""Predictions on FER2013 data (results/predict.py): a split's rows are the rows load_splits uses."""

from __future__ import annotations

import numpy as np

from fer_sweep.data.read import read_faces
from fer_sweep.data.splits import load_splits
from fer_sweep.data.synthetic import synthetic_faces
from fer_sweep.results import predict as prediction
from tests.helpers import write_rows_csv


def test_split_rows_are_the_rows_load_splits_uses(tmp_path):
    x, y = synthetic_faces(120, seed=3)
    train_csv = write_rows_csv(tmp_path / "train.csv", ["emotion", "pixels"],
                               [[int(label), " ".join(map(str, face.ravel()))] for face, label in zip(x, y)])
    faces = read_faces(train_csv)
    splits = load_splits(train_csv, val_frac=0.2, test_frac=0.15, seed=7)
    for name in ("train", "val", "test"):
        rows = prediction.split_rows(faces, name, {"val_frac": 0.2, "test_frac": 0.15, "seed": 7})
        assert np.array_equal(faces.x[rows], getattr(splits, name).x)
        assert np.array_equal(faces.y[rows], getattr(splits, name).y)
