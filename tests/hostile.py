"""Helpers that forge hostile bundles: an attacker who can write the whole bundle folder.

Such an attacker rewrites the lock to match whatever they put in the folder (sizes, sha256, the
digest), so integrity verification passes; only a signature, or the loader's own guards, stop them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bundler.build.lock_writer import files_table
from bundler.lock.model import LOCK_FILENAME, SIGNATURE_FILENAME, lock_digest
from bundler.lock.paths import walk_tree


def edit_lock(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the lock, then re-seal it: the digest matches the edited lock (as its
    format defines the digest)."""
    path = root / LOCK_FILENAME
    lock = json.loads(path.read_text())
    change(lock)
    with contextlib.suppress(ValueError):  # NaN, a lone surrogate: no digest of it exists
        lock["digest"] = lock_digest(lock)
    path.write_text(json.dumps(lock, indent=2))


def reseal(root: Path) -> None:
    """Rewrite the files table from what is in the folder now, so `verify` passes again."""

    def rehash(lock: dict[str, Any]) -> None:
        files = {}
        for entry in walk_tree(root):
            if entry.kind == "file" and entry.path not in (LOCK_FILENAME, SIGNATURE_FILENAME):
                data = (root / entry.path).read_bytes()
                files[entry.path] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        lock["files"] = files

    edit_lock(root, rehash)


def add_sealed_file(root: Path, rel: str, size: int, at: int = 0, data: bytes = b"") -> Path:
    """Add a file of ``size`` bytes (sparse, with ``data`` written at ``at``) and seal it into the
    lock as a build records it (shard table included): large files without the disk they'd cost."""
    path = root / rel
    with path.open("wb") as stream:
        stream.truncate(size)
        stream.seek(at)
        stream.write(data)
    entry = files_table(path.parent)[path.name]
    edit_lock(root, lambda lock: lock["files"].update({rel: entry}))
    return path


def _rewrite_keras_member(root: Path, name: str, transform: Callable[[bytes], bytes]) -> None:
    """Rewrite one member of model.keras (the others untouched), then reseal the lock."""
    path = root / "model.keras"
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for info, data in members:
            out.writestr(info, transform(data) if info.filename == name else data)
    path.write_bytes(buffer.getvalue())
    reseal(root)


def edit_weights(root: Path, change: Callable[[Any], None]) -> None:
    """Change model.weights.h5 inside model.keras with h5py (``change`` gets the open file), then
    reseal the lock."""
    import h5py

    with zipfile.ZipFile(root / "model.keras") as archive:
        buffer = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(buffer, "r+") as weights:
        change(weights)
    replace_keras_member(root, "model.weights.h5", buffer.getvalue())


def edit_keras_config(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change config.json inside model.keras in place, then reseal the lock."""

    def transform(data: bytes) -> bytes:
        config = json.loads(data)
        change(config)
        return json.dumps(config).encode()

    _rewrite_keras_member(root, "config.json", transform)


def replace_keras_member(root: Path, name: str, data: bytes) -> None:
    _rewrite_keras_member(root, name, lambda _: data)


def find_objects(node: Any, **match: Any) -> list[dict[str, Any]]:
    """Every serialized Keras object in a config whose keys equal ``match``."""
    found = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if all(current.get(k) == v for k, v in match.items()):
                found.append(current)
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found
