"""The folder tree is the architecture: each layer imports only from the layers below it, no import circles, and
the model, data and training code knows nothing of sweeps. Computed from the code (ast over every module, so
lazy imports inside functions count too), for every module the package has now."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fer_sweep"
# Rank of each layer: a module may import from its own layer and the ones below, never above.
LAYERS = {"config": 0, "files": 0, "data": 1, "learn": 2, "sweep": 3, "results": 4, "cli": 5, "wandb_sweeps": 5,
          "__main__": 6, "__init__": 0}
SWEEP_LIBS = {"optuna", "wandb", "rich", "typer"}
PURE_LAYERS = ("config", "files", "data", "learn")  # no sweep libraries here
SUBPACKAGES = ("data", "learn", "sweep", "results", "cli")
TOP_LEVEL = {"__init__", "__main__", "config", "files", "wandb_sweeps"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(modules of the package it imports, roots of the outside packages it imports); `from pkg import name`
    counts as importing pkg.name where that is a module."""
    ours, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            (ours if name.split(".")[0] == "fer_sweep" else outside).add(name if name.split(".")[0] == "fer_sweep"
                                                                        else name.split(".")[0])
    return {n for n in ours if n in known}, outside


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def check(root: Path = PACKAGE) -> list[str]:
    """Every upward import, every circle and every sweep library in a pure layer, as sentences."""
    mods = modules(root)
    graph = {m: imports_of(p, set(mods)) for m, p in mods.items()}
    problems = []
    for m, (ours, outside) in graph.items():
        if layer(m) not in LAYERS:
            problems.append(f"{m}: in no layer (layers: {', '.join(LAYERS)})")
            continue
        for target in sorted(ours):
            if target == m or target == "fer_sweep":
                continue
            if LAYERS.get(layer(target), 99) > LAYERS[layer(m)]:
                problems.append(f"{m} imports {target}: upward ({layer(m)} below {layer(target)})")
        if layer(m) in PURE_LAYERS and outside & SWEEP_LIBS:
            problems.append(f"{m} imports {', '.join(sorted(outside & SWEEP_LIBS))}: not in the {layer(m)} layer")
    problems += [f"import circle: {' -> '.join(c)}" for c in circles({m: g[0] - {m, 'fer_sweep'} for m, g in graph.items()})]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a loop of names."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_upward_import_no_circle_no_sweep_library_in_data_or_learn():
    assert check() == []


def test_the_check_finds_an_upward_import_a_circle_and_a_sweep_library(tmp_path):
    root = tmp_path / "fer_sweep"
    for folder in ("data", "learn", "sweep"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "data" / "a.py").write_text("from fer_sweep.sweep.s import x\n")
    (root / "sweep" / "s.py").write_text("def f():\n    from fer_sweep.sweep import t\n")
    (root / "sweep" / "t.py").write_text("from fer_sweep.sweep.s import f\n")
    (root / "learn" / "m.py").write_text("import torch\ndef g():\n    import optuna\n")
    problems = check(root)
    assert any("fer_sweep.data.a imports fer_sweep.sweep.s: upward" in p for p in problems), problems
    assert any(p.startswith("import circle: fer_sweep.sweep.s -> fer_sweep.sweep.t") for p in problems), problems
    assert any("fer_sweep.learn.m imports optuna" in p for p in problems), problems
    assert len(problems) == 3, problems


def test_the_package_is_a_handful_of_top_level_modules_and_one_folder_per_layer():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(SUBPACKAGES)


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_subpackage_names_its_public_api_and_imports_it_lazily(package):
    """`import fer_sweep.X` loads neither torch nor pandas (what `--help` pays for), and every name in its
    `__all__` resolves to an object defined in one of its modules."""
    code = (f"import sys, fer_sweep.{package} as p; heavy = {{'torch', 'pandas', 'optuna', 'wandb'}} & set(sys.modules);"
            f" assert not heavy, heavy; print(len(p.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
    mod = importlib.import_module(f"fer_sweep.{package}")
    for name in mod.__all__:
        value = getattr(mod, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert value.__module__.startswith(f"fer_sweep.{package}."), (name, value.__module__)
