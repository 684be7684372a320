"""No import cycles among bundler's modules, function-level imports included.

A cycle hidden in a function (``import`` inside a body, to dodge the error at import time) still
ties two modules into one: neither can be read, tested or moved alone. Each module's imports are
read with ``ast``, and any cycle fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import PACKAGE


def imports_of(path: Path) -> set[str]:
    """The bundler modules ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bundler."):
                    found.add(alias.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "bundler":
                    continue
                if len(parts) > 1:
                    found.add(parts[1])
                else:  # from bundler import x: x is a module or a name __init__ re-exports
                    found.update(alias.name for alias in node.names)
                    found.add("__init__")
            elif node.level == 1 and not (is_package and node.module is None):
                if node.module:
                    found.add(node.module.split(".")[0])
                else:  # from . import strict_json
                    found.update(alias.name for alias in node.names)
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {name for name in found if name in modules} - {path.stem}


def graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path) for path in sorted(PACKAGE.glob("*.py"))}


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_reader_sees_function_level_imports() -> None:
    edges = graph()
    assert "load" in edges["smoke"]  # `from .load import load_bundle` inside a function
    assert "load" not in edges["verify"]
    assert "keras_archive" in edges["verify"]
    assert "__init__" not in edges["errors"]


def test_cycle_finder_finds_a_three_module_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]


def test_no_import_cycles() -> None:
    found = [", ".join(sorted(component)) for component in cycles(graph())]
    assert not found, f"import cycles among bundler modules: {found}"


def test_no_private_name_is_imported_across_modules() -> None:
    """A name with a leading underscore is its module's own business; one that another module
    needs is public, with a docstring."""
    crossing = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (
                node.level == 1 or (node.module or "").startswith("bundler")
            ):
                crossing += [
                    f"{path.name}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert crossing == []
