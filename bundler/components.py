"""Components: the modules that hold a model's custom objects, and what is installed of them.

Two ways to learn a component's installed version, which must agree:

- ``imported_version`` imports the module (build and load do, they need its objects anyway) and
  reads ``__version__``, else the version of the distribution that provides it;
- ``static_version`` finds the module's file on ``sys.path`` without executing anything and reads a
  literal ``__version__ = "..."`` from its syntax tree. Verification uses it, because importing a
  component would import Keras and TensorFlow, which ``bundle verify`` must never do.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import inspect
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ComponentError


def normalize_name(name: str) -> str:
    """A distribution or module name normalised as pip normalises names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _distributions_by_package() -> dict[str, list[str]]:
    return {key: list(value) for key, value in importlib.metadata.packages_distributions().items()}


def distribution_of(module_name: str) -> tuple[str, str] | None:
    """(distribution name, version) of the installed distribution providing ``module_name``."""
    top = module_name.split(".", 1)[0]
    for dist in _distributions_by_package().get(top, []):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class InstalledComponent:
    module: str
    version: str | None  # None: found, but no version could be read
    distribution: str | None
    found: bool


def import_component(name: str, *, field: str | None = None, path: str | None = None) -> ModuleType:
    """Import a component module, turning any failure into a ComponentError that names it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = error.name or name
        raise ComponentError(
            f"cannot import component {name!r}: no module named {missing!r} "
            "(is it installed, or listed under 'paths'?)",
            path=path,
            field=field,
            value=name,
        ) from error
    except Exception as error:  # the module's own code failed while importing
        raise ComponentError(
            f"importing component {name!r} failed: {type(error).__name__}: {error}",
            path=path,
            field=field,
            value=name,
        ) from error


def imported_version(module: ModuleType) -> InstalledComponent:
    version = getattr(module, "__version__", None)
    dist = distribution_of(module.__name__)
    if isinstance(version, str):
        return InstalledComponent(module.__name__, version, dist[0] if dist else None, True)
    if dist:
        return InstalledComponent(module.__name__, dist[1], dist[0], True)
    return InstalledComponent(module.__name__, None, None, True)


def _find_source(module_name: str, search: list[str]) -> Path | None:
    """The file that ``import module_name`` would execute last, found without importing parents.

    Covers plain and namespace packages on the file system, which is where components live; zip
    imports and custom finders are out of reach without executing code, and report "not found".
    """
    parts = module_name.split(".")
    for entry in search:
        base = Path(entry or ".")
        folder = base.joinpath(*parts[:-1])
        if not folder.is_dir():
            continue
        package = folder / parts[-1]
        if (package / "__init__.py").is_file():
            return package / "__init__.py"
        if (folder / f"{parts[-1]}.py").is_file():
            return folder / f"{parts[-1]}.py"
    return None


def _literal_version(source: Path, depth: int = 0) -> str | None:
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets):
                value = node.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return value.value
        # `from ._version import __version__` (one level, relative to this package)
        if (
            isinstance(node, ast.ImportFrom)
            and depth == 0
            and node.level == 1
            and node.module
            and any(alias.name == "__version__" for alias in node.names)
        ):
            target = source.parent.joinpath(*node.module.split("."))
            for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                if candidate.is_file():
                    return _literal_version(candidate, depth + 1)
    return None


def static_version(module_name: str, search: list[str] | None = None) -> InstalledComponent:
    """The installed version of a component, read without importing it (see module docstring)."""
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return imported_version(loaded)
    source = _find_source(module_name, sys.path if search is None else search)
    dist = distribution_of(module_name)
    if source is None:
        if dist:  # installed in a form we cannot read statically (zip, custom finder)
            return InstalledComponent(module_name, dist[1], dist[0], True)
        return InstalledComponent(module_name, None, None, False)
    version = _literal_version(source)
    if version is not None:
        return InstalledComponent(module_name, version, dist[0] if dist else None, True)
    if dist:
        return InstalledComponent(module_name, dist[1], dist[0], True)
    return InstalledComponent(module_name, None, None, True)


def registered_objects(module: ModuleType) -> dict[str, Any]:
    """Keras-serializable objects the module provides, by the name Keras looks them up by.

    Registered objects (``@keras.saving.register_keras_serializable``) under their registered name
    (``package>Name``); other Keras classes defined in the module under their class name, which is
    what Keras records as ``registered_name`` for an unregistered class.
    """
    import keras

    prefix = module.__name__ + "."
    objects: dict[str, Any] = {}
    for name, obj in keras.saving.get_custom_objects().items():
        owner = getattr(obj, "__module__", "") or ""
        if owner == module.__name__ or owner.startswith(prefix):
            objects[name] = obj
    saveable = keras.src.saving.keras_saveable.KerasSaveable
    for name, obj in vars(module).items():
        if (
            inspect.isclass(obj)
            and issubclass(obj, saveable)
            and obj.__module__ == module.__name__
            and obj not in objects.values()
        ):
            objects[name] = obj
    return objects


def source_sha256(module: ModuleType) -> str:
    """sha256 over the module's Python sources: the file, or every .py file below a package."""
    digest = hashlib.sha256()
    locations = list(getattr(module, "__path__", []) or [])
    files: list[tuple[str, Path]] = []
    if locations:
        for location in locations:
            root = Path(location)
            files.extend((p.relative_to(root).as_posix(), p) for p in root.rglob("*.py"))
    elif getattr(module, "__file__", None):
        source = Path(module.__file__)  # type: ignore[arg-type]
        files.append((source.name, source))
    for rel, path in sorted(files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
