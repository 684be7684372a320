"""What ``bundle diff`` reports: one record per change, grouped by section, and their JSON form.

A ``BundleDiff`` holds the two ``Side``s and, per section in ``SECTIONS`` order, a tuple of
records: ``Change`` (a value at a key path), ``FileChange``, ``LayerChange`` (a layer of the
model's config), ``WeightChange`` (a variable of its weights) and ``ExampleChange`` (a golden
example). ``to_json`` on each is what ``bundle diff --json`` prints. ``json_changes`` walks two
JSON values and yields a ``Change`` per leaf that differs; the lock sections and the config
section are built on it.

Apart from ``bundler.diff.bundles`` (which opens the bundles and fills the sections) so that the
modules computing the sections, and the renderers in the CLI, share these types without importing
the comparison itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["added", "removed", "changed"]
SECTIONS = (
    "identity",
    "components",
    "frameworks",
    "files",
    "config",
    "weights",
    "metadata",
    "examples",
)
_ABSENT: Any = object()


@dataclass(frozen=True)
class Change:
    """One value at a key path: added (``new`` only), removed (``old`` only) or changed."""

    path: str
    kind: Kind
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "old": self.old, "new": self.new}


def _finite(value: float | None) -> float | str | None:
    """A number for JSON: NaN (a weight that is NaN on one side) is not valid JSON."""
    return "nan" if value is not None and value != value else value


@dataclass(frozen=True)
class FileChange:
    """A file added, removed, or with another sha256: its size on each side."""

    path: str
    kind: Kind
    old_size: int | None
    new_size: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "old_size": self.old_size,
            "new_size": self.new_size,
        }


@dataclass(frozen=True)
class LayerChange:
    """A layer of the model's config added, removed, or with the keys that changed."""

    layer: str
    kind: Kind
    keys: tuple[Change, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "keys": [key.to_json() for key in self.keys],
        }


@dataclass(frozen=True)
class WeightChange:
    """A variable added, removed, reshaped, or with values that moved (``max_abs_diff``)."""

    layer: str
    variable: str
    kind: Kind
    old_shape: tuple[int, ...] | None
    new_shape: tuple[int, ...] | None
    old_dtype: str | None = None
    new_dtype: str | None = None
    max_abs_diff: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "variable": self.variable,
            "kind": self.kind,
            "old_shape": list(self.old_shape) if self.old_shape is not None else None,
            "new_shape": list(self.new_shape) if self.new_shape is not None else None,
            "old_dtype": self.old_dtype,
            "new_dtype": self.new_dtype,
            "max_abs_diff": _finite(self.max_abs_diff),
        }


@dataclass(frozen=True)
class ExampleChange:
    """A golden example added, removed, or with changed inputs, outputs or tolerances."""

    name: str
    kind: Kind
    inputs_changed: bool = False
    drift: tuple[Change, ...] = ()  # per array: max abs difference, or the shapes
    tolerances: tuple[Change, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "inputs_changed": self.inputs_changed,
            "drift": [change.to_json() for change in self.drift],
            "tolerances": [change.to_json() for change in self.tolerances],
        }


@dataclass(frozen=True)
class Side:
    """One of the two bundles: what the user named, where it is, and who it is."""

    label: str
    path: Path
    name: str
    version: str
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.label,
            "path": str(self.path),
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
        }


@dataclass(frozen=True)
class BundleDiff:
    """Every difference between two bundles, by section (empty sections: nothing changed)."""

    old: Side
    new: Side
    identity: tuple[Change, ...] = ()
    components: tuple[Change, ...] = ()
    frameworks: tuple[Change, ...] = ()
    files: tuple[FileChange, ...] = ()
    config: tuple[LayerChange, ...] = ()
    weights: tuple[WeightChange, ...] = ()
    metadata: tuple[Change, ...] = ()
    examples: tuple[ExampleChange, ...] = field(default=())

    @property
    def same(self) -> bool:
        return not any(getattr(self, section) for section in SECTIONS)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "same": self.same,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
        }
        for section in SECTIONS:
            document[section] = [entry.to_json() for entry in getattr(self, section)]
        return document


# -- JSON documents by key path -------------------------------------------------------------------


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def json_changes(
    old: Any, new: Any, prefix: str = "", ignore: frozenset[str] = frozenset()
) -> Iterator[Change]:
    """The leaves that differ between two JSON values, by key path (``a.b[2].c``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if key in ignore:
                continue
            yield from json_changes(
                old.get(key, _ABSENT), new.get(key, _ABSENT), _join(prefix, key), ignore
            )
    elif isinstance(old, list) and isinstance(new, list):
        for index in range(max(len(old), len(new))):
            yield from json_changes(
                old[index] if index < len(old) else _ABSENT,
                new[index] if index < len(new) else _ABSENT,
                _join(prefix, index),
                ignore,
            )
    elif old is _ABSENT:
        yield Change(prefix or "(top level)", "added", new=new)
    elif new is _ABSENT:
        yield Change(prefix or "(top level)", "removed", old=old)
    elif old != new or type(old) is not type(new):
        yield Change(prefix or "(top level)", "changed", old, new)


__all__ = [
    "SECTIONS",
    "BundleDiff",
    "Change",
    "ExampleChange",
    "FileChange",
    "Kind",
    "LayerChange",
    "Side",
    "WeightChange",
    "json_changes",
]
