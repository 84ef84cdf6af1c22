"""Everything the terminal shows: rich tables, panels and the live view of a running sweep."""

from __future__ import annotations

import json
from typing import Any, Mapping

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fer_sweep.config import EMOTIONS


def _pct(x) -> str:
    return "-" if x is None else f"{100 * float(x):.2f}%"


def short(name: str, value: Any) -> str:
    """A parameter value as a person reads it: conv [[16,3],[32,3]] -> 16-32 (k3), floats to 4 digits."""
    if name.removeprefix("params.") == "conv" and isinstance(value, str) and value.startswith("[["):
        stages = json.loads(value)
        kernels = {k for _, k in stages}
        return "-".join(str(c) for c, _ in stages) + (f" k{kernels.pop()}" if len(kernels) == 1 else f" k{[k for _, k in stages]}")
    return str(round(value, 4) if isinstance(value, float) else value)


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={short(k, v)}" for k, v in params.items())


def data_table(info: Mapping[str, Any]) -> Group:
    table = Table(title=f"{info['source']}  (layout: {info['layout']})")
    table.add_column("split")
    for name in EMOTIONS:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right", style="bold")
    for split, part in info["splits"].items():
        if part is None:
            table.add_row(split, *["-"] * len(EMOTIONS), "absent")
            continue
        classes = part.get("classes") or {}
        table.add_row(split, *[str(classes.get(c, "-")) for c in EMOTIONS], str(part["n"]))
    notes = [Text(f"note: {n}", style="yellow") for n in info.get("notes", [])]
    return Group(table, *notes)


def counts_line(snap: Mapping[str, Any]) -> str:
    c = snap["counts"]
    failed = sum(v for k, v in c.items() if k not in ("complete", "pruned", "running", "waiting"))
    return (f"{snap['finished']}/{snap['target']} finished: {c.get('complete', 0)} complete, "
            f"{c.get('pruned', 0)} pruned, {failed} failed, {c.get('running', 0)} running")


def best_line(snap: Mapping[str, Any]) -> str:
    b = snap.get("best")
    return "best: none yet" if not b else f"best: trial {b['number']}  val acc {_pct(b['val_acc'])}  {_params(b['params'])}"


class LiveView:
    """The `run` screen: progress of N, best so far, and every running trial's epoch and val accuracy."""

    def __init__(self, study: str, target: int):
        self.snap: dict[str, Any] = {"study": study, "target": target, "finished": 0, "counts": {}, "running": [], "best": None}
        self.epochs: dict[int, Any] = {}  # in-process trials: latest EpochResult by trial number

    def update(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def epoch(self, number: int, result) -> None:
        self.epochs = {number: result}

    def __rich__(self) -> Panel:
        table = Table(expand=True, box=None)
        for col in ("trial", "worker", "epoch", "val acc", "params"):
            table.add_column(col)
        for r in self.snap["running"]:
            res = self.epochs.get(r["number"])
            epoch = res.epoch if res else r["epoch"]
            val = res.metrics["val/acc"] if res else r["val_acc"]
            table.add_row(str(r["number"]), r["worker"] or "", f"{epoch}/{r['epochs']}", _pct(val), _params(r["params"]))
        return Panel(Group(Text(counts_line(self.snap)), Text(best_line(self.snap), style="green"), table),
                     title=f"fer-sweep: {self.snap['study']}")


def leaderboard(rows: list[Mapping[str, Any]], title: str) -> Table:
    table = Table(title=title)
    params = list(dict.fromkeys(k for r in rows for k in r if k.startswith("params.")))
    for col in ("#", "state", "val acc", "epochs", "seconds", *[p.removeprefix("params.") for p in params]):
        fixed = col in ("#", "state", "val acc", "epochs", "seconds")
        table.add_column(col, justify="right" if fixed and col != "state" else "left", no_wrap=fixed)
    for r in rows:
        cells = [r.get(p) for p in params]
        table.add_row(str(r["number"]), r["state"], _pct(r["val_acc"]), str(r["epochs"]), str(r["seconds"]),
                      *[short(p, v) for p, v in zip(params, cells)])
    return table


def status_view(st: Mapping[str, Any]) -> Group:
    parts: list[Any] = [Text(counts_line(st)), Text(best_line(st), style="green"),
                        Text(f"epochs trained: {st['epochs_trained']} of {st['epochs_budget']} "
                             f"unpruned budget ({_pct(st['epochs_trained'] / max(st['epochs_budget'], 1))})"),
                        leaderboard(st["leaderboard"], f"top {len(st['leaderboard'])} trials of {st['study']}")]
    if st.get("importances"):
        imp = Table(title="parameter importances (fANOVA, complete trials)")
        imp.add_column("param")
        imp.add_column("importance", justify="right")
        for k, v in st["importances"].items():
            imp.add_row(k, f"{v:.3f}")
        parts.append(imp)
    return Group(*parts)


def winner_panel(w: Mapping[str, Any]) -> Panel:
    lines = [f"trial {w['number']}: val acc {_pct(w['val_acc'])} after {w['epochs']} epochs (best epoch {w['best_epoch']})"]
    lines += [f"  {k} = {short(k, v)}" for k, v in w["params"].items()]
    return Panel("\n".join(lines), title="winner (chosen on validation)", border_style="green")


def final_view(m: Mapping[str, Any]) -> Group:
    split = m["split"]

    def ms(key):
        v = m.get(key)
        return "-" if not v else f"{100 * v['mean']:.2f}%" + (f" ± {100 * v['std']:.2f}" if m["seeds"] > 1 else "")

    head = Text(f"retrained {m['seeds']} seed(s); {split}: acc {ms(split + '/acc')}, macro-F1 {ms(split + '/macro_f1')}"
                f"  (val acc {ms('val/acc')})", style="bold")
    per = Table(title=f"per class on {split} (saved seed {m['saved_seed']})")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for r in m["per_class"]:
        per.add_row(r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
    conf = Table(title="confusion (rows true, columns predicted)")
    conf.add_column("")
    for name in EMOTIONS:
        conf.add_column(name[:4], justify="right")
    for name, row in zip(EMOTIONS, m["confusion"]):
        conf.add_row(name, *map(str, row))
    notes = [Text(f"note: {n}", style="yellow") for n in m.get("notes", [])]
    return Group(head, *notes, per, conf)
