"""The bundle's fixed names and its digest: what every reader needs, with no dependencies.

``bundler.lock`` (the lock's value object), ``bundler.lock_reader`` and ``bundler.verify`` build
on these without pydantic; the pydantic models (``bundler.lock_schema``) only generate the
published JSON Schema and check what the build writes (``bundler.lock_writer``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .formats import Upgrade

FORMAT = "bundler.bundle/v1"
# format -> function upgrading a lock of that format to the next one (see bundler.formats).
LOCK_UPGRADES: dict[str, Upgrade] = {}
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


def files_digest(files: dict[str, dict[str, Any]]) -> str:
    """The bundle digest: sha256 over the canonical JSON of the files table."""
    table = {
        path: {
            "sha256": entry["sha256"],
            "size": entry["size"],
            **({"shards": entry["shards"]} if entry.get("shards") is not None else {}),
        }
        for path, entry in files.items()
    }
    return "sha256:" + hashlib.sha256(canonical_json(table)).hexdigest()
