"""Signatures in the OpenSSF model-signing format (``model.sig``), written and checked natively.

``model_signing`` (sigstore/model-transparency) signs a model folder with an elliptic-curve key
as a Sigstore bundle whose DSSE envelope carries an in-toto statement::

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"publicKey": {"hint": "<hex sha256 of the public key's PEM>"},
                              "tlogEntries": []},
     "dsseEnvelope": {"payloadType": "application/vnd.in-toto+json",
                      "payload": "<base64 of the statement>",
                      "signatures": [{"sig": "<base64 ECDSA over PAE(payload)>", "keyid": ""}]}}

    statement: {"_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": ..., "digest": {"sha256": <sha256 over the resource digests,
                                                              in order>}}],
                "predicateType": "https://model_signing/signature/v1.0",
                "predicate": {"serialization": {"method": "files", "hash_type": "sha256",
                                                "allow_symlinks": false, "ignore_paths": [...]},
                              "resources": [{"name": path, "algorithm": "sha256",
                                             "digest": hex}, ...]}}

A bundle's files already have their sha256 in the lock, so nothing is hashed again here: signing
lists the lock's files and the lock itself; checking requires the resources to be exactly those
(every file of the lock, the lock's own bytes, and ``bundle.sig.json`` if it was signed too),
after the DSSE signature is checked with a trusted key. ``bundle verify`` then checks the files on
disk against the lock, so the two steps together are what ``model_signing verify`` checks. Only
``cryptography`` is needed, so a verify-only install reads ``model.sig`` without the
``model_signing`` package and its Sigstore dependencies.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from bundler import strict_json
from bundler.errors import SignatureError
from bundler.lock.layout import (
    LOCK_FILENAME,
    LOCK_MAX_BYTES,
    OPENSSF_SIGNATURE_FILENAME,
    SIGNATURE_FILENAME,
)
from bundler.lock.paths import read_plain_file

__all__ = ["OPENSSF_SIGNATURE_FILENAME", "document_for", "signed_key_id", "verify"]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# what model_signing itself leaves out of a folder's signature, and our own signature file
IGNORED = [OPENSSF_SIGNATURE_FILENAME, SIGNATURE_FILENAME, ".git", ".gitattributes", ".github"]
IGNORED += [".gitignore"]
MAX_BYTES = 1 << 20
_CURVE_HASHES = {"secp256r1": "SHA256", "secp384r1": "SHA384", "secp521r1": "SHA512"}


def pae(payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature is over."""
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def key_hint(public_key: Any) -> str:
    """model_signing's key hint: the hex sha256 of the public key's PEM (SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def _ecdsa(public_key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA(getattr(hashes, _CURVE_HASHES[public_key.curve.name])())


def _lock_of(root: Path) -> tuple[bytes, dict[str, Any]]:
    # The lock's bytes and the files table read from those same bytes (not
    # ``bundler.lock.model.Lock``, which would read the file a second time): the signature lists
    # exactly what it hashes.
    content = read_plain_file(root / LOCK_FILENAME, LOCK_MAX_BYTES)
    lock = strict_json.loads(content)
    if not isinstance(lock, dict) or not isinstance(lock.get("files"), dict):
        raise ValueError("the lock has no files table")
    return content, lock


def _resources(root: Path) -> tuple[str, list[dict[str, str]]]:
    """(the bundle's name, the resources a signature of it lists), sorted by path."""
    content, lock = _lock_of(root)
    digests = {path: str(entry["sha256"]) for path, entry in lock["files"].items()}
    digests[LOCK_FILENAME] = hashlib.sha256(content).hexdigest()
    resources = [
        {"name": path, "algorithm": "sha256", "digest": digest}
        for path, digest in sorted(digests.items())
    ]
    return str(lock.get("name")), resources


def _root_digest(resources: list[dict[str, str]]) -> str:
    hasher = hashlib.sha256()
    for resource in resources:
        hasher.update(bytes.fromhex(resource["digest"]))
    return hasher.hexdigest()


def document_for(root: Path, private_key: Any) -> dict[str, Any]:
    """The ``model.sig`` document signing the (verified) bundle at ``root`` with an EC key."""
    name, resources = _resources(root)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": _root_digest(resources)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": IGNORED,
            },
            "resources": resources,
        },
    }
    payload = json.dumps(statement, indent=2).encode("utf-8")
    signature = private_key.sign(pae(payload), _ecdsa(private_key.public_key()))
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key_hint(private_key.public_key())},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }


def _field(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict) or key not in document:
            raise ValueError(f"has no {'.'.join(keys)}")
        document = document[key]
    return document


def _read(root: Path) -> tuple[str | None, bytes, bytes]:
    """(the key hint or None, the DSSE payload, the signature) of ``model.sig``, shape-checked."""
    document = strict_json.loads(read_plain_file(root / OPENSSF_SIGNATURE_FILENAME, MAX_BYTES))
    if _field(document, "mediaType") != BUNDLE_MEDIA_TYPE:
        raise ValueError(f"is not a Sigstore bundle of media type {BUNDLE_MEDIA_TYPE}")
    if _field(document, "dsseEnvelope", "payloadType") != PAYLOAD_TYPE:
        raise ValueError(f"does not carry an in-toto statement ({PAYLOAD_TYPE})")
    payload = _field(document, "dsseEnvelope", "payload")
    signatures = _field(document, "dsseEnvelope", "signatures")
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise ValueError("must carry exactly one DSSE signature")
    sig = _field(signatures[0], "sig")
    material = _field(document, "verificationMaterial")
    public_key = material.get("publicKey") if isinstance(material, dict) else None
    hint = public_key.get("hint") if isinstance(public_key, dict) else None
    if not isinstance(payload, str) or not isinstance(sig, str):
        raise ValueError("has a payload or signature that is not base64 text")
    if hint is not None and not isinstance(hint, str):
        raise ValueError("has a key hint that is not text")
    decoded = base64.b64decode(payload, validate=True), base64.b64decode(sig, validate=True)
    return hint, *decoded


def _mismatch(root: Path, payload: bytes) -> str | None:
    """How the signed statement differs from the bundle as it is now, or None."""
    statement = strict_json.loads(payload)
    if _field(statement, "_type") != STATEMENT_TYPE:
        return "it is not an in-toto v1 statement"
    if _field(statement, "predicateType") != PREDICATE_TYPE:
        return f"its predicate is not {PREDICATE_TYPE}"
    serialization = _field(statement, "predicate", "serialization")
    if _field(serialization, "method") != "files" or serialization.get("hash_type") != "sha256":
        return "it hashes by shards or not with sha256; bundler checks one sha256 per file"
    signed = _field(statement, "predicate", "resources")
    subjects = _field(statement, "subject")
    if not isinstance(signed, list) or not all(
        isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("name", "digest"))
        for item in signed
    ):
        return "its resources are not a list of names and digests"
    if not isinstance(subjects, list) or len(subjects) != 1:
        return "it does not have exactly one subject"
    try:
        root_digest = _root_digest(signed)
    except ValueError:
        return "a resource digest is not hex"
    if _field(subjects[0], "digest", "sha256") != root_digest:
        return "its subject digest does not match its resources"
    have = {item["name"]: item["digest"] for item in signed}
    if len(have) != len(signed):
        return "it lists a file twice"
    want = {item["name"]: item["digest"] for item in _resources(root)[1]}
    if SIGNATURE_FILENAME in have and (root / SIGNATURE_FILENAME).is_file():
        sibling = read_plain_file(root / SIGNATURE_FILENAME, MAX_BYTES)
        want[SIGNATURE_FILENAME] = hashlib.sha256(sibling).hexdigest()
    missing = sorted(set(want) - set(have))
    if missing:
        return f"it does not cover {missing[0]}"
    extra = sorted(set(have) - set(want))
    if extra:
        return f"it covers {extra[0]}, which the bundle does not list"
    changed = sorted(name for name in want if want[name] != have[name])
    return f"{changed[0]} differs" if changed else None


def signed_key_id(root: Path) -> str:
    """The key id ``model.sig`` names, after checking it is well formed and lists this very
    bundle (no key is needed for that: it is what push checks before sending it)."""
    path = root / OPENSSF_SIGNATURE_FILENAME
    try:
        hint, payload, _ = _read(root)
        problem = _mismatch(root, payload)
    except (OSError, ValueError, RecursionError) as error:
        raise SignatureError(f"is not a valid model signature: {error}", path=path) from error
    if problem is not None:
        raise SignatureError(f"the signature is for another bundle ({problem})", path=path)
    return f"sha256:{hint}" if hint else "sha256:unknown"


def verify(root: Path, trusted: list[Any]) -> str:
    """Check ``model.sig`` with the trusted EC public keys; returns the signing key's id."""
    from cryptography.exceptions import InvalidSignature

    path = root / OPENSSF_SIGNATURE_FILENAME
    try:
        hint, payload, signature = _read(root)
    except (OSError, ValueError, RecursionError) as error:
        raise SignatureError(f"is not a valid model signature: {error}", path=path) from error
    candidates = [key for key in trusted if hint is None or key_hint(key) == hint]
    if not candidates:
        raise SignatureError(
            f"signed by key sha256:{hint}, which is not among the trusted keys", path=path
        )
    for key in candidates:
        try:
            key.verify(signature, pae(payload), _ecdsa(key))
        except InvalidSignature:
            continue
        break
    else:
        raise SignatureError(
            "the signature does not match its statement (forged or damaged)", path=path
        )
    try:
        problem = _mismatch(root, payload)
    except (OSError, ValueError, RecursionError) as error:
        raise SignatureError(f"cannot check the signed statement: {error}", path=path) from error
    if problem is not None:
        raise SignatureError(f"the signature is for another bundle ({problem})", path=path)
    return f"sha256:{key_hint(key)}"
