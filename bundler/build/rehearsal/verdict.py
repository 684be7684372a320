"""A failed rehearsal in the user's terms: what the fresh interpreter's load said, and what to do.

The fresh interpreter (``rehearsal_child``) reports facts: the loader's error and its root cause,
a module it could not find, the custom objects Keras found unregistered, each component whose
import failed. This module turns them into one line and a few lines of what to do, using what
only the build knows: where it imported a missing module from (the manifest's ``paths``, the
current folder, a folder its factory put on ``sys.path``) and which declared component covers a
module. It reads every layout the same way, by these facts; it never quotes a traceback or a
serialized config (Keras's messages embed both), and it cuts what it quotes.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import IO, Any

from bundler.compat.components import covers, package_base
from bundler.manifest.reader import ManifestSource
from bundler.text import shown

QUOTE_LIMIT = 300
TENSORFLOW_LOG = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before )")
"""TensorFlow's C++ start-up lines, printed whatever the log level: never the last words."""
CONFIG_MARKERS = ("Full object config:", "config={", "\nconfig=", "Received: config=")


def explain_failure(error: dict[str, Any], source: ManifestSource) -> tuple[str, list[str]]:
    """The one-line reason and the lines of what to do, from the fresh interpreter's facts."""
    for component in _dicts(error.get("components")):
        module = str(component.get("module"))
        missing = component.get("missing_module")
        if isinstance(missing, str) and missing:
            return _missing_module(missing, source, f"importing component {module!r}")
        return plain(str(component.get("message", ""))), [
            f"importing {module!r} works in the build but fails where only the installed "
            "packages and the declared components are importable"
        ]
    unregistered = _dicts(error.get("unregistered"))
    if unregistered:
        return _unregistered(unregistered, source)
    missing = error.get("missing_module")
    if isinstance(missing, str) and missing:
        return _missing_module(missing, source, "the load")
    message = str(error.get("message", ""))
    table: list[str] = []
    if not any(marker in message for marker in ("Exception encountered:", *CONFIG_MARKERS)):
        first, *rest = message.splitlines() or [""]
        message, table = first, [shown(line.rstrip()) for line in rest if line.strip()][:20]
    reason = plain(message)
    cause = plain(str(error.get("cause", "")))
    if cause and cause not in reason:
        reason = f"{reason} ({cause})" if reason else cause
    details = [plain(str(line)) for line in error.get("details") or ()][:10]
    return f"{error.get('type', 'error')}: {reason}", [*table, *details]


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _unregistered(objects: list[dict[str, Any]], source: ManifestSource) -> tuple[str, list[str]]:
    first = objects[0]
    name, class_name = str(first.get("name")), str(first.get("class_name"))
    module = str(first.get("module") or "")
    label = f"class {class_name!r}" + (f" (registered as {name!r})" if name != class_name else "")
    declared = [c.module for c in source.manifest.components]
    owners = [c for c in declared if module and covers(c, module)]
    owner = max(owners, key=len) if owners else None
    also = [f"(also {str(o.get('name'))!r} of {str(o.get('module'))!r})" for o in objects[1:6]]
    if not module:
        reason = f"Keras found no object registered as {name!r} after importing the components"
        return reason, [*also, "register it in a component module that the loader imports"]
    reason = f"Keras found no {label} of module {module!r}"
    if first.get("imported"):
        return f"{reason}: {module!r} was imported but did not register it", [
            *also,
            f"register it where it is defined, in {module!r} "
            "(@keras.saving.register_keras_serializable), not from the factory",
        ]
    if owner is not None and owner != module:
        return f"{reason}, which importing the component {owner!r} does not import", [
            *also,
            f"declare {module!r} as the component, or import it from {_file_of(owner)}",
        ]
    return f"{reason}, which the loader did not import", [
        *also,
        f"declare {module!r} (or its package) as a component",
    ]


def _file_of(component: str) -> str:
    """``mylib/__init__.py`` for a package, ``mylib.py`` for a module, as the build found it."""
    module = sys.modules.get(component)
    file = getattr(module, "__file__", None)
    path = component.replace(".", "/")
    if isinstance(file, str) and os.path.basename(file).startswith("__init__."):
        return f"{path}/__init__.py"
    if isinstance(file, str):
        return f"{path}.py"
    return f"the package {component!r}"


def _missing_module(name: str, source: ManifestSource, what: str) -> tuple[str, list[str]]:
    reason = f"{what} needs module {name!r}, {_whereabouts(name, source)}"
    return reason, [
        f"declare {name.split('.')[0]!r} as a component too, or install the package that "
        "provides it where the bundle will be loaded"
    ]


def _whereabouts(name: str, source: ManifestSource) -> str:
    """Where the build imported ``name`` from, said as why a service will not have it."""
    module = sys.modules.get(name) or sys.modules.get(name.split(".")[0])
    file = getattr(module, "__file__", None)
    if module is None or not isinstance(file, str):
        return "which is not installed"
    real = os.path.realpath(file)
    base = os.path.realpath(package_base(module.__name__, Path(file)))
    for entry in source.manifest.paths:
        if base == os.path.realpath(source.root / entry):
            shown_path = f"{entry.rstrip('/')}/{os.path.relpath(real, base)}"
            return f"which the build imported from the manifest's paths ({shown(shown_path)})"
    if base == os.path.realpath(os.getcwd()):
        return f"which the build imported from the current folder ({shown(os.path.relpath(real))})"
    return (
        f"which the build imported from {shown(real)}, a folder on its sys.path that is not "
        "installed (did the factory add it?)"
    )


def plain(text: str) -> str:
    """A message from Keras or a component, without the config or traceback it may embed, cut."""
    if "Exception encountered:" in text:  # Keras wraps the real error in a config dump
        text = text.rsplit("Exception encountered:", 1)[1]
    for marker in CONFIG_MARKERS:
        text = text.split(marker, 1)[0]
    text = text.split("Traceback (most recent call last)", 1)[0]
    text = " ".join(text.split()).rstrip(" .")
    if len(text) > QUOTE_LIMIT:
        text = text[: QUOTE_LIMIT - 3].rstrip() + "..."
    return text


def last_line(output: IO[bytes]) -> str:
    """The last line the fresh interpreter printed (its output file), escaped and cut."""
    try:
        size = output.seek(0, os.SEEK_END)
        output.seek(max(0, size - 4096))
        tail = output.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    lines = [line for line in lines if not TENSORFLOW_LOG.match(line)]
    return plain(shown(lines[-1])) if lines else ""
