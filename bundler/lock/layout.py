"""The bundle's fixed names and its digest: what every reader needs, with no dependencies.

``bundler.lock.model`` (the lock's value object), ``bundler.verify.lock_reader`` and
``bundler.verify.checks`` build on these without pydantic; the pydantic models
(``bundler.lock.schema``) only generate the published JSON Schema and check what the build writes
(``bundler.build.lock_writer``).

**The digest names one bundle** (format ``bundler.bundle/v2``): it is ``sha256:`` and the sha256
of the canonical JSON of the whole lock document but the ``digest`` field itself and the
``PROVENANCE`` fields. So it covers every file (through the files table) *and* every field that
decides what loads and how: name, version, description, the manifest, each component's module,
pinned version, ranges, distribution, objects and sources, the framework versions the default
windows start from, the artifacts, the examples with their tolerances, the metadata, and any field
a later change adds, without anyone having to remember to add it here. Only the fields that say
where and when a bundle was built, and that nothing reads to decide a load, are left out
(``PROVENANCE``), so that a rebuild on another machine that writes the same files and the same
lock carries the same digest. A field belongs in that list only if no reader decides anything from
it; a field that differs between two builds of one manifest on one machine (a time, a duration)
must be in it, or reproducible builds (``tests/build/test_reproducible.py``) stop giving one digest.

Locks of format ``bundler.bundle/v1`` keep the digest they were written with: over the files table
alone (``files_digest``). ``lock_digest`` computes whichever a document's own format defines; a
pin of a v1 bundle therefore names its files, not its lock's other fields (a signature covers
those: it signs the lock file's sha256). The two never coincide: a v2 digest is over a document
with a string member ``format``, a files table has only object members.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from bundler.formats import Upgrade

FORMAT = "bundler.bundle/v2"
FORMAT_V1 = "bundler.bundle/v1"  # its digest covers the files table only
PROVENANCE = (
    "created",  # the build's time (SOURCE_DATE_EPOCH when set)
    "environment.bundler",  # the releases and machine that built it: the default framework
    "environment.numpy",  # windows start from environment.keras and .tensorflow, which stay in
    "environment.platform",
    "environment.python",
    "rehearsal",  # whether the build loaded it once in a fresh interpreter: how it was made, not
)  # what loads (a --check-reproducible rebuild skips it; older locks have none)
"""The lock fields (dotted paths; a field holding others leaves them all out) the digest leaves
out: where and when, and how it was checked, not what loads."""
LOCK_FILENAME = "bundle.lock.json"
SIGNATURE_FILENAME = "bundle.sig.json"  # written by `bundle sign`; like the lock, not in the table
OPENSSF_SIGNATURE_FILENAME = "model.sig"  # `bundle sign --format openssf`, or model_signing's own
SIGNATURE_FILENAMES = (SIGNATURE_FILENAME, OPENSSF_SIGNATURE_FILENAME)
LOCK_MAX_BYTES = 64 << 20
SHA256_PATTERN = r"^[0-9a-f]{64}$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
# A component is found on sys.path by its dotted name, also by `verify`, which must not be
# steered outside sys.path by a name like '/etc.x' or '..'.
MODULE_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
MODULE_MAX_LENGTH = 256
# Where an object is defined, as entry points write it: "module:qualname" (the module is found by
# verify the same way, so it obeys MODULE_PATTERN; the qualname is attributes from there).
OBJECT_REF_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
ARTIFACT_DEFAULTS: dict[str, str | None] = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "examples": None,
}


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def files_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """The digest of a ``bundler.bundle/v1`` lock: sha256 over the canonical JSON of the files
    table alone."""
    table = {
        path: {
            "sha256": entry["sha256"],
            "size": entry["size"],
            **({"shards": entry["shards"]} if entry.get("shards") is not None else {}),
        }
        for path, entry in files.items()
    }
    return "sha256:" + hashlib.sha256(canonical_json(table)).hexdigest()


def digest_scope(document: Mapping[str, Any]) -> dict[str, Any]:
    """What the digest of a v2 lock covers: the document without ``digest`` and ``PROVENANCE``
    (a copy: ``document`` is left as it is)."""
    covered = {key: value for key, value in document.items() if key != "digest"}
    for path in PROVENANCE:
        *parents, last = path.split(".")
        holder: Any = covered
        for part in parents:  # copy each level before a key is taken out of it
            inner = holder.get(part) if isinstance(holder, dict) else None
            if not isinstance(inner, dict):
                break
            holder[part] = dict(inner)
            holder = holder[part]
        else:
            if isinstance(holder, dict):
                holder.pop(last, None)
    return covered


def lock_digest(document: Mapping[str, Any]) -> str:
    """The digest a lock document must carry, as its own ``format`` defines it (see the module
    docstring): over the whole lock but provenance, or, for ``bundler.bundle/v1``, over the files
    table alone."""
    if digest_covers(document.get("format")) == "files":
        return files_digest(document["files"])
    return "sha256:" + hashlib.sha256(canonical_json(digest_scope(document))).hexdigest()


def digest_covers(format: object) -> str:
    """What the digest of a lock of ``format`` names: ``"files"`` (the files table alone) for
    ``bundler.bundle/v1`` and before, ``"lock"`` (all but provenance) from v2 on."""
    match = re.fullmatch(r"bundler\.bundle/v(\d{1,6})", format) if isinstance(format, str) else None
    return "files" if match is not None and int(match[1]) <= 1 else "lock"


def _v1_to_v2(document: dict[str, Any]) -> dict[str, Any]:
    """A v1 lock read as v2: every field means what it meant, and its digest keeps its own
    meaning (``lock_digest`` reads the format the lock was written in)."""
    return {**document, "format": FORMAT}


# format -> function upgrading a lock of that format to the next one (see bundler.formats).
LOCK_UPGRADES: dict[str, Upgrade] = {FORMAT_V1: _v1_to_v2}
