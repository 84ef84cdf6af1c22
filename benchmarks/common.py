"""Shared by the benchmark scripts: machine description and replacing one section of RESULTS.md."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")
AMP_OF = {"fp32": "off", "bfloat16": "bf16"}  # a recorded `precision` as the spec's `amp` that trains in it
MAJORITY = 0.25  # FER2013's majority-class rate: what a run with no finite epoch (diverged, or none yet) is worth


def run_value(val_acc: Any) -> float:
    """A recorded run's value as the tool values a trial: its best epoch's validation accuracy (the tool keeps that
    epoch's model). Missing (None) and NaN epochs are skipped; a run without a finite epoch is worth MAJORITY."""
    finite = [float(a) for a in val_acc if a is not None and math.isfinite(a)]
    return max(finite, default=MAJORITY)


def plain_params(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's params as the spec writes them (Optuna stores list choices, such as conv, as JSON strings)."""
    return {k: json.loads(v) if isinstance(v, str) and v.startswith("[") else v for k, v in params.items()}


def machine() -> str:
    import torch

    from fer_sweep.learn.precision import cpu_capability

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = f"{cpu_name()} ({cpu_capability()})"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}; "
            f"{dt.date.today().isoformat()}")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), e.g. "AMD EPYC"; else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(title: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the `## title` section of benchmarks/RESULTS.md (or of the Markdown file at `path`)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


DEV_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013-dev.csv.gz"


def default_data() -> str:
    """FER2013_CSV, else the shared dev copy beside the checkout."""
    return os.environ.get("FER2013_CSV") or str(DEV_FILE)


def write_icml_slice(source: str, out: Path, n_train: int, n_val: int, seed: int = 0) -> dict:
    """A smaller FER2013 file in the icml layout from any layout fer-sweep reads: n_train Training rows
    (stratified random sample, fixed seed) and n_val PublicTest rows (or, where the source has no
    PublicTest rows, n_val further rows of the rest). Returns the counts written."""
    import numpy as np

    from fer_sweep.data.read import read_faces

    faces = read_faces(source)
    if faces.y is None:
        raise SystemExit(f"{source}: unlabeled data cannot be sliced for a benchmark")
    rng = np.random.default_rng(seed)
    usage = faces.usage if faces.usage is not None else np.full(len(faces.y), "Training")
    train_pool = np.flatnonzero(usage == "Training")
    train = _stratified(faces.y, train_pool, n_train, rng)
    val_pool = np.flatnonzero(usage == "PublicTest")
    if len(val_pool) == 0:
        val_pool = np.setdiff1d(train_pool, train)
    val = _stratified(faces.y, val_pool, n_val, rng)
    rows = [f"{faces.y[i]},Training,{' '.join(map(str, faces.x[i].reshape(-1)))}" for i in train]
    rows += [f"{faces.y[i]},PublicTest,{' '.join(map(str, faces.x[i].reshape(-1)))}" for i in val]
    import gzip

    with gzip.open(out, "wt") as f:
        f.write("emotion, Usage, pixels\n" + "\n".join(rows) + "\n")
    return {"train": len(train), "val": len(val)}


def training_slice(data: str, folder: Path, n: int) -> str:
    """The FER2013 file a benchmark trains on: `data` itself (n 0), else a stratified slice of n of its Training rows
    (seed 0) with every validation row, written once to `folder` and shared by the runs that name the same n."""
    if not n:
        return data
    path = Path(folder) / f"fer2013-slice-{n}.csv.gz"
    if not path.is_file():
        counts = write_icml_slice(data, path, n, 10**9)
        print(f"slice: {counts['train']} Training rows (stratified, seed 0), {counts['val']} validation rows")
    return str(path)


def _stratified(y, pool, n: int, rng):
    """n rows of pool, each class in proportion (largest remainder), drawn at random; sorted."""
    import numpy as np

    n = min(n, len(pool))
    classes, counts = np.unique(y[pool], return_counts=True)
    shares = counts * n / counts.sum()
    take = np.floor(shares).astype(int)
    take[np.argsort(-(shares - take))[: n - take.sum()]] += 1
    picked = [rng.choice(pool[y[pool] == c], size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def run_forwarding_sigterm(cmd: list[str]) -> int:
    """Run a `fer-sweep` command; a SIGTERM to this script reaches it too (it stops after its current step and resumes
    next time).

    Ctrl-C needs no forwarding: the terminal sends SIGINT to the whole process group, so this script ignores it and
    waits for the run to stop cleanly."""
    proc = subprocess.Popen(cmd)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
