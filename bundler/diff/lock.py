"""The sections of ``bundle diff`` that the two locks decide, and the golden examples' drift.

Identity (name, version, description, digest, the manifest's model), components (per module: the
pinned version, the ranges, the distribution, the source sha256), frameworks (the build
environment and the allowed windows), files (from the two files tables, with sizes) and examples
come from the locks alone; an example's recorded arrays are read only when the lock gives them a
different sha256, to say how far each output drifted. Nothing here opens ``model.keras``: that is
``bundler.diff.model``.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bundler.diff.changes import Change, ExampleChange, FileChange, Side, json_changes
from bundler.errors import UsageError
from bundler.lock.model import FileEntry, Lock
from bundler.lock.paths import UnsafeFileError


def identity_changes(old: Lock, new: Lock) -> Iterator[Change]:
    """Name, version, description, digest, then the manifest's ``model`` by key path."""
    for key in ("name", "version", "description", "digest"):
        yield from json_changes(getattr(old, key), getattr(new, key), key)
    yield from json_changes(old.manifest.get("model", {}), new.manifest.get("model", {}), "model")


_COMPONENT_FIELDS = {  # lock field -> how the diff names it
    "version": "pinned",
    "requirement": "required",
    "compatible": "allowed",
    "distribution": "distribution",
    "source_sha256": "source",
    "source_hash": "source hashed as",  # absent from older locks: their sources are file bytes
    "objects": "objects",
}


def component_changes(old: Lock, new: Lock) -> Iterator[Change]:
    """Components added or removed (with their version), or per field that changed."""
    before = {component.module: component.to_dict() for component in old.components}
    after = {component.module: component.to_dict() for component in new.components}
    for module in list(before) + [m for m in after if m not in before]:
        if module not in after:
            yield Change(module, "removed", old=before[module]["version"])
        elif module not in before:
            yield Change(module, "added", new=after[module]["version"])
        else:
            for key, shown in _COMPONENT_FIELDS.items():
                was, now = before[module].get(key), after[module].get(key)
                if was != now:
                    yield Change(f"{module} {shown}", "changed", was, now)


def framework_changes(old: Lock, new: Lock) -> Iterator[Change]:
    """The build environment by key, then the manifest's allowed windows under ``allowed``."""
    yield from json_changes(old.environment.to_dict(), new.environment.to_dict())
    yield from json_changes(
        old.manifest.get("frameworks", {}), new.manifest.get("frameworks", {}), "allowed"
    )


def file_changes(
    old: Mapping[str, FileEntry], new: Mapping[str, FileEntry]
) -> Iterator[FileChange]:
    """Files added, removed, or with another sha256, by path, from the two files tables."""
    for path in sorted(set(old) | set(new)):
        if path not in new:
            yield FileChange(path, "removed", old[path].size, None)
        elif path not in old:
            yield FileChange(path, "added", None, new[path].size)
        elif old[path].sha256 != new[path].sha256:
            yield FileChange(path, "changed", old[path].size, new[path].size)


def _arrays(root: Path, relative: str, files: Mapping[str, FileEntry]) -> dict[str, Any]:
    """An example's arrays, read as ``golden.read_arrays`` reads a bundle's (UsageError if not)."""
    from bundler.load.golden import read_arrays

    entry = files.get(relative)
    try:
        return read_arrays(root, relative, entry.size if entry is not None else None)
    except UnsafeFileError as error:
        raise UsageError(error.reason, path=root / error.relative) from None
    except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile) as error:
        raise UsageError(f"cannot read example arrays: {error}", path=root / relative) from error


def _array_drift(old: dict[str, Any], new: dict[str, Any]) -> Iterator[Change]:
    import numpy as np

    for key in list(old) + [k for k in new if k not in old]:
        if key not in new:
            yield Change(key, "removed", old=list(old[key].shape))
        elif key not in old:
            yield Change(key, "added", new=list(new[key].shape))
        elif old[key].shape != new[key].shape:
            yield Change(key, "changed", list(old[key].shape), list(new[key].shape))
        elif not np.array_equal(old[key], new[key]):
            delta = np.abs(old[key].astype(np.float64) - new[key].astype(np.float64))
            yield Change(key, "changed", None, float(delta.max()) if delta.size else 0.0)


def _sha(files: Mapping[str, FileEntry], path: str) -> str | None:
    entry = files.get(path)
    return entry.sha256 if entry is not None else None


def example_changes(
    old_side: Side,
    old_lock: Lock,
    new_side: Side,
    new_lock: Lock,
) -> Iterator[ExampleChange]:
    """Golden examples added, removed, or whose inputs, recorded outputs or tolerances changed;
    outputs whose sha256 differs are read from both sides to say how far they drifted."""
    before = {example.name: example for example in old_lock.examples}
    after = {example.name: example for example in new_lock.examples}
    old_files, new_files = old_lock.files, new_lock.files
    for name in list(before) + [n for n in after if n not in before]:
        if name not in after:
            yield ExampleChange(name, "removed")
            continue
        if name not in before:
            yield ExampleChange(name, "added")
            continue
        a, b = before[name], after[name]
        tolerances = tuple(
            Change(key, "changed", getattr(a, key), getattr(b, key))
            for key in ("rtol", "atol")
            if getattr(a, key) != getattr(b, key)
        )
        inputs_changed = _sha(old_files, a.inputs) != _sha(new_files, b.inputs)
        drift: tuple[Change, ...] = ()
        if _sha(old_files, a.outputs) != _sha(new_files, b.outputs):
            drift = tuple(
                _array_drift(
                    _arrays(old_side.path, a.outputs, old_files),
                    _arrays(new_side.path, b.outputs, new_files),
                )
            )
        if inputs_changed or drift or tolerances:
            yield ExampleChange(name, "changed", inputs_changed, drift, tolerances)
