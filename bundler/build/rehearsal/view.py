"""What the rehearsal's fresh interpreter may import: what a service has, nothing of the build's.

A service has the installed distributions and the components the bundle declares; it has neither
the folders the manifest's ``paths`` put on the build's ``sys.path``, nor the build's current
folder, nor whatever the factory inserted into ``sys.path`` while it ran. So the fresh interpreter
starts with its own default ``sys.path`` (site-packages, ``.pth`` entries, ``PYTHONPATH``) minus
those ``hidden`` folders (``hidden_folders``, ``environment``), and reports where it finds each
component's top-level module. A component it does not find where the build imported it from (one
that lives under ``paths``, or an older copy installed elsewhere) is made importable by a folder of
symbolic links put first on its path (``link_package``): one link per component's **top-level
package**, the unit a service installs, so a factory package beside the component package in
``src/`` stays out of reach, and so does any other module there. A namespace package gets a folder
of its own and the link is made one level down (to the portion that holds the component).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from bundler.manifest.reader import ManifestSource


def hidden_folders(source: ManifestSource) -> list[str]:
    """The folders the build imports from that a service does not have: ``paths`` and the cwd."""
    folders = {os.path.realpath(source.root / entry) for entry in source.manifest.paths}
    folders.add(os.path.realpath(os.getcwd()))
    return sorted(folders)


def environment(hidden: list[str]) -> dict[str, str]:
    """The fresh interpreter's environment: this one's, ``PYTHONPATH`` without ``hidden`` (its
    relative entries made absolute: the interpreter runs elsewhere), and on a GPU the memory its
    load needs rather than all of it beside the build's."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    entries = [os.path.abspath(e) for e in env.get("PYTHONPATH", "").split(os.pathsep) if e]
    kept = [entry for entry in entries if os.path.realpath(entry) not in hidden]
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        env.pop("PYTHONPATH", None)
    return env


def interpreter_options() -> list[str]:
    """The options this interpreter runs with that change what it may import, passed on."""
    flags = sys.flags
    if flags.isolated:
        return ["-I"]
    return [
        option
        for option, on in (("-E", flags.ignore_environment), ("-s", flags.no_user_site))
        if on
    ]


def top_levels(source: ManifestSource) -> list[str]:
    """The top-level modules the fresh interpreter is asked to locate: the components', and
    bundler's own (an uninstalled checkout of it is linked like a component)."""
    names = {component.module.split(".", 1)[0] for component in source.manifest.components}
    return sorted(names | {"bundler"})


def to_link(source: ManifestSource, found: dict[str, Any]) -> list[str]:
    """The components (and ``bundler``) the fresh interpreter does not find where the build
    imported them from; ``found`` is its report, top-level name -> origin and locations."""
    wanted = [component.module for component in source.manifest.components] + ["bundler"]
    return [name for name in wanted if not _same_place(name, found.get(name.split(".")[0]))]


def _place(module: ModuleType) -> tuple[str | None, set[str]]:
    file = getattr(module, "__file__", None)
    origin = os.path.realpath(file) if isinstance(file, str) else None
    locations = {os.path.realpath(p) for p in getattr(module, "__path__", None) or ()}
    return origin, locations


def _same_place(name: str, found: Any) -> bool:
    module = sys.modules.get(name.split(".", 1)[0])
    if module is None:
        return True  # never imported by the build: nothing to make importable
    if not isinstance(found, dict):
        return False
    origin, locations = _place(module)
    if origin is not None:
        return bool(found.get("origin") == origin)
    return locations <= set(found.get("locations") or ())  # a namespace package's portions


def link_package(name: str, farm: Path) -> None:
    """Link, into ``farm``, the top-level package (or module) the build imported ``name`` from;
    through namespace packages, a folder of their own and the link one level down."""
    parts = name.split(".")
    folder = farm
    for depth in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:depth]))
        if module is None:
            return
        origin, locations = _place(module)
        if origin is None:  # a namespace package: only the portion holding the component
            folder = folder / parts[depth - 1]
            folder.mkdir(exist_ok=True)
            if depth == len(parts):  # the component is the namespace package itself
                for location in sorted(locations):
                    for entry in sorted(os.listdir(location)):
                        if not os.path.lexists(folder / entry):
                            os.symlink(os.path.join(location, entry), folder / entry)
            continue
        file = Path(origin)
        if file.name.startswith("__init__."):
            link, target = folder / parts[depth - 1], file.parent
        else:
            link, target = folder / file.name, file
        if not os.path.lexists(link):
            os.symlink(target, link, target_is_directory=target.is_dir())
        return
