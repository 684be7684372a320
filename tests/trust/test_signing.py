"""Signing: a valid signature by a trusted key is required before the bundle is believed.

Every forgery below passes plain integrity verification (the attacker re-seals the lock); only the
signature check, with a trusted key, refuses it, as a SignatureError from the API and exit 1 from
``bundle verify --key``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bundler import load_bundle, verify_bundle
from bundler.errors import SignatureError, UsageError
from bundler.lock.model import SIGNATURE_FILENAME
from bundler.trust.signing import keygen, sign_bundle, verify_signature

from ..conftest import ROOT, CopyBundle, console_commands, run_bundle, service_env
from ..hostile import edit_lock, reseal

# A forgery damages the bundle at ``root`` with the test keys (``other``: a second bundle to borrow
# from) and returns the words its refusal must contain.
Forgery = Callable[[Path, dict[str, tuple[Path, Path]], Path], str]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Two key pairs: 'trusted' (the publisher's) and 'attacker' (anyone else's)."""
    folder = tmp_path_factory.mktemp("keys")
    return {name: keygen(folder / name) for name in ("trusted", "attacker")}


def test_keygen_writes_a_private_key_only_its_owner_can_read(
    keys: dict[str, tuple[Path, Path]],
) -> None:
    private, public = keys["trusted"]
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        keygen(private.with_suffix(""))


def test_signed_bundle_verifies_and_loads_with_the_trusted_key(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]]
) -> None:
    private, public = keys["trusted"]
    root = copy_bundle("custom_layer")
    signer = sign_bundle(root, private)
    assert verify_signature(root, [public]) == signer
    assert verify_bundle(root).ok  # the signature file is not an "extra" file
    loaded = load_bundle(root, trusted_keys=[public])
    assert loaded.mode == "keras"
    assert not [p for p in root.parent.iterdir() if p.name.endswith(".tmp")]


def test_cli_keygen_sign_verify_key_as_the_signing_guide_shows(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    """docs/signing.md's commands, run as written (on a copy of the bundle); the guide's own
    test checks what they print."""
    root = copy_bundle("custom_layer")
    commands = [
        command.split("#", 1)[0].replace("bundles/custom-layer", str(root)).split()
        for command, _ in console_commands((ROOT / "docs" / "signing.md").read_text())
        if command.startswith("bundle ")
    ]
    assert [command[1] for command in commands] == ["keygen", "sign", "verify"]
    for command in commands:
        extra = ["--json"] if command[1] == "verify" else []
        result = run_bundle(*command[1:], *extra, cwd=tmp_path, env=service_env())
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    assert json.loads(result.stdout)["signature"] == "valid"
    load_bundle(root, trusted_keys=[tmp_path / "publisher.pub.pem"], verify=False)


# -- forgeries: each returns the words the refusal must contain ----------------------------------


def _wrong_key(root: Path, keys: dict[str, Any], other: Path) -> str:
    sign_bundle(root, keys["attacker"][0])
    return "not among the trusted keys"


def _signature_of_another_bundle(root: Path, keys: dict[str, Any], other: Path) -> str:
    sign_bundle(other, keys["trusted"][0])
    shutil.copy(other / SIGNATURE_FILENAME, root / SIGNATURE_FILENAME)
    return "another bundle"


def _tampered_and_resigned_with_untrusted_key(root: Path, keys: dict[str, Any], other: Path) -> str:
    sign_bundle(root, keys["trusted"][0])
    (root / "model.keras").write_bytes(b"evil")
    reseal(root)
    sign_bundle(root, keys["attacker"][0])
    return "not among the trusted keys"


def _file_tampered_after_signing(root: Path, keys: dict[str, Any], other: Path) -> str:
    sign_bundle(root, keys["trusted"][0])
    (root / "model.keras").write_bytes(b"evil")
    reseal(root)  # integrity passes again; the signed digest no longer matches
    return "differs"


def _lock_metadata_edited_after_signing(root: Path, keys: dict[str, Any], other: Path) -> str:
    # The digest covers the lock's fields (and the signature the lock's bytes besides)
    sign_bundle(root, keys["trusted"][0])
    edit_lock(root, lambda lock: lock["components"][0].update(compatible=">=0.0.0"))
    return "digest differs"


def _provenance_edited_after_signing(root: Path, keys: dict[str, Any], other: Path) -> str:
    # Outside the digest, inside the lock's bytes, which the signature binds as well
    sign_bundle(root, keys["trusted"][0])
    edit_lock(root, lambda lock: lock.update(created="1999-12-31T23:59:59Z"))
    return "lock_sha256 differs"


def _statement_forged(root: Path, keys: dict[str, Any], other: Path) -> str:
    sign_bundle(root, keys["trusted"][0])
    (root / "model.keras").write_bytes(b"evil")
    reseal(root)
    from bundler.trust.signing import _statement

    path = root / SIGNATURE_FILENAME
    document = json.loads(path.read_text())
    document["statement"] = _statement(root)  # matches the bundle, but was never signed
    path.write_text(json.dumps(document))
    return "does not match its statement"


def _signature_removed(root: Path, keys: dict[str, Any], other: Path) -> str:
    sign_bundle(root, keys["trusted"][0])
    (root / SIGNATURE_FILENAME).unlink()
    return "not signed"


def _corrupt(text: str | bytes) -> Forgery:
    def damage(root: Path, keys: dict[str, Any], other: Path) -> str:
        sign_bundle(root, keys["trusted"][0])
        path = root / SIGNATURE_FILENAME
        data = text.encode() if isinstance(text, str) else text
        path.write_bytes(data.replace(b"@", path.read_bytes()[:40]))
        return "not a valid signature file"

    return damage


def _field(name: str, value: Any) -> Forgery:
    # guards verify_signature's type checks: a list key_id used to raise a raw TypeError, a NaN
    # in the statement a raw ValueError
    def damage(root: Path, keys: dict[str, Any], other: Path) -> str:
        sign_bundle(root, keys["trusted"][0])
        path = root / SIGNATURE_FILENAME
        document = json.loads(path.read_text())
        document[name] = value
        path.write_text(json.dumps(document))
        return "not a valid signature file"

    return damage


def _statement_with_nan(root: Path, keys: dict[str, Any], other: Path) -> str:
    sign_bundle(root, keys["trusted"][0])
    path = root / SIGNATURE_FILENAME
    document = json.loads(path.read_text())
    document["statement"]["digest"] = float("nan")
    path.write_text(json.dumps(document))
    return "not a valid signature file"


def _signature_is_a_fifo(root: Path, keys: dict[str, Any], other: Path) -> str:
    # opening a FIFO for reading blocks until a writer comes: the check must not hang
    os.mkfifo(root / SIGNATURE_FILENAME)
    return "not a valid signature file"


def _signature_is_a_symlink(root: Path, keys: dict[str, Any], other: Path) -> str:
    sign_bundle(root, keys["trusted"][0])
    outside = root.parent / "outside.sig.json"
    shutil.move(root / SIGNATURE_FILENAME, outside)
    (root / SIGNATURE_FILENAME).symlink_to(outside)
    return "not a valid signature file"


FORGERIES: list[tuple[str, Forgery]] = [
    ("wrong key", _wrong_key),
    ("signature copied from another bundle", _signature_of_another_bundle),
    ("tampered and re-signed with an untrusted key", _tampered_and_resigned_with_untrusted_key),
    ("file tampered after signing, lock re-sealed", _file_tampered_after_signing),
    ("lock fields edited after signing", _lock_metadata_edited_after_signing),
    ("statement forged to match", _statement_forged),
    ("signature file removed", _signature_removed),
    ("garbage signature", _corrupt(b"\x00\xffgarbage")),
    ("truncated signature", _corrupt("@")),
    ("signature is a JSON list", _corrupt("[1, 2]")),
    ("signature over 1 MiB", _corrupt(" " * (1 << 20) + "{}")),
    ("bad base64", _field("signature", "!!!")),
    ("key_id of the wrong type", _field("key_id", ["sha256:0"])),
    ("statement of the wrong type", _field("statement", "x")),
    ("unknown algorithm", _field("algorithm", "rsa")),
    ("NaN in the statement", _statement_with_nan),
    ("signature is a FIFO", _signature_is_a_fifo),
    ("signature is a symlink", _signature_is_a_symlink),
    ("provenance edited after signing", _provenance_edited_after_signing),
]
FORGERY_IDS = [f[0] for f in FORGERIES]


def _forge(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]], forgery: Forgery
) -> tuple[Path, str]:
    root = copy_bundle("custom_layer")
    other = copy_bundle("sequential")
    words = forgery(root, keys, other)
    return root, words


def _in_thread(call: Callable[[], Any], timeout: float = 20) -> Any:
    """Run ``call``; fail (instead of hanging the suite) if it blocks, e.g. opening a FIFO."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # re-raised in the test's thread
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert outcome, f"blocked for more than {timeout} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


@pytest.mark.parametrize(("label", "forgery"), FORGERIES, ids=FORGERY_IDS)
def test_forged_signature_is_refused(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]], label: str, forgery: Forgery
) -> None:
    root, words = _forge(copy_bundle, keys, forgery)
    public = keys["trusted"][1]
    with pytest.raises(SignatureError, match=words):
        _in_thread(lambda: verify_signature(root, [public]))
    with pytest.raises(SignatureError, match=words):
        _in_thread(lambda: load_bundle(root, trusted_keys=[public]))


@pytest.mark.parametrize(
    ("label", "forgery"),
    [FORGERIES[0], FORGERIES[4], FORGERIES[6], FORGERIES[7]],
    ids=[FORGERY_IDS[i] for i in (0, 4, 6, 7)],
)
def test_cli_verify_key_refuses_forgeries_with_exit_1(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]], label: str, forgery: Forgery
) -> None:
    root, words = _forge(copy_bundle, keys, forgery)
    result = run_bundle("verify", str(root), "--key", str(keys["trusted"][1]))
    assert result.returncode == 1, result.stdout + result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("label", "forgery"),
    [FORGERIES[0], FORGERIES[4], FORGERIES[6]],
    ids=[FORGERY_IDS[i] for i in (0, 4, 6)],
)
def test_cli_verify_json_gives_a_verdict_when_the_signature_fails(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]], label: str, forgery: Forgery
) -> None:
    """A deploy gate reading the JSON gets ok false and the reason, not an empty file."""
    root, words = _forge(copy_bundle, keys, forgery)
    result = run_bundle(
        "verify", str(root), "--key", str(keys["trusted"][1]), "--json", env=service_env()
    )
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert (verdict["ok"], verdict["signature"]) == (False, "invalid")
    (problem,) = verdict["problems"]  # the bundle is otherwise intact and loads here
    assert (problem["path"], problem["kind"]) == (SIGNATURE_FILENAME, "signature")
    assert words in problem["message"]
    assert result.stderr == (
        f"bundle: error: {root / SIGNATURE_FILENAME}: {problem['message']}\n"
    ), "the error line is the one printed without --json"


def test_cli_verify_json_prints_no_verdict_for_an_unreadable_key(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    (tmp_path / "junk.pem").write_text("junk")
    result = run_bundle(
        "verify", str(copy_bundle("sequential")), "--key", str(tmp_path / "junk.pem"), "--json"
    )
    assert (result.returncode, result.stdout) == (2, ""), "the gate itself is wrong: exit 2"
    assert "not a PEM public key" in result.stderr


def test_signing_a_damaged_bundle_is_refused(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]]
) -> None:
    root = copy_bundle("sequential")
    (root / "saved_model" / "saved_model.pb").write_bytes(b"damaged")
    with pytest.raises(SignatureError, match="fails verification"):
        sign_bundle(root, keys["trusted"][0])
    assert not (root / SIGNATURE_FILENAME).exists()


def test_signing_needs_a_private_ed25519_key(
    copy_bundle: CopyBundle, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    root = copy_bundle("sequential")
    with pytest.raises(UsageError, match="not a PEM private key"):
        sign_bundle(root, keys["trusted"][1])  # the public key
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(UsageError, match="not a PEM public key"):
        verify_signature(root, [tmp_path / "junk.pem"])
    with pytest.raises(UsageError, match="no trusted keys"):
        load_bundle(root, trusted_keys=[])  # an empty trust list fails closed
