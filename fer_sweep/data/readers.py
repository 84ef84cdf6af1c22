"""Parse FER2013 files (Kaggle CSVs or the image-folder edition) into uint8 arrays, validating every row."""

from __future__ import annotations

import gzip
import os
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Optional

import numpy as np
import pandas as pd

from fer_sweep.config import EMOTIONS, IMAGE_SIZE, UserError, first_line

PIXELS = IMAGE_SIZE * IMAGE_SIZE  # 2304 grey levels per row
USAGES = ("Training", "PublicTest", "PrivateTest")
CHUNK_ROWS = 2048  # CSV rows parsed per numpy call: ~19 MB of text, big enough to amortise, small enough for cache
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_LABEL_CODES = {str(i): i for i in range(len(EMOTIONS))}
_USAGE_CODES = {name: i for i, name in enumerate(USAGES)}
_SENTINEL = -1  # written between rows so one numpy parse also yields every row's pixel count


class DataError(UserError):
    """A data file that cannot be used: one line naming the file and, where it applies, the 1-based data row and the
    line an editor shows it on."""


class UnknownLayout(DataError):
    """A file or folder in none of FER2013's layouts (no `pixels` column, not a CSV, no train/ or test/ folders)."""


@dataclass(frozen=True)
class Faces:
    """Every image of one source, in file order (CSV) or sorted path order (folders)."""

    x: np.ndarray  # (N, 48, 48) uint8
    y: Optional[np.ndarray]  # (N,) int64 labels 0..6, None when unlabeled
    usage: Optional[np.ndarray]  # (N,) str in USAGES, None when the source has no usage
    layout: str  # icml | fer2013 | kaggle_train | kaggle_test | folders
    source: str  # path as given
    notes: tuple[str, ...] = field(default=())  # how usages were inferred, if they were


# --------------------------------------------------------------------------------------------- CSV


def read_csv_faces(path: Path, source: str, nrows: Optional[int] = None) -> Faces:
    """Read a Kaggle/ICML CSV; the layout comes from the header, never from the file name."""
    compression = "gzip" if _is_gzip(path) else "infer"
    header = _read_header(path, source, compression)
    layout, columns = _csv_layout(header, source)
    xs, ys, usages, first = [], [], [], 0
    with closing(_csv_chunks(path, source, compression, list(columns.values()), nrows)) as chunks:
        for chunk in chunks:  # an empty frame comes for a header without rows
            labels = _codes(chunk, columns.get("emotion"), _LABEL_CODES, first)
            usage = _codes(chunk, columns.get("usage"), _USAGE_CODES, first)
            pixels = _parse_pixels(chunk[columns["pixels"]].tolist(), first) if len(chunk) else None
            errors = [e for e in (labels, usage, pixels) if isinstance(e, tuple)]
            if errors:
                row, message = min(errors)  # the first bad row, whatever is wrong with it
                raise DataError(f"{source}: row {row}{_line_note(path, compression, row)}: {message}")
            xs.append(pixels)
            ys.append(labels)
            usages.append(usage)
            first += len(chunk)
    if first == 0:
        raise DataError(f"{source}: empty file (a header but no data rows)")
    x = np.concatenate([part for part in xs if part is not None])
    y = None if "emotion" not in columns else np.concatenate(ys).astype(np.int64)
    usage_names = None if "usage" not in columns else np.asarray(USAGES)[np.concatenate(usages)]
    return Faces(x=x, y=y, usage=usage_names, layout=layout, source=source)


def _line_note(path: Path, compression: str, row: int) -> str:
    """` (line N)`: the line an editor shows data row `row` (1-based) on, the header being line 1 and blank lines
    (which pandas skips) counted; for a gzipped file, the line of its unzipped text. Error path only: it reads the
    file again up to that row. Empty where the file cannot be read as plain or gzipped text."""
    if compression != "gzip" and path.suffix.lower() in (".bz2", ".zip", ".xz", ".zst", ".tar", ".gz"):
        return ""  # compressed otherwise (pandas infers it from the suffix): no line to show
    try:
        with (gzip.open(path, "rt", errors="replace") if compression == "gzip"
              else open(path, errors="replace")) as f:
            rows = -1  # the header is the first line that is not blank
            for number, line in enumerate(f, 1):
                rows += bool(line.strip())
                if rows == row:
                    return f" (line {number}{' of the unzipped text' if compression == 'gzip' else ''})"
    except (OSError, EOFError, zlib.error):
        pass
    return ""


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _read_header(path: Path, source: str, compression: str) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0, compression=compression).columns)
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: empty file") from None
    except (ValueError, OSError, EOFError, zlib.error) as e:  # ParserError and UnicodeDecodeError are ValueErrors
        raise UnknownLayout(f"{source}: not a readable CSV file ({first_line(e)})") from None


def _csv_layout(header: list[str], source: str) -> tuple[str, dict[str, str]]:
    """Pick the layout from the column names, stripped (icml_face_data.csv writes ' Usage', ' pixels')."""
    by_name = {str(name).strip().lower(): name for name in header}
    columns: dict[str, str] = {role: by_name[role] for role in ("emotion", "usage", "pixels") if role in by_name}
    if "pixels" not in columns:
        shown = ", ".join(repr(str(name).strip()[:20]) for name in header[:5])
        raise UnknownLayout(
            f"{source}: unknown layout: missing column 'pixels' (columns: {shown}); "
            "expected a header like 'emotion,Usage,pixels', 'emotion,pixels,Usage', 'emotion,pixels' or 'pixels'"
        )
    if "emotion" not in columns:
        return "kaggle_test", columns
    if "usage" not in columns:
        return "kaggle_train", columns
    names = list(by_name)
    return ("icml" if names.index("usage") < names.index("pixels") else "fer2013"), columns


def _csv_chunks(
    path: Path, source: str, compression: str, usecols: list[str], nrows: Optional[int]
) -> Generator[pd.DataFrame, None, None]:
    """Yield DataFrames of CHUNK_ROWS string cells; a background thread reads (and gunzips) the next one
    while the caller parses this one, so decompression overlaps numpy parsing on a second core."""
    try:
        reader = pd.read_csv(
            path, usecols=usecols, dtype=str, engine="c", na_filter=False, compression=compression,
            chunksize=CHUNK_ROWS, nrows=nrows,
        )
        with reader, ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(next, reader, None)
            while (chunk := future.result()) is not None:
                future = pool.submit(next, reader, None)
                yield chunk
    except (ValueError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{source}: not a readable CSV file ({first_line(e)})") from None


def _codes(chunk: pd.DataFrame, column: Optional[str], codes: dict[str, int], first: int):
    """Map a label/usage column to int codes (vectorised), or return (row, message) for its first bad cell."""
    if column is None:
        return None
    mapped = chunk[column].str.strip().map(codes)
    bad = mapped.isna().to_numpy()
    if not bad.any():
        return mapped.to_numpy(dtype=np.int8)
    i = int(np.argmax(bad))
    value = chunk[column].iloc[i]
    if codes is _LABEL_CODES:
        return first + i + 1, f"emotion {value!r} is not a label 0-6"
    return first + i + 1, f"unknown Usage {value!r} (expected Training, PublicTest or PrivateTest)"


def _parse_pixels(rows: list[str], first: int):
    """Parse a chunk of pixel strings in one numpy call, or return (row, message) for its first bad row.

    Rows are joined with a sentinel token (-1, never a valid grey level), so the happy path is exact without
    per-row Python: the parse must yield n*(2304+1) integers, every 2305th the sentinel, all others in 0..255.
    """
    n = len(rows)
    text = f" {_SENTINEL} ".join(rows) + f" {_SENTINEL}"
    try:
        flat = np.fromstring(text, dtype=np.int64, sep=" ")  # int64: strtoll saturates, so no silent wrap-around
    except ValueError:  # a token that is not an integer
        return _first_bad_row(rows, first)
    if flat.size == n * (PIXELS + 1):
        table = flat.reshape(n, PIXELS + 1)
        grid = table[:, :PIXELS]
        if (table[:, PIXELS] == _SENTINEL).all() and not (grid.view(np.uint64) > 255).any():
            return grid.astype(np.uint8).reshape(n, IMAGE_SIZE, IMAGE_SIZE)
    return _first_bad_row(rows, first)


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _first_bad_row(rows: list[str], first: int) -> tuple[int, str]:
    """Error path only: find the first malformed row with plain Python and say what is wrong with it."""
    for i, row in enumerate(rows):
        tokens = row.split()
        for token in tokens:
            if not _INTEGER.fullmatch(token):
                return first + i + 1, f"non-numeric pixel {token[:20]!r}"
            if not 0 <= int(token) <= 255:
                return first + i + 1, f"pixel value {token[:20]} outside 0-255"
        if len(tokens) != PIXELS:
            return first + i + 1, f"expected {PIXELS} pixels, got {len(tokens)}"
    return first + 1, f"could not parse the pixels of rows {first + 1}-{first + len(rows)}"


# ------------------------------------------------------------------------------------ image folders


def list_images(root: Path) -> list[tuple[Path, str, int]]:
    """(path, split folder, label) for every image under <root>/{train,test}/<class>/, in sorted order."""
    found = []
    splits = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in ("train", "test")]
    if not splits:
        raise UnknownLayout(f"{root}: unknown layout: a folder needs train/ or test/ subfolders of class folders")
    for split in splits:
        for class_dir in sorted(d for d in split.iterdir() if d.is_dir()):
            if class_dir.name.lower() not in EMOTIONS:
                raise DataError(f"{class_dir}: unknown class folder (expected one of {', '.join(EMOTIONS)})")
            label = EMOTIONS.index(class_dir.name.lower())
            for image in sorted(class_dir.iterdir()):
                if image.suffix.lower() in IMAGE_SUFFIXES and image.is_file():
                    found.append((image, split.name.lower(), label))
    if not found:
        raise DataError(f"{root}: no images found under train/<class>/ or test/<class>/")
    return found


def read_folder_faces(root: Path, source: str, resize: bool = False, nrows: Optional[int] = None) -> Faces:
    """Decode the image-folder edition (Pillow, grey); usage from Training_/PublicTest_/PrivateTest_ names."""
    images = list_images(root)[:nrows]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # Pillow decodes mostly without the GIL
        x = np.stack(list(pool.map(lambda item: _decode(item[0], resize), images)))
    prefixes = [_usage_prefix(path.name) for path, _, _ in images]
    defaulted = sum(p is None for p in prefixes)
    usage = [p or ("Training" if split == "train" else "PrivateTest") for p, (_, split, _) in zip(prefixes, images)]
    notes: tuple[str, ...] = ()
    if defaulted:
        notes = (f"{defaulted} images without a Training_/PublicTest_/PrivateTest_ file-name prefix: "
                 "train/ taken as Training, test/ as PrivateTest",)
    y = np.array([label for _, _, label in images], dtype=np.int64)
    return Faces(x=x, y=y, usage=np.array(usage), layout="folders", source=source, notes=notes)


def _usage_prefix(name: str) -> Optional[str]:
    return next((usage for usage in USAGES if name.startswith(usage + "_")), None)


def _decode(path: Path, resize: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # Pillow only for the folder edition

    try:
        with Image.open(path) as image:
            grey = image.convert("L")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({first_line(e)})") from None
    if grey.size != (IMAGE_SIZE, IMAGE_SIZE):
        if not resize:
            w, h = grey.size
            raise DataError(
                f"{path}: image is {w}x{h}, expected {IMAGE_SIZE}x{IMAGE_SIZE} (pass resize=True to resize)"
            )
        grey = grey.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.uint8)
