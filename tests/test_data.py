"""Data layer: every CSV layout and the folder edition, the cache, splits, bad input, and the real file."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_sweep.data import readers
from fer_sweep.config import EMOTIONS, UserError
from fer_sweep.data import (
    DataError, Faces, Split, Splits, class_counts, default_cache_dir, describe, info, load_splits, read_faces,
    split_indices,
)

HEADERS = {"icml": "emotion, Usage, pixels", "fer2013": "emotion,pixels,Usage", "kaggle_train": "emotion,pixels",
           "kaggle_test": "pixels"}
README_COUNTS = {  # /work/shared/data/README.md
    "Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "PublicTest": [467, 56, 496, 895, 653, 415, 607],
}


def faces_array(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 48), dtype=np.uint8)


def pixel_text(image: np.ndarray) -> str:
    return " ".join(map(str, image.ravel()))


def write_csv(path: Path, layout: str, x: np.ndarray, y=None, usage=None, gz: bool = False) -> Path:
    """A small CSV in one of the Kaggle layouts, written the way Kaggle writes them."""
    lines = [HEADERS[layout]]
    for i, image in enumerate(x):
        fields = {"emotion": str(y[i]) if y is not None else "", "usage": usage[i] if usage is not None else "",
                  "pixels": pixel_text(image)}
        order = {"icml": ("emotion", "usage", "pixels"), "fer2013": ("emotion", "pixels", "usage"),
                 "kaggle_train": ("emotion", "pixels"), "kaggle_test": ("pixels",)}[layout]
        lines.append(",".join(fields[k] for k in order))
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def labelled(n: int, seed: int = 0):
    """n images with labels cycling through all classes and a Training/PublicTest/PrivateTest usage mix."""
    y = np.arange(n) % 7
    usage = np.array(["Training"] * n, dtype=object)
    usage[n * 7 // 10:n * 85 // 100], usage[n * 85 // 100:] = "PublicTest", "PrivateTest"
    return faces_array(n, seed), y, list(usage)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


# ----------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", ["icml", "fer2013"])
def test_usage_layouts_read_pixels_labels_and_usage(tmp_path, cache, layout):
    x, y, usage = labelled(20)
    faces = read_faces(write_csv(tmp_path / "faces.csv", layout, x, y, usage), cache_dir=cache)
    assert faces.layout == layout
    assert faces.x.dtype == np.uint8 and faces.x.shape == (20, 48, 48) and faces.x.flags.c_contiguous
    np.testing.assert_array_equal(faces.x, x)
    assert faces.y.dtype == np.int64
    np.testing.assert_array_equal(faces.y, y)
    assert list(faces.usage) == usage


def test_layout_comes_from_content_not_file_name(tmp_path, cache):
    x, y, usage = labelled(14)
    # an icml file named like Kaggle's test.csv, gzipped without a .gz suffix
    path = write_csv(tmp_path / "test.csv", "icml", x, y, usage, gz=True)
    faces = read_faces(path, cache_dir=cache)
    assert faces.layout == "icml"
    np.testing.assert_array_equal(faces.x, x)


def test_gz_reads_like_plain_csv(tmp_path, cache):
    x, y, usage = labelled(10)
    plain = read_faces(write_csv(tmp_path / "a.csv", "fer2013", x, y, usage), cache_dir=cache)
    packed = read_faces(write_csv(tmp_path / "b.csv.gz", "fer2013", x, y, usage, gz=True), cache_dir=cache)
    np.testing.assert_array_equal(plain.x, packed.x)
    np.testing.assert_array_equal(plain.y, packed.y)


def test_kaggle_train_has_no_usage_and_splits_are_carved(tmp_path, cache):
    x, y = faces_array(70), np.arange(70) % 7
    path = write_csv(tmp_path / "train.csv", "kaggle_train", x, y)
    faces = read_faces(path, cache_dir=cache)
    assert faces.layout == "kaggle_train" and faces.usage is None
    splits = load_splits(str(path), cache_dir=cache)
    assert (len(splits.train.x), len(splits.val.x), len(splits.test.x)) == (56, 7, 7)
    assert splits.notes == ("no Usage column: carved a stratified 10% of train as val (seed 0)",
                            "no Usage column: carved a stratified 10% of train as test (seed 0)")
    np.testing.assert_array_equal(class_counts(splits.val.y), [1] * 7)  # stratified


def test_kaggle_test_is_unlabeled_and_refused_by_load_splits(tmp_path, cache):
    path = write_csv(tmp_path / "test.csv", "kaggle_test", faces_array(5))
    faces = read_faces(path, cache_dir=cache)
    assert faces.layout == "kaggle_test" and faces.y is None and faces.x.shape == (5, 48, 48)
    with pytest.raises(DataError, match=r"test\.csv: unlabeled \(no emotion column\); usable with `predict` only"):
        load_splits(str(path), cache_dir=cache)


def test_nrows_reads_a_prefix(tmp_path, cache):
    x, y, usage = labelled(30)
    path = write_csv(tmp_path / "f.csv", "icml", x, y, usage)
    np.testing.assert_array_equal(read_faces(path, cache_dir=cache, nrows=9).x, x[:9])
    np.testing.assert_array_equal(read_faces(path, cache_dir=cache).x, x)
    assert len(list(cache.glob("*.npz"))) == 2  # a prefix and the whole file are cached side by side
    np.testing.assert_array_equal(read_faces(path, cache_dir=cache, nrows=9).x, x[:9])


def test_rows_are_parsed_across_chunk_boundaries(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK_ROWS", 4)
    x, y, usage = labelled(11)
    faces = read_faces(write_csv(tmp_path / "f.csv", "icml", x, y, usage), cache_dir=cache)
    np.testing.assert_array_equal(faces.x, x)
    np.testing.assert_array_equal(faces.y, y)


# ------------------------------------------------------------------------------------ image folders


def write_image(path: Path, image: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    (picture.convert("RGB") if mode == "RGB" else picture).save(path)


def test_folder_edition_labels_usage_and_notes(tmp_path, cache):
    x = faces_array(5)
    write_image(tmp_path / "fer" / "train" / "happy" / "Training_1.png", x[0])
    write_image(tmp_path / "fer" / "train" / "sad" / "img2.png", x[1], mode="RGB")  # RGB -> grey
    write_image(tmp_path / "fer" / "test" / "angry" / "PublicTest_3.png", x[2])
    write_image(tmp_path / "fer" / "test" / "neutral" / "PrivateTest_4.png", x[3])
    write_image(tmp_path / "fer" / "test" / "fear" / "img5.png", x[4])
    (tmp_path / "fer" / "train" / "happy" / ".DS_Store").write_text("not an image")
    faces = read_faces(tmp_path / "fer", cache_dir=cache)
    assert faces.layout == "folders"
    # sorted order: test/angry, test/fear, test/neutral, train/happy, train/sad
    np.testing.assert_array_equal(faces.x, x[[2, 4, 3, 0, 1]])
    assert [EMOTIONS[i] for i in faces.y] == ["angry", "fear", "neutral", "happy", "sad"]
    assert list(faces.usage) == ["PublicTest", "PrivateTest", "PrivateTest", "Training", "Training"]
    assert faces.notes == ("2 images without a Training_/PublicTest_/PrivateTest_ file-name prefix: "
                           "train/ taken as Training, test/ as PrivateTest",)


def test_folder_resize_accepts_other_sizes(tmp_path, cache):
    write_image(tmp_path / "fer" / "train" / "happy" / "a.jpg", np.full((64, 64), 200, np.uint8))
    faces = read_faces(tmp_path / "fer", cache_dir=cache, resize=True)
    assert faces.x.shape == (1, 48, 48)
    assert abs(int(faces.x[0, 24, 24]) - 200) <= 2  # JPEG


# ------------------------------------------------------------------------------------------- cache


def test_second_read_comes_from_the_cache(tmp_path, cache, monkeypatch):
    x, y, usage = labelled(8)
    path = write_csv(tmp_path / "f.csv", "icml", x, y, usage)
    first = read_faces(path, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.tmp"))
    monkeypatch.setattr("fer_sweep.data.read.read_csv_faces", lambda *a, **k: pytest.fail("parsed again"))
    second = read_faces(str(path), cache_dir=cache)
    np.testing.assert_array_equal(first.x, second.x)
    assert list(second.usage) == usage and second.layout == "icml" and second.source == str(path)


def test_cache_is_invalidated_when_the_source_changes(tmp_path, cache):
    x, y, usage = labelled(8)
    path = write_csv(tmp_path / "f.csv", "icml", x, y, usage)
    read_faces(path, cache_dir=cache)
    write_csv(path, "icml", x[::-1], y, usage)
    os.utime(path, ns=(os.stat(path).st_mtime_ns + 10**9,) * 2)
    np.testing.assert_array_equal(read_faces(path, cache_dir=cache).x, x[::-1])
    assert len(list(cache.glob("*.npz"))) == 1  # the stale entry was dropped


def test_folder_cache_is_invalidated_when_a_file_is_added(tmp_path, cache):
    x = faces_array(2)
    write_image(tmp_path / "fer" / "train" / "happy" / "a.png", x[0])
    assert len(read_faces(tmp_path / "fer", cache_dir=cache).x) == 1
    write_image(tmp_path / "fer" / "train" / "sad" / "b.png", x[1])
    assert len(read_faces(tmp_path / "fer", cache_dir=cache).x) == 2


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FER_SWEEP_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fer-sweep"


# --------------------------------------------------------------------------------------- bad input


def bad_csv(tmp_path: Path, row: str, at: int = 3, n: int = 6, header: str = HEADERS["icml"]) -> Path:
    """A valid icml CSV whose data row number `at` (1-based) is replaced by `row`."""
    good = [f"{i % 7},Training,{pixel_text(image)}" for i, image in enumerate(faces_array(n))]
    good[at - 1] = row
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header, *good]) + "\n")
    return path


def assert_refused(path, cache: Path, pattern: str, **kwargs) -> None:
    with pytest.raises(DataError, match=pattern) as info:
        read_faces(path, cache_dir=cache, **kwargs)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    assert not cache.exists() or not list(cache.iterdir())  # nothing cached


def test_missing_file(tmp_path, cache):
    assert_refused(tmp_path / "nope.csv", cache, r"nope\.csv: no such file or directory")


def test_empty_file(tmp_path, cache):
    (tmp_path / "empty.csv").write_text("")
    assert_refused(tmp_path / "empty.csv", cache, r"empty\.csv: empty file")


def test_header_without_rows(tmp_path, cache):
    (tmp_path / "head.csv").write_text(HEADERS["icml"] + "\n")
    assert_refused(tmp_path / "head.csv", cache, r"head\.csv: empty file \(a header but no data rows\)")


def test_unknown_layout_missing_pixels_column(tmp_path, cache):
    (tmp_path / "odd.csv").write_text("emotion,Usage,image\n3,Training,1 2 3\n")
    assert_refused(tmp_path / "odd.csv", cache, r"odd\.csv: unknown layout: missing column 'pixels'")


def test_row_with_too_few_pixels(tmp_path, cache):
    path = bad_csv(tmp_path, "3,Training," + " ".join(["7"] * 2303), at=4)
    assert_refused(path, cache, r"bad\.csv: row 4: expected 2304 pixels, got 2303$")


def test_row_with_too_many_pixels_in_a_later_chunk(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK_ROWS", 4)
    path = bad_csv(tmp_path, "3,Training," + " ".join(["7"] * 2305), at=10, n=12)
    assert_refused(path, cache, r"bad\.csv: row 10: expected 2304 pixels, got 2305$")


def test_non_numeric_pixel(tmp_path, cache):
    path = bad_csv(tmp_path, "3,Training," + " ".join(["7"] * 100 + ["x7"] + ["7"] * 2203), at=2)
    assert_refused(path, cache, r"bad\.csv: row 2: non-numeric pixel 'x7'$")


def test_pixel_out_of_range(tmp_path, cache):
    path = bad_csv(tmp_path, "3,Training," + " ".join(["7"] * 2303 + ["256"]), at=5)
    assert_refused(path, cache, r"bad\.csv: row 5: pixel value 256 outside 0-255$")


def test_negative_pixel(tmp_path, cache):
    path = bad_csv(tmp_path, "3,Training," + " ".join(["-1"] + ["7"] * 2303), at=1)
    assert_refused(path, cache, r"bad\.csv: row 1: pixel value -1 outside 0-255$")


@pytest.mark.parametrize("label", ["7", "-1", "2.0", "happy", ""])
def test_label_outside_0_to_6(tmp_path, cache, label):
    path = bad_csv(tmp_path, f"{label},Training," + " ".join(["7"] * 2304), at=6)
    assert_refused(path, cache, rf"bad\.csv: row 6: emotion '{label}' is not a label 0-6$")


def test_unknown_usage(tmp_path, cache):
    path = bad_csv(tmp_path, "3,Validation," + " ".join(["7"] * 2304), at=3)
    assert_refused(path, cache, r"bad\.csv: row 3: unknown Usage 'Validation' \(expected Training, PublicTest or PrivateTest\)")


def test_first_bad_row_wins_whatever_the_problem(tmp_path, cache):
    rows = [f"{i % 7},Training,{pixel_text(image)}" for i, image in enumerate(faces_array(6))]
    rows[1] = "9," + rows[1].split(",", 1)[1]  # bad label at row 2
    rows[0] = "0,Training,1 2 3"  # bad pixels at row 1
    (tmp_path / "bad.csv").write_text("\n".join([HEADERS["icml"], *rows]) + "\n")
    assert_refused(tmp_path / "bad.csv", cache, r"bad\.csv: row 1: expected 2304 pixels, got 3$")


def test_image_not_48x48(tmp_path, cache):
    write_image(tmp_path / "fer" / "train" / "happy" / "big.png", np.zeros((50, 40), np.uint8))
    assert_refused(tmp_path / "fer", cache, r"big\.png: image is 40x50, expected 48x48 \(pass resize=True to resize\)")


def test_unknown_class_folder(tmp_path, cache):
    write_image(tmp_path / "fer" / "train" / "contempt" / "a.png", np.zeros((48, 48), np.uint8))
    assert_refused(tmp_path / "fer", cache, r"contempt: unknown class folder")


def test_folder_without_train_or_test(tmp_path, cache):
    (tmp_path / "fer" / "happy").mkdir(parents=True)
    assert_refused(tmp_path / "fer", cache, r"fer: unknown layout: a folder needs train/ or test/")


def test_binary_file_is_not_a_csv(tmp_path, cache):
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "face.csv", format="PNG")  # a PNG named .csv
    with pytest.raises(DataError, match=r"face\.csv: "):
        read_faces(tmp_path / "face.csv", cache_dir=cache)


# ------------------------------------------------------------------------------------------ splits


def test_usage_maps_to_train_val_test(tmp_path, cache):
    x, y, usage = labelled(40)
    splits = load_splits(str(write_csv(tmp_path / "f.csv", "icml", x, y, usage)), cache_dir=cache)
    assert isinstance(splits, Splits) and isinstance(splits.train, Split)
    assert (len(splits.train.x), len(splits.val.x), len(splits.test.x)) == (28, 6, 6)
    np.testing.assert_array_equal(splits.val.x, x[28:34])
    np.testing.assert_array_equal(splits.test.y, y[34:])
    assert splits.notes == () and splits.layout == "icml"
    for split in (splits.train, splits.val, splits.test):
        assert split.x.dtype == np.uint8 and split.x.flags.c_contiguous and split.y.dtype == np.int64


def test_missing_private_test_is_carved_from_train_reproducibly(tmp_path, cache):
    x, y, usage = labelled(200)
    usage = ["Training" if u == "PrivateTest" else u for u in usage]
    path = str(write_csv(tmp_path / "f.csv", "icml", x, y, usage))
    a, b = load_splits(path, cache_dir=cache), load_splits(path, cache_dir=cache)
    c = load_splits(path, cache_dir=cache, seed=1)
    assert a.notes == ("no PrivateTest rows: carved a stratified 10% of train as test (seed 0)",)
    assert len(a.test.x) == round(0.1 * 170) and len(a.train.x) + len(a.test.x) == 170
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.x, c.test.x)
    np.testing.assert_array_equal(a.val.x, x[140:170])  # PublicTest untouched
    train_test = np.concatenate([a.train.x, a.test.x]).reshape(len(a.train.x) + len(a.test.x), -1)
    assert len(np.unique(train_test, axis=0)) == 170  # disjoint and complete


def test_split_indices_are_the_rows_load_splits_uses(tmp_path, cache):
    x, y, usage = labelled(60)
    usage = ["Training" if u == "PrivateTest" else u for u in usage]
    path = write_csv(tmp_path / "f.csv", "icml", x, y, usage)
    indices, notes = split_indices(read_faces(path, cache_dir=cache), seed=2)
    splits = load_splits(str(path), cache_dir=cache, seed=2)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(splits, name).x, x[indices[name]])
    assert notes == splits.notes


def test_no_test_split_when_test_frac_is_zero(tmp_path, cache):
    x, y, usage = labelled(40)
    usage = ["Training" if u == "PrivateTest" else u for u in usage]
    splits = load_splits(str(write_csv(tmp_path / "f.csv", "icml", x, y, usage)), cache_dir=cache, test_frac=0)
    assert splits.test is None and len(splits.train.x) == 34
    assert splits.notes == ("no PrivateTest rows and test_frac is 0: no test split",)
    assert describe(splits)["splits"]["test"] is None


def test_a_split_that_would_be_empty_is_an_error(tmp_path, cache):
    x, y = faces_array(5), np.arange(5)
    path = str(write_csv(tmp_path / "tiny.csv", "kaggle_train", x, y))
    with pytest.raises(DataError, match=r"tiny\.csv: the val split would be empty"):
        load_splits(path, cache_dir=cache)


def test_bad_fractions_are_refused():
    with pytest.raises(DataError, match="val_frac"):
        load_splits("synthetic", val_frac=0.6, test_frac=0.5)


def test_synthetic_source(cache):
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


def test_info_counts_rows_per_usage_without_carving(tmp_path, cache):
    x, y, usage = labelled(20)
    summary = info(write_csv(tmp_path / "f.csv", "fer2013", x, y, usage), cache_dir=cache)
    assert summary["layout"] == "fer2013" and summary["notes"] == []
    assert [summary["splits"][k]["n"] for k in ("train", "val", "test")] == [14, 3, 3]
    assert list(summary["splits"]["val"]["classes"].values()) == class_counts(y[14:17]).tolist()


def test_info_on_unlabeled_data(tmp_path, cache):
    summary = info(write_csv(tmp_path / "test.csv", "kaggle_test", faces_array(4)), cache_dir=cache)
    assert summary["splits"] == {"train": {"n": 4, "classes": None}, "val": None, "test": None}
    assert summary["notes"][-1] == "unlabeled (no emotion column); usable with `predict` only"


# --------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="session")
def real_csv() -> Path:
    value = os.environ.get("FER2013_CSV")
    if not value:
        pytest.skip("FER2013_CSV is not set (point it at fer2013-dev.csv.gz to run the real-data tests)")
    if not Path(value).is_file():
        pytest.skip(f"FER2013_CSV={value} does not exist")
    return Path(value)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fer-cache")


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


def test_real_file_class_counts_match_the_readme(real_csv, real_cache):
    splits = load_splits(str(real_csv), cache_dir=real_cache, test_frac=0)  # test_frac=0: train = all Training rows
    assert class_counts(splits.train.y).tolist() == README_COUNTS["Training"]
    assert class_counts(splits.val.y).tolist() == README_COUNTS["PublicTest"]
    faces = read_faces(real_csv, cache_dir=real_cache)
    assert faces.x.shape == (32298, 48, 48) and set(faces.usage) == {"Training", "PublicTest"}


@pytest.fixture(autouse=True)
def _no_default_cache(monkeypatch, tmp_path):
    """Never write to the user's real cache from tests."""
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "default-cache"))


def test_faces_record_is_frozen(tmp_path, cache):
    faces = read_faces(write_csv(tmp_path / "f.csv", "kaggle_train", faces_array(1), [0]), cache_dir=cache)
    assert isinstance(faces, Faces)
    with pytest.raises(AttributeError):
        faces.layout = "x"
