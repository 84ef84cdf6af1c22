"""The model, data and training code knows nothing about sweeps: no optuna, wandb, rich or typer there,
and nothing imports the CLI (checked on the source with ast, so lazy imports count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fer_sweep"
CORE = ["models", "data", "readers", "synthetic", "train", "augment", "evaluate", "config", "device", "precision",
        "faces"]
SWEEP_LIBS = {"optuna", "wandb", "rich", "typer"}


def imported(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_modules_do_not_import_sweep_libraries(module):
    roots = {name.split(".")[0] for name in imported(module)}
    assert not roots & SWEEP_LIBS, f"fer_sweep/{module}.py imports {roots & SWEEP_LIBS}"


def test_nothing_imports_the_cli():
    for path in PACKAGE.glob("*.py"):
        if path.stem not in ("cli", "cli_results", "__main__"):
            assert not {"fer_sweep.cli", "fer_sweep.cli_results"} & imported(path.stem), path.name
