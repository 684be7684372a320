"""What changed between two bundles, section by section, without TensorFlow.

``diff_bundles(old, new)`` compares two bundle folders (or ``oci://`` references, pulled first) and
returns a ``BundleDiff``: the same sections as ``bundle diff`` prints, in the same order.

- identity: name, version, description, digest, and the manifest's model (factory, arguments);
- components: per module, pinned version, required and allowed ranges, distribution, source sha256;
- frameworks: the build environment (python, tensorflow, keras, numpy ...) and allowed windows;
- files: added, removed, changed, with sizes, from the two files tables;
- config: per layer of ``config.json`` inside ``model.keras``, which keys changed;
- weights: per layer and variable of ``model.weights.h5`` inside ``model.keras``: shapes, and the
  largest absolute difference of values;
- metadata: by key path, old -> new;
- examples: golden examples whose inputs changed, and how far their recorded outputs drifted.

Only what the locks say differs is read: two bundles with the same digest and the same lock are
decided from their locks alone, and a ``model.keras`` with the same sha256 is never opened. The
weights are compared without loading them: h5py reads the layout (names, shapes, dtypes, byte
offsets), and the values are mapped from both bundle files 16 MiB at a time and compared in place
on two threads, so memory stays flat whatever the model's size. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .digest import FileWindow, read_plain_file
from .errors import UsageError
from .layout import FORMAT, LOCK_FILENAME, LOCK_MAX_BYTES, files_digest
from .lock import FileEntry, Lock
from .oci import is_reference

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
BLOCK_BYTES = 1 << 20  # values compared at a time, per bundle: a few blocks fit the CPU's cache
WINDOW_BYTES = 16 << 20  # mapped at a time, per bundle and thread: what bounds the memory
_IGNORED_CONFIG_KEYS = frozenset({"shared_object_id"})  # id() of an object in older bundles
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


# -- reading the two bundles ----------------------------------------------------------------------


def _open_side(reference: str | Path, label: str | None) -> tuple[Side, Lock]:
    from .verify import bundle_root, read_lock

    text = str(reference)
    if is_reference(text):
        from .oci import pull

        root = pull(text).path
    else:
        root = bundle_root(reference)
    lock, problems = read_lock(root)
    if lock is None or problems:
        raise UsageError(
            "is not a readable bundle: " + "; ".join(problem.message for problem in problems),
            path=text,
        )
    return Side(label or text, root, lock.name, lock.version, lock.digest), lock


def _identical(
    old: str | Path, new: str | Path, labels: tuple[str, str] | None
) -> BundleDiff | None:
    """Two bundle folders whose locks are equal but for ``created``, and whose digest matches
    their files table: the same bundle, decided from the two lock files alone.

    Schema validation is what ``bundle diff`` would otherwise spend most of its time on (importing
    jsonschema costs more than the rest of the command); anything unexpected here (a registry
    reference, a lock that is not plain JSON, another format, any difference at all) returns None
    and leaves the decision to the full comparison, which validates both locks."""
    sides = []
    documents = []
    for index, reference in enumerate((old, new)):
        if is_reference(str(reference)):
            return None
        root = Path(reference)
        try:
            if root.is_symlink() or not root.is_dir():
                return None
            document = json.loads(read_plain_file(root / LOCK_FILENAME, LOCK_MAX_BYTES))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            return None
        documents.append({key: value for key, value in document.items() if key != "created"})
        label = labels[index] if labels else str(reference)
        sides.append((label, root))
    lock = documents[0]
    if documents[1] != lock:
        return None
    try:
        if files_digest(lock["files"]) != lock["digest"]:
            return None
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    name, version, digest = lock.get("name"), lock.get("version"), lock.get("digest")
    if not (isinstance(name, str) and isinstance(version, str) and isinstance(digest, str)):
        return None
    return BundleDiff(
        old=Side(sides[0][0], sides[0][1], name, version, digest),
        new=Side(sides[1][0], sides[1][1], name, version, digest),
    )


def diff_bundles(
    old: str | Path, new: str | Path, *, labels: tuple[str, str] | None = None
) -> BundleDiff:
    """Compare two bundles (folders or ``oci://`` references); raises UsageError on bad input."""
    same = _identical(old, new, labels)
    if same is not None:
        return same
    old_side, old_lock = _open_side(old, labels[0] if labels else None)
    new_side, new_lock = _open_side(new, labels[1] if labels else None)
    old_files, new_files = old_lock.files, new_lock.files
    old_keras = old_lock.artifacts.keras
    new_keras = new_lock.artifacts.keras
    config: tuple[LayerChange, ...] = ()
    weights: tuple[WeightChange, ...] = ()
    if (
        old_keras in old_files
        and new_keras in new_files
        and old_files[old_keras].sha256 != new_files[new_keras].sha256
    ):
        with (
            _KerasFile(old_side.path / old_keras) as before,
            _KerasFile(new_side.path / new_keras) as after,
        ):
            old_config, new_config = before.config(), after.config()
            config = tuple(_config_changes(old_config, new_config))
            try:
                weights = tuple(
                    _weight_changes(before, after, _h5_names(old_config), _h5_names(new_config))
                )
            except (OSError, ValueError, KeyError, RuntimeError) as error:  # h5py, mmap
                raise UsageError(
                    f"cannot compare the weights: {type(error).__name__}: {error}",
                    path=f"{old_side.path / old_keras} / {new_side.path / new_keras}",
                ) from error
    return BundleDiff(
        old=old_side,
        new=new_side,
        identity=tuple(_identity_changes(old_lock, new_lock)),
        components=tuple(_component_changes(old_lock, new_lock)),
        frameworks=tuple(_framework_changes(old_lock, new_lock)),
        files=tuple(_file_changes(old_files, new_files)),
        config=config,
        weights=weights,
        metadata=tuple(json_changes(old_lock.metadata, new_lock.metadata)),
        examples=tuple(_example_changes(old_side, old_lock, new_side, new_lock)),
    )


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


def _identity_changes(old: Lock, new: Lock) -> Iterator[Change]:
    for key in ("name", "version", "description", "digest"):
        yield from json_changes(getattr(old, key), getattr(new, key), key)
    yield from json_changes(old.manifest.get("model", {}), new.manifest.get("model", {}), "model")


_COMPONENT_FIELDS = {  # lock field -> how the diff names it
    "version": "pinned",
    "requirement": "required",
    "compatible": "allowed",
    "distribution": "distribution",
    "source_sha256": "source",
    "objects": "objects",
}


def _component_changes(old: Lock, new: Lock) -> Iterator[Change]:
    before = {component.module: component.to_dict() for component in old.components}
    after = {component.module: component.to_dict() for component in new.components}
    for module in list(before) + [m for m in after if m not in before]:
        if module not in after:
            yield Change(module, "removed", old=before[module]["version"])
        elif module not in before:
            yield Change(module, "added", new=after[module]["version"])
        else:
            for key, shown in _COMPONENT_FIELDS.items():
                was, now = before[module][key], after[module][key]
                if was != now:
                    yield Change(f"{module} {shown}", "changed", was, now)


def _framework_changes(old: Lock, new: Lock) -> Iterator[Change]:
    yield from json_changes(old.environment.to_dict(), new.environment.to_dict())
    yield from json_changes(
        old.manifest.get("frameworks", _ABSENT) if "frameworks" in old.manifest else {},
        new.manifest.get("frameworks", _ABSENT) if "frameworks" in new.manifest else {},
        "allowed",
    )


def _file_changes(
    old: Mapping[str, FileEntry], new: Mapping[str, FileEntry]
) -> Iterator[FileChange]:
    for path in sorted(set(old) | set(new)):
        if path not in new:
            yield FileChange(path, "removed", old[path].size, None)
        elif path not in old:
            yield FileChange(path, "added", None, new[path].size)
        elif old[path].sha256 != new[path].sha256:
            yield FileChange(path, "changed", old[path].size, new[path].size)


# -- model.keras: the config and the weights ------------------------------------------------------


@dataclass(frozen=True)
class _Variable:
    path: str  # inside the h5 file
    shape: tuple[int, ...]
    dtype: Any
    offset: int | None  # of contiguous raw values inside the h5 file, else None

    @property
    def layer(self) -> str:
        group = self.path.rpartition("/vars/")[0] if "/vars/" in self.path else ""
        group = group or self.path.rpartition("/")[0]
        parts = group.split("/")
        return "/".join(p for i, p in enumerate(parts) if not (p == "layers" and i % 2 == 0))

    @property
    def variable(self) -> str:
        return self.path.rpartition("/vars/" if "/vars/" in self.path else "/")[2]


class _KerasFile:
    """A ``.keras`` zip opened for reading its config and its weights, never loaded whole."""

    WEIGHTS = "model.weights.h5"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.archive: zipfile.ZipFile | None = None
        self.descriptor: int | None = None
        self.h5: Any = None
        self.member: Any = None
        self.base = 0
        self.end = 0

    def __enter__(self) -> _KerasFile:
        try:
            self.archive = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as error:
            raise UsageError(f"cannot read it as a .keras file: {error}", path=self.path) from error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.h5 is not None:
            self.h5.close()
        if self.member is not None:
            self.member.close()
        if self.descriptor is not None:
            os.close(self.descriptor)
        if self.archive is not None:
            self.archive.close()

    def config(self) -> Any:
        assert self.archive is not None
        try:
            return json.loads(self.archive.read("config.json"))
        except (KeyError, ValueError, zipfile.BadZipFile) as error:
            raise UsageError(f"has no readable config.json: {error}", path=self.path) from error

    def variables(self) -> dict[str, _Variable]:
        import h5py

        assert self.archive is not None
        try:
            info = self.archive.getinfo(self.WEIGHTS)
        except KeyError:
            return {}
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                self.descriptor = os.open(self.path, os.O_RDONLY)
                header = os.pread(self.descriptor, 30, info.header_offset)
                if header[:4] != b"PK\x03\x04":
                    raise zipfile.BadZipFile(f"bad local header for {self.WEIGHTS}")
                skip = 30 + int.from_bytes(header[26:28], "little")
                skip += int.from_bytes(header[28:30], "little")
                self.base = info.header_offset + skip
                self.end = min(self.base + info.file_size, os.fstat(self.descriptor).st_size)
                self.member = FileWindow(self.descriptor, self.base, info.file_size)
            else:  # not written by Keras: slower, but still streamed
                self.member = self.archive.open(info)
            self.h5 = h5py.File(self.member, "r")
            found: dict[str, _Variable] = {}

            def visit(name: str, node: Any) -> None:
                if isinstance(node, h5py.Dataset):
                    raw = (
                        node.chunks is None
                        and node.compression is None
                        and isinstance(self.member, FileWindow)
                    )
                    offset = node.id.get_offset() if raw else None
                    found[name] = _Variable(name, tuple(node.shape), node.dtype, offset)

            self.h5.visititems(visit)
            return found
        except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as error:
            raise UsageError(f"cannot read {self.WEIGHTS}: {error}", path=self.path) from error

    def mapped(self, variable: _Variable, start: int, count: int) -> tuple[mmap.mmap, int]:
        """Elements ``start`` to ``start + count`` of a contiguous variable, mapped from the page
        cache with no copy: (the mapping, the byte offset of the first element in it)."""
        assert variable.offset is not None and self.descriptor is not None
        itemsize = variable.dtype.itemsize
        where = self.base + variable.offset + start * itemsize
        aligned = where - where % mmap.ALLOCATIONGRANULARITY
        length = where - aligned + count * itemsize
        if where + count * itemsize > self.end:  # the member's own bytes, nothing beyond
            raise UsageError(f"{self.WEIGHTS}: {variable.path} is cut short", path=self.path)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # one fault, not one a page
        mapping = mmap.mmap(
            self.descriptor, length, flags=flags, prot=mmap.PROT_READ, offset=aligned
        )
        return mapping, where - aligned

    def blocks(self, variable: _Variable, count: int) -> Iterator[Any]:
        """The variable's values through h5py, flattened, about ``count`` at a time."""
        import numpy as np

        dataset = self.h5[variable.path]
        if not variable.shape:
            yield np.asarray(dataset[()]).reshape(1)
            return
        row = max(1, int(np.prod(variable.shape[1:], dtype=np.int64)))
        rows = max(1, count // row)
        for start in range(0, variable.shape[0], rows):
            yield np.asarray(dataset[start : start + rows]).reshape(-1)


def _layers(config: Any) -> tuple[dict[str, Any], Any]:
    """({layer name: layer config}, the model's config without its layers)."""
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        return {}, config
    layers = inner["layers"]
    named: dict[str, Any] = {}
    for index, layer in enumerate(layers):
        name = None
        if isinstance(layer, dict):
            name = (layer.get("config") or {}).get("name") or layer.get("name")
        named[str(name) if name is not None else f"#{index}"] = layer
    rest = dict(config)
    rest["config"] = {key: value for key, value in inner.items() if key != "layers"}
    return named, rest


def _config_changes(old: Any, new: Any) -> Iterator[LayerChange]:
    before, old_rest = _layers(old)
    after, new_rest = _layers(new)
    model = tuple(json_changes(old_rest, new_rest, ignore=_IGNORED_CONFIG_KEYS))
    if model:
        yield LayerChange("(model)", "changed", model)
    for name in list(before) + [n for n in after if n not in before]:
        if name not in after:
            yield LayerChange(name, "removed")
        elif name not in before:
            yield LayerChange(name, "added")
        else:
            keys = tuple(json_changes(before[name], after[name], ignore=_IGNORED_CONFIG_KEYS))
            if keys:
                yield LayerChange(name, "changed", keys)


def _snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case``, without importing Keras."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5_names(config: Any) -> dict[str, str]:
    """{h5 group of a top-level layer: the layer's name}.

    The weights file names a layer's group after its class (``layers/dense_1``: the second Dense
    layer), in the order of ``model.layers``; the config names it as the user did (``y``).
    """
    layers = (config.get("config") or {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        return {}
    used: dict[str, int] = {}
    names: dict[str, str] = {}
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("class_name") == "InputLayer":
            continue
        base = _snake_case(str(layer.get("class_name", "")))
        if base in used:
            used[base] += 1
            base = f"{base}_{used[base]}"
        else:
            used[base] = 0
        name = (layer.get("config") or {}).get("name")
        if isinstance(name, str):
            names[base] = name
    return names


def _shown_layer(variable: _Variable, names: dict[str, str]) -> str:
    head, _, rest = variable.layer.partition("/")
    if variable.path.startswith("layers/") and head in names:
        return "/".join(part for part in (names[head], rest) if part)
    return variable.layer


def _natural(path: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _block_max(first: Any, second: Any, scratch: Any) -> float:
    """max |first - second| of two equal-length blocks, NaN if either side has a NaN."""
    import numpy as np

    out = scratch[: len(first)]
    if out.dtype == first.dtype == second.dtype:
        np.subtract(first, second, out=out)
    else:
        np.subtract(first.astype(np.float64), second.astype(np.float64), out=out)
    np.abs(out, out=out)
    return float(out.max()) if len(out) else 0.0


def _mapped_max(
    before: _KerasFile, after: _KerasFile, old: _Variable, new: _Variable, start: int, count: int
) -> float:
    """max |old - new| over one window of elements, read in place from both files."""
    import numpy as np

    exact = old.dtype == new.dtype and old.dtype.kind == "f" and old.dtype.itemsize >= 4
    step = max(1, BLOCK_BYTES // max(old.dtype.itemsize, new.dtype.itemsize))
    scratch = np.empty(min(step, count), dtype=old.dtype if exact else np.float64)
    first_map, first_at = before.mapped(old, start, count)
    second_map, second_at = after.mapped(new, start, count)
    try:
        first = np.frombuffer(first_map, dtype=old.dtype, count=count, offset=first_at)
        second = np.frombuffer(second_map, dtype=new.dtype, count=count, offset=second_at)
        largest = 0.0
        for at in range(0, count, step):
            block = _block_max(first[at : at + step], second[at : at + step], scratch)
            if block != block:
                return block
            largest = max(largest, block)
        return largest
    finally:
        del first, second  # the views go before their mappings
        first_map.close()
        second_map.close()


def _max_abs_diff(
    before: _KerasFile,
    after: _KerasFile,
    old: _Variable,
    new: _Variable,
    pool: ThreadPoolExecutor,
) -> float:
    """The largest absolute difference between two variables of one shape, streamed.

    Contiguous variables (what Keras writes) are compared where the page cache holds them,
    window by window on two threads: comparing costs about what reading does, so this keeps a
    diff near the time of reading both files, with a few windows in memory at any time."""
    import numpy as np

    total = int(np.prod(old.shape, dtype=np.int64))
    mappable = before.descriptor is not None and after.descriptor is not None
    mappable = mappable and hasattr(mmap, "PROT_READ")  # the POSIX mmap
    if mappable and old.offset is not None and new.offset is not None and total:
        window = max(1, WINDOW_BYTES // max(old.dtype.itemsize, new.dtype.itemsize))
        starts = range(0, total, window)
        if len(starts) == 1:
            return _mapped_max(before, after, old, new, 0, total)
        maxima = list(
            pool.map(
                lambda start: _mapped_max(
                    before, after, old, new, start, min(window, total - start)
                ),
                starts,
            )
        )
        return float("nan") if any(m != m for m in maxima) else max(maxima)
    count = max(1, BLOCK_BYTES // max(old.dtype.itemsize, new.dtype.itemsize))
    scratch = np.empty(count, dtype=np.float64)
    largest = 0.0
    for first, second in zip(before.blocks(old, count), after.blocks(new, count), strict=True):
        if len(first) > len(scratch):
            scratch = np.empty(len(first), dtype=np.float64)
        block = _block_max(first, second, scratch)
        if block != block:  # NaN on one side only, or different NaNs
            return block
        largest = max(largest, block)
    return largest


def _weight_changes(
    before: _KerasFile, after: _KerasFile, old_names: dict[str, str], new_names: dict[str, str]
) -> Iterator[WeightChange]:
    old, new = before.variables(), after.variables()
    with ThreadPoolExecutor(2, thread_name_prefix="bundler-diff") as pool:
        yield from _changed_weights(before, after, old, new, old_names, new_names, pool)


def _changed_weights(
    before: _KerasFile,
    after: _KerasFile,
    old: dict[str, _Variable],
    new: dict[str, _Variable],
    old_names: dict[str, str],
    new_names: dict[str, str],
    pool: ThreadPoolExecutor,
) -> Iterator[WeightChange]:
    for path in sorted(set(old) | set(new), key=_natural):
        if path not in new:
            gone = old[path]
            yield WeightChange(
                _shown_layer(gone, old_names),
                gone.variable,
                "removed",
                gone.shape,
                None,
                str(gone.dtype),
                None,
            )
            continue
        if path not in old:
            made = new[path]
            yield WeightChange(
                _shown_layer(made, new_names),
                made.variable,
                "added",
                None,
                made.shape,
                None,
                str(made.dtype),
            )
            continue
        a, b = old[path], new[path]
        layer = _shown_layer(b, new_names)
        if a.shape != b.shape or a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
            if (a.shape, a.dtype) != (b.shape, b.dtype):
                yield WeightChange(
                    layer, a.variable, "changed", a.shape, b.shape, str(a.dtype), str(b.dtype)
                )
            continue
        largest = _max_abs_diff(before, after, a, b, pool)
        if largest != 0.0 or a.dtype != b.dtype:
            yield WeightChange(
                layer,
                a.variable,
                "changed",
                a.shape,
                b.shape,
                str(a.dtype),
                str(b.dtype),
                largest,
            )


# -- golden examples ------------------------------------------------------------------------------


def _arrays(root: Path, relative: str) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(root / relative, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
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


def _example_changes(
    old_side: Side,
    old_lock: Lock,
    new_side: Side,
    new_lock: Lock,
) -> Iterator[ExampleChange]:
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
                _array_drift(_arrays(old_side.path, a.outputs), _arrays(new_side.path, b.outputs))
            )
        if inputs_changed or drift or tolerances:
            yield ExampleChange(name, "changed", inputs_changed, drift, tolerances)


__all__ = [
    "SECTIONS",
    "BundleDiff",
    "Change",
    "ExampleChange",
    "FileChange",
    "LayerChange",
    "Side",
    "WeightChange",
    "diff_bundles",
    "json_changes",
]
