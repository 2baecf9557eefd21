"""The emulator package's modules import each other without cycles.

Every import between emulator modules counts, including those inside functions and under
TYPE_CHECKING: a cycle hidden in a function is still a cycle (batch <-> service used to be one).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import bcbridge.emulator

PACKAGE = "bcbridge.emulator"
ROOT = Path(bcbridge.emulator.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join((PACKAGE, *parts))] = path
    return names


def imported(tree: ast.AST, modules: set[str], this: str) -> set[str]:
    """The package's modules that `tree` imports (``from pkg import module`` included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative import
                base = ".".join([*this.split(".")[: -node.level], node.module])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in modules and name != this}


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {
        name: imported(ast.parse(path.read_text(encoding="utf-8")), set(modules), name)
        for name, path in modules.items()
    }


def test_the_emulator_import_graph_is_acyclic() -> None:
    graph = import_graph(ROOT)
    assert f"{PACKAGE}.service" in graph and f"{PACKAGE}.handlers.batch" in graph
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"import cycle among emulator modules: {' -> '.join(error.args[1])}")
    assert set(order) == set(graph)


def test_the_checker_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """The old layout: batch imported service inside its functions, service imported batch."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "service.py").write_text("def run():\n    from bcbridge.emulator import batch\n")
    (tmp_path / "batch.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bcbridge.emulator.service import run\n"
    )
    with pytest.raises(CycleError):
        list(TopologicalSorter(import_graph(tmp_path)).static_order())
