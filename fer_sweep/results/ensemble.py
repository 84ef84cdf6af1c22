"""Ensembles: greedy selection over the kept trial models' validation probabilities, one test, the folder.

Selection is Caruana et al.'s (2004) forward selection with replacement: start from the best single model (the
sweep's winner, the best-ranked kept model), then repeatedly add the kept model that most lowers the validation
log-loss of the weighted average (re-adding one already in raises its weight), up to K picks; keep the prefix
with the lowest validation log-loss (so the winner alone when no addition helps); weights = picks / picks kept.
Log-loss, not accuracy, for the additions: accuracy moves in steps of one face, so on a validation split of a
few thousand faces most candidate additions tie or win by noise, and greedy accuracy stalls or overfits;
log-loss is smooth, rewards a member that fixes confident mistakes before they flip a label, and is what
averaging probabilities optimises. Only validation data is looked at; the test split is read once, after the
choice, by `_test`.

The pool: every kept trial model and every retrained model (`best`'s final/, final/seeds/*, a refit's
final/selection/, and the same in final/earlier/<k>/ for the retrains before the latest, named e<k>-...) of one
study, or of several studies on the same data and splits (`best --ensemble K --study A --study B`): ensembles gain
most when their members differ, and members of different architectures differ more than one architecture's trials.
Models refit on train + validation are left out (their validation is not held out, so selection would trust them
blindly). Retrained models come first (best validation accuracy first), then the trial models (complete before
pruned, then validation accuracy), and the selection starts from the first.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import optuna
import torch
from torch import nn

from fer_sweep.config import EMOTIONS, RunConfig, UserError, tta_mode
from fer_sweep.files import write_atomic
from fer_sweep.learn.checkpoint import CONFIG_FILE, FINAL, MODEL_FILE, folder_or_final, model_from, save_model
from fer_sweep.learn.checkpoint import state_dict_cpu
from fer_sweep.learn.device import accumulator_dtype, pick_device
from fer_sweep.learn.evaluate import _scores as scores_from_confusion  # one definition of the metrics (macro-F1 etc.)
from fer_sweep.learn.evaluate import predict_proba
from fer_sweep.results.retrains import SELECTION, earlier_retrains
from fer_sweep.sweep.artifacts import load_kept

ENSEMBLE_JSON = "ensemble.json"
CRITERION = "val/log_loss"
EPS = 1e-12  # probabilities are clipped here before the log


@dataclass
class Member:
    """One model of an ensemble (a single model is an ensemble of one with weight 1)."""

    name: str
    weight: float
    model: nn.Module
    config: dict  # config.json: model, train (tta, tta_shift_px, amp, eval_batch_size), norm, ...


def member_proba(m: Member, x: torch.Tensor, *, tta: Optional[bool] = None,
                 batch_size: Optional[int] = None) -> torch.Tensor:
    """(N, 7) probabilities of one member with its own norm, TTA (flip or ten crops; a crop model gets its crops)
    and precision. `tta` overrides the TTA for all: False = one view, True = the member's own TTA, or flip for a
    member that has none."""
    t = m.config.get("train") or {}
    own = t.get("tta", False)
    views = own if tta is None else (False if not tta else (own if tta_mode(own) != "none" else True))
    return predict_proba(m.model, x, tuple(m.config["norm"]), tta=views,
                         tta_shift_px=int(t.get("tta_shift_px", 0)), amp=t.get("amp", "auto"),
                         batch_size=batch_size or int(t.get("eval_batch_size", 1024)))


def combine(probas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The weighted average, summed in member order (so `best` and `predict` get the same numbers)."""
    total = None
    for p, w in zip(probas, weights):
        part = p.float() * float(w)
        total = part if total is None else total + part
    return total


def ensemble_proba(members: Sequence[Member], x: torch.Tensor, *, tta: Optional[bool] = None,
                   batch_size: Optional[int] = None) -> torch.Tensor:
    return combine([member_proba(m, x, tta=tta, batch_size=batch_size) for m in members],
                   [m.weight for m in members])


# ------------------------------------------------------------------------------------------ selection
@dataclass(frozen=True)
class Selection:
    order: tuple[int, ...]  # candidate indices in pick order (the kept prefix); repeats are re-picks
    counts: np.ndarray  # (M,) how often each candidate was picked
    weights: np.ndarray  # (M,) counts / len(order): sums to 1
    path: tuple[float, ...]  # validation log-loss after each of the K picks


def greedy_select(probas: np.ndarray, y: np.ndarray, picks: int, start: Optional[int] = 0) -> Selection:
    """Forward selection with replacement over (M, N, 7) validation probabilities, up to `picks` picks; the first
    pick is `start` (the best single model), or with None the model of lowest log-loss."""
    if picks < 1 or len(probas) == 0:
        raise UserError(f"--ensemble: needs at least one pick and one model (got {picks} picks, {len(probas)} models)")
    py = probas[:, np.arange(len(y)), y].astype(np.float64)  # (M, N): each model's probability of the true class
    total, order, path = np.zeros(py.shape[1]), [], []
    for k in range(1, picks + 1):
        losses = -np.log(np.clip((total + py) / k, EPS, None)).mean(axis=1)
        best = start if k == 1 and start is not None else int(np.argmin(losses))  # a tie: the better-ranked one
        total += py[best]
        order.append(best)
        path.append(float(losses[best]))
    size = int(np.argmin(path)) + 1  # the best prefix (a tie: the smaller ensemble)
    counts = np.bincount(order[:size], minlength=len(py))
    return Selection(tuple(order[:size]), counts, counts / size, tuple(path))


def np_scores(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p = np.clip(proba[np.arange(len(y)), y].astype(np.float64), EPS, None)
    return {"acc": float(np.mean(proba.argmax(1) == y)), "log_loss": float(-np.mean(np.log(p)))}


def proba_scores(proba: torch.Tensor, y: torch.Tensor) -> dict:
    """evaluate()'s metrics of given probabilities: log-loss (as `loss`), acc, macro-F1, per class, confusion."""
    dtype = accumulator_dtype(proba.device)
    p = proba.to(dtype).clamp_min(EPS)
    loss_sum = -p.log().gather(1, y[:, None]).sum()
    k = len(EMOTIONS)
    confusion = torch.bincount(y * k + proba.argmax(1), minlength=k * k).view(k, k).to(dtype)
    return scores_from_confusion(loss_sum, confusion)


# ------------------------------------------------------------------------------------------ build
@dataclass(frozen=True)
class Candidate:
    """One model the selection may pick: a kept trial model or a retrained one, with its validation probabilities."""

    label: Any  # how ensemble.json names it: the trial number (one study) or "<study>-t<N>"; "final", "s1", ...
    name: str  # its folder under members/
    study: str
    source: str  # trial | final | seed | selection
    number: Optional[int]  # the trial: its own number, or the winner's that a retrained model retrains
    state: str  # complete | pruned | retrained
    val_acc: float
    config: dict
    val_proba: np.ndarray  # (N_val, 7) float32
    weights: bytes  # model.pt as stored


Source = tuple  # (spec, optuna study, study folder): one study of a pooled ensemble


def same_data_key(spec) -> tuple:
    """What must be equal for studies to share an ensemble: the data (as a resolved path) and the split options."""
    data = spec.data if spec.data == "synthetic" else str(Path(spec.data).expanduser().resolve())
    return data, tuple(sorted(dataclasses.asdict(spec.splits).items()))


def check_same_data(sources: Sequence[Source]) -> None:
    """Studies trained on different data or splits cannot be selected on one validation split: refused."""
    home = sources[0][0]
    for spec, _, _ in sources[1:]:
        if same_data_key(spec) != same_data_key(home):
            what = "data" if same_data_key(spec)[0] != same_data_key(home)[0] else "splits"
            raise UserError(f"--study {spec.study}: trained on other {what} than --study {home.study} "
                            f"({spec.data} {dataclasses.asdict(spec.splits)} vs {home.data} "
                            f"{dataclasses.asdict(home.splits)}): an ensemble needs one validation split")


def _retrained(spec, folder: Path, val: torch.Tensor, notes: list[str]) -> list[tuple[str, str, dict, bytes, np.ndarray]]:
    """(name, source, config, weights, val probabilities) of every retrained model `best` saved in the study folder:
    the seeds (final/seeds/s*, of which final/ is one), else final/ itself, and a refit's final/selection/; the same
    for each earlier retrain in final/earlier/<k>/, its names prefixed e<k>-."""
    final = Path(folder) / FINAL
    found: list[tuple[str, str, Path]] = []
    for prefix, where in [("", final)] + [(f"e{k}-", path) for k, path in earlier_retrains(final)]:
        seeds = where / "seeds" / ENSEMBLE_JSON
        if seeds.is_file():
            try:
                found += [(prefix + m["name"], "seed", where / "seeds" / m["path"])
                          for m in read_ensemble(seeds.parent)["members"]]
            except UserError as e:
                notes.append(f"{spec.study}: retrained seeds not readable ({e}); left out")
        elif (where / MODEL_FILE).is_file():
            found.append((prefix + "final", "final", where))
        if (where / SELECTION / MODEL_FILE).is_file():
            found.append((prefix + "selection", "selection", where / SELECTION))
    out = []
    for name, source, where in found:
        try:
            config = json.loads((where / CONFIG_FILE).read_text())
            weights = (where / MODEL_FILE).read_bytes()
            model = model_from(config, weights)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            notes.append(f"{spec.study}: {where.relative_to(folder)} not readable ({type(e).__name__}); left out")
            continue
        if config.get("refit"):
            notes.append(f"{spec.study}: {where.relative_to(folder)} was refit on train + validation (its validation "
                         "is not held out); left out")
            continue
        if (config.get("data"), config.get("splits")) != (spec.data, dataclasses.asdict(spec.splits)):
            notes.append(f"{spec.study}: {where.relative_to(folder)} was retrained on other data or splits "
                         f"({config.get('data')}); left out")
            continue
        member = Member(name, 1.0, model.to(val.device), config)
        out.append((name, source, config, weights, member_proba(member, val).float().cpu().numpy()))
    return out


def gather(sources: Sequence[Source], val_x: np.ndarray, val_y: np.ndarray, device: str
           ) -> tuple[list[Candidate], list[str]]:
    """Every kept trial model and retrained model of the studies, in selection order (module docstring)."""
    several = len(sources) > 1
    notes: list[str] = []
    retrained, trials = [], []
    dev = pick_device(device)
    val = torch.from_numpy(np.ascontiguousarray(val_x)).to(dev)
    for spec, study, folder in sources:
        kept, more = load_kept(study, folder, spec.keep)
        notes += [f"{spec.study}: {n}" if several else n for n in more]
        for c in kept:
            if c.val_proba.shape != (len(val_y), len(EMOTIONS)):
                notes.append(f"{spec.study + ': ' if several else ''}trial {c.number}: validated on "
                             f"{c.val_proba.shape[0]} faces, this data has {len(val_y)}; left out")
                continue
            label = f"{spec.study}-t{c.number}" if several else c.number
            trials.append(Candidate(label, f"{spec.study}-t{c.number}" if several else f"t{c.number}", spec.study,
                                    "trial", c.number, c.state, c.val_acc, c.config, c.val_proba, c.weights))
        for name, source, config, weights, proba in _retrained(spec, folder, val, notes):
            full = f"{spec.study}-{name}" if several else name
            retrained.append(Candidate(full, full, spec.study, source, config.get("trial"), "retrained",
                                       float(np.mean(proba.argmax(1) == val_y)), config, proba, weights))
    retrained.sort(key=lambda c: -c.val_acc)  # stable: a tie keeps the study order
    trials.sort(key=lambda c: (c.state != "complete", -c.val_acc))  # per study already ranked: a stable merge
    return retrained + trials, notes


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
    val_ens = np_scores(sum(w * cands[i].val_proba.astype(np.float64) for i, w in zip(chosen, weights)), val_y)
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


# ------------------------------------------------------------------------------------------ folders
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


# ------------------------------------------------------------------------------------------ seeds
def seed_model(model: nn.Module, cfg: RunConfig, norm, val, test) -> dict[str, Any]:
    """One retrained seed kept for the ensemble of seeds: its weights, and its probabilities on val and test from
    the model rebuilt from those weights (as `predict` runs the saved files)."""
    state = state_dict_cpu(model)
    config = {"model": dataclasses.asdict(cfg.model), "train": dataclasses.asdict(cfg.train),
              "norm": [float(v) for v in norm]}
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
    for s in seeds:
        save_model(folder / f"s{s['seed']}", s["state"], {**base_config, "train": s["train"]})
    info = {"kind": "seeds", **{k: base_config.get(k) for k in ("study", "data", "splits", "classes", "trial")},
            "members": [{"name": f"s{s['seed']}", "path": f"s{s['seed']}", "seed": s["seed"], "weight": w}
                        for s, w in zip(seeds, summary["weights"])],
            **{k: v for k, v in summary.items() if k not in ("seeds", "weights", "path")}}
    write_atomic(folder / ENSEMBLE_JSON, json.dumps(info, indent=2))
    return folder / ENSEMBLE_JSON
