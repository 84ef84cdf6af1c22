"""What `best` saved in a study's final/, read without torch: the latest retrain, the earlier ones (kept in
final/earlier/<k>/, oldest first: a retrain never destroys the one before it) and the ensemble. `best` writes a
retrain whole into final/.incoming/ and publishes it with renames (`staged`: the earlier retrain moves aside to
earlier/<k>/, the new files move in), so a full disk or a kill mid-save leaves final/ as it was; ensembles pool every
retrain (`earlier_retrains`), `status` lists them (`saved`)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

from fer_sweep.learn.checkpoint import CONFIG_FILE, FINAL, MODEL_FILE

EARLIER = "earlier"  # final/earlier/<k>/
INCOMING = ".incoming"  # final/.incoming/: a retrain being written, published whole by `staged`
SEEDS_DONE = ".seeds-done"  # final/.seeds-done/<key>/s<seed>.pt: finished seeds of a retrain not yet saved (best.py)
METRICS = "metrics.json"
SELECTION = "selection"  # final/selection/: a refit's selection run (trained on train only, validation held out)
TRAIN_STATE = "train-state"  # final/train-state/s<seed>.pt: each seed's whole training state at its last epoch, which
#                              a longer `best --epochs` continues from
# A retrain's files in final/ (the ensemble's own, ensemble.json and members/, stay: they are copies)
RETRAIN_FILES = (MODEL_FILE, CONFIG_FILE, METRICS, "confusion.png", "seeds", SELECTION, TRAIN_STATE)


def earlier_retrains(final: Path) -> list[tuple[int, Path]]:
    """(k, final/earlier/<k>) of the retrains `best` kept before its latest, oldest first."""
    earlier = Path(final) / EARLIER
    return sorted((int(p.name), p) for p in earlier.iterdir() if p.name.isdigit()) if earlier.is_dir() else []


def keep_earlier(final: Path) -> Optional[Path]:
    """Move the retrain saved in `final` (if any: its model.pt) to final/earlier/<k>/, k one past the last there;
    renames within one folder, so nothing is copied and a full disk cannot tear it. model.pt moves last: while it is
    in `final`, so is a retrain (a kill between these renames leaves the rest for the next call, nothing is lost).
    Returns the new folder."""
    if not (final / MODEL_FILE).is_file():
        return None
    dest = final / EARLIER / str(max((k for k, _ in earlier_retrains(final)), default=0) + 1)
    dest.mkdir(parents=True)
    for name in sorted(RETRAIN_FILES, key=lambda n: n == MODEL_FILE):
        if (final / name).exists():
            (final / name).rename(dest / name)
    return dest


@contextlib.contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A folder to write one whole retrain into (final/.incoming/, emptied first). When the block ends, the retrain
    in `final` moves to earlier/<k>/ (`keep_earlier`) and the new files move in: renames only, no new space needed.
    When it raises (a full disk, Ctrl-C), the folder is removed and `final` is left exactly as it was."""
    final = Path(final)
    stage = final / INCOMING
    shutil.rmtree(stage, ignore_errors=True)  # a killed retrain's
    stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    keep_earlier(final)
    for name in RETRAIN_FILES:  # a publish killed before its model.pt moved in: an incomplete retrain, not kept
        old = final / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    for path in sorted(stage.iterdir(), key=lambda p: p.name == MODEL_FILE):  # model.pt last: it marks a retrain
        path.rename(final / path.name)
    stage.rmdir()


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _retrain(m: dict, where: str) -> dict[str, Any]:
    split = m.get("split", "val")
    runs = m.get("runs") or [{}]
    row = {"path": where, "trial": (m.get("winner") or {}).get("number"), "seeds": m.get("seeds"),
           "epochs": runs[0].get("epochs"), "split": split, "acc": (m.get(f"{split}/acc") or {}).get("mean"),
           "acc_std": (m.get(f"{split}/acc") or {}).get("std"), "val_acc": (m.get("val/acc") or {}).get("mean"),
           "val_held_out": m.get("val_held_out", True)}
    if m.get("seeds_ensemble"):
        row["seeds_average_acc"] = m["seeds_ensemble"].get(f"{split}/acc")
    if m.get("refit"):
        row["refit_epochs"] = m["refit"].get("epochs")
    return row


def saved(folder: Path) -> dict[str, Any]:
    """{"retrains": [latest first, then the earlier ones newest first], "ensemble": {...} or None} of a study folder;
    an unreadable metrics file is skipped (what `status` shows is a summary, never a reason to fail)."""
    final = Path(folder) / FINAL
    rows = []
    for k, where in [(None, final)] + list(reversed(earlier_retrains(final))):
        m = _read(where / METRICS)
        if m and (where / MODEL_FILE).is_file():
            rows.append(_retrain(m, f"{FINAL}/" if k is None else f"{FINAL}/{EARLIER}/{k}/"))
    e = _read(final / "ensemble.json")
    ens = None
    if e and e.get("members"):
        split = e.get("split", "val")
        ens = {"path": f"{FINAL}/", "members": len(e["members"]), "studies": e.get("studies") or [e.get("study")],
               "archs": sorted({m.get("arch") for m in e["members"] if m.get("arch")}), "split": split,
               "acc": e.get(f"{split}/acc"), "val_acc": e.get("val/acc")}
    return {"retrains": rows, "ensemble": ens}
