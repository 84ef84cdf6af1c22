"""fer-sweep: hyperparameter sweeps of facial-expression CNNs on FER2013.

The package is its architecture, one folder per layer, each importing only from the layers above it here:
`config` (records, UserError) and `files`; `data/` (FER2013 in any layout, splits, photos); `learn/` (models,
the trainer, checkpoints); `sweep/` (specs, the study, workers, the one trial path, W&B); `results/` (`best`,
ensembles, predictions, ONNX, the HTML report); `cli/` (the `fer-sweep` commands).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A subpackage's `__getattr__` and `__dir__` (PEP 562) for its public names, each defined in one of its modules
    (`exports`: name -> module) and imported on first use, so `import fer_sweep.learn` costs no torch import
    until a name of it is used (Optuna keeps its heavy imports lazy the same way)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
