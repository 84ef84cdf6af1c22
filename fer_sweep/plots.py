"""Static PNG figures (matplotlib, headless): confusion matrices and the like."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fer_sweep.config import EMOTIONS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def save_confusion_png(confusion: Sequence[Sequence[int]], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts in each cell (rows: true class, columns: predicted)."""
    import numpy as np

    plt = _pyplot()
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
