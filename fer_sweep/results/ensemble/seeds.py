"""The ensemble of seeds `best` retrains: each seed's probabilities, their equal-weight average, its folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from torch import nn

from fer_sweep.config import RunConfig
from fer_sweep.files import write_atomic
from fer_sweep.learn.checkpoint import model_config, model_from, save_model, state_dict_cpu
from fer_sweep.results.ensemble.folders import ENSEMBLE_JSON
from fer_sweep.results.ensemble.members import Member, combine, member_proba
from fer_sweep.results.ensemble.scores import proba_scores


def seed_model(model: nn.Module, cfg: RunConfig, norm, val, test) -> dict[str, Any]:
    """One retrained seed kept for the ensemble of seeds: its weights, and its probabilities on val and test from
    the model rebuilt from those weights (as `predict` runs the saved files)."""
    state = state_dict_cpu(model)
    config = model_config(cfg, norm)  # config.json's model, train and norm: what rebuilds and evaluates it
    m = Member(f"s{cfg.train.seed}", 1.0, model_from(config, state).to(val.x.device), config)
    return {"seed": cfg.train.seed, "state": state, "train": config["train"],
            "val": member_proba(m, val.x), "test": None if test is None else member_proba(m, test.x)}


def seeds_metrics(seeds: list[dict], val, test) -> dict[str, Any]:
    """The equal-weight average of the retrained seeds, scored on val and (once) on test."""
    weights = [1.0 / len(seeds)] * len(seeds)
    out: dict[str, Any] = {"seeds": [s["seed"] for s in seeds], "weights": weights, "path": "seeds"}
    for name, split in (("val", val), ("test", test)):
        if split is not None:
            s = proba_scores(combine([m[name] for m in seeds], weights), split.y)
            out.update({f"{name}/acc": s["acc"], f"{name}/macro_f1": s["macro_f1"], f"{name}/log_loss": s["loss"]})
    return out


def save_seeds(folder: Path, seeds: list[dict], base_config: dict, summary: Optional[dict]) -> Optional[Path]:
    """<folder>/s<seed>/{model.pt,config.json} per seed and ensemble.json (kind "seeds"), written last; with no
    seeds (a 1-seed retrain) a stale folder of an earlier run is removed."""
    shutil.rmtree(folder, ignore_errors=True)
    if not seeds:
        return None
    assert summary is not None  # seeds_metrics' summary comes with any seeds
    for s in seeds:
        save_model(folder / f"s{s['seed']}", s["state"], {**base_config, "train": s["train"]})
    info = {"kind": "seeds", **{k: base_config.get(k) for k in ("study", "data", "splits", "classes", "trial")},
            "members": [{"name": f"s{s['seed']}", "path": f"s{s['seed']}", "seed": s["seed"], "weight": w}
                        for s, w in zip(seeds, summary["weights"])],
            **{k: v for k, v in summary.items() if k not in ("seeds", "weights", "path")}}
    write_atomic(folder / ENSEMBLE_JSON, json.dumps(info, indent=2))
    return folder / ENSEMBLE_JSON
