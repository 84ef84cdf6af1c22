"""How numbers and parameter values read to a person, in the terminal and in the HTML report alike."""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional


def pct(x) -> str:
    """A fraction as a percentage with 2 decimals; '-' for none."""
    return "-" if x is None else f"{100 * float(x):.2f}%"


def conv_label(stages) -> str:
    """Conv stages as a short label: [[16,3],[32,5]] (or its JSON text) reads 16-32k5 (the kernel shown when not 3)."""
    if isinstance(stages, str):
        stages = json.loads(stages)
    return "-".join(str(c) if k == 3 else f"{c}k{k}" for c, k in stages)


def param_label(name: str, value: Any, digits: int = 3) -> str:
    """A parameter value as a person reads it: conv as its label, floats to `digits` significant digits (the CSV and
    JSON keep every digit)."""
    if name.removeprefix("params.") == "conv" and (isinstance(value, (list, tuple))
                                                   or (isinstance(value, str) and value.startswith("[["))):
        return conv_label(value)
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def mean_std(metrics: Mapping[str, Any], key: str, seeds: int) -> str:
    """`best`'s {"mean", "std"} record as 63.04% ± 0.52 (the spread only with several seeds); '-' when absent."""
    v: Optional[Mapping[str, float]] = metrics.get(key)
    return "-" if not v else pct(v["mean"]) + (f" ± {100 * v['std']:.2f}" if seeds > 1 else "")
