"""Writing the lock at the end of a build: every file hashed once, the lock checked, then written.

``files_table`` walks the finished folder (anything but plain files and folders is a build error)
and hashes every file the build has not hashed already, flushing each to disk as it goes: sizes,
sha256, and per-shard digests for large files. ``write_lock`` assembles the rest: the manifest as
read, the pinned components (``component_pins``), the artifacts, the golden examples, the versions
the bundle was built with, the op libraries its graph needs, whether the build rehearses the load,
and the creation time (``SOURCE_DATE_EPOCH`` when set, so a rebuild is byte-identical). The document
is checked against the pydantic models the published schema comes from (``lock_schema``), sealed
with the digest of the document as a reader will read it (``layout.lock_digest``), then written from
the value object every reader of the lock builds (``bundler.lock.model``): what the build writes is
what a reader will read.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path
from typing import Any

from bundler import __version__
from bundler.errors import BuildError, UsageError
from bundler.files.atomic import fsync_path
from bundler.files.hashing import SHARD_SIZE, FileDigest, ProgressFactory, hash_files, metered
from bundler.lock.model import FORMAT, LOCK_FILENAME, Lock, lock_digest
from bundler.lock.paths import walk_tree
from bundler.lock.schema import Lock as LockSchema
from bundler.manifest.schema import Manifest


def write_lock(
    workdir: Path,
    manifest: Manifest,
    *,
    components: list[dict[str, Any]],
    artifacts: dict[str, str | None],
    files: dict[str, dict[str, Any]],
    examples: list[dict[str, Any]],
    keras: Any,
    rehearsal: dict[str, Any] | None = None,
    op_libraries: list[dict[str, Any]] | None = None,
) -> Lock:
    """Write ``workdir``'s lock and return it; ``files`` is ``files_table(workdir)``."""
    # checked against the models the published schema comes from, then written from the value
    # object every reader of the lock builds from the file; the digest is over that document
    checked = LockSchema.model_validate(
        {
            "format": FORMAT,
            "name": manifest.name,
            "version": manifest.version,
            "description": manifest.description,
            "digest": _UNSEALED,
            "manifest": manifest.model_dump(mode="json"),
            "components": components,
            "environment": _environment(keras),
            "artifacts": artifacts,
            "files": files,
            "metadata": manifest.metadata,
            "examples": examples,
            "created": _created(),
            "op_libraries": op_libraries or [],
            **({"rehearsal": rehearsal} if rehearsal is not None else {}),
        }
    )
    document = Lock.from_dict(checked.model_dump(mode="json")).to_dict()
    lock = Lock.from_dict({**document, "digest": lock_digest(document)})
    (workdir / LOCK_FILENAME).write_bytes(lock.to_json())
    return lock


_UNSEALED = "sha256:" + "0" * 64  # a placeholder the schema accepts, until the digest is known


def files_table(
    workdir: Path,
    on_hashing: ProgressFactory | None = None,
    known: dict[str, FileDigest | OSError] | None = None,
) -> dict[str, dict[str, Any]]:
    """The files table of ``workdir``; ``known`` holds digests already taken of final files."""
    known = known or {}
    entries = walk_tree(workdir)
    odd = [entry.path for entry in entries if entry.kind not in ("file", "dir")]
    if odd:
        raise BuildError(f"the build produced entries that are not plain files: {odd}")
    paths = [entry.path for entry in entries if entry.kind == "file" and entry.path not in known]
    pending = sum(e.size for e in entries if e.kind == "file" and e.path not in known)
    with metered(on_hashing, pending) as meter:
        # each file is flushed by the task that hashed it, while other files are still hashing
        hashed = {**known, **hash_files(workdir, paths, progress=meter, then=fsync_path)}
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(hashed):
        result = hashed[path]
        if isinstance(result, OSError):
            raise BuildError(f"cannot read {path} just written: {result}")
        files[path] = {"size": result.size, "sha256": result.sha256}
        if result.shards:
            files[path]["shards"] = {"size": SHARD_SIZE, "sha256": list(result.shards)}
    return files


def _environment(keras: Any) -> dict[str, str]:
    import numpy as np
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "bundler": __version__,
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def _created() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            moment = dt.datetime.fromtimestamp(int(epoch), tz=dt.timezone.utc)
        except (ValueError, OverflowError, OSError) as error:
            raise UsageError(
                "is not a whole number of seconds", field="SOURCE_DATE_EPOCH", value=epoch
            ) from error
    else:
        moment = dt.datetime.now(tz=dt.timezone.utc).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
