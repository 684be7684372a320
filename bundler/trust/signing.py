"""Detached Ed25519 signatures over a bundle: who vouches for this exact content.

``bundle.sig.json`` sits beside ``bundle.lock.json`` and, like the lock, is not in the files
table (signing must not change the digest it signs)::

    {
      "format": "bundler.signature/v1",
      "algorithm": "ed25519",
      "key_id": "sha256:<hex of the raw 32-byte public key>",
      "statement": {"type": "bundler.signature/v1", "name": ..., "version": ...,
                    "digest": "sha256:<bundle digest>", "lock_sha256": "<hex of the lock file>"},
      "signature": "<base64 of Ed25519(canonical_json(statement))>"
    }

The statement binds the bundle digest (which names one bundle: every file and every field of the
lock but provenance, or every file for a ``bundler.bundle/v1`` lock) *and* the lock file's own
bytes, so everything in the lock is vouched for, provenance and older locks' fields included.
A signature is checked before anything else in the bundle is believed.

``bundle sign --format openssf`` writes ``model.sig`` instead, in the OpenSSF model-signing format
(``bundler.trust.openssf``), with an EC P-256 key (``bundle keygen --type ec-p256``); ``bundle
verify --key`` checks whichever signature the key's type fits: Ed25519 keys check
``bundle.sig.json``, EC keys ``model.sig``. Ours stays the default: one small JSON statement that
binds the lock's bytes and the bundle digest, readable without a Sigstore bundle, a DSSE envelope
and an in-toto statement around it, and Ed25519 keys have no curve or hash to choose.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bundler import strict_json
from bundler.errors import SignatureError, UsageError
from bundler.files.atomic import temporary_beside
from bundler.lock.layout import (
    DIGEST_PATTERN,
    LOCK_FILENAME,
    LOCK_MAX_BYTES,
    OPENSSF_SIGNATURE_FILENAME,
    SIGNATURE_FILENAME,
    canonical_json,
)
from bundler.lock.paths import read_plain_file
from bundler.problems import Problem

SIGNATURE_FORMAT = "bundler.signature/v1"
SIGN_FORMATS = ("bundler", "openssf")
KEY_TYPES = ("ed25519", "ec-p256")


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as error:  # pragma: no cover - cryptography is a dependency
        raise UsageError("signing needs the 'cryptography' package") from error
    return serialization, ed25519


def _is_ec(key: Any) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ec

    return isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey))


def key_id(public_key: Any) -> str:
    """sha256 of the raw Ed25519 key; for an EC key, model_signing's hint (sha256 of its PEM)."""
    if _is_ec(public_key):
        from bundler.trust.openssf import key_hint

        return "sha256:" + key_hint(public_key)
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def keygen(prefix: str | Path, *, force: bool = False, type: str = "ed25519") -> tuple[Path, Path]:
    """Write PREFIX.pem (private, mode 0600) and PREFIX.pub.pem (public); ``type`` is
    ``"ed25519"`` (bundler's signatures) or ``"ec-p256"`` (OpenSSF model signatures)."""
    serialization, ed25519 = _crypto()
    if type not in KEY_TYPES:
        raise UsageError(f"unknown key type {type!r}; expected one of {', '.join(KEY_TYPES)}")
    private_path = Path(f"{prefix}.pem")
    public_path = Path(f"{prefix}.pub.pem")
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise UsageError("already exists; pass --force to overwrite it", path=path)
    if type == "ec-p256":
        from cryptography.hazmat.primitives.asymmetric import ec

        key: Any = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def _load_key(source: Any, private: bool) -> Any:
    """An Ed25519 key, or an EC key on a curve model_signing accepts (P-256, P-384, P-521)."""
    serialization, ed25519 = _crypto()
    from cryptography.hazmat.primitives.asymmetric import ec

    wanted = (
        (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)
        if private
        else (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)
    )
    if isinstance(source, wanted):
        return source
    if isinstance(source, (str, Path)):
        try:
            data = Path(source).read_bytes()
        except OSError as error:
            raise UsageError(f"cannot read key: {error.strerror}", path=source) from error
        where: Any = source
    elif isinstance(source, bytes):
        data, where = source, None
    else:
        raise UsageError(
            f"a key is a PEM file path, PEM bytes or a key object, not {type(source).__name__}"
        )
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as error:
        kind = "private" if private else "public"
        raise UsageError(f"is not a PEM {kind} key: {error}", path=where) from error
    if not isinstance(key, wanted) or (
        _is_ec(key) and key.curve.name not in ("secp256r1", "secp384r1", "secp521r1")
    ):
        raise UsageError(
            "is not an Ed25519 key (bundler's signatures) nor an EC P-256/384/521 key "
            "(OpenSSF model signatures)",
            path=where,
        )
    return key


SIGNATURE_MAX_BYTES = 1 << 20


def _statement_of(lock_bytes: bytes) -> dict[str, Any]:
    # Read from the very bytes the statement hashes, not through ``bundler.lock.model.Lock``:
    # checking a signature must say "another bundle" even of a lock that no longer validates.
    lock = strict_json.loads(lock_bytes)
    if not isinstance(lock, dict):
        raise ValueError("the lock is not a JSON object")
    return {
        "type": SIGNATURE_FORMAT,
        "name": lock.get("name"),
        "version": lock.get("version"),
        "digest": lock.get("digest"),
        "lock_sha256": hashlib.sha256(lock_bytes).hexdigest(),
    }


def _statement(root: Path) -> dict[str, Any]:
    return _statement_of(read_plain_file(root / LOCK_FILENAME, LOCK_MAX_BYTES))


def sign_bundle(bundle: str | Path, private_key: Any, *, format: str = "bundler") -> str:
    """Sign a verified bundle; writes bundle.sig.json (``format="bundler"``, an Ed25519 key) or
    model.sig (``format="openssf"``, an EC key) atomically and returns the key id."""
    from bundler.verify.checks import require_intact

    if format not in SIGN_FORMATS:
        raise UsageError(f"unknown signature format {format!r}; expected one of bundler, openssf")
    root = Path(bundle)
    require_intact(root, "refusing to sign a bundle that fails verification", SignatureError)
    key = _load_key(private_key, private=True)
    if format == "openssf":
        if not _is_ec(key):
            raise UsageError(
                "OpenSSF model signatures need an EC key (bundle keygen --type ec-p256)",
                path=private_key if isinstance(private_key, (str, Path)) else None,
            )
        from bundler.trust.openssf import document_for

        signed = document_for(root, key)
        _write_beside(root, OPENSSF_SIGNATURE_FILENAME, json.dumps(signed) + "\n")
        return key_id(key.public_key())
    if _is_ec(key):
        raise UsageError(
            "bundler's own signatures use Ed25519 keys; sign with --format openssf for an EC key",
            path=private_key if isinstance(private_key, (str, Path)) else None,
        )
    statement = _statement(root)
    document = {
        "format": SIGNATURE_FORMAT,
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "statement": statement,
        "signature": base64.b64encode(key.sign(canonical_json(statement))).decode("ascii"),
    }
    _write_beside(root, SIGNATURE_FILENAME, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return str(document["key_id"])


def _write_beside(root: Path, name: str, text: str) -> None:
    """Write ``root/name`` through a temporary file beside the bundle, then rename it in."""
    # Written beside the bundle, not inside it: a crash must not leave an extra file that would
    # make the bundle fail verification; O_EXCL | O_NOFOLLOW so a planted link is never followed.
    temporary = temporary_beside(root)  # named as a build names its own, so it is swept
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        with os.fdopen(os.open(temporary, flags, 0o644), "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, root / name)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise SignatureError(f"cannot write the signature: {error.strerror}", path=root) from error


STATEMENT_KEYS = ("type", "name", "version", "digest", "lock_sha256")
_SIGNATURE_KEYS = {"format", "algorithm", "key_id", "statement", "signature"}


def _shape_problem(document: Any) -> str | None:
    """What is wrong with a parsed signature file's shape and types, or None."""
    if not isinstance(document, dict):
        return "not a JSON object"
    if document.get("format") != SIGNATURE_FORMAT or document.get("algorithm") != "ed25519":
        return "unknown signature format"
    if set(document) != _SIGNATURE_KEYS:
        return f"expected exactly the keys {', '.join(sorted(_SIGNATURE_KEYS))}"
    signer, statement, signature = document["key_id"], document["statement"], document["signature"]
    if not isinstance(signer, str) or not re.fullmatch(DIGEST_PATTERN, signer):
        return "'key_id' must be sha256: and 64 hex digits"
    if not isinstance(signature, str):
        return "'signature' must be a base64 string"
    if not isinstance(statement, dict) or set(statement) != set(STATEMENT_KEYS):
        return f"'statement' must be an object with the keys {', '.join(STATEMENT_KEYS)}"
    if not all(isinstance(statement[key], str) for key in STATEMENT_KEYS):
        return "every field of 'statement' must be a string"
    return None


def read_signature(bundle: str | Path) -> dict[str, Any]:
    """``bundle.sig.json``, parsed strictly and type-checked; SignatureError if absent or bad."""
    path = Path(bundle) / SIGNATURE_FILENAME
    if not os.path.lexists(path):
        raise SignatureError("the bundle is not signed (a signature is required)", path=path)
    try:
        document = strict_json.loads(read_plain_file(path, SIGNATURE_MAX_BYTES))
        problem = _shape_problem(document)
        if problem is not None:
            raise ValueError(problem)
        base64.b64decode(document["signature"], validate=True)
    except (OSError, ValueError, RecursionError) as error:
        raise SignatureError(f"is not a valid signature file: {error}", path=path) from error
    return dict(document)


def statement_mismatch(bundle: str | Path, statement: dict[str, Any]) -> str | None:
    """Which field of a signed statement the bundle as it is now does not match, or None."""
    try:
        actual = _statement(Path(bundle))
    except (OSError, ValueError, RecursionError) as error:
        raise SignatureError(
            f"cannot read the lock to check the signature: {error}",
            path=Path(bundle) / SIGNATURE_FILENAME,
        ) from error
    return next((key for key in STATEMENT_KEYS if statement.get(key) != actual[key]), None)


def signature_problem(bundle: str | Path, error: SignatureError) -> Problem:
    """A failed signature check as a ``signature`` problem of the bundle's verify report, by
    the signature file it is about (relative to the bundle, as every problem's path is)."""
    where = SIGNATURE_FILENAME
    if error.path is not None:
        with contextlib.suppress(ValueError):
            where = Path(error.path).relative_to(bundle).as_posix()
    return Problem(where, "signature", error.message)


def verify_signature(bundle: str | Path, trusted_keys: Iterable[Any] | Any) -> str:
    """Check the bundle's signature against the trusted public keys; returns the signing key's
    id. Ed25519 keys check bundle.sig.json, EC keys model.sig (the OpenSSF format); one valid
    signature by a trusted key is enough."""
    root = Path(bundle)
    keys = (
        [trusted_keys]
        if isinstance(trusted_keys, (str, Path, bytes)) or not isinstance(trusted_keys, Iterable)
        else list(trusted_keys)
    )
    loaded = [_load_key(source, private=False) for source in keys]
    if not loaded:
        raise UsageError("no trusted keys given")
    ec_keys = [key for key in loaded if _is_ec(key)]
    ours = os.path.lexists(root / SIGNATURE_FILENAME)
    theirs = os.path.lexists(root / OPENSSF_SIGNATURE_FILENAME)
    if theirs and (ec_keys or not ours):
        if not ec_keys:
            raise SignatureError(
                "is an OpenSSF model signature; it is checked with an EC public key, and the "
                "trusted keys are Ed25519",
                path=root / OPENSSF_SIGNATURE_FILENAME,
            )
        from bundler.trust.openssf import verify

        return verify(root, ec_keys)
    trusted = {key_id(k): k for k in loaded if not _is_ec(k)}
    path = root / SIGNATURE_FILENAME
    document = read_signature(root)
    signer, statement = document["key_id"], document["statement"]
    key = trusted.get(signer)
    if key is None:
        raise SignatureError(
            f"signed by key {signer}, which is not among the trusted keys", path=path
        )
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(base64.b64decode(document["signature"]), canonical_json(statement))
    except InvalidSignature:
        raise SignatureError(
            "the signature does not match its statement (forged or damaged)", path=path
        ) from None
    field = statement_mismatch(root, statement)
    if field is not None:
        raise SignatureError(
            f"the signature is for another bundle or an earlier lock ({field} differs)",
            path=path,
        )
    return str(signer)
