"""Build an ensemble: select on validation among the pool's candidates, then evaluate it once on the test split."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import optuna
import torch

from fer_sweep.config import EMOTIONS, UserError
from fer_sweep.learn.checkpoint import model_from
from fer_sweep.learn.device import pick_device
from fer_sweep.results.ensemble.members import Member, combine, member_proba
from fer_sweep.results.ensemble.pool import Source, check_same_data, gather
from fer_sweep.results.ensemble.scores import np_scores, proba_scores
from fer_sweep.results.ensemble.selection import CRITERION, greedy_select


def build_ensemble(spec, study: optuna.Study, folder: Path, splits, *, picks: int, device: str = "auto",
                   others: Sequence[Source] = ()) -> dict[str, Any]:
    """Select up to `picks` picks among the study's kept trial models and retrained models (and those of `others`,
    studies on the same data and splits) on validation, then evaluate the ensemble and the best single candidate
    once on the test split. Returns {"info": ensemble.json, "files": {name: (config, weights)}} for
    `save_ensemble` (into the first study's final/)."""
    t0 = time.perf_counter()
    sources = [(spec, study, folder), *others]
    check_same_data(sources)
    val_y = np.asarray(splits.val.y)
    cands, notes = gather(sources, splits.val.x, val_y, device)
    if not cands:
        why = "spec keep: 0" if all(s.keep == 0 for s, _, _ in sources) else \
            "no complete or pruned trial stored its model here, and no retrained model"
        raise UserError(f"study {', '.join(s.study for s, _, _ in sources)}: no kept trial models to ensemble ({why})")
    sel = greedy_select(np.stack([c.val_proba for c in cands]), val_y, picks)
    chosen = list(dict.fromkeys(sel.order))  # members in first-pick order
    weights = [float(sel.weights[i]) for i in chosen]
    val_mix = np.asarray(sum(w * cands[i].val_proba.astype(np.float64) for i, w in zip(chosen, weights)))
    val_ens = np_scores(val_mix, val_y)
    single = cands[0]  # the selection's start: the best retrained model, else the study's winner's kept model
    tested = _test(splits, [cands[i] for i in dict.fromkeys([*chosen, 0])], weights, device)
    if tested["split"] == "val":
        notes.append("no test split in this data: reporting validation only (where the ensemble was chosen)")
    studies = [s.study for s, _, _ in sources]
    info = {"kind": "studies" if len(sources) > 1 else "trials", "study": spec.study, "studies": studies,
            "data": spec.data, "splits": dataclasses.asdict(spec.splits),
            "classes": list(EMOTIONS), "criterion": CRITERION, "max_picks": picks, "picks": len(sel.order),
            "selection": [cands[i].label for i in sel.order], "path": [round(v, 6) for v in sel.path],
            "candidates": [c.label for c in cands], "notes": notes, "split": tested["split"],
            "members": [{"name": cands[i].name, "path": f"members/{cands[i].name}", "trial": cands[i].label,
                         "study": cands[i].study, "source": cands[i].source, "arch": cands[i].config["model"]["arch"],
                         "picks": int(sel.counts[i]), "weight": w, "val/acc": round(cands[i].val_acc, 6),
                         **tested["members"][cands[i].name]}
                        for i, w in zip(chosen, weights)],
            "val/acc": val_ens["acc"], "val/log_loss": val_ens["log_loss"],
            "single": {"trial": single.label, "study": single.study, "source": single.source, "state": single.state,
                       "val/acc": single.val_acc, "val/log_loss": np_scores(single.val_proba, val_y)["log_loss"],
                       **tested["members"][single.name]},
            **tested["ensemble"]}
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return {"info": info, "files": {cands[i].name: (cands[i].config, cands[i].weights) for i in chosen}}


def _test(splits, models: list, weights: list[float], device: str) -> dict[str, Any]:
    """The one read of the test split (validation where the data has none): every needed model's probabilities
    once, the ensemble's weighted average (its members are models[:len(weights)]), their metrics."""
    split = "test" if splits.test is not None else "val"
    part = splits.test if splits.test is not None else splits.val
    x, y = part.x, part.y  # the only access to the test split
    dev = pick_device(device)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)).to(dev), torch.from_numpy(np.asarray(y)).to(dev)
    probas, members = {}, {}
    for c in models:
        probas[c.name] = member_proba(Member(c.name, 1.0, model_from(c.config, c.weights).to(dev), c.config), xt)
        s = proba_scores(probas[c.name], yt)
        members[c.name] = {f"{split}/acc": s["acc"], f"{split}/macro_f1": s["macro_f1"]}
    ens = proba_scores(combine([probas[c.name] for c in models[:len(weights)]], weights), yt)
    return {"split": split, "members": members,
            "ensemble": {f"{split}/acc": ens["acc"], f"{split}/macro_f1": ens["macro_f1"],
                         f"{split}/log_loss": ens["loss"], "per_class": ens["per_class"],
                         "confusion": ens["confusion"], f"n_{split}": int(len(y))}}
