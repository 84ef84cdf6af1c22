"""Search strategies replayed on a tabular FER2013 learning-curve benchmark: which strategy finds the best config for
the epochs it trains, with every config's real seed-to-seed noise, at no training cost.

    python benchmarks/bench_search.py [--table benchmarks/data/fer-curves.json.gz] [--replays 200]
        [--budgets 10,20,30] [--seed 0] [--json PATH] [--no-write | --results-md PATH]

The table (recorded elsewhere, like HPOBench/LCBench) holds configs of a sweep spec's space, each trained with
several seeds to the spec's full epochs, never stopped early: per run, validation accuracy per epoch. A run's value
is its best epoch's (the tool keeps the best epoch's model); a config's true quality q is the mean of its runs'
values over all the table's seeds; regret = the table's best q - q(chosen config), in percentage points. A missing
or NaN epoch (a diverged run) counts as the majority-class rate, 0.25.

One replay draws, from --seed and its index, the order in which a search meets the configs and, per config, the
order of its runs (seeds): every strategy and every budget of that replay uses the same draw (common random
numbers), so their differences are the strategies', not the dice's. A strategy evaluating a config trains its first
run in that order (r runs for repeats r, whose curve is their epoch-by-epoch mean); a race adds the next ones.

- random: the first `budget` configs of the draw (without replacement), 1 seed, no pruning; the best observed wins.
- median, hyperband, asha3, asha4: the same configs in the same order through a real in-memory Optuna study with the
  tool's own pruner (`pruner_for`), shown the tool's protocol: val acc reported every epoch, should_prune asked after
  every epoch but the last, a pruned trial told PRUNED, a complete one its best epoch. Pruned trials never win (as in
  `fer-sweep best`). The trials carry no params: neither these pruners nor the plateau rule read them.
- tpe: Optuna's TPESampler (the tool's `sampler: tpe`) over the table's space. Its first n_startup_trials (10) are
  random points in Optuna: here the draw's first configs, as random search meets them. After them the table is not
  exhaustive, so each suggested point is mapped to the nearest config not yet evaluated (1 per categorical mismatch,
  plus each numeric gap as a share of its range), and TPE is told that config's params and value (a diverged run:
  0.25, the worst).
- repeats2, repeats3: random search with each config valued at the mean of 2 / 3 distinct seeds' values (each
  seed's best epoch, as `fer-sweep run` values a trial of spec `repeats`; x2 / x3 epochs).
- race3: random search, then the top 3 by observed value train their next 2 seeds (reusing the one they have);
  the best mean of 3 run values wins. asha4+race3: the same race among asha4's top 3 complete trials, filled, as
  `best --race` does, by the pruned trials that went furthest (all 3 of their seeds trained to full epochs).
- winner_more_seeds: random search, plus race3's extra epochs spent on more seeds of the winner, which changes no
  pick: its regret is random's at race3's cost.
- plateau5, plateau10, plateau15: random search stopped by the tool's plateau rule (`stop: {patience: N}`,
  sweep/plateau.py), no pruning. asha4+plateau15: the same rule under asha4 (a pruned trial counts as one without
  a gain, as in the tool).

Per strategy and budget: epochs spent, q of the pick, regret, P(pick in top 3), regret saved per 100 extra epochs,
and the pick's mean over the seeds its choice did not look at (free of the winner's curse; where the table has them).

Prints one Markdown table per budget and writes the section "Search strategies on the FER learning-curve table" of
benchmarks/RESULTS.md (or of --results-md PATH; --no-write only prints). --json PATH keeps every replay's pick.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gzip
import inspect
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import MAJORITY, RESULTS, cpu_name, run_value, write_section
from fer_sweep.sweep.plateau import plateau
from fer_sweep.sweep.policies import pruner_for
from fer_sweep.sweep.space import distributions
from fer_sweep.sweep.spec import PrunerSpec, SpecError, StopSpec, encode_choice, parse_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

TITLE = "Search strategies on the FER learning-curve table"
TABLE = ROOT / "benchmarks" / "data" / "fer-curves.json.gz"
TOP = 3  # "in the top 3": q at least the table's third best
RACE_SIZE, RACE_SEEDS = 3, 3  # race3: the top 3 configs, each to 3 seeds
PLATEAU_PATIENCES = (5, 10, 15)  # plateauN: the tool's `stop: {patience: N}`
TPE_STARTUP = inspect.signature(optuna.samplers.TPESampler).parameters["n_startup_trials"].default  # random ones
FEW = 6  # a parameter of the fallback space with more distinct numbers than this is a range, else categorical
PRUNERS = {"median": PrunerSpec(type="median"), "hyperband": PrunerSpec(type="hyperband"),
           "asha3": PrunerSpec(type="asha", min_epochs=1, reduction_factor=3),
           "asha4": PrunerSpec(type="asha", min_epochs=1, reduction_factor=4)}  # asha4: sweeps/residual.yaml's


@dataclass
class Table:
    """A learning-curve table, ready to replay: per config its runs' curves (seeds x epochs, missing or NaN epochs
    at MAJORITY), which runs diverged, each run's value (its best epoch) and the config's true quality q."""

    path: Path
    meta: dict
    encoded: list[dict]  # each config's params as Optuna holds them (conv as a JSON string)
    curves: list[np.ndarray]
    diverged: list[np.ndarray]
    epochs: int
    space: dict[str, BaseDistribution]
    space_source: str
    values: list[np.ndarray] = field(init=False)
    q: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.values = [np.array([run_value(run) for run in c]) for c in self.curves]
        self.q = np.array([v.mean() for v in self.values])

    @property
    def best(self) -> float:
        return float(self.q.max())

    @property
    def top_floor(self) -> float:
        """The TOP-th best q: a pick is in the top 3 when its q is at least this (ties count in)."""
        return float(np.sort(self.q)[::-1][min(TOP, len(self.q)) - 1])

    @property
    def study(self) -> str:
        """The study name the table's sweep had (Optuna's hyperband places trials in brackets by it)."""
        return str((self.meta.get("spec") or {}).get("study") or "fer-curves")


def load_table(path: Path) -> Table:
    """Read a gzip JSON table; configs without a run yet (a table still being recorded) are left out."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such table (record one, or pass --table PATH)")
    with gzip.open(path, "rt") as f:
        raw = json.load(f)
    configs = [c for c in raw.get("configs", []) if c.get("runs")]
    epochs = max((len(r.get("val_acc") or []) for c in configs for r in c["runs"]), default=0)
    if not configs or epochs == 0:
        raise SystemExit(f"{path}: no config with a recorded epoch yet")
    curves, diverged = [], []
    for c in configs:
        rows = [_padded(r.get("val_acc") or [], epochs) for r in c["runs"]]
        curves.append(np.array([row for row, _ in rows]))
        diverged.append(np.array([bad for _, bad in rows]))
    encoded = [{k: _encode(v) for k, v in c["params"].items()} for c in configs]
    meta = raw.get("meta") or {}
    space, source = search_space(meta.get("spec") or {}, encoded)
    return Table(path, meta, encoded, curves, diverged, epochs, space, source)


def _padded(acc: list, epochs: int) -> tuple[np.ndarray, bool]:
    """A run's val acc over `epochs` epochs, missing or NaN ones at MAJORITY, and whether it diverged (had any)."""
    got = np.array([math.nan if v is None else v for v in acc], dtype=float)
    curve = np.full(epochs, MAJORITY)
    ok = np.isfinite(got)
    curve[: len(got)][ok] = got[ok]
    return curve, len(got) < epochs or not ok.all()


def _encode(value: Any) -> Any:
    """A recorded param as the tool's Optuna trials hold it: a conv list of [channels, kernel] as its JSON string."""
    return encode_choice(tuple(tuple(s) for s in value)) if isinstance(value, list) else value


def search_space(spec: dict, encoded: list[dict]) -> tuple[dict[str, BaseDistribution], str]:
    """TPE's distributions: the table spec's space as the tool builds it (`space.distributions`) when every config
    of the table fits it (same params, values inside); else one made from the params present, each parameter a
    range (more than FEW distinct numbers) or the categorical of its values. Returns them and where they came from."""
    try:
        parsed = parse_spec({"study": "table", "data": "synthetic", "space": spec["space"]}, "the table's meta.spec",
                            check_data=False)
        dists = distributions(parsed)
        for p in encoded:  # create_trial checks that the params are exactly the distributions' and inside them
            optuna.trial.create_trial(params=p, distributions=dists, value=0.0)
        return dists, "the table spec's space"
    except (KeyError, TypeError, SpecError, ValueError):
        pass
    dists = {}
    for name in sorted(encoded[0]):
        values = {p[name] for p in encoded}
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and len(values) > FEW:
            ints = all(isinstance(v, int) for v in values)
            kind = optuna.distributions.IntDistribution if ints else optuna.distributions.FloatDistribution
            dists[name] = kind(min(values), max(values))
        else:
            dists[name] = CategoricalDistribution(sorted(values, key=repr))
    return dists, "a space made from the table's params (its spec's space does not fit them)"


# ------------------------------------------------------------------------------------------------ one replay
@dataclass(frozen=True)
class Draw:
    """One replay's randomness, shared by every strategy: the order the configs are met in, each config's runs in
    the order they are trained, and the TPE sampler's seed."""

    order: np.ndarray
    runs: list[np.ndarray]
    sampler_seed: int


def draw(table: Table, rng: np.random.Generator) -> Draw:
    return Draw(order=rng.permutation(len(table.curves)), runs=[rng.permutation(len(c)) for c in table.curves],
                sampler_seed=int(rng.integers(2**31 - 1)))


@dataclass(frozen=True)
class Pick:
    """What a strategy chose (a config's index) and the epochs it trained; `detail` says how (JSON-ready); `unseen`:
    the chosen config's mean run value over the seeds its choice did not look at (NaN where it looked at all)."""

    chosen: int
    epochs: int
    detail: dict
    unseen: float = math.nan


def curve(table: Table, d: Draw, c: int) -> np.ndarray:
    """Config c's curve as a one-seed search training it sees it: its first run in the draw's order."""
    return table.curves[c][d.runs[c][0]]


def searched(d: Draw, budget: int) -> list[int]:
    return [int(c) for c in d.order[:budget]]


def observed(table: Table, d: Draw, budget: int, repeats: int = 1) -> tuple[list[tuple[int, float]], int]:
    """Random search without pruning: (config, observed value) of the first `budget` configs, and epochs trained.
    With `repeats`, a config's value is the mean of its runs' values (each run's best epoch), as `fer-sweep run`
    values a trial of spec `repeats` (its curve, what a pruner sees, is the runs' epoch-by-epoch mean: `curve`)."""
    seen = searched(d, budget)
    epochs = table.epochs * sum(len(d.runs[c][:repeats]) for c in seen)
    return [(c, float(table.values[c][d.runs[c][:repeats]].mean())) for c in seen], epochs


def unseen(table: Table, d: Draw, c: int, looked: int) -> float:
    """Config c's mean run value over its runs after the first `looked` of the draw (those a strategy chose it by):
    an estimate of its quality free of the winner's curse (the chosen one's own seeds were lucky, or it would not
    have been chosen). NaN when no run is left."""
    rest = d.runs[c][looked:]
    return float(table.values[c][rest].mean()) if len(rest) else math.nan


def best_of(entrants: list[tuple[int, float]]) -> int:
    """The config of the highest value (the earliest of equal ones, as Optuna's best trial)."""
    return max(entrants, key=lambda e: e[1])[0]


def race(table: Table, d: Draw, entrants: list[tuple[int, float]],
         fill: list[int] | None = None) -> tuple[int, int, list[dict]]:
    """The top RACE_SIZE entrants by value each trained to RACE_SEEDS seeds (their first run reused, the next ones of
    the draw added, full epochs), as `best --race` does; where fewer than RACE_SIZE entrants, the configs of `fill`
    (pruned trials that went furthest, in order) fill the race with all RACE_SEEDS runs trained (a pruned run does
    not count). The best mean run value wins. Returns the winner, the extra epochs, the board."""
    top = sorted(entrants, key=lambda e: -e[1])[:RACE_SIZE]  # stable: equal values keep the search's order
    pruned = (fill or [])[:max(RACE_SIZE - len(top), 0)]
    board = []
    for c, cut in [(c, False) for c, _ in top] + [(c, True) for c in pruned]:
        runs = d.runs[c][:RACE_SEEDS]
        board.append({"config": c, "runs": [int(r) for r in runs], "mean": float(table.values[c][runs].mean()),
                      "pruned": cut})
    if len(board) < 2:  # nothing to race (the tool says so and stops): the one complete trial wins as it is
        return best_of(entrants), 0, []
    extra = table.epochs * sum(len(b["runs"]) - (0 if b["pruned"] else 1) for b in board)
    return max(board, key=lambda b: b["mean"])["config"], extra, board


def tool_search(table: Table, d: Draw, budget: int, pruner: PrunerSpec,
                stop: StopSpec | None = None) -> list[tuple[int, float | None, int]]:
    """The first `budget` configs of the draw through an in-memory Optuna study as `fer-sweep run` drives one with
    `pruner` (and the plateau `stop`, checked before each trial starts): (config, value or None if pruned, epochs)."""
    study = optuna.create_study(study_name=table.study, direction="maximize",
                                pruner=pruner_for(pruner, table.epochs),
                                sampler=optuna.samplers.RandomSampler(seed=d.sampler_seed))
    done: list[tuple[int, float | None, int]] = []
    for c in searched(d, budget):
        if plateau(study.get_trials(deepcopy=False), stop):
            break
        trial, acc, pruned = study.ask(), curve(table, d, c), False
        for epoch in range(1, table.epochs + 1):
            trial.report(float(acc[epoch - 1]), epoch)
            if epoch < table.epochs and trial.should_prune():  # the last epoch ends the trial: no question asked
                pruned = True
                break
        value = None if pruned else float(acc.max())
        study.tell(trial, value, state=TrialState.PRUNED if pruned else TrialState.COMPLETE)
        done.append((c, value, epoch))
    return done


# ------------------------------------------------------------------------------------------------ strategies
def random_search(table: Table, d: Draw, budget: int, repeats: int = 1) -> Pick:
    entrants, epochs = observed(table, d, budget, repeats)
    c = best_of(entrants)
    return Pick(c, epochs, {"evaluated": len(entrants)}, unseen(table, d, c, repeats))


def pruned_search(table: Table, d: Draw, budget: int, pruner: PrunerSpec) -> Pick:
    done = tool_search(table, d, budget, pruner)
    complete = [(c, v) for c, v, _ in done if v is not None]
    counts = {"complete": len(complete), "pruned": len(done) - len(complete)}
    c = best_of(complete)
    return Pick(c, sum(e for *_, e in done), counts, unseen(table, d, c, 1))


def tpe_search(table: Table, d: Draw, budget: int) -> Pick:
    """TPE over the table's space, trained 1 seed. Its first TPE_STARTUP trials are random in Optuna (as in the tool):
    here the draw's first configs, the ones random search meets; after them each suggestion is mapped to the nearest
    config not yet evaluated. TPE is told the config trained, not the point it suggested."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=d.sampler_seed))
    left, entrants, gaps = set(range(len(table.curves))), [], []
    for i in range(min(budget, len(left))):
        if i < TPE_STARTUP:  # a random point of the space: the table's configs in the draw's order, unbiased
            c = int(d.order[i])
        else:
            trial = study.ask(table.space)
            c, gap = nearest(table, trial.params, left)
            study.tell(trial, state=TrialState.FAIL)  # TPE learns the config trained (FAIL trials it ignores)
            gaps.append(gap)
        left.discard(c)
        run = d.runs[c][0]
        value = MAJORITY if table.diverged[c][run] else float(table.values[c][run])
        study.add_trial(optuna.trial.create_trial(params=table.encoded[c], distributions=table.space, value=value))
        entrants.append((c, value))
    c = best_of(entrants)
    return Pick(c, table.epochs * len(entrants), {"mean_gap": float(np.mean(gaps)) if gaps else math.nan,
                                                  "guided": len(gaps)}, unseen(table, d, c, 1))


def nearest(table: Table, point: dict, left: set[int]) -> tuple[int, float]:
    """The config of `left` closest to `point` (1 per categorical mismatch, plus each numeric gap as a share of the
    parameter's range, on a log scale for a log parameter), lowest index first among equals; and that distance."""
    def gap(c: int) -> float:
        total = 0.0
        for name, dist in table.space.items():
            a, b = point[name], table.encoded[c][name]
            if isinstance(dist, CategoricalDistribution):
                total += float(a != b)
            else:
                scale = math.log if dist.log else float
                total += abs(scale(a) - scale(b)) / (scale(dist.high) - scale(dist.low))
        return total

    c = min(sorted(left), key=gap)
    return c, gap(c)


def race3(table: Table, d: Draw, budget: int) -> Pick:
    entrants, epochs = observed(table, d, budget)
    winner, extra, board = race(table, d, entrants)
    return Pick(winner, epochs + extra, {"race": board}, unseen(table, d, winner, RACE_SEEDS))


def asha_race(table: Table, d: Draw, budget: int) -> Pick:
    done = tool_search(table, d, budget, PRUNERS["asha4"])
    furthest = sorted(((c, e, float(curve(table, d, c)[:e].max())) for c, v, e in done if v is None),
                      key=lambda p: (-p[1], -p[2]))  # stable: the older of equals first, as `best --race`
    winner, extra, board = race(table, d, [(c, v) for c, v, _ in done if v is not None], [c for c, *_ in furthest])
    return Pick(winner, sum(e for *_, e in done) + extra, {"race": board},
                unseen(table, d, winner, RACE_SEEDS if board else 1))


def winner_more_seeds(table: Table, d: Draw, budget: int) -> Pick:
    entrants, epochs = observed(table, d, budget)
    _, extra, _ = race(table, d, entrants)
    c = best_of(entrants)  # the extra seeds are trained after the choice: they are not what it looked at
    return Pick(c, epochs + extra, {"extra": extra}, unseen(table, d, c, 1))


def plateau_search(table: Table, d: Draw, budget: int, patience: int, pruner: str | None = None) -> Pick:
    done = tool_search(table, d, budget, PRUNERS[pruner] if pruner else PrunerSpec(type="none"), tool_stop(patience))
    c = best_of([(c, v) for c, v, _ in done if v is not None])
    return Pick(c, sum(e for *_, e in done), {"evaluated": len(done)}, unseen(table, d, c, 1))


@functools.cache
def tool_stop(patience: int | None = None) -> StopSpec:
    """The StopSpec the tool makes of a spec's `stop: {}` (its defaults), or of `stop: {patience: N}`."""
    given = {} if patience is None else {"patience": patience}
    stop = parse_spec({"study": "stop", "data": "synthetic", "stop": given}, f"stop: {given}",
                      check_data=False).stop
    assert stop is not None
    return stop


STRATEGIES: dict[str, Callable[[Table, Draw, int], Pick]] = {
    "random": random_search,
    **{name: functools.partial(pruned_search, pruner=p) for name, p in PRUNERS.items()},
    "tpe": tpe_search,
    "repeats2": functools.partial(random_search, repeats=2),
    "repeats3": functools.partial(random_search, repeats=3),
    "race3": race3,
    "winner_more_seeds": winner_more_seeds,
    "asha4+race3": asha_race,
    **{f"plateau{n}": functools.partial(plateau_search, patience=n) for n in PLATEAU_PATIENCES},
    f"asha4+plateau{PLATEAU_PATIENCES[-1]}": functools.partial(plateau_search, patience=PLATEAU_PATIENCES[-1],
                                                               pruner="asha4"),
}
BASES = {"asha4+race3": "asha4"}  # what a strategy adds epochs to (regret saved per 100 epochs); else random


def replay(table: Table, replays: int, seed: int, budgets: list[int]) -> dict[int, dict[str, list[Pick]]]:
    """Every strategy at every budget on `replays` draws, replay i's from the generator seeded with (seed, i)."""
    picks: dict[int, dict[str, list[Pick]]] = {b: {name: [] for name in STRATEGIES} for b in budgets}
    for i in range(replays):
        d = draw(table, np.random.default_rng([seed, i]))
        for b in budgets:
            for name, strategy in STRATEGIES.items():
                picks[b][name].append(strategy(table, d, b))
    return picks


# ------------------------------------------------------------------------------------------------ statistics
def mean_ci(x: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% normal-approximation interval (NaN for a single value)."""
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan
    return float(x.mean()), float(half)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion k/n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def saved_per_100(regret_gain: np.ndarray, extra_epochs: np.ndarray) -> tuple[float, float, float] | None:
    """Regret saved per 100 extra epochs (ratio of the paired means) with a 95% paired-bootstrap interval; None
    unless the strategy spends more epochs than random on average."""
    if extra_epochs.mean() <= 0:
        return None
    idx = np.random.default_rng(0).integers(0, len(extra_epochs), (2000, len(extra_epochs)))
    den = extra_epochs[idx].mean(axis=1)
    ratios = 100 * regret_gain[idx].mean(axis=1)[den > 0] / den[den > 0]
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return 100 * regret_gain.mean() / extra_epochs.mean(), float(lo), float(hi)


def paired_diff(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Mean of x - y over paired replays with its 95% paired-bootstrap interval."""
    d = x - y
    idx = np.random.default_rng(0).integers(0, len(d), (2000, len(d)))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def summarize(table: Table, picks: list[Pick], base: list[Pick]) -> dict:
    """Over the replays: epochs, q of the pick and regret (points), P(top 3), and regret saved per 100 epochs
    against `base` (the strategy it adds epochs to, on the same draws: random search, or asha4 for a race after it);
    `regrets`: each replay's regret, for paired comparisons."""
    epochs = np.array([p.epochs for p in picks], dtype=float)
    q = 100 * table.q[[p.chosen for p in picks]]
    regret = 100 * table.best - q
    base_regret = 100 * table.best - 100 * table.q[[p.chosen for p in base]]
    top = int((q >= 100 * table.top_floor - 1e-9).sum())
    unseen = 100 * np.array([p.unseen for p in picks])
    known = unseen[np.isfinite(unseen)]
    return {"epochs": mean_ci(epochs), "regrets": regret,
            "q": mean_ci(q), "regret": mean_ci(regret), "top": (top, len(picks), *wilson(top, len(picks))),
            "unseen": (*(mean_ci(known) if len(known) else (math.nan, math.nan)), len(known), len(picks)),
            "saved": saved_per_100(base_regret - regret, epochs - np.array([p.epochs for p in base]))}


def share_of_random(picks: list[Pick], random: list[Pick]) -> float:
    return float(np.mean([p.epochs for p in picks]) / np.mean([p.epochs for p in random]))


# ------------------------------------------------------------------------------------------------ the report
def plus_minus(mean: float, half: float, digits: int) -> str:
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown(table: Table, picks: dict[str, list[Pick]]) -> list[str]:
    lines = ["| strategy | epochs spent | of random's | q of the pick (%) | regret (pts) | P(pick in top 3) "
             "| regret vs random's (pts, paired) | regret saved per 100 extra epochs "
             "| the pick on seeds it was not chosen by (%) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    random_regret = 100 * table.best - 100 * table.q[[p.chosen for p in picks["random"]]]
    for name, got in picks.items():
        base = BASES.get(name, "random")
        s = summarize(table, got, picks[base])
        k, n, lo, hi = s["top"]
        saved = "—" if s["saved"] is None else \
            f"{s['saved'][0]:.2f} [{s['saved'][1]:.2f}, {s['saved'][2]:.2f}]" + ("" if base == "random" else
                                                                                 f" (vs {base})")
        mean, half, known, of = s["unseen"]
        fresh = "—" if not known else plus_minus(mean, half, 2) + ("" if known == of else f" ({known} of {of})")
        share = share_of_random(got, picks["random"])
        diff = "—" if name == "random" else "{:+.2f} [{:+.2f}, {:+.2f}]".format(*paired_diff(s["regrets"],
                                                                                            random_regret))
        lines.append(f"| {name} | {plus_minus(*s['epochs'], 0)} | {100 * share:.0f}% | {plus_minus(*s['q'], 2)} "
                     f"| {plus_minus(*s['regret'], 2)} | {100 * k / n:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}] "
                     f"| {diff} | {saved} | {fresh} |")
    return lines


def describe(table: Table) -> list[str]:
    """The table: where it comes from, its size, its best configs and its seed-to-seed noise."""
    m = table.meta
    seeds = Counter(len(c) for c in table.curves)
    shape = " + ".join(f"{n} config{'s' * (n != 1)} x {s} seed{'s' * (s != 1)}"
                       for s, n in sorted(seeds.items(), reverse=True))
    noise = [v.std(ddof=1) for v in table.values if len(v) > 1]
    top = ", ".join(f"{100 * q:.2f}%" for q in np.sort(table.q)[::-1][:TOP])
    recorded = ((m.get("spec") or {}).get("train") or {}).get("epochs")
    diverged = sum(int(d.sum()) for d in table.diverged)
    lines = [f"Table `{_shown(table.path)}`: {shape} x {table.epochs} epochs "
             f"({diverged} diverged run{'s' * (diverged != 1)}); data {m.get('data', '?')}, "
             f"slice {m.get('slice', '?')}; recorded on {m.get('machine', '?')}, precision {m.get('precision', '?')}, "
             f"{m.get('date', '?')}.",
             f"True quality q (mean over all seeds of a run's best epoch): best {100 * table.best:.2f}%, top 3 {top}, "
             f"median {100 * float(np.median(table.q)):.2f}%; seed-to-seed sd of a run's value "
             + (f"{100 * float(np.sqrt(np.mean(np.square(noise)))):.2f} points (pooled)." if noise else
                "unknown (one seed per config).")]
    if recorded and int(recorded) != table.epochs:
        lines.append(f"Note: the spec says {recorded} epochs; the runs have {table.epochs}.")
    return lines


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def notes(table: Table, picks: dict[int, dict[str, list[Pick]]]) -> list[str]:
    def pruner(p: PrunerSpec) -> str:
        if p.type == "median":
            return f"MedianPruner (startup {p.startup_trials} trials, warm-up {p.warmup_epochs} epochs)"
        kind = "HyperbandPruner" if p.type == "hyperband" else "SuccessiveHalvingPruner (ASHA)"
        return f"{kind} (min {p.min_epochs} epoch, reduction factor {p.reduction_factor})"

    gaps = ", ".join(f"{np.nanmean([p.detail['mean_gap'] for p in by['tpe']]):.2f} at budget {b}"
                     for b, by in picks.items() if b > TPE_STARTUP) or f"none (no budget above {TPE_STARTUP})"
    stop = tool_stop()
    return ["Each replay draws the order the configs are met in and each config's order of seeds once; every "
            "strategy and budget of the replay uses that draw (common random numbers). Intervals are 95%: normal "
            "approximation for means, Wilson for P(top 3), paired bootstrap for the regret against random's and for "
            "regret saved per 100 epochs (on the same draws; shown where a strategy spends more epochs than its "
            "base). A missing or "
            "NaN epoch of a diverged run counts as 0.25 everywhere; the tool's `dead_after` stop is not replayed.",
            "- q of the pick averages all the table's seeds of the chosen config, the ones the strategy chose it by "
            "included: a one-seed search picks the config whose first seed was lucky, and a race or `repeats: 3` "
            "picks by 3 of the seeds q is made of, so q flatters them (the winner's curse). The last column is the "
            "pick's mean over the seeds its choice did not look at (after the first one, or the first 3 of a race "
            "or of repeats3), which is free of it; it exists only for configs with more seeds than the strategy "
            "looked at (`record_curves.py --race-top`), and says of how many picks it is the mean when not all.",
            "- pruners (the tool's `pruner_for`, a real in-memory Optuna study, val acc reported every epoch, "
            "should_prune after every epoch but the last, the best complete trial wins): "
            + "; ".join(f"{name}: {pruner(p)}" for name, p in PRUNERS.items()) + ".",
            f"- tpe: Optuna's TPESampler with the tool's settings over {table.space_source}. Its first "
            f"{TPE_STARTUP} trials are random (Optuna's n_startup_trials): the draw's first configs, the ones random "
            "search meets, so up to that budget tpe is random search. After them the table is not "
            "exhaustive: each suggested point is mapped to the nearest config not yet evaluated (1 per categorical "
            "mismatch, plus each numeric gap as a share of its range) and TPE is told that config (a diverged run as "
            "0.25, the worst), so configs far from the others are met more often than by chance. Mean distance "
            f"from suggestion to config: {gaps}.",
            "- repeats2/3: each config is valued at the mean of 2/3 distinct seeds' best epochs (x2/x3 epochs). "
            "race3: the top 3 of the random search by observed value trained to 3 seeds each, the best mean of 3 "
            "run values wins; asha4+race3: the same among asha4's top 3 complete trials, filled by the pruned trials "
            "that went furthest (3 seeds each, their pruned run not counted) as `best --race` does. winner_more_seeds: "
            "race3's extra epochs spent on the random search's winner, whose pick they cannot change.",
            f"- plateauN: random search stopped by the tool's `stop: {{patience: N}}` (min_delta {stop.min_delta:g}; "
            f"`stop: {{}}` is patience {stop.patience}), checked before each trial starts; no pruning "
            "(asha4+plateau15: under asha4, a pruned trial counting as one without a gain).",
            "- regret saved per 100 extra epochs: against random search on the same draws, or against the strategy "
            "named (a race after asha4 against asha4 alone).",
            "- the last column exists only for picks with more seeds in the table than the strategy looked at: for "
            "race3, asha4+race3 and repeats3 only the configs the table's own race gave extra seeds (its best by the "
            "mean of 3), so where it covers fewer than all picks it is the mean of the better ones."]


def replayed_on(replays: int, seed: int, seconds: float) -> str:
    return (f"Replayed on {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, optuna "
            f"{optuna.__version__}, numpy {np.__version__}; {dt.date.today().isoformat()}: {replays} replays "
            f"(seed {seed}) in {seconds:.0f} s.")


def to_json(table: Table, picks: dict[int, dict[str, list[Pick]]]) -> dict:
    return {"table": {"configs": len(table.curves), "epochs": table.epochs, "best": table.best,
                      "q": table.q.tolist(), "top_floor": table.top_floor},
            "budgets": {str(b): {name: [{"chosen": p.chosen, "epochs": p.epochs, "q": float(table.q[p.chosen]),
                                         "unseen": None if math.isnan(p.unseen) else p.unseen,
                                         "detail": p.detail} for p in got] for name, got in by.items()}
                        for b, by in picks.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=TABLE, help="a gzip JSON learning-curve table")
    parser.add_argument("--replays", type=int, default=200)
    parser.add_argument("--budgets", "--budget", default="10,20,30", help="configs per search, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every replay's pick to this file")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--no-write", dest="write", action="store_false", help="print only; leave RESULTS.md alone")
    where.add_argument("--results-md", type=Path, default=RESULTS, help="write the section into this Markdown file")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    if args.replays < 1 or min(budgets) < 1:
        parser.error("--replays and every budget must be >= 1")
    table = load_table(args.table)
    warnings = [f"warning: budget {b} >= the table's {len(table.curves)} configs: the table is too small for this "
                "budget to be selective (a search without stopping evaluates every config; random misses the best "
                "by noise alone)" for b in budgets if b >= len(table.curves)]
    head = [*describe(table), "", *(f"{w}\n" for w in warnings)]  # each warning a paragraph of its own
    print("\n".join(head), flush=True)  # before the replays: what the table holds (a partial one too)
    start = time.perf_counter()
    picks = replay(table, args.replays, args.seed, budgets)
    seconds = time.perf_counter() - start
    rest = []
    for b in budgets:
        rest += [f"Budget {b} configurations ({min(b, len(table.curves))} of the table's {len(table.curves)}), "
                 f"{args.replays} replays:", "", *markdown(table, picks[b]), ""]
    rest += [*notes(table, picks), "", replayed_on(args.replays, args.seed, seconds)]
    print("\n".join(rest))
    body = "\n".join(head + rest)
    if args.json:
        args.json.write_text(json.dumps(to_json(table, picks)))
    if args.write:
        write_section(TITLE, body, args.results_md)


if __name__ == "__main__":
    main()
