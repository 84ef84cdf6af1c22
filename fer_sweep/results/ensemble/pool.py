"""The pool an ensemble is selected from: the kept trial models and retrained models of one study or several.

The pool: every kept trial model and every retrained model (`best`'s final/, final/seeds/*, a refit's
final/selection/, the same in final/earlier/<k>/ for the retrains before the latest, named e<k>-..., and the seeds
`best --race` trained, race/t<N>-s<seed>/, named t<N>-s<seed>) of one study, or of several studies on the same data
and splits (`best --ensemble K --study A --study B`): ensembles gain most when their members differ, and members of
different architectures differ more than one architecture's trials. Models refit on train + validation are left
out (their validation is not held out, so selection would trust them blindly). Retrained models come first (best
validation accuracy first), then the trial models (complete before pruned, then validation accuracy), and the
selection starts from the first.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from fer_sweep.config import EMOTIONS, UserError
from fer_sweep.learn.checkpoint import CONFIG_FILE, FINAL, MODEL_FILE, model_from
from fer_sweep.learn.device import pick_device
from fer_sweep.results.ensemble.folders import ENSEMBLE_JSON, read_ensemble
from fer_sweep.results.ensemble.members import Member, member_proba
from fer_sweep.results.race import race_models
from fer_sweep.results.retrains import SELECTION, earlier_retrains
from fer_sweep.sweep.artifacts import load_kept


@dataclass(frozen=True)
class Candidate:
    """One model the selection may pick: a kept trial model or a retrained one, with its validation probabilities."""

    label: Any  # how ensemble.json names it: the trial number (one study) or "<study>-t<N>"; "final", "s1", ...
    name: str  # its folder under members/
    study: str
    source: str  # trial | final | seed | selection | race
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


def _retrained(
    spec, folder: Path, val: torch.Tensor, notes: list[str]
) -> list[tuple[str, str, dict, bytes, np.ndarray]]:
    """(name, source, config, weights, val probabilities) of every retrained model `best` saved in the study folder:
    the seeds (final/seeds/s*, of which final/ is one), else final/ itself, and a refit's final/selection/; the same
    for each earlier retrain in final/earlier/<k>/, its names prefixed e<k>-; and each seed of `best --race`
    (race/t<N>-s<seed>/, named so). Each is checked alike (readable, not refit, the study's data and splits)."""
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
    found += [(where.name, "race", where) for where in race_models(folder)]
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
            name = f"t{c.number}" + (f"s{c.repeat}" if c.repeat else "")  # (a trial's seeds: t3, t3s1, t3s2)
            label = f"{spec.study}-{name}" if several else (c.number if not c.repeat else name)
            trials.append(Candidate(label, f"{spec.study}-{name}" if several else name, spec.study,
                                    "trial", c.number, c.state, c.val_acc, c.config, c.val_proba, c.weights))
        for name, source, config, weights, proba in _retrained(spec, folder, val, notes):
            full = f"{spec.study}-{name}" if several else name
            retrained.append(Candidate(full, full, spec.study, source, config.get("trial"), "retrained",
                                       float(np.mean(proba.argmax(1) == val_y)), config, proba, weights))
    retrained.sort(key=lambda c: -c.val_acc)  # stable: a tie keeps the study order
    trials.sort(key=lambda c: (c.state != "complete", -c.val_acc))  # per study already ranked: a stable merge
    return retrained + trials, notes
