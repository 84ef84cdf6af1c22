"""read_faces and its on-disk cache (data/read.py): a second read comes from the cache, a changed source
invalidates it, where the cache lives, and the real file parsed as pandas parses it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_sweep.data import class_counts, default_cache_dir, read_faces
from tests.helpers import faces_array, labelled, write_fer_csv, write_image

pytestmark = pytest.mark.usefixtures("no_default_cache")  # never the user's real cache


def test_second_read_comes_from_the_cache(tmp_path, data_cache, monkeypatch):
    x, y, usage = labelled(8)
    path = write_fer_csv(tmp_path / "f.csv", "icml", x, y, usage)
    first = read_faces(path, cache_dir=data_cache)
    assert len(list(data_cache.glob("*.npz"))) == 1 and not list(data_cache.glob("*.tmp"))
    monkeypatch.setattr("fer_sweep.data.read.read_csv_faces", lambda *a, **k: pytest.fail("parsed again"))
    second = read_faces(str(path), cache_dir=data_cache)
    np.testing.assert_array_equal(first.x, second.x)
    assert list(second.usage) == usage and second.layout == "icml" and second.source == str(path)


def test_cache_is_invalidated_when_the_source_changes(tmp_path, data_cache):
    x, y, usage = labelled(8)
    path = write_fer_csv(tmp_path / "f.csv", "icml", x, y, usage)
    read_faces(path, cache_dir=data_cache)
    write_fer_csv(path, "icml", x[::-1], y, usage)
    os.utime(path, ns=(os.stat(path).st_mtime_ns + 10**9,) * 2)
    np.testing.assert_array_equal(read_faces(path, cache_dir=data_cache).x, x[::-1])
    assert len(list(data_cache.glob("*.npz"))) == 1  # the stale entry was dropped


def test_folder_cache_is_invalidated_when_a_file_is_added(tmp_path, data_cache):
    x = faces_array(2)
    write_image(tmp_path / "fer" / "train" / "happy" / "a.png", x[0])
    assert len(read_faces(tmp_path / "fer", cache_dir=data_cache).x) == 1
    write_image(tmp_path / "fer" / "train" / "sad" / "b.png", x[1])
    assert len(read_faces(tmp_path / "fer", cache_dir=data_cache).x) == 2


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FER_SWEEP_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fer-sweep"


def test_real_slice_matches_an_independent_parse(real_csv, real_cache):
    faces = read_faces(real_csv, cache_dir=real_cache, nrows=2000)
    frame = pd.read_csv(real_csv, nrows=2000)
    frame.columns = [c.strip() for c in frame.columns]
    expected = np.stack([np.array(row.split(), dtype=np.uint8) for row in frame["pixels"]]).reshape(-1, 48, 48)
    np.testing.assert_array_equal(faces.x, expected)
    assert faces.layout == "icml"
    for usage in ("Training", "PublicTest", "PrivateTest"):
        np.testing.assert_array_equal(class_counts(faces.y[faces.usage == usage]),
                                      np.bincount(frame["emotion"][frame["Usage"] == usage], minlength=7))
