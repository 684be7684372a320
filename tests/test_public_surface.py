"""The public surface: what ``import bundler`` promises, complete, documented and typed."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import warnings
from typing import Any

import pytest

import bundler
from bundler import errors

from .conftest import PACKAGE, ROOT


def _classes_defined_in_bundler() -> dict[str, list[str]]:
    """Every class statement in bundler/, by name -> the names of its bases (as written)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                found[node.name] = [ast.unparse(base) for base in node.bases]
    return found


def _descends(name: str, roots: set[str], classes: dict[str, list[str]]) -> bool:
    bases = [base.rsplit(".", 1)[-1] for base in classes.get(name, [])]
    return any(base in roots or _descends(base, roots, classes) for base in bases)


# The promise, name by name: moving code between modules or folders must not change it. A name
# added here is a new promise; a name removed breaks users.
PUBLIC_NAMES = [
    "AdapterError", "BuildError", "BuildWarning", "Bundle", "BundleDiff", "BundleError",
    "ComponentError", "ExampleMismatchError", "FallbackWarning", "IncompatibleBundleError",
    "InspectReport", "IntegrityError", "LoadError", "LoadedBundle", "Lock", "LockError",
    "ManifestError", "MissingDependencyError", "PullResult", "PushResult", "RegistryError",
    "SignatureError", "UnsafeBundleError", "UnsafeLoadWarning", "UsageError", "VerifyReport",
    "__version__", "adapter", "build_bundle", "diff_bundles", "inspect_bundle", "load_bundle",
    "pull", "push", "read_manifest", "verify_bundle",
]  # fmt: skip


def test_the_public_names_are_the_promised_ones() -> None:
    assert sorted(bundler.__all__) == sorted(PUBLIC_NAMES)


def test_every_public_name_resolves_where_it_is_defined() -> None:
    """``bundler.X`` is the object its module defines (no stale copy, no shadowing), and each
    module named in the lazy table exists."""
    import importlib

    lazy: dict[str, str] = getattr(bundler, "_LAZY")  # noqa: B009 - private by design
    for name, module in lazy.items():
        assert getattr(importlib.import_module(f"bundler.{module}"), name) is getattr(bundler, name)


@pytest.mark.parametrize("name", sorted(set(bundler.__all__) - {"__version__"}))
def test_every_public_name_imports_and_has_a_docstring(name: str) -> None:
    value = getattr(bundler, name)
    doc = inspect.getdoc(value) or ""
    # a dataclass without a docstring gets its signature as one: that is not documentation
    assert doc and not doc.startswith(f"{name}("), f"bundler.{name} has no docstring"


def test_every_error_and_warning_defined_in_bundler_is_exported() -> None:
    classes = _classes_defined_in_bundler()
    errors_ = {n for n in classes if _descends(n, {"BundleError"}, classes)} | {"BundleError"}
    warnings_ = {n for n in classes if _descends(n, {"Warning", "UserWarning"}, classes)}
    assert {"RegistryError", "UsageError", "BuildError", "MissingDependencyError"} <= errors_
    assert {"BuildWarning", "FallbackWarning", "UnsafeLoadWarning"} <= warnings_
    assert not (errors_ | warnings_) - set(bundler.__all__)
    for name in errors_:  # one module holds them all, so a reader finds every error in one place
        assert getattr(errors, name) is getattr(bundler, name)
    for name in warnings_:
        assert issubclass(getattr(bundler, name), Warning)


def test_registry_error_is_still_reachable_from_oci() -> None:
    from bundler.registry import api as oci

    assert getattr(oci, "RegistryError") is bundler.RegistryError  # noqa: B009 - not re-exported


@pytest.mark.parametrize("name", ["InspectReport", "PushResult", "PullResult"])
def test_results_are_frozen_values_that_give_their_json_document(name: str) -> None:
    """What the API returns is what the command line renders: a value with ``to_json()``."""
    value: Any = getattr(bundler, name)
    assert value.__dataclass_params__.frozen and inspect.getdoc(value.to_json)
    assert dataclasses.is_dataclass(value)


def test_dir_lists_the_public_names() -> None:
    assert dir(bundler) == sorted(bundler.__all__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in bundler.__all__:
            getattr(bundler, name)


def test_the_package_ships_its_type_information() -> None:
    assert (PACKAGE / "py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"bundler" = ["py.typed"]' in pyproject


def test_the_literal_vocabularies_match_the_code() -> None:
    from typing import get_args

    from bundler import types
    from bundler.compat import plan as compat

    assert get_args(types.Policy) == tuple(compat.POLICIES)
    assert set(get_args(types.Status)) == {
        "exact", "modified", "compatible", "adapted", "incompatible", "missing"
    }  # fmt: skip
    kinds = set(get_args(types.ProblemKind))
    # every kind a Problem is made with in bundler/ (literal first or second argument)
    used: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Problem"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                used.add(str(node.args[1].value))
    assert used and used <= kinds
    assert set(get_args(types.EntryKind)) - {"file", "dir"} <= kinds


def test_no_private_name_is_imported_across_modules() -> None:
    """A name with a leading underscore is its module's own business; one that another module
    needs is public, with a docstring. (The layers and cycles are import-linter's contracts in
    pyproject.toml, run by ``lint-imports``.)"""
    crossing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (
                node.level > 0 or (node.module or "").startswith("bundler")
            ):
                crossing += [
                    f"{path.relative_to(PACKAGE)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert crossing == []


def test_every_folder_is_a_package_that_ships() -> None:
    """A folder of bundler/ without ``__init__.py``, or left out of pyproject.toml's package
    list, would be missing from the wheel."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    table = re.search(r"^packages = \[(.*?)^\]", pyproject, re.DOTALL | re.MULTILINE)
    assert table is not None
    listed = set(re.findall(r'"([a-z_.]+)"', table.group(1)))
    folders = {
        ".".join(("bundler", *path.relative_to(PACKAGE).parts))
        for path in PACKAGE.rglob("*")
        if path.is_dir() and path.name != "__pycache__"
    }
    assert folders, "no folders found under bundler/"
    for folder in folders:
        assert (PACKAGE.parent.joinpath(*folder.split(".")) / "__init__.py").is_file(), folder
    assert folders | {"bundler", "bundler.schemas"} == listed


def test_the_tests_are_laid_out_like_the_package(pytestconfig: pytest.Config) -> None:
    """tests/NAME/ tests bundler/NAME/, and pytest collects every one of them (its default
    norecursedirs skips any folder called ``build``, which once hid tests/build/ silently)."""
    import fnmatch

    tests = ROOT / "tests"
    folders = {p.parent.name for p in tests.glob("*/__init__.py")}
    assert len(folders) > 10
    assert sorted(folders - {p.parent.name for p in PACKAGE.glob("*/__init__.py")}) == []
    skipped = pytestconfig.getini("norecursedirs")
    assert [f for f in folders if any(fnmatch.fnmatch(f, pattern) for pattern in skipped)] == []
