"""A bundle as an OCI artifact: bundler's own media types, and reading a manifest of either format.

With ``format="bundler"`` a bundle is pushed as an OCI image manifest of our own artifact type
(the default, a CNCF ModelPack artifact, is laid out by ``bundler.registry.modelpack``)::

    artifactType  application/vnd.bundler.bundle.v1+json
    config        bundle.lock.json              application/vnd.bundler.lock.v1+json
    layers        one per file of the bundle    application/vnd.bundler.file.v1
                  (org.opencontainers.image.title: its path in the bundle)
                  bundle.sig.json / model.sig   application/vnd.bundler.signature.v1+json
    annotations   org.opencontainers.image.{title,version,created,description},
                  dev.bundler.digest

Both are one layer per file, not archives: a layer's digest *is* the file's sha256 from the lock.
In a ModelPack artifact the lock is one of the layers; ``checked_manifest`` finds it, and every
other file, by the layer's path annotation. Paths are checked like every lock path. Manifests are
parsed strictly (no duplicate keys, no NaN, bounded numbers and nesting) and type-checked field by
field; the lock and the signatures are refused when their descriptors claim more than their own
limits.
"""

from __future__ import annotations

import re
from typing import Any

from bundler import strict_json
from bundler.errors import IntegrityError, UsageError
from bundler.lock.layout import DIGEST_PATTERN, LOCK_FILENAME, LOCK_MAX_BYTES
from bundler.lock.paths import enclosing_file, unsafe_path_reason
from bundler.registry.reference import Reference

ARTIFACT_TYPE = "application/vnd.bundler.bundle.v1+json"
LOCK_MEDIA_TYPE = "application/vnd.bundler.lock.v1+json"
FILE_MEDIA_TYPE = "application/vnd.bundler.file.v1"
SIGNATURE_MEDIA_TYPE = "application/vnd.bundler.signature.v1+json"
TITLE = "org.opencontainers.image.title"


def _descriptor_problem(layer: Any) -> str | None:
    if not isinstance(layer, dict):
        return "is not an object"
    if not (isinstance(layer.get("digest"), str) and re.fullmatch(DIGEST_PATTERN, layer["digest"])):
        return "has no sha256 digest"
    size = layer.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "has no size"
    if not isinstance(layer.get("mediaType", ""), str):
        return "has a media type that is not a string"
    annotations = layer.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(value, str) for value in annotations.values()
    ):
        return "has annotations that are not strings"
    return None


def _archived(layer: dict[str, Any]) -> bool:
    """Whether a layer is a ModelPack tar layer (a folder of files), not one file."""
    from bundler.registry import modelpack

    return layer.get("mediaType", "") in modelpack.TAR_MEDIA_TYPES | modelpack.GZIP_MEDIA_TYPES


def checked_manifest(body: bytes, ref: Reference) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """(the lock's descriptor, [(bundle path, descriptor) of every other file]) from a manifest
    of either format, parsed strictly; every field push and pull use is type-checked here."""
    from bundler.lock.layout import SIGNATURE_FILENAMES
    from bundler.registry import modelpack
    from bundler.trust.signing import SIGNATURE_MAX_BYTES

    try:
        manifest = strict_json.loads(body)
    except (ValueError, RecursionError) as error:
        raise IntegrityError(
            f"the registry sent a manifest that is not valid JSON: {error}", path=str(ref)
        ) from None
    kind = manifest.get("artifactType") if isinstance(manifest, dict) else None
    if kind not in (ARTIFACT_TYPE, modelpack.ARTIFACT_TYPE):
        raise UsageError(
            f"{ref} is not a bundle (artifact type is neither {ARTIFACT_TYPE} nor "
            f"{modelpack.ARTIFACT_TYPE})"
        )
    ours = kind == ARTIFACT_TYPE
    config, layers = manifest.get("config"), manifest.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise IntegrityError("the manifest has no config or layers", path=str(ref))
    for index, layer in enumerate([config, *layers]):
        problem = _descriptor_problem(layer)
        if problem is not None:
            where = "the config" if index == 0 else f"layer {index - 1}"
            raise IntegrityError(f"the manifest's {where} {problem}", path=str(ref))
    files: list[tuple[str, Any]] = []
    lock: dict[str, Any] | None = config if ours else None
    seen: set[str] = set()
    for layer in layers:
        title = layer.get("annotations", {}).get(TITLE) if ours else modelpack.layer_path(layer)
        media_type = layer.get("mediaType", "")
        reason = unsafe_path_reason(title) if isinstance(title, str) else "is missing"
        if reason is None and (title in seen or (ours and title == LOCK_FILENAME)):
            reason = "is listed twice or names the lock"
        signature = title in SIGNATURE_FILENAMES
        if reason is None and ours and (media_type == SIGNATURE_MEDIA_TYPE) != signature:
            reason = (
                f"and its media type disagree (only {' and '.join(SIGNATURE_FILENAMES)} are "
                "signatures)"
            )
        archived = _archived(layer)
        if (
            reason is None
            and not ours
            and not (archived or media_type in modelpack.RAW_MEDIA_TYPES)
        ):
            reason = (
                f"is a {media_type!r} layer; bundler reads the ModelPack media types ending in "
                ".raw, .tar and .tar+gzip"
            )
        if reason is None and archived and (signature or title == LOCK_FILENAME):
            reason = "is an archive; the lock and signatures are single-file (.raw) layers"
        if reason is None and signature and layer["size"] > SIGNATURE_MAX_BYTES:
            limit = SIGNATURE_MAX_BYTES >> 20
            reason = f"claims {layer['size']} bytes, over the signature limit of {limit} MiB"
        if reason is not None:
            raise IntegrityError(f"a layer's path {title!r} {reason}", path=str(ref))
        seen.add(str(title))
        if title == LOCK_FILENAME:
            lock = layer
        else:
            files.append((str(title), layer))
    sent_as_files = {path for path, layer in files if not _archived(layer)}
    for path, _ in files:  # a path that is a file and a folder at once makes no folder tree
        inside = enclosing_file(path, sent_as_files | {LOCK_FILENAME})
        if inside is not None:
            raise IntegrityError(
                f"a layer's path {path!r} lies inside {inside!r}, which another layer sends as a "
                "file",
                path=str(ref),
            )
    if lock is None:
        raise UsageError(
            f"{ref} is a ModelPack artifact without a {LOCK_FILENAME} layer, so not a bundle"
        )
    if lock["size"] > LOCK_MAX_BYTES:
        raise IntegrityError(
            f"the manifest's lock claims {lock['size']} bytes, over the lock's "
            f"limit of {LOCK_MAX_BYTES >> 20} MiB",
            path=str(ref),
        )
    return lock, files
