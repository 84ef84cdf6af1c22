"""FER2013 readers (data/readers.py): every CSV layout and the folder edition, and bad input refused with the
first bad row named."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_sweep.config import EMOTIONS, UserError
from fer_sweep.data import DataError, Faces, load_splits, read_faces, readers
from tests.helpers import FER_HEADERS, faces_array, labelled, pixel_text, write_fer_csv, write_image

pytestmark = pytest.mark.usefixtures("no_default_cache")  # never the user's real cache


@pytest.mark.parametrize("layout", ["icml", "fer2013"])
def test_usage_layouts_read_pixels_labels_and_usage(tmp_path, data_cache, layout):
    x, y, usage = labelled(20)
    faces = read_faces(write_fer_csv(tmp_path / "faces.csv", layout, x, y, usage), cache_dir=data_cache)
    assert faces.layout == layout
    assert faces.x.dtype == np.uint8 and faces.x.shape == (20, 48, 48) and faces.x.flags.c_contiguous
    np.testing.assert_array_equal(faces.x, x)
    assert faces.y.dtype == np.int64
    np.testing.assert_array_equal(faces.y, y)
    assert list(faces.usage) == usage


def test_layout_comes_from_content_not_file_name(tmp_path, data_cache):
    x, y, usage = labelled(14)
    # an icml file named like Kaggle's test.csv, gzipped without a .gz suffix
    path = write_fer_csv(tmp_path / "test.csv", "icml", x, y, usage, gz=True)
    faces = read_faces(path, cache_dir=data_cache)
    assert faces.layout == "icml"
    np.testing.assert_array_equal(faces.x, x)


def test_gz_reads_like_plain_csv(tmp_path, data_cache):
    x, y, usage = labelled(10)
    plain = read_faces(write_fer_csv(tmp_path / "a.csv", "fer2013", x, y, usage), cache_dir=data_cache)
    packed = read_faces(write_fer_csv(tmp_path / "b.csv.gz", "fer2013", x, y, usage, gz=True), cache_dir=data_cache)
    np.testing.assert_array_equal(plain.x, packed.x)
    np.testing.assert_array_equal(plain.y, packed.y)


def test_kaggle_test_is_unlabeled_and_refused_by_load_splits(tmp_path, data_cache):
    path = write_fer_csv(tmp_path / "test.csv", "kaggle_test", faces_array(5))
    faces = read_faces(path, cache_dir=data_cache)
    assert faces.layout == "kaggle_test" and faces.y is None and faces.x.shape == (5, 48, 48)
    with pytest.raises(DataError, match=r"test\.csv: unlabeled \(no emotion column\); usable with `predict` only"):
        load_splits(str(path), cache_dir=data_cache)


def test_nrows_reads_a_prefix(tmp_path, data_cache):
    x, y, usage = labelled(30)
    path = write_fer_csv(tmp_path / "f.csv", "icml", x, y, usage)
    np.testing.assert_array_equal(read_faces(path, cache_dir=data_cache, nrows=9).x, x[:9])
    np.testing.assert_array_equal(read_faces(path, cache_dir=data_cache).x, x)
    assert len(list(data_cache.glob("*.npz"))) == 2  # a prefix and the whole file are cached side by side
    np.testing.assert_array_equal(read_faces(path, cache_dir=data_cache, nrows=9).x, x[:9])


def test_rows_are_parsed_across_chunk_boundaries(tmp_path, data_cache, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK_ROWS", 4)
    x, y, usage = labelled(11)
    faces = read_faces(write_fer_csv(tmp_path / "f.csv", "icml", x, y, usage), cache_dir=data_cache)
    np.testing.assert_array_equal(faces.x, x)
    np.testing.assert_array_equal(faces.y, y)


def test_folder_edition_labels_usage_and_notes(tmp_path, data_cache):
    x = faces_array(5)
    write_image(tmp_path / "fer" / "train" / "happy" / "Training_1.png", x[0])
    write_image(tmp_path / "fer" / "train" / "sad" / "img2.png", x[1], mode="RGB")  # RGB -> grey
    write_image(tmp_path / "fer" / "test" / "angry" / "PublicTest_3.png", x[2])
    write_image(tmp_path / "fer" / "test" / "neutral" / "PrivateTest_4.png", x[3])
    write_image(tmp_path / "fer" / "test" / "fear" / "img5.png", x[4])
    (tmp_path / "fer" / "train" / "happy" / ".DS_Store").write_text("not an image")
    faces = read_faces(tmp_path / "fer", cache_dir=data_cache)
    assert faces.layout == "folders"
    # sorted order: test/angry, test/fear, test/neutral, train/happy, train/sad
    np.testing.assert_array_equal(faces.x, x[[2, 4, 3, 0, 1]])
    assert [EMOTIONS[i] for i in faces.y] == ["angry", "fear", "neutral", "happy", "sad"]
    assert list(faces.usage) == ["PublicTest", "PrivateTest", "PrivateTest", "Training", "Training"]
    assert faces.notes == ("2 images without a Training_/PublicTest_/PrivateTest_ file-name prefix: "
                           "train/ taken as Training, test/ as PrivateTest",)


def test_folder_resize_accepts_other_sizes(tmp_path, data_cache):
    write_image(tmp_path / "fer" / "train" / "happy" / "a.jpg", np.full((64, 64), 200, np.uint8))
    faces = read_faces(tmp_path / "fer", cache_dir=data_cache, resize=True)
    assert faces.x.shape == (1, 48, 48)
    assert abs(int(faces.x[0, 24, 24]) - 200) <= 2  # JPEG


def bad_csv(tmp_path: Path, row: str, at: int = 3, n: int = 6, header: str = FER_HEADERS["icml"]) -> Path:
    """A valid icml CSV whose data row number `at` (1-based) is replaced by `row`."""
    good = [f"{i % 7},Training,{pixel_text(image)}" for i, image in enumerate(faces_array(n))]
    good[at - 1] = row
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header, *good]) + "\n")
    return path


def assert_refused(path, data_cache: Path, pattern: str, **kwargs) -> None:
    with pytest.raises(DataError, match=pattern) as info:
        read_faces(path, cache_dir=data_cache, **kwargs)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    assert not data_cache.exists() or not list(data_cache.iterdir())  # nothing cached


def test_missing_file(tmp_path, data_cache):
    assert_refused(tmp_path / "nope.csv", data_cache, r"nope\.csv: no such file or directory")


def test_empty_file(tmp_path, data_cache):
    (tmp_path / "empty.csv").write_text("")
    assert_refused(tmp_path / "empty.csv", data_cache, r"empty\.csv: empty file")


def test_header_without_rows(tmp_path, data_cache):
    (tmp_path / "head.csv").write_text(FER_HEADERS["icml"] + "\n")
    assert_refused(tmp_path / "head.csv", data_cache, r"head\.csv: empty file \(a header but no data rows\)")


def test_unknown_layout_missing_pixels_column(tmp_path, data_cache):
    (tmp_path / "odd.csv").write_text("emotion,Usage,image\n3,Training,1 2 3\n")
    assert_refused(tmp_path / "odd.csv", data_cache, r"odd\.csv: unknown layout: missing column 'pixels'")


def test_row_with_too_few_pixels(tmp_path, data_cache):
    path = bad_csv(tmp_path, "3,Training," + " ".join(["7"] * 2303), at=4)
    assert_refused(path, data_cache, r"bad\.csv: row 4 \(line 5\): expected 2304 pixels, got 2303$")


def test_row_with_too_many_pixels_in_a_later_chunk(tmp_path, data_cache, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK_ROWS", 4)
    path = bad_csv(tmp_path, "3,Training," + " ".join(["7"] * 2305), at=10, n=12)
    assert_refused(path, data_cache, r"bad\.csv: row 10 \(line 11\): expected 2304 pixels, got 2305$")


def test_non_numeric_pixel(tmp_path, data_cache):
    path = bad_csv(tmp_path, "3,Training," + " ".join(["7"] * 100 + ["x7"] + ["7"] * 2203), at=2)
    assert_refused(path, data_cache, r"bad\.csv: row 2 \(line 3\): non-numeric pixel 'x7'$")


def test_pixel_out_of_range(tmp_path, data_cache):
    path = bad_csv(tmp_path, "3,Training," + " ".join(["7"] * 2303 + ["256"]), at=5)
    assert_refused(path, data_cache, r"bad\.csv: row 5 \(line 6\): pixel value 256 outside 0-255$")


def test_negative_pixel(tmp_path, data_cache):
    path = bad_csv(tmp_path, "3,Training," + " ".join(["-1"] + ["7"] * 2303), at=1)
    assert_refused(path, data_cache, r"bad\.csv: row 1 \(line 2\): pixel value -1 outside 0-255$")


@pytest.mark.parametrize("label", ["7", "-1", "2.0", "happy", ""])
def test_label_outside_0_to_6(tmp_path, data_cache, label):
    path = bad_csv(tmp_path, f"{label},Training," + " ".join(["7"] * 2304), at=6)
    assert_refused(path, data_cache, rf"bad\.csv: row 6 \(line 7\): emotion '{label}' is not a label 0-6$")


def test_unknown_usage(tmp_path, data_cache):
    path = bad_csv(tmp_path, "3,Validation," + " ".join(["7"] * 2304), at=3)
    assert_refused(path, data_cache,
                   r"bad\.csv: row 3 \(line 4\): unknown Usage 'Validation' "
                   r"\(expected Training, PublicTest or PrivateTest\)")


def test_first_bad_row_wins_whatever_the_problem(tmp_path, data_cache):
    rows = [f"{i % 7},Training,{pixel_text(image)}" for i, image in enumerate(faces_array(6))]
    rows[1] = "9," + rows[1].split(",", 1)[1]  # bad label at row 2
    rows[0] = "0,Training,1 2 3"  # bad pixels at row 1
    (tmp_path / "bad.csv").write_text("\n".join([FER_HEADERS["icml"], *rows]) + "\n")
    assert_refused(tmp_path / "bad.csv", data_cache, r"bad\.csv: row 1 \(line 2\): expected 2304 pixels, got 3$")


def test_bad_row_names_the_line_an_editor_shows_blank_lines_counted(tmp_path, data_cache):
    """Data row 3 with two blank lines before it is line 6 (the header is line 1); pandas skips blank lines, the
    row count does too, the line does not."""
    rows = [f"{i % 7},Training,{pixel_text(image)}" for i, image in enumerate(faces_array(4))]
    rows[2] = "3,Training,1 2 3"
    (tmp_path / "bad.csv").write_text("\n".join([FER_HEADERS["icml"], rows[0], "", rows[1], "  ", *rows[2:]]) + "\n")
    assert_refused(tmp_path / "bad.csv", data_cache, r"bad\.csv: row 3 \(line 6\): expected 2304 pixels, got 3$")


def test_bad_row_of_a_gzipped_file_names_the_line_of_its_text(tmp_path, data_cache):
    rows = [f"{i % 7},Training,{pixel_text(image)}" for i, image in enumerate(faces_array(5))]
    rows[3] = "9," + rows[3].split(",", 1)[1]  # a bad label at row 4
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(gzip.compress(("\n".join([FER_HEADERS["icml"], *rows]) + "\n").encode()))
    assert_refused(path, data_cache, r"bad\.csv\.gz: row 4 \(line 5 of the unzipped text\): emotion '9' is not a label")


def test_image_not_48x48(tmp_path, data_cache):
    write_image(tmp_path / "fer" / "train" / "happy" / "big.png", np.zeros((50, 40), np.uint8))
    assert_refused(tmp_path / "fer", data_cache,
                   r"big\.png: image is 40x50, expected 48x48 \(pass resize=True to resize\)")


def test_unknown_class_folder(tmp_path, data_cache):
    write_image(tmp_path / "fer" / "train" / "contempt" / "a.png", np.zeros((48, 48), np.uint8))
    assert_refused(tmp_path / "fer", data_cache, r"contempt: unknown class folder")


def test_folder_without_train_or_test(tmp_path, data_cache):
    (tmp_path / "fer" / "happy").mkdir(parents=True)
    assert_refused(tmp_path / "fer", data_cache, r"fer: unknown layout: a folder needs train/ or test/")


def test_binary_file_is_not_a_csv(tmp_path, data_cache):
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "face.csv", format="PNG")  # a PNG named .csv
    with pytest.raises(DataError, match=r"face\.csv: "):
        read_faces(tmp_path / "face.csv", cache_dir=data_cache)


def test_faces_record_is_frozen(tmp_path, data_cache):
    faces = read_faces(write_fer_csv(tmp_path / "f.csv", "kaggle_train", faces_array(1), [0]), cache_dir=data_cache)
    assert isinstance(faces, Faces)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'layout'"):
        faces.layout = "x"
    assert faces.layout == "kaggle_train"
