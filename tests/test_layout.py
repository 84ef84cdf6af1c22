"""Tests and benchmarks stay apart: no module under tests/ imports benchmarks, no module under benchmarks/ imports
tests, and no test writes a benchmark's report. Computed from the code (an AST walk over every module, so imports
inside functions, importlib calls and sys.path edits count too); a test runs a benchmark only as a program."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIDES = {"tests": "benchmarks", "benchmarks": "tests"}  # each side, and the one it must not import
LOADERS = {"import_module", "__import__", "spec_from_file_location", "run_path", "run_module", "SourceFileLoader"}


def _names_other_side(node: ast.AST, other: str) -> bool:
    """Whether a string constant in node names the other side: "benchmarks", "benchmarks.x", "benchmarks/x.py"."""
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str)
               and n.value.replace("\\", "/").replace(".", "/").split("/")[:1] == [other] for n in ast.walk(node))


def _is_sys_path_edit(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Attribute) and f.attr in ("insert", "append", "extend")
            and isinstance(f.value, ast.Attribute) and f.value.attr == "path"
            and isinstance(f.value.value, ast.Name) and f.value.value.id == "sys")


def crossings(path: Path, other: str) -> list[str]:
    """Each place in `path` that imports (or loads, or puts on sys.path) the package `other`: 'line N: what'."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] == other]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == other:
            found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if (name in LOADERS or _is_sys_path_edit(node)) and _names_other_side(node, other):
                found.append((node.lineno, ast.unparse(node)[:100]))
    return [f"line {n}: {what}" for n, what in sorted(found)]


def modules(side: str) -> list[Path]:
    return sorted((ROOT / side).rglob("*.py"))


@pytest.mark.parametrize("side", sorted(SIDES))
def test_neither_side_imports_the_other(side):
    assert modules(side), f"no modules under {side}/"
    bad = {str(p.relative_to(ROOT)): c for p in modules(side) if (c := crossings(p, SIDES[side]))}
    assert bad == {}, f"{side}/ must not import {SIDES[side]}/ (shared test code: tests/support/ or " \
                      f"tests/helpers.py; shared benchmark code: benchmarks/common.py): {bad}"


def test_no_test_writes_a_benchmark_report():
    """Benchmarks write benchmarks/RESULTS.md (benchmarks/common.py's write_section); a test that runs one passes it
    a report path of its own."""
    bad = []
    for p in modules("tests"):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
            if name == "write_section":
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert bad == []


def test_the_check_sees_each_kind_of_crossing(tmp_path):
    """The walk above finds what it is for (a check that finds nothing would pass vacuously)."""
    sample = tmp_path / "sample.py"
    sample.write_text("import benchmarks.common\nfrom benchmarks import face_set\nimport importlib, sys\n"
                      "def f():\n    from benchmarks.bench_x import run\n"
                      "importlib.import_module('benchmarks.bench_x')\nsys.path.insert(0, 'benchmarks')\n"
                      "from tests.helpers import cli\nimport benchmarking_tools\n"
                      "subprocess_args = ['benchmarks/x.py']\n")
    assert [c.split(":")[0] for c in crossings(sample, "benchmarks")] == [f"line {n}" for n in (1, 2, 5, 6, 7)]
    assert [c.split(":")[0] for c in crossings(sample, "tests")] == ["line 8"]
