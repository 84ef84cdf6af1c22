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
    loops = circles({m: g[0] - {m, 'fer_sweep'} for m, g in graph.items()})
    problems += [f"import circle: {' -> '.join(c)}" for c in loops]
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
    code = (f"import sys, fer_sweep.{package} as p; heavy = {{'torch', 'pandas', 'optuna', 'wandb'}}"
            " & set(sys.modules); assert not heavy, heavy; print(len(p.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
    mod = importlib.import_module(f"fer_sweep.{package}")
    for name in mod.__all__:
        value = getattr(mod, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert value.__module__.startswith(f"fer_sweep.{package}."), (name, value.__module__)


# ------------------------------------------------------------------------------------------ the Optuna boundary
OPTUNA_API = "fer_sweep.sweep.optuna_api"
# Underscore names that are public API (namedtuple's and enum's): never counted as private.
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make", "_field_defaults", "_missing_", "_value_", "_name_"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORE


def private_reads(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    """Every `x._name` read in a module, and every getattr/hasattr(x, "_name"), as (the base node, the name)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _is_private(node.attr):
            found.append((node.value, node.attr))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str) and _is_private(node.args[1].value):
            found.append((node.args[0], node.args[1].value))
    return found


def defined_names(trees: list[ast.AST]) -> set[str]:
    """Every name the package defines: functions, classes, assigned names and attributes, parameters."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def other_modules(tree: ast.AST) -> set[str]:
    """The names a module binds to imported modules other than optuna's (`os`, `torch`: `os._exit` is not Optuna's)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] != "optuna"}
    return bound


def declared(tree: ast.AST, name: str) -> tuple[str, ...]:
    """The strings of a module-level tuple `name = (...)`, its items literals or module-level string constants."""
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
              for t in n.targets if isinstance(t, ast.Name)}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return tuple(consts[e.id] if isinstance(e, ast.Name) else e.value for e in node.value.elts)
    return ()


def optuna_internals(root: Path = PACKAGE) -> tuple[set[str], tuple[str, ...]]:
    """(the private Optuna names sweep/optuna_api.py reads or declares, the internal keys it declares). A key that
    ends with ':' is a prefix."""
    trees = {m: ast.parse(p.read_text()) for m, p in modules(root).items()}
    api = trees[OPTUNA_API]
    others = defined_names([t for m, t in trees.items() if m != OPTUNA_API])
    api_own = defined_names([api])
    read = {name for _, name in private_reads(api) if name not in others | api_own}
    return read | set(declared(api, "PRIVATE_NAMES")), declared(api, "INTERNAL_KEYS")


def _uses_key(value: str, keys: tuple[str, ...]) -> bool:
    return any(value == k or (k.endswith(":") and value.startswith(k)) for k in keys)


def _private_optuna_import(node: ast.AST) -> str | None:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == "optuna"]
        bad = [n for n in names if any(_is_private(part) for part in n.split("."))]
        return f"imports {bad[0]}" if bad else None
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "optuna":
        if any(_is_private(part) for part in node.module.split(".")) or any(_is_private(a.name) for a in node.names):
            return f"imports from {node.module}: {', '.join(a.name for a in node.names)}"
    return None


def optuna_boundary(root: Path = PACKAGE) -> list[str]:
    """Every use of an Optuna internal outside sweep/optuna_api.py, as sentences: a private Optuna module or name
    imported; a private name optuna_api reads; any other `x._name` that the package does not define itself (in the
    layers that may use Optuna; `os._exit`-like reads of another imported module excepted); an internal key."""
    privates, keys = optuna_internals(root)
    mods = modules(root)
    trees = {m: ast.parse(p.read_text()) for m, p in mods.items()}
    ours = defined_names([t for m, t in trees.items() if m != OPTUNA_API])
    problems = []
    for m, tree in trees.items():
        if m == OPTUNA_API:
            continue
        docstrings = {id(n.value) for n in ast.walk(tree)
                      if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        foreign = other_modules(tree)
        for node in ast.walk(tree):
            imported = _private_optuna_import(node)
            if imported:
                problems.append(f"{m}: {imported} (private Optuna: belongs in sweep/optuna_api.py)")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and _uses_key(node.value, keys):
                problems.append(f"{m}: the Optuna internal key {node.value!r} (belongs in sweep/optuna_api.py)")
        for base, name in private_reads(tree):
            if name in privates or (name not in ours and layer(m) not in PURE_LAYERS
                                    and not (isinstance(base, ast.Name) and base.id in foreign)):
                problems.append(f"{m}: reads {ast.unparse(base)}.{name}, a private name of Optuna or of another "
                                "library (Optuna's belong in sweep/optuna_api.py)")
    return problems


def private_imports(root: Path = PACKAGE) -> dict[str, str]:
    """Every `from fer_sweep.x import _y`, as {"fer_sweep.x._y": the module importing it}: a module's private names
    are its own."""
    found = {}
    for m, path in modules(root).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fer_sweep":
                found |= {f"{node.module}.{a.name}": m for a in node.names if _is_private(a.name)}
    return found


def test_optuna_internals_are_used_only_in_optuna_api():
    assert optuna_boundary() == []


def test_optuna_api_declares_each_internal_it_uses_and_the_docs_list_them():
    tree = ast.parse((PACKAGE / "sweep" / "optuna_api.py").read_text())
    privates, keys = optuna_internals()
    assert privates == set(declared(tree, "PRIVATE_NAMES")) and privates, privates  # the list is what it reads
    assert "fixed_params" in keys and "artifacts:" in keys, keys
    paragraph = [p for p in (PACKAGE.parent / "docs" / "architecture.md").read_text().split("\n\n")
                 if "`sweep/optuna_api.py` holds" in p]
    assert len(paragraph) == 1
    docstring = ast.get_docstring(tree) or ""
    for name in (*privates, *keys):
        assert name in paragraph[0] and name in docstring, name


def test_the_package_reads_no_test_variable():
    """Test hooks are set from the test side (tests/support/), never read from the environment by the package."""
    found = [f"{m}: {node.value!r}" for m, path in modules().items() for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and "FER_SWEEP_TEST" in node.value]
    assert found == []


def test_no_private_name_is_imported_across_modules():
    assert private_imports() == {}


def test_the_boundary_check_finds_each_kind_of_optuna_internal(tmp_path):
    root = tmp_path / "fer_sweep"
    (root / "sweep").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sweep" / "__init__.py").write_text("")
    (root / "sweep" / "optuna_api.py").write_text(
        'PRIVATE_NAMES = ("_storage",)\nKEY = "fixed_params"\nINTERNAL_KEYS = (KEY, "artifacts:")\n'
        'def storage_of(study):\n    return getattr(study, "_storage")\n'
        "def trial_id(trial):\n    return trial._trial_id\n")
    (root / "sweep" / "bad.py").write_text(
        "import os\nimport optuna._imports\nimport torch\n"
        "from optuna.storages._heartbeat import BaseHeartbeat\nfrom optuna.storages import _heartbeat\n"
        "from optuna.storages.journal import JournalFileBackend\nfrom fer_sweep.sweep.good import _helper\n"
        "class J(JournalFileBackend):\n    def lock(self):\n        return self._lock\n"
        "def f(study, t, ids):\n"
        "    study._storage.get_trial(t._number)\n"
        '    getattr(study, "_storage")\n'
        '    t.system_attrs.get("fixed_params")\n'
        '    [k for k in t.system_attrs if k.startswith("artifacts:")]\n'
        '    return [f"artifacts:{i}" for i in ids]\n')
    (root / "sweep" / "good.py").write_text(
        '"""Not fixed_params, nor artifacts: in a docstring."""\nimport os\nimport torch\n'
        "class Own:\n    def __init__(self):\n        self._mine = 1\n    def mine(self):\n        return self._mine\n"
        "def _helper(p):\n    torch._dynamo.reset()\n    os._exit(p._replace(a=1))\n")
    problems = optuna_boundary(root)
    assert all(p.startswith("fer_sweep.sweep.bad: ") for p in problems), problems
    expected = ["imports optuna._imports", "from optuna.storages._heartbeat", "from optuna.storages: _heartbeat",
                "reads self._lock", "reads study._storage", "reads t._number", "reads study._storage",
                "key 'fixed_params'", "key 'artifacts:'", "key 'artifacts:'"]
    for text in expected:
        assert sum(text in p for p in problems) >= expected.count(text), (text, problems)
    assert len(problems) == len(expected), problems
    assert private_imports(root) == {"fer_sweep.sweep.good._helper": "fer_sweep.sweep.bad"}
