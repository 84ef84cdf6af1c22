"""Read any FER2013 layout (CSV, .csv.gz, image folders) into uint8 arrays, cached on disk per source and state."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from fer_sweep.data.readers import DataError, Faces, read_csv_faces, read_folder_faces

CACHE_VERSION = 1  # bump when the parsed arrays or the npz contents change, so old caches are ignored
PathLike = Union[str, os.PathLike]


def default_cache_dir() -> Path:
    """$FER_SWEEP_CACHE, else ~/.cache/fer-sweep."""
    return Path(os.environ.get("FER_SWEEP_CACHE") or Path.home() / ".cache" / "fer-sweep")


def read_faces(path: PathLike, *, resize: bool = False, cache_dir: Optional[PathLike] = None,
               nrows: Optional[int] = None) -> Faces:
    """Read every face of a CSV (.csv or .csv.gz) or an image-folder tree; the layout comes from the content.

    resize: accept folder images that are not 48x48 by resizing them (CSV rows are 48x48 by definition).
    cache_dir: where parsed arrays are cached (default: default_cache_dir()); a changed source is re-read.
    nrows: read only the first nrows data rows (CSV) or images (folders, in sorted path order), e.g. for
    quick tests; a partial read is cached under its own key.
    """
    source, root = str(path), Path(path)
    if not root.exists():
        raise DataError(f"{source}: no such file or directory")
    try:
        if root.is_dir():
            state = _folder_state(root)
        else:
            stat = root.stat()
            if stat.st_size == 0:
                raise DataError(f"{source}: empty file")
            state = [stat.st_size, stat.st_mtime_ns]
        cache_file = _cache_file(Path(cache_dir) if cache_dir else default_cache_dir(), root, state, resize, nrows)
        faces = _load_cache(cache_file, source)
        if faces is None:
            if root.is_dir():
                faces = read_folder_faces(root, source, resize=resize, nrows=nrows)
            else:
                faces = read_csv_faces(root, source, nrows=nrows)
            _save_cache(cache_file, faces)
    except (PermissionError, IsADirectoryError, NotADirectoryError) as e:
        raise DataError(f"{source}: cannot read ({e.strerror})") from None
    return faces


def _folder_state(root: Path) -> list:
    """Cheap fingerprint of a folder tree: a hash over every file's relative path, size and mtime."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            stat = os.stat(os.path.join(dirpath, name))
            relative = os.path.relpath(os.path.join(dirpath, name), root)
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return [digest.hexdigest()]


def _cache_file(cache_dir: Path, root: Path, state: list, resize: bool, nrows: Optional[int]) -> Path:
    """<name>-<hash of absolute path and read options>-<hash of the source's state>.npz: entries that share
    the first two parts are older states of the same read, dropped when a new one is written."""
    what = json.dumps([str(root.resolve()), bool(resize) and root.is_dir(), nrows])
    when = json.dumps([CACHE_VERSION, state])
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", root.name)[:40] or "root"
    return cache_dir / f"{stem}-{_digest(what)[:10]}-{_digest(when)[:16]}.npz"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _load_cache(cache_file: Path, source: str) -> Optional[Faces]:
    """The cached Faces, or None on a miss (absent, unreadable or half-deleted files are just misses)."""
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            return Faces(
                x=z["x"], y=z["y"] if "y" in z.files else None, usage=z["usage"] if "usage" in z.files else None,
                layout=str(z["layout"]), source=source, notes=tuple(str(note) for note in z["notes"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _save_cache(cache_file: Path, faces: Faces) -> None:
    """Write atomically (temp file + os.replace) so concurrent workers never read half a file; drop stale
    entries of the same source. A cache that cannot be written only costs speed."""
    arrays = {"x": faces.x, "layout": np.array(faces.layout), "notes": np.array(faces.notes, dtype=str)}
    arrays.update({name: value for name, value in (("y", faces.y), ("usage", faces.usage)) if value is not None})
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=cache_file.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                # numpy's stub has `allow_pickle: bool` beside `**kwds`, and mypy lets a **dict fill it
                np.savez(f, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, cache_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        prefix = cache_file.name.rsplit("-", 1)[0]
        for stale in cache_file.parent.glob(f"{prefix}-*.npz"):
            if stale != cache_file:
                stale.unlink(missing_ok=True)
    except OSError:
        pass
