"""Where ``import NAME`` would find a module, found without running any module's code.

``bundle verify`` must say whether the modules a lock names are installed, but importing them
runs the package's code (which imports Keras and TensorFlow, or worse). ``find_module`` walks the
way the import system does, one dotted level at a time, asking the finders the interpreter itself
uses for each ``sys.path`` entry (``pkgutil.get_importer``: folders, zip files, and any path hook
installed at start-up), and never executes a module:

- a module or a regular package: the first entry that has it wins, as on import; extension
  modules (``.so``, ``.pyd``) and ``.pyc``-only modules count;
- a namespace package (PEP 420): the portions of every entry, merged, as on import; the older
  ``pkgutil.extend_path`` and ``pkg_resources.declare_namespace`` packages are recognised from
  their ``__init__``'s text and search every entry too;
- an editable install: a ``.pth`` line that adds a folder is on ``sys.path`` already; a ``.pth``
  that installs a finder (setuptools' ``__editable___*_finder``, the ``editables`` redirector of
  hatchling and others) is read, not run: the table of the finder Python installed at start-up
  (its module's ``MAPPING``, the redirector's ``_redirections``), else the finder module's text
  (a literal ``MAPPING``, or ``map_module("name", "path")`` calls), for the ``.pth`` files of the
  site folders, the only ones Python runs. As on import, ``sys.path`` is asked first;
- a package whose ``__init__`` is lazy (a module ``__getattr__``, lazy_loader) makes no
  difference: what is looked for is the submodule's file, which the loader imports directly.

Out of reach without running code, and so reported as not found unless this process has already
imported the module: an ``__init__`` that rewrites ``__path__`` some other way, and import hooks
that make modules on import (meson-python's editable loader rebuilds the project).
"""

from __future__ import annotations

import ast
import os
import pkgutil
import site
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.machinery import all_suffixes
from pathlib import Path
from typing import Any

__all__ = ["FoundModule", "find_module", "module_present"]

# What an old-style namespace package's __init__ says (pkgutil, or pkg_resources / setuptools).
_EXTENDS_PATH = ("extend_path(", "declare_namespace(")


@dataclass(frozen=True)
class FoundModule:
    """A module as import would find it: the file it would run, and where its submodules are."""

    name: str
    origin: Path | None  # None: a namespace package (no file), or a built-in module
    locations: tuple[str, ...] = ()  # a package's search path; empty for a plain module

    @property
    def is_package(self) -> bool:
        return bool(self.locations)


def module_present(name: str) -> bool:
    """Whether ``import name`` would find the module here (see the module docstring)."""
    return find_module(name) is not None


def find_module(name: str, search: Sequence[str] | None = None) -> FoundModule | None:
    """The module ``import name`` would load, found without executing any of it, or None.

    ``search`` replaces ``sys.path`` (and then nothing is taken from this process's imports).
    """
    if search is None:
        loaded = _already_imported(name)
        if loaded is not None:
            return loaded
    entries = list(sys.path if search is None else search)
    parts = name.split(".")
    if search is None and parts[0] in sys.builtin_module_names:
        return FoundModule(parts[0], None) if len(parts) == 1 else None
    found = _find_in(parts[0], entries) or _editable(parts[0], entries)
    for depth in range(1, len(parts)):
        if found is None or not found.is_package:
            return None
        dotted = ".".join(parts[: depth + 1])
        found = _find_in(dotted, list(found.locations)) or _editable(dotted, entries)
    return found


def _already_imported(name: str) -> FoundModule | None:
    module = sys.modules.get(name)
    if module is None:
        return None
    file = getattr(module, "__file__", None)
    path = getattr(module, "__path__", None)
    locations = tuple(str(p) for p in path) if path is not None else ()
    return FoundModule(name, Path(file) if isinstance(file, str) else None, locations)


def _find_in(name: str, entries: Iterable[str]) -> FoundModule | None:
    """``name`` in these folders (a parent package's path, or sys.path), first match wins."""
    tail = name.rsplit(".", 1)[-1]
    portions: list[str] = []
    for entry in entries:
        finder = _importer(entry)
        if finder is None:
            continue
        try:
            spec = finder.find_spec(name)
        except (ImportError, OSError, ValueError, TypeError):
            continue
        if spec is None:
            continue
        if spec.loader is None:  # a namespace portion: keep looking, as import does
            portions.extend(str(p) for p in spec.submodule_search_locations or ())
            continue
        origin = Path(spec.origin) if isinstance(spec.origin, str) else None
        if spec.submodule_search_locations is None:
            return FoundModule(name, origin)
        locations = [str(p) for p in spec.submodule_search_locations]
        if origin is not None and _extends_path(origin):
            locations += [
                os.path.join(other, tail)
                for other in entries
                if os.path.isdir(os.path.join(other, tail))
                and os.path.join(other, tail) not in locations
            ]
        return FoundModule(name, origin, tuple(locations))
    if portions:
        return FoundModule(name, None, tuple(dict.fromkeys(portions)))
    return None


def _importer(entry: str) -> Any:
    """The finder the interpreter uses for a path entry (no package code runs to make it)."""
    try:
        finder = pkgutil.get_importer(entry or os.getcwd())
    except (ImportError, OSError, ValueError):
        return None
    return finder if finder is not None and hasattr(finder, "find_spec") else None


def _extends_path(init: Path) -> bool:
    if init.name != "__init__.py":
        return False
    try:
        text = init.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(marker in text for marker in _EXTENDS_PATH)


# -- editable installs that use a finder ----------------------------------------------------------


def _editable(name: str, entries: Sequence[str]) -> FoundModule | None:
    """``name`` as an editable install's finder maps it (see the module docstring)."""
    for mapped_name, target in _editable_mappings(tuple(entries)):
        if mapped_name != name:
            continue
        path = Path(target)
        if path.name == "__init__.py" and path.is_file():
            return FoundModule(name, path, (str(path.parent),))
        if (path / "__init__.py").is_file():
            return FoundModule(name, path / "__init__.py", (str(path),))
        if path.is_file():
            return FoundModule(name, path)
        for suffix in all_suffixes():
            candidate = path.with_suffix(suffix)
            if candidate.is_file():
                return FoundModule(name, candidate)
        if path.is_dir():  # a mapped folder without __init__: a namespace package
            return FoundModule(name, None, (str(path),))
    return None


def _site_folders() -> set[str]:
    """The folders whose ``.pth`` files Python ran at start-up."""
    folders = set(site.getsitepackages()) if hasattr(site, "getsitepackages") else set()
    if site.ENABLE_USER_SITE:
        folders.add(site.getusersitepackages())
    return {os.path.realpath(folder) for folder in folders}


def _installed_mappings() -> list[tuple[str, str]]:
    """The tables of the editable finders this interpreter installed at start-up (data, read)."""
    mappings: list[tuple[str, str]] = []
    for finder in sys.meta_path:
        module = sys.modules.get(getattr(finder, "__module__", "") or "")
        for table in (getattr(module, "MAPPING", None), getattr(finder, "_redirections", None)):
            if isinstance(table, dict):
                mappings += [(k, v) for k, v in table.items() if _names(k, v)]
    return mappings


def _editable_mappings(entries: tuple[str, ...]) -> list[tuple[str, str]]:
    """(module name, folder or file) of every editable finder: installed here, or that a site
    folder's ``.pth`` installs."""
    sites = _site_folders()
    mappings = _installed_mappings()
    for entry in entries:
        if not entry or os.path.realpath(entry) not in sites:
            continue
        try:
            names = sorted(n for n in os.listdir(entry) if n.endswith(".pth"))
        except OSError:
            continue
        for pth in names:
            for module in _imported_by_pth(Path(entry, pth)):
                mappings += _finder_mapping(Path(entry, f"{module}.py"))
    return mappings


def _imported_by_pth(pth: Path) -> list[str]:
    """The modules a ``.pth`` file's ``import`` lines import (Python runs those lines)."""
    try:
        lines = pth.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    modules = []
    for line in lines:
        if not line.startswith(("import ", "import\t")):
            continue
        try:
            tree = ast.parse(line)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules += [alias.name for alias in node.names if "." not in alias.name]
    return modules


def _finder_mapping(finder: Path) -> list[tuple[str, str]]:
    """A finder module's literal ``MAPPING = {...}``, and its ``map_module("name", "path")``."""
    try:
        tree = ast.parse(finder.read_text(encoding="utf-8"), filename=str(finder))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    found: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "MAPPING" for t in targets):
                try:
                    value = ast.literal_eval(node.value) if node.value is not None else None
                except ValueError:
                    continue
                if isinstance(value, dict):
                    found += [(k, v) for k, v in value.items() if _names(k, v)]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "map_module"
            and len(node.args) == 2
            and all(isinstance(a, ast.Constant) for a in node.args)
        ):
            name, path = (a.value for a in node.args)  # type: ignore[attr-defined]
            if _names(name, path):
                found.append((name, path))
    return found


def _names(name: object, path: object) -> bool:
    return isinstance(name, str) and isinstance(path, str) and bool(name) and bool(path)
