"""Splits (data/splits.py): Usage mapped to train/val/test, stratified carving, fractions, synthetic data,
summaries, and the real file's class counts."""

from __future__ import annotations

import numpy as np
import pytest

from fer_sweep.config import EMOTIONS
from fer_sweep.data import (
    DataError,
    Split,
    Splits,
    class_counts,
    describe,
    info,
    load_splits,
    read_faces,
    split_indices,
)
from tests.helpers import faces_array, labelled, write_fer_csv

pytestmark = pytest.mark.usefixtures("no_default_cache")  # never the user's real cache

README_COUNTS = {  # /work/shared/data/README.md
    "Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "PublicTest": [467, 56, 496, 895, 653, 415, 607],
}


def test_kaggle_train_has_no_usage_and_splits_are_carved(tmp_path, data_cache):
    x, y = faces_array(70), np.arange(70) % 7
    path = write_fer_csv(tmp_path / "train.csv", "kaggle_train", x, y)
    faces = read_faces(path, cache_dir=data_cache)
    assert faces.layout == "kaggle_train" and faces.usage is None
    splits = load_splits(str(path), cache_dir=data_cache)
    assert (len(splits.train.x), len(splits.val.x), len(splits.test.x)) == (56, 7, 7)
    assert splits.notes == ("no Usage column: carved a stratified 10% of train as val (seed 0)",
                            "no Usage column: carved a stratified 10% of train as test (seed 0)")
    np.testing.assert_array_equal(class_counts(splits.val.y), [1] * 7)  # stratified


def test_usage_maps_to_train_val_test(tmp_path, data_cache):
    x, y, usage = labelled(40)
    splits = load_splits(str(write_fer_csv(tmp_path / "f.csv", "icml", x, y, usage)), cache_dir=data_cache)
    assert isinstance(splits, Splits) and isinstance(splits.train, Split)
    assert (len(splits.train.x), len(splits.val.x), len(splits.test.x)) == (28, 6, 6)
    np.testing.assert_array_equal(splits.val.x, x[28:34])
    np.testing.assert_array_equal(splits.test.y, y[34:])
    assert splits.notes == () and splits.layout == "icml"
    for split in (splits.train, splits.val, splits.test):
        assert split.x.dtype == np.uint8 and split.x.flags.c_contiguous and split.y.dtype == np.int64


def test_missing_private_test_is_carved_from_train_reproducibly(tmp_path, data_cache):
    x, y, usage = labelled(200)
    usage = ["Training" if u == "PrivateTest" else u for u in usage]
    path = str(write_fer_csv(tmp_path / "f.csv", "icml", x, y, usage))
    a, b = load_splits(path, cache_dir=data_cache), load_splits(path, cache_dir=data_cache)
    c = load_splits(path, cache_dir=data_cache, seed=1)
    assert a.notes == ("no PrivateTest rows: carved a stratified 10% of train as test (seed 0)",)
    assert len(a.test.x) == round(0.1 * 170) and len(a.train.x) + len(a.test.x) == 170
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.x, c.test.x)
    np.testing.assert_array_equal(a.val.x, x[140:170])  # PublicTest untouched
    train_test = np.concatenate([a.train.x, a.test.x]).reshape(len(a.train.x) + len(a.test.x), -1)
    assert len(np.unique(train_test, axis=0)) == 170  # disjoint and complete


def test_split_indices_are_the_rows_load_splits_uses(tmp_path, data_cache):
    x, y, usage = labelled(60)
    usage = ["Training" if u == "PrivateTest" else u for u in usage]
    path = write_fer_csv(tmp_path / "f.csv", "icml", x, y, usage)
    indices, notes = split_indices(read_faces(path, cache_dir=data_cache), seed=2)
    splits = load_splits(str(path), cache_dir=data_cache, seed=2)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(splits, name).x, x[indices[name]])
    assert notes == splits.notes


def test_no_test_split_when_test_frac_is_zero(tmp_path, data_cache):
    x, y, usage = labelled(40)
    usage = ["Training" if u == "PrivateTest" else u for u in usage]
    splits = load_splits(str(write_fer_csv(tmp_path / "f.csv", "icml", x, y, usage)), cache_dir=data_cache, test_frac=0)
    assert splits.test is None and len(splits.train.x) == 34
    assert splits.notes == ("no PrivateTest rows and test_frac is 0: no test split",)
    assert describe(splits)["splits"]["test"] is None


def test_a_split_that_would_be_empty_is_an_error(tmp_path, data_cache):
    x, y = faces_array(5), np.arange(5)
    path = str(write_fer_csv(tmp_path / "tiny.csv", "kaggle_train", x, y))
    with pytest.raises(DataError, match=r"tiny\.csv: the val split would be empty"):
        load_splits(path, cache_dir=data_cache)


def test_bad_fractions_are_refused():
    with pytest.raises(DataError, match="val_frac"):
        load_splits("synthetic", val_frac=0.6, test_frac=0.5)


def test_synthetic_source(data_cache):
    splits = load_splits("synthetic", synthetic_n=700, seed=3)
    assert splits.layout == "synthetic" and splits.source == "synthetic"
    assert (len(splits.train.x), len(splits.val.x), len(splits.test.x)) == (560, 70, 70)
    np.testing.assert_array_equal(class_counts(splits.val.y), [10] * 7)
    assert "carved a stratified 10% of train as val (seed 3)" in splits.notes[0]
    assert splits.train.x.dtype == np.uint8 and splits.train.x.flags.c_contiguous


def test_describe_and_class_counts():
    splits = load_splits("synthetic", synthetic_n=140)
    summary = describe(splits)
    assert summary["layout"] == "synthetic" and summary["source"] == "synthetic" and len(summary["notes"]) == 2
    assert summary["splits"]["val"] == {"n": 14, "classes": dict.fromkeys(EMOTIONS, 2)}
    assert summary["splits"]["train"]["n"] == 112
    assert class_counts([0, 6, 6]).tolist() == [1, 0, 0, 0, 0, 0, 2]
    with pytest.raises(ValueError):
        class_counts([7])


def test_info_counts_rows_per_usage_without_carving(tmp_path, data_cache):
    x, y, usage = labelled(20)
    summary = info(write_fer_csv(tmp_path / "f.csv", "fer2013", x, y, usage), cache_dir=data_cache)
    assert summary["layout"] == "fer2013" and summary["notes"] == []
    assert [summary["splits"][k]["n"] for k in ("train", "val", "test")] == [14, 3, 3]
    assert list(summary["splits"]["val"]["classes"].values()) == class_counts(y[14:17]).tolist()


def test_info_on_unlabeled_data(tmp_path, data_cache):
    summary = info(write_fer_csv(tmp_path / "test.csv", "kaggle_test", faces_array(4)), cache_dir=data_cache)
    assert summary["splits"] == {"train": {"n": 4, "classes": None}, "val": None, "test": None}
    assert summary["notes"][-1] == "unlabeled (no emotion column); usable with `predict` only"


def test_real_file_class_counts_match_the_readme(real_csv, real_cache):
    splits = load_splits(str(real_csv), cache_dir=real_cache, test_frac=0)  # test_frac=0: train = all Training rows
    assert class_counts(splits.train.y).tolist() == README_COUNTS["Training"]
    assert class_counts(splits.val.y).tolist() == README_COUNTS["PublicTest"]
    faces = read_faces(real_csv, cache_dir=real_cache)
    assert faces.x.shape == (32298, 48, 48) and set(faces.usage) == {"Training", "PublicTest"}
