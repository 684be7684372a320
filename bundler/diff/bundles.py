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

This module opens the two sides and fills the sections; the records it returns are
``bundler.diff.changes``, the sections the locks decide are ``bundler.diff.lock``, and the config
and weights of ``model.keras`` are ``bundler.diff.model`` (reading the weights through
``bundler.diff.keras_weights``).
"""

from __future__ import annotations

import json
from pathlib import Path

from bundler.diff.changes import (
    SECTIONS,
    BundleDiff,
    Change,
    ExampleChange,
    FileChange,
    LayerChange,
    Side,
    WeightChange,
    json_changes,
)
from bundler.diff.keras_weights import KerasFile
from bundler.diff.lock import (
    component_changes,
    example_changes,
    file_changes,
    framework_changes,
    identity_changes,
)
from bundler.diff.model import model_changes
from bundler.errors import UsageError
from bundler.lock.layout import FORMAT, FORMAT_V1, LOCK_FILENAME, LOCK_MAX_BYTES, lock_digest
from bundler.lock.model import Lock
from bundler.lock.paths import read_plain_file
from bundler.registry.reference import is_reference


def _open_side(reference: str | Path, label: str | None) -> tuple[Side, Lock]:
    from bundler.verify.lock_reader import bundle_root, read_lock

    text = str(reference)
    if is_reference(text):
        from bundler.registry.api import pull

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
    the lock it is in: the same bundle, decided from the two lock files alone.

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
        if not isinstance(document, dict) or document.get("format") not in (FORMAT, FORMAT_V1):
            return None
        documents.append({key: value for key, value in document.items() if key != "created"})
        label = labels[index] if labels else str(reference)
        sides.append((label, root))
    lock = documents[0]
    if documents[1] != lock:
        return None
    try:
        if lock_digest(lock) != lock["digest"]:
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
        config, weights = model_changes(
            KerasFile(old_side.path, old_keras, old_files[old_keras].size),
            KerasFile(new_side.path, new_keras, new_files[new_keras].size),
        )
    return BundleDiff(
        old=old_side,
        new=new_side,
        identity=tuple(identity_changes(old_lock, new_lock)),
        components=tuple(component_changes(old_lock, new_lock)),
        frameworks=tuple(framework_changes(old_lock, new_lock)),
        files=tuple(file_changes(old_files, new_files)),
        config=config,
        weights=weights,
        metadata=tuple(json_changes(old_lock.metadata, new_lock.metadata)),
        examples=tuple(example_changes(old_side, old_lock, new_side, new_lock)),
    )


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
