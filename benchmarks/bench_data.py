"""Time loading FER2013: the naive per-row parse, our first parse, and our cached load; record in RESULTS.md.

    .venv/bin/python benchmarks/bench_data.py [--csv PATH] [--repeat N] [--no-write]

Each method runs --repeat times and the best time is kept (the machine may be shared; the minimum is the
least noisy estimate of what the code costs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_name
from fer_sweep.data.read import read_faces

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Data loading"


def naive_load(path: Path) -> np.ndarray:
    """The usual notebook way: pandas, then one np.array(row.split()) per row."""
    frame = pd.read_csv(path)
    frame.columns = [c.strip() for c in frame.columns]
    return np.stack([np.array(row.split(), dtype=np.uint8) for row in frame["pixels"]]).reshape(-1, 48, 48)


def best_of(repeat: int, fn):
    """(fastest wall-clock seconds over `repeat` calls, the last result)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def first_parse(path: Path):
    with tempfile.TemporaryDirectory() as cache:  # empty cache: a real parse
        return read_faces(path, cache_dir=cache)


def machine() -> str:
    loads = os.getloadavg() if hasattr(os, "getloadavg") else None
    load = "n/a" if loads is None else ", ".join(f"{x:.1f}" for x in loads)
    shared = ": other jobs were running" if loads and loads[0] > 1.5 else ""
    return (f"{cpu_name()}, {os.cpu_count()} cores (load average {load} at the end{shared}), "
            f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}")


def write_section(text: str) -> None:
    """Replace (or append) this script's section of RESULTS.md, leaving other sections alone."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text, current)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(updated)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("FER2013_CSV") or str(REPO.parent / "shared" / "data" / "fer2013-dev.csv.gz")
    parser.add_argument("--csv", default=default, help="FER2013 CSV (default: $FER2013_CSV or ../shared/data/...)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the best is kept (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    path = Path(args.csv)
    if not path.is_file():
        print(f"{path}: no such file (pass --csv or set FER2013_CSV)", file=sys.stderr)
        return 2

    naive_s, reference = best_of(args.repeat, lambda: naive_load(path))
    first_s, faces = best_of(args.repeat, lambda: first_parse(path))
    with tempfile.TemporaryDirectory() as cache:
        read_faces(path, cache_dir=cache)  # fill the cache
        cached_s, again = best_of(args.repeat, lambda: read_faces(path, cache_dir=cache))
    assert np.array_equal(faces.x, reference) and np.array_equal(again.x, reference), "parsers disagree"

    rows = len(reference)
    print(f"naive (pandas + per-row split): {naive_s:6.2f} s")
    print(f"first parse (empty cache):      {first_s:6.2f} s  ({naive_s / first_s:.1f}x faster)")
    print(f"cached load:                    {cached_s:6.2f} s  ({naive_s / cached_s:.0f}x faster)")
    text = (
        f"{SECTION}\n\n"
        f"`benchmarks/bench_data.py --csv {path.name}`: {rows:,} rows of 48x48 pixels, parsed into a "
        f"({rows}, 48, 48) uint8 array; best of {args.repeat} runs each, {datetime.date.today().isoformat()}, "
        f"{machine()}.\n\n"
        "| method | seconds | vs naive |\n|---|---:|---:|\n"
        f"| naive: `pd.read_csv` + `np.array(row.split())` per row | {naive_s:.2f} | 1.0x |\n"
        f"| `read_faces`, first parse (empty cache) | {first_s:.2f} | {naive_s / first_s:.1f}x |\n"
        f"| `read_faces`, cached (npz) | {cached_s:.3f} | {naive_s / cached_s:.0f}x |\n\n"
        "The first parse reads the CSV with pandas (string columns, C engine) in chunks of 2,048 rows, gunzipping "
        "the next chunk in a background thread while numpy parses each chunk's pixels in one "
        "`np.fromstring` call; per-row counts and 0-255 ranges are checked vectorised. The arrays are then "
        "cached as an uncompressed npz keyed by path, size and mtime.\n"
    )
    if not args.no_write:
        write_section(text)
        print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
