"""Pushing a bundle: verified first, then its files (and signatures) as layers, then the manifest.

The files go up as they are, one layer per file, so a layer's digest is the file's sha256 from the
lock and a registry deduplicates unchanged files between versions. A signature travels as a layer
too, once checked to vouch for this very bundle.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from bundler.errors import SignatureError, UsageError
from bundler.lock.layout import LOCK_FILENAME, SIGNATURE_FILENAME, canonical_json
from bundler.registry.artifact import (
    ARTIFACT_TYPE,
    FILE_MEDIA_TYPE,
    LOCK_MEDIA_TYPE,
    SIGNATURE_MEDIA_TYPE,
    TITLE,
)
from bundler.registry.client import MANIFEST_MEDIA_TYPE, RegistryClient
from bundler.registry.reference import Reference, parse_reference
from bundler.registry.transfer import OnStage, PushFormat, PushResult


def _signatures_to_push(root: Path) -> dict[Path, str]:
    """{signature file: its key id} for each signature the bundle carries (``bundle.sig.json``,
    ``model.sig``): each checked to be well-formed and to vouch for this very bundle (a stale
    signature would only fail at every pull)."""
    from bundler.lock.layout import OPENSSF_SIGNATURE_FILENAME
    from bundler.trust.openssf import signed_key_id
    from bundler.trust.signing import read_signature, statement_mismatch

    found: dict[Path, str] = {}
    path = root / SIGNATURE_FILENAME
    if os.path.lexists(path):
        document = read_signature(root)
        field = statement_mismatch(root, document["statement"])
        if field is not None:
            raise SignatureError(
                f"the signature is for another bundle or an earlier lock ({field} differs); "
                "sign the bundle again before pushing it",
                path=path,
            )
        found[path] = str(document["key_id"])
    path = root / OPENSSF_SIGNATURE_FILENAME
    if os.path.lexists(path):
        found[path] = signed_key_id(root)
    return found


PUSH_FORMATS = ("modelpack", "bundler")


def push(
    bundle: str | Path,
    reference: str,
    *,
    insecure: bool = False,
    format: PushFormat = "modelpack",
    on_stage: OnStage | None = None,
) -> PushResult:
    """Verify ``bundle``, then push it (with its signatures, if signed); returns the manifest
    digest and where it went. ``format`` is ``"modelpack"`` (a CNCF ModelPack artifact, see
    ``bundler.registry.modelpack``) or ``"bundler"`` (the lock as the config blob); both pull alike.
    ``on_stage`` is told of ``verifying`` and ``uploading``, with their bytes."""
    from bundler.registry import modelpack
    from bundler.verify.checks import require_intact
    from bundler.verify.lock_reader import bundle_root

    if format not in PUSH_FORMATS:
        raise UsageError(
            f"unknown push format {format!r}; expected one of {', '.join(PUSH_FORMATS)}"
        )
    root = bundle_root(bundle)
    hashing = None if on_stage is None else functools.partial(on_stage, "verifying")
    refusal = "the bundle failed verification; refusing to push it"
    lock = require_intact(root, refusal, on_hashing=hashing).lock
    assert lock is not None  # integrity_ok implies a lock
    signatures = _signatures_to_push(root)
    ref = parse_reference(reference)
    if ref.digest:
        raise UsageError("push to a tag, not a digest (the digest is computed)", path=reference)
    tag = ref.tag or lock.version.replace("+", "_")
    client = RegistryClient(ref, insecure)
    client.ping()
    ours = format == "bundler"

    def layer(path: Path, name: str, media_type: str, digest: str, size: int) -> dict[str, Any]:
        annotations = {TITLE: name} if ours else {modelpack.FILEPATH: name, TITLE: name}
        descriptor = {"mediaType": media_type, "digest": digest, "size": size}
        client.put_blob(path, {**descriptor, "annotations": annotations})
        return {**descriptor, "annotations": annotations}

    def sha256_of(path: Path) -> tuple[str, int]:
        content = path.read_bytes()
        return "sha256:" + hashlib.sha256(content).hexdigest(), len(content)

    lock_digest, lock_size = sha256_of(root / LOCK_FILENAME)
    if on_stage is not None:  # the files, the lock and the signatures
        sizes = sum(os.stat(path).st_size for path in signatures)
        client.meter = on_stage("uploading", lock_size + lock.total_size + sizes)
    layers = []
    if not ours:  # the lock is a file among the others
        layers.append(
            layer(
                root / LOCK_FILENAME, LOCK_FILENAME, modelpack.WEIGHT_CONFIG, lock_digest, lock_size
            )
        )
    for name, entry in sorted(lock.files.items()):
        media_type = FILE_MEDIA_TYPE if ours else modelpack.media_type_of(name)
        layers.append(layer(root / name, name, media_type, "sha256:" + entry.sha256, entry.size))
    files = len(lock.files)
    for path in signatures:
        digest, size = sha256_of(path)
        layers.append(
            layer(path, path.name, SIGNATURE_MEDIA_TYPE if ours else modelpack.DOC, digest, size)
        )
    if ours:
        config = {"mediaType": LOCK_MEDIA_TYPE, "digest": lock_digest, "size": lock_size}
        client.put_blob(root / LOCK_FILENAME, config)
    else:
        document = modelpack.config_document(lock, [entry["digest"] for entry in layers])
        encoded = canonical_json(document)
        config = {
            "mediaType": modelpack.CONFIG_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(encoded).hexdigest(),
            "size": len(encoded),
        }
        client.meter = None  # a small document of our own, not among the bytes announced
        client.put_bytes(encoded, config)
    annotations = {
        "org.opencontainers.image.title": lock.name,
        "org.opencontainers.image.version": lock.version,
        "org.opencontainers.image.created": lock.created,
        "dev.bundler.digest": lock.digest,
    }
    if lock.description:
        annotations["org.opencontainers.image.description"] = lock.description
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE if ours else modelpack.ARTIFACT_TYPE,
        "config": config,
        "layers": layers,
        "annotations": annotations,
    }
    body = canonical_json(manifest)
    client.put_manifest(body, tag)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    where = Reference(ref.host, ref.repository, tag, None)
    return PushResult(
        reference=f"{where}@{digest}",
        tag=str(where),
        digest=digest,
        bundle_digest=lock.digest,
        format=format,
        file_count=files,
        total_size=lock.total_size,
        signed_by=next(iter(signatures.values()), None),
    )
