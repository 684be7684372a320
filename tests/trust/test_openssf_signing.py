"""OpenSSF model signatures (``model.sig``) against the real ``model_signing`` package, offline.

``model_signing`` checks what ``bundle sign --format openssf`` writes, and ``bundle verify --key``
checks what ``model_signing sign key`` writes over a bundle folder; both with EC P-256 keys, no
Sigstore network. Every forgery below is refused by our own check, without ``model_signing``.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from bundler import Bundle, load_bundle, verify_bundle
from bundler.errors import SignatureError, UsageError
from bundler.lock.layout import LOCK_FILENAME, OPENSSF_SIGNATURE_FILENAME, SIGNATURE_FILENAME
from bundler.trust.openssf import pae
from bundler.trust.signing import keygen, sign_bundle, verify_signature

from ..conftest import CopyBundle, cli_env, require_module, run_bundle, service_env
from ..fuzzing import FUZZ, assert_signature_file_gives_a_verdict, mutated_document
from ..hostile import edit_lock, reseal

require_module("model_signing")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {
        "trusted": keygen(folder / "trusted", type="ec-p256"),
        "attacker": keygen(folder / "attacker", type="ec-p256"),
        "ed25519": keygen(folder / "ed25519"),
    }


def model_signing(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``model_signing`` command line (``python -m model_signing``)."""
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def their_sign(root: Path, private: Path, *extra: str) -> None:
    signature = str(root / OPENSSF_SIGNATURE_FILENAME)
    result = model_signing(
        "sign", "key", str(root), "--private_key", str(private), "--signature", signature, *extra
    )
    assert result.returncode == 0, result.stdout + result.stderr


def their_verify(root: Path, public: Path) -> subprocess.CompletedProcess[str]:
    signature = str(root / OPENSSF_SIGNATURE_FILENAME)
    return model_signing(
        "verify", "key", str(root), "--public_key", str(public), "--signature", signature
    )


def test_model_signing_verifies_a_bundle_we_signed(copy_bundle: CopyBundle, tmp_path: Path) -> None:
    root = copy_bundle("custom_layer")
    made = run_bundle("keygen", "--type", "ec-p256", "-o", "publisher", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    signed = run_bundle(
        "sign", str(root), "--key", "publisher.pem", "--format", "openssf", cwd=tmp_path
    )
    assert signed.returncode == 0, signed.stderr
    result = their_verify(root, tmp_path / "publisher.pub.pem")
    assert result.returncode == 0 and "Verification succeeded" in result.stdout, result.stderr
    assert verify_bundle(root).ok  # model.sig is not an "extra" file
    verified = run_bundle(
        "verify", str(root), "--key", str(tmp_path / "publisher.pub.pem"), env=service_env()
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_bundle_verify_accepts_a_bundle_model_signing_signed(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]]
) -> None:
    root = copy_bundle("custom_layer")
    their_sign(root, keys["trusted"][0])
    verified = run_bundle("verify", str(root), "--key", str(keys["trusted"][1]), env=service_env())
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "signature: valid" in verified.stdout
    loaded = load_bundle(root, trusted_keys=[keys["trusted"][1]])
    assert loaded.mode == "keras"


def test_both_signatures_live_side_by_side(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]]
) -> None:
    """Ours is left out of the OpenSSF one (its ignore_paths); either key checks its own."""
    root = copy_bundle("custom_layer")
    sign_bundle(root, keys["ed25519"][0])
    sign_bundle(root, keys["trusted"][0], format="openssf")
    assert their_verify(root, keys["trusted"][1]).returncode == 0
    assert verify_signature(root, [keys["ed25519"][1]]).startswith("sha256:")
    assert verify_signature(root, [keys["trusted"][1]]).startswith("sha256:")
    statement = _statement(root)
    assert SIGNATURE_FILENAME in statement["predicate"]["serialization"]["ignore_paths"]


def test_a_model_signing_signature_may_cover_our_signature_too(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]]
) -> None:
    root = copy_bundle("custom_layer")
    sign_bundle(root, keys["ed25519"][0])
    their_sign(root, keys["trusted"][0])  # lists bundle.sig.json among the signed files
    assert SIGNATURE_FILENAME in {r["name"] for r in _statement(root)["predicate"]["resources"]}
    assert verify_signature(root, [keys["trusted"][1]]).startswith("sha256:")
    ours = root / SIGNATURE_FILENAME  # still a valid Ed25519 signature, in other bytes
    ours.write_text(json.dumps(json.loads(ours.read_text())))
    assert verify_signature(root, [keys["ed25519"][1]]).startswith("sha256:")
    with pytest.raises(SignatureError, match=r"another bundle \(bundle.sig.json differs\)"):
        verify_signature(root, [keys["trusted"][1]])


def _statement(root: Path) -> dict[str, Any]:
    document = json.loads((root / OPENSSF_SIGNATURE_FILENAME).read_text())
    statement: dict[str, Any] = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    return statement


# -- forgeries: each returns the words the refusal must contain ----------------------------------


def _by_another_key(root: Path, keys: dict[str, Any]) -> str:
    their_sign(root, keys["attacker"][0])
    return "which is not among the trusted keys"


def _a_file_left_out(root: Path, keys: dict[str, Any]) -> str:
    their_sign(root, keys["trusted"][0], "--ignore-paths", str(root / "model.keras"))
    return "another bundle (it does not cover model.keras)"


def _file_tampered_after_signing(root: Path, keys: dict[str, Any]) -> str:
    sign_bundle(root, keys["trusted"][0], format="openssf")
    (root / "model.keras").write_bytes(b"evil")
    signature = (root / OPENSSF_SIGNATURE_FILENAME).read_bytes()
    (root / OPENSSF_SIGNATURE_FILENAME).unlink()  # reseal lists every file it finds
    reseal(root)  # integrity passes again; the signed digests no longer match
    (root / OPENSSF_SIGNATURE_FILENAME).write_bytes(signature)
    return "another bundle (bundle.lock.json differs)"


def _lock_edited_after_signing(root: Path, keys: dict[str, Any]) -> str:
    their_sign(root, keys["trusted"][0])
    edit_lock(root, lambda lock: lock["components"][0].update(compatible=">=0.0.0"))
    return f"another bundle ({LOCK_FILENAME} differs)"


def _statement_swapped(root: Path, keys: dict[str, Any]) -> str:
    sign_bundle(root, keys["trusted"][0], format="openssf")
    path = root / OPENSSF_SIGNATURE_FILENAME
    document = json.loads(path.read_text())
    statement = _statement(root)
    statement["subject"][0]["name"] = "someone else's"
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(document))
    return "does not match its statement (forged or damaged)"


def _not_json(root: Path, keys: dict[str, Any]) -> str:
    sign_bundle(root, keys["trusted"][0], format="openssf")
    (root / OPENSSF_SIGNATURE_FILENAME).write_text('{"mediaType": NaN}')
    return "is not a valid model signature"


def _two_signatures(root: Path, keys: dict[str, Any]) -> str:
    sign_bundle(root, keys["trusted"][0], format="openssf")
    path = root / OPENSSF_SIGNATURE_FILENAME
    document = json.loads(path.read_text())
    envelope = document["dsseEnvelope"]
    envelope["signatures"] = envelope["signatures"] * 2
    path.write_text(json.dumps(document))
    return "must carry exactly one DSSE signature"


FORGERIES: list[Callable[[Path, dict[str, Any]], str]] = [
    _by_another_key,
    _a_file_left_out,
    _file_tampered_after_signing,
    _lock_edited_after_signing,
    _statement_swapped,
    _not_json,
    _two_signatures,
]


@pytest.mark.parametrize("forge", FORGERIES, ids=lambda f: f.__name__.strip("_"))
def test_a_forged_openssf_signature_is_refused(
    copy_bundle: CopyBundle,
    keys: dict[str, tuple[Path, Path]],
    forge: Callable[[Path, dict[str, Any]], str],
) -> None:
    root = copy_bundle("custom_layer")
    words = forge(root, keys)
    with pytest.raises(SignatureError) as caught:
        verify_signature(root, [keys["trusted"][1]])
    assert words in str(caught.value)
    assert str(caught.value).startswith(str(root / OPENSSF_SIGNATURE_FILENAME))


def test_an_ed25519_key_cannot_check_an_openssf_signature(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]]
) -> None:
    root = copy_bundle("sequential")
    sign_bundle(root, keys["trusted"][0], format="openssf")
    result = run_bundle("verify", str(root), "--key", str(keys["ed25519"][1]))
    assert result.returncode == 1
    assert (
        "is an OpenSSF model signature; it is checked with an EC public key, and the trusted "
        "keys are Ed25519" in result.stdout + result.stderr
    )


def test_sign_refuses_a_key_of_the_other_kind(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]]
) -> None:
    root = copy_bundle("sequential")
    with pytest.raises(UsageError, match=r"need an EC key \(bundle keygen --type ec-p256\)"):
        sign_bundle(root, keys["ed25519"][0], format="openssf")
    with pytest.raises(UsageError, match="sign with --format openssf for an EC key"):
        sign_bundle(root, keys["trusted"][0])
    assert not (root / OPENSSF_SIGNATURE_FILENAME).exists()
    assert not (root / SIGNATURE_FILENAME).exists()


@pytest.fixture(scope="module")
def openssf_root(
    built: dict[str, Bundle],
    keys: dict[str, tuple[Path, Path]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("model-sig-fuzz") / "bundle"
    shutil.copytree(built["sequential"].path, root)
    sign_bundle(root, keys["trusted"][0], format="openssf")
    document = json.loads((root / OPENSSF_SIGNATURE_FILENAME).read_text())
    return {"root": root, "document": document, "statement": _statement(root)}


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_fuzzed_model_sig_is_refused_never_a_crash(
    openssf_root: dict[str, Any], keys: dict[str, tuple[Path, Path]], data: st.DataObject
) -> None:
    """The envelope fuzzed as it is, or the statement fuzzed and signed again with the trusted
    key, so that the hostile statement gets past the ECDSA check and is read."""
    root, (private, public) = openssf_root["root"], keys["trusted"]
    if data.draw(st.booleans()):
        text = mutated_document(data, openssf_root["document"])
    else:
        payload = mutated_document(data, openssf_root["statement"]).encode("utf-8", "surrogatepass")
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        document = copy.deepcopy(openssf_root["document"])
        envelope = document["dsseEnvelope"]
        envelope["payload"] = base64.b64encode(payload).decode()
        signature = key.sign(pae(payload), ec.ECDSA(hashes.SHA256()))
        envelope["signatures"][0]["sig"] = base64.b64encode(signature).decode()
        text = json.dumps(document)
    assert_signature_file_gives_a_verdict(root, OPENSSF_SIGNATURE_FILENAME, text, public)
