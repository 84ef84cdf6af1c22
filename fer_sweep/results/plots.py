"""Static PNG figures (matplotlib, headless): confusion matrices and the like."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from fer_sweep.config import EMOTIONS


def pyplot():
    """matplotlib's pyplot on the Agg backend (imported on first use: it costs ~1 s)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def save_confusion_png(confusion: Sequence[Sequence[int]], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts in each cell (rows: true class, columns: predicted)."""
    import numpy as np

    plt = pyplot()
    counts = np.asarray(confusion, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="recall share")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------- study figures (used by `report`)
# Each takes plain data (no optuna objects), writes one PNG and returns its path.
# A trial is a dict: number, state (complete | pruned | ...), value (best val acc), params, curve [(epoch, acc)].
# An axis is a dict: name, choices (labels, for categorical) or low/high/log (numeric).

COMPLETE, PRUNED, FAILED = "tab:blue", "tab:orange", "tab:red"
TOP_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "black")


def _legend_above(ax, title: str, ncol: int) -> None:
    """Legend in one row between the title and the axes, where it can cover no bar (the tallest is often the
    last class, neutral, where a legend inside the axes would sit)."""
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, fontsize=8, frameon=False)
    ax.set_title(title, pad=22)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path


def save_history_png(trials: Sequence[dict], path: Path, title: str = "") -> Path:
    """Best validation accuracy of each trial in trial order, with the best-so-far line of complete trials."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for state, color, marker in (("complete", COMPLETE, "o"), ("pruned", PRUNED, "x")):
        pts = [(t["number"], t["value"]) for t in trials if t["state"] == state and t["value"] is not None]
        if pts:
            ax.scatter(*zip(*pts), c=color, marker=marker, label=state, zorder=3)
    failed = [t["number"] for t in trials if t["state"] not in ("complete", "pruned")]
    if failed:
        ax.scatter(failed, [0.0] * len(failed), c=FAILED, marker="v", label="failed", zorder=3)
    best, steps = None, []
    for t in sorted(trials, key=lambda t: t["number"]):
        if t["state"] == "complete" and t["value"] is not None:
            best = t["value"] if best is None else max(best, t["value"])
        if best is not None:
            steps.append((t["number"], best))
    if steps:
        ax.step(*zip(*steps), where="post", color="tab:green", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("best val accuracy")
    ax.set_title(title or "optimization history")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def save_importances_png(importances: dict, path: Path, title: str = "", reliable: bool = True) -> Path:
    """Horizontal bars of parameter importances, largest on top; hatched and pale when they rest on too few trials."""
    plt = pyplot()
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(items) + 1.4), dpi=110)
    ax.barh([k for k, _ in items], [v for _, v in items], color=COMPLETE, alpha=1.0 if reliable else 0.45,
            hatch=None if reliable else "//", edgecolor=COMPLETE)
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, max([v for _, v in items] + [1e-9]) * 1.2)
    ax.set_xlabel("importance (fANOVA, complete trials)")
    ax.set_title(title or "parameter importances")
    return _save(fig, path)


def _axis_position(axis: dict, value) -> float | None:
    """Where `value` sits on `axis`, in [0, 1] (None when it has none)."""
    import math

    if value is None:
        return None
    if axis.get("choices") is not None:
        labels = axis["choices"]
        return labels.index(value) / max(len(labels) - 1, 1) if value in labels else None
    low, high, v = float(axis["low"]), float(axis["high"]), float(value)
    if axis.get("log"):
        low, high, v = math.log(low), math.log(high), math.log(max(v, 1e-300))
    return 0.5 if high == low else (v - low) / (high - low)


def _axis_ticks(axis: dict) -> list[tuple[float, str]]:
    if axis.get("choices") is not None:
        n = len(axis["choices"])
        return [(i / max(n - 1, 1), str(c)) for i, c in enumerate(axis["choices"])]
    return [(0.0, f"{axis['low']:.3g}"), (1.0, f"{axis['high']:.3g}")]


def save_parallel_png(trials: Sequence[dict], axes: Sequence[dict], path: Path, title: str = "") -> Path:
    """Parallel coordinates: one vertical axis per parameter and val accuracy; complete trials coloured by
    accuracy, pruned ones dashed grey."""
    import numpy as np

    plt = pyplot()
    values = [t["value"] for t in trials if t["value"] is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    acc_axis = {"name": "val acc", "low": lo, "high": hi if hi > lo else lo + 1e-9}
    all_axes = [*axes, acc_axis]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(all_axes)), 4.6), dpi=110)
    cmap = plt.get_cmap("viridis")
    for t in sorted(trials, key=lambda t: (t["state"] == "complete", t["value"] or 0)):
        ys = [_axis_position(a, t["params"].get(a["name"])) for a in axes] + [_axis_position(acc_axis, t["value"])]
        xs = [i for i, y in enumerate(ys) if y is not None]
        if len(xs) < 2:
            continue
        ys = [ys[i] for i in xs]
        if t["state"] == "complete":
            ax.plot(xs, ys, color=cmap(ys[-1] if xs[-1] == len(axes) else 0.0), lw=1.6, alpha=0.85)
        else:
            ax.plot(xs, ys, color="grey", lw=1.0, ls="--", alpha=0.6)
    for i, a in enumerate(all_axes):
        ax.axvline(i, color="black", lw=0.8)
        for y, label in _axis_ticks(a):
            ax.text(i + 0.03, y, label, fontsize=7, va="center")
    ax.set_xticks(range(len(all_axes)), [a["name"] for a in all_axes])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(all_axes) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    sm.set_array(np.array(values or [0.0]))
    fig.colorbar(sm, ax=ax, fraction=0.03, label="val accuracy (complete)")
    ax.set_title(title or "parallel coordinates (dashed: pruned)")
    return _save(fig, path)


def save_slices_png(trials: Sequence[dict], axes: Sequence[dict], path: Path, title: str = "") -> Path:
    """One panel per parameter: val accuracy against its value (complete: dots, pruned: crosses)."""
    import numpy as np

    plt = pyplot()
    n = max(len(axes), 1)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), dpi=110, squeeze=False)
    jitter = np.random.default_rng(0)
    for k, a in enumerate(axes):
        ax = grid[k // cols][k % cols]
        for state, color, marker in (("complete", COMPLETE, "o"), ("pruned", PRUNED, "x")):
            pts = [(t["params"].get(a["name"]), t["value"]) for t in trials
                   if t["state"] == state and t["value"] is not None and t["params"].get(a["name"]) is not None]
            if not pts:
                continue
            xs: Sequence[Any]
            xs, ys = zip(*pts)
            if a.get("choices") is not None:
                xs = [a["choices"].index(x) + jitter.uniform(-0.08, 0.08) for x in xs]
            ax.scatter(xs, ys, c=color, marker=marker, label=state, alpha=0.8)
        if a.get("choices") is not None:
            ax.set_xticks(range(len(a["choices"])), a["choices"], rotation=20, fontsize=7)
            ax.set_xlim(-0.5, len(a["choices"]) - 0.5)
        elif a.get("log"):
            ax.set_xscale("log")
        ax.set_xlabel(a["name"])
        ax.set_ylabel("best val accuracy")
        ax.grid(alpha=0.3)
    for k in range(len(axes), rows * cols):
        grid[k // cols][k % cols].axis("off")
    handles, labels = grid[0][0].get_legend_handles_labels()
    if handles:  # one legend for all panels, above them: inside a panel it covers points
        fig.legend(handles, labels, loc="upper right", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title or "parameter slices")
    return _save(fig, path)


def save_curves_png(trials: Sequence[dict], path: Path, top: int = 8, title: str = "") -> Path:
    """Val accuracy per epoch of the top complete trials (coloured), other complete ones faint, and every
    pruned trial dashed, ending in a cross at the epoch it was pruned."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 4.4), dpi=110)
    complete = sorted((t for t in trials if t["state"] == "complete" and t["curve"]),
                      key=lambda t: -(t["value"] or 0))
    for t in complete[top:]:
        ax.plot(*zip(*t["curve"]), color="lightgrey", lw=1.0)
    for k, t in enumerate(complete[:top]):  # colours other than the pruned trials' orange
        ax.plot(*zip(*t["curve"]), marker="o", ms=3, lw=1.6, color=TOP_COLORS[k % len(TOP_COLORS)],
                label=f"#{t['number']} ({100 * (t['value'] or 0):.1f}%)")
    pruned = [t for t in trials if t["state"] == "pruned" and t["curve"]]
    for t in pruned:  # drawn over the others: a trial pruned after its first epoch is its × alone
        xs, ys = zip(*t["curve"])
        ax.plot(xs, ys, color=PRUNED, ls="--", lw=1.2, alpha=0.9, zorder=4)
        ax.plot(xs[-1:], ys[-1:], color=PRUNED, marker="x", ms=7, mew=2, ls="none", zorder=5)
    handles, labels = ax.get_legend_handles_labels()
    if pruned:  # the legend shows what a pruned trial looks like: dashes ending in ×, or the × alone
        from matplotlib.lines import Line2D

        handles.append((Line2D([], [], color=PRUNED, ls="--", lw=1.2), Line2D([], [], color=PRUNED, marker="x",
                                                                              ms=7, mew=2, ls="none")))
        labels.append(f"pruned ({len(pruned)}): × at the epoch it stopped")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(title or f"learning curves: top {min(top, len(complete))} trials and pruned ones")
    return _save(fig, path)


def save_f1_png(per_class: Sequence[dict], path: Path, title: str = "") -> Path:
    """Per-class precision, recall and F1 as grouped bars, with each class's support."""
    import numpy as np

    plt = pyplot()
    x = np.arange(len(per_class))
    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=110)
    for k, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (k - 1) * 0.27, [r[key] for r in per_class], width=0.27, label=key)
    ax.set_xticks(x, [f"{r['class']}\n(n={r['support']})" for r in per_class], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    _legend_above(ax, title or "per-class precision, recall and F1", ncol=3)
    return _save(fig, path)


def save_class_counts_png(splits: dict, path: Path, title: str = "") -> Path:
    """Images per class in each split (`splits`: split name -> {class name: count}) as grouped bars."""
    import numpy as np

    plt = pyplot()
    names = [s for s, counts in splits.items() if counts]
    x = np.arange(len(EMOTIONS))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=110)
    for k, name in enumerate(names):
        counts = [splits[name].get(c, 0) for c in EMOTIONS]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, counts, width=width, label=f"{name} ({sum(counts)})")
    ax.set_xticks(x, EMOTIONS)
    ax.set_ylabel("images")
    ax.grid(axis="y", alpha=0.3)
    _legend_above(ax, title or "class distribution", ncol=max(len(names), 1))
    return _save(fig, path)
