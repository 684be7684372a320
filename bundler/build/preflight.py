"""What a build can tell before TensorFlow loads: the output folder, the manifest's files, modules.

Importing TensorFlow takes seconds; a mistyped factory module, a missing ``paths`` folder or
weights file, or an output folder that is in the way should not wait for it. ``check_build_inputs``
looks at all of them without importing anything: folders and files by their names, modules by
the finders Python would use (a module's file found on the manifest's ``paths`` or ``sys.path``
without executing its packages; a top-level module also through ``sys.meta_path`` finders, which
is where editable installs live). What it cannot judge without executing code (a package that
rewrites its own ``__path__``, a zip import) it leaves to the build, which imports for real.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

from bundler.compat.components import distribution_module_hint, find_source
from bundler.errors import ComponentError, ManifestError
from bundler.files.atomic import check_target
from bundler.manifest.reader import ManifestSource


def check_build_inputs(source: ManifestSource, target: Path, force: bool) -> None:
    """Raise the error the build would raise later for OUT, ``paths``, weights or a module no
    finder knows, naming the manifest field; return quietly when nothing is wrong that can be
    told without importing."""
    check_target(target, force)
    manifest = source.manifest
    search: list[str] = []
    for index, entry in enumerate(manifest.paths):
        folder = source.root / entry
        if not folder.is_dir():
            raise ManifestError(
                f"folder {entry!r} does not exist",
                path=source.path,
                field=f"paths[{index}]",
                value=entry,
            )
        search.append(str(folder))
    search.extend(sys.path)
    if manifest.model.weights and not (source.root / manifest.model.weights).is_file():
        raise ManifestError(
            "weights file does not exist",
            path=source.path,
            field="model.weights",
            value=manifest.model.weights,
        )
    factory_module = manifest.model.factory.partition(":")[0]
    missing = _missing(factory_module, search)
    if missing:
        raise ManifestError(
            f"cannot import {factory_module!r}: no module named {missing!r} "
            "(add its folder to 'paths', or install it)",
            path=source.path,
            field="model.factory",
            value=manifest.model.factory,
        )
    for index, component in enumerate(manifest.components):
        missing = _missing(component.module, search)
        if missing:
            raise ComponentError(
                f"cannot import component {component.module!r}: no module named {missing!r}"
                f"{_distribution_hint(component.module)}",
                path=source.path,
                field=f"components[{index}].module",
                value=component.module,
            )


def _missing(module: str, search: list[str]) -> str | None:
    """The name no finder knows: ``module``'s top-level name when none finds it, ``module`` when
    its package is a plain folder holding no such submodule (and does not rewrite its
    ``__path__``); None when it is there or only importing can tell."""
    if find_source(module, search) is not None or module in sys.modules:
        return None
    top, _, rest = module.partition(".")
    spec = importlib.machinery.PathFinder.find_spec(top, search)
    if spec is None:
        spec = _meta_path_spec(top)
    if spec is None:
        return top
    if not rest:
        return None
    if spec.submodule_search_locations is None:
        return module  # a plain module has no submodules
    if spec.origin and spec.origin.endswith("__init__.py"):
        try:
            if "__path__" in Path(spec.origin).read_text(encoding="utf-8", errors="replace"):
                return None  # the package extends its own path: only importing can tell
        except OSError:
            return None
    locations = list(spec.submodule_search_locations)
    if find_source(rest, locations) is None and not _extension_module(rest, locations):
        return module
    return None


def _meta_path_spec(top: str) -> importlib.machinery.ModuleSpec | None:
    """A top-level module as ``sys.meta_path`` finds it (editable installs), found, not run."""
    try:
        return importlib.util.find_spec(top)  # a top-level name imports no parent
    except (ImportError, ValueError):
        return None


def _extension_module(dotted: str, locations: list[str]) -> bool:
    *folders, name = dotted.split(".")
    for location in locations:
        folder = Path(location).joinpath(*folders)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return True
    return False


def _distribution_hint(module: str) -> str:
    """What to write instead, when a distribution's name was given where its module's belongs."""
    hint = distribution_module_hint(module)
    return f"; {hint}" if hint else " (is it installed, or listed under 'paths'?)"
