"""Ensemble folders: members/<name>/ and ensemble.json written last, read back and checked, found in a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from fer_sweep.config import UserError
from fer_sweep.files import write_atomic
from fer_sweep.learn.checkpoint import folder_or_final, save_model

ENSEMBLE_JSON = "ensemble.json"


def save_ensemble(final: Path, built: dict[str, Any]) -> Path:
    """Write <final>/members/<name>/{model.pt,config.json}, ensemble-confusion.png and, last, ensemble.json (a
    folder is an ensemble only once ensemble.json is there: a crash midway leaves none to be trusted)."""
    from fer_sweep.results.plots import save_confusion_png

    info = built["info"]
    final.mkdir(parents=True, exist_ok=True)
    (final / ENSEMBLE_JSON).unlink(missing_ok=True)
    shutil.rmtree(final / "members", ignore_errors=True)
    for name, (config, weights) in built["files"].items():
        save_model(final / "members" / name, weights, config)
    save_confusion_png(info["confusion"], final / "ensemble-confusion.png",
                       title=f"{info['study']} ensemble of {len(info['members'])} models on {info['split']}")
    write_atomic(final / ENSEMBLE_JSON, json.dumps(info, indent=2))
    return final / ENSEMBLE_JSON


def ensemble_folder(folder: Path) -> Optional[Path]:
    """The folder holding ensemble.json (`folder` or its final/), or None for a single model's folder."""
    return folder_or_final(Path(folder), ENSEMBLE_JSON)


def read_ensemble(folder: Path) -> dict:
    path = folder / ENSEMBLE_JSON
    try:
        info = json.loads(path.read_text())
        members = info["members"]
        if not members or any(not isinstance(m.get("path"), str) or ".." in Path(m["path"]).parts
                              or Path(m["path"]).is_absolute() for m in members):
            raise ValueError("bad member paths")
        if not all(isinstance(m.get("weight"), (int, float)) and m["weight"] >= 0 for m in members):
            raise ValueError("bad member weights")
        return info
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a valid ensemble file ({type(e).__name__}: {str(e)[:160]})") from None
