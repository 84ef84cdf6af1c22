"""Model folders, written and read in one place: `model.pt` (a plain state dict, loaded with weights_only) and
`config.json` (what rebuilds and evaluates the model). `best`'s final/, each kept trial's artifacts, ensemble
members and retrained seeds all use this format; `predict` and `export` read it."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from fer_sweep.config import EMOTIONS, ModelConfig, RunConfig, UserError, first_line
from fer_sweep.files import atomic_path, write_atomic
from fer_sweep.learn.models import build_model, input_size_of

MODEL_FILE, CONFIG_FILE = "model.pt", "config.json"
FINAL = "final"  # a study folder's sub-folder where `best` saves


def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights, without torch.compile's `_orig_mod.` prefix."""
    return {k.removeprefix("_orig_mod."): v.detach().cpu().clone() for k, v in model.state_dict().items()}


def model_config(cfg: RunConfig, norm, **about: Any) -> dict[str, Any]:
    """config.json's content: the model and training records, the input normalisation (0..255 units), whatever
    `about` adds (params, trial, study, data, splits, ...), and the class names of the 7 outputs."""
    return {"model": dataclasses.asdict(cfg.model), "train": dataclasses.asdict(cfg.train),
            "norm": [float(v) for v in norm], **about, "classes": list(EMOTIONS)}


def save_model(folder: Path, weights: Union[dict, bytes], config: dict) -> Path:
    """Write <folder>/model.pt (a state dict, or the bytes of one already saved) and <folder>/config.json, each
    atomically; config.json last, so a folder with a config always has its weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_torch(folder / MODEL_FILE, weights)
    write_atomic(folder / CONFIG_FILE, json.dumps(config, indent=2))
    return folder


def save_torch(path: Path, obj: Any) -> None:
    """torch.save `obj` (or write the bytes of one already saved) to `path` atomically. Serialised in memory first:
    on a full disk torch's own file writer fails with a RuntimeError from C++; this way it is an OSError naming the
    file (one line, exit 75)."""
    if not isinstance(obj, bytes):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        obj = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(obj)


def model_from(config: dict, weights: Union[dict, bytes]) -> nn.Module:
    """The model that config.json describes, holding `weights` (a state dict, or model.pt's bytes: loaded with
    weights_only, so a file carrying pickled code is refused), in eval mode on the CPU."""
    if isinstance(weights, bytes):
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    else:
        state = weights
    fields = dict(config["model"])
    fields["conv"] = tuple(tuple(s) for s in fields["conv"])
    # seeded: the global RNG is left as it was; a model trained on random crops takes its crop size
    model = build_model(ModelConfig(**fields), seed=0, input_size=input_size_of(config.get("train") or {}))
    model.load_state_dict(state)
    return model.eval()


def folder_or_final(folder: Path, marker: str) -> Optional[Path]:
    """`folder` when it holds `marker` (model.pt, ensemble.json, ...), else its final/ when that holds it and
    `folder` holds no model of its own (a study folder means the model `best` saved in it); else None."""
    folder = Path(folder)
    if (folder / marker).is_file():
        return folder
    if not (folder / MODEL_FILE).exists() and (folder / FINAL / marker).is_file():
        return folder / FINAL
    return None


def load_model(folder: Path) -> tuple[nn.Module, dict]:
    """The model saved in `folder` (or in its final/) and its config.json; every way a folder can be wrong (absent,
    no model, weights of another model, a pickle with code, a bad config) is one UserError line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'} (expected the folder "
                        "`fer-sweep best` saved: model.pt and config.json)")
    found = folder_or_final(folder, MODEL_FILE) or folder
    config_path, model_path = found / CONFIG_FILE, found / MODEL_FILE
    if not config_path.is_file() or not model_path.is_file():
        raise UserError(f"{found}: no model here (expected model.pt and config.json written by `fer-sweep best`)")
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unpickling error names the refused global
        raise UserError(f"{model_path}: refused: not a plain weights file ({type(e).__name__}: "
                        f"{first_line(e, 160)})") from None
    try:
        config = json.loads(config_path.read_text())
        return model_from(config, state), config
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:  # weights of another model, bad config
        raise UserError(f"{found}: cannot load the model ({type(e).__name__}: {first_line(e, 200)})") from None
