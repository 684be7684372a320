"""Pinning a bundle by digest: a valid signature says who vouched, a digest pin says which bundle.

An older release signed by the same publisher (rollback) or another of their bundles
(substitution) verifies against the publisher's key; only ``--digest`` / ``digest=`` refuses it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bundler import Bundle, load_bundle, verify_bundle
from bundler.errors import IntegrityError, UsageError
from bundler.trust.signing import keygen, sign_bundle

from ..conftest import CopyBundle, run_bundle, service_env
from ..hostile import edit_lock


@pytest.fixture()
def signed_pair(copy_bundle: CopyBundle, tmp_path: Path) -> dict[str, Any]:
    """Two bundles signed by one publisher: 'deployed' (the one pinned) and 'older'."""
    private, public = keygen(tmp_path / "publisher")
    deployed, older = copy_bundle("sequential"), copy_bundle("with_metadata")
    for root in (deployed, older):
        sign_bundle(root, private)
    return {
        "deployed": deployed,
        "older": older,
        "public": public,
        "pin": verify_bundle(deployed).digest,
        "other": verify_bundle(older).digest,
    }


def test_a_signed_rollback_passes_the_key_but_not_the_pin(signed_pair: dict[str, Any]) -> None:
    older, public, pin = signed_pair["older"], str(signed_pair["public"]), signed_pair["pin"]
    assert run_bundle("verify", str(older), "--key", public).returncode == 0, "signed: it passes"
    result = run_bundle("verify", str(older), "--key", public, "--digest", pin)
    assert result.returncode == 1, result.stdout + result.stderr
    line = f"bundle.lock.json: this bundle is {signed_pair['other']}, not the pinned {pin}"
    assert f"  x {line}: refusing another bundle" in result.stdout.splitlines()
    assert run_bundle("verify", str(signed_pair["deployed"]), "--digest", pin).returncode == 0


def test_the_json_report_names_the_pin_problem(signed_pair: dict[str, Any]) -> None:
    result = run_bundle(
        "verify", str(signed_pair["older"]), "--digest", signed_pair["pin"], "--json"
    )
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert [p["kind"] for p in problems] == ["pinned"]


def test_load_and_verify_refuse_any_bundle_but_the_pinned_one(signed_pair: dict[str, Any]) -> None:
    pin, other = signed_pair["pin"], signed_pair["other"]
    report = verify_bundle(signed_pair["older"], digest=pin)
    assert not report.ok and [p.kind for p in report.problems] == ["pinned"]
    with pytest.raises(IntegrityError) as caught:
        load_bundle(signed_pair["older"], trusted_keys=[signed_pair["public"]], digest=pin)
    assert str(caught.value) == (
        f"{signed_pair['older'] / 'bundle.lock.json'}: this bundle is {other}, not the pinned "
        f"{pin}: refusing another bundle"
    )
    loaded = load_bundle(signed_pair["deployed"], trusted_keys=[signed_pair["public"]], digest=pin)
    assert loaded.digest == pin


def test_the_pin_is_checked_before_any_file_is_hashed(signed_pair: dict[str, Any]) -> None:
    """Refused on the lock alone: a substituted bundle is not worth hashing."""
    root = signed_pair["deployed"]
    (root / "model.keras").write_bytes(b"damaged, but the pin refuses it first")
    with pytest.raises(IntegrityError, match="not the pinned"):
        load_bundle(root, digest=signed_pair["other"])


@pytest.mark.parametrize(
    "bad",
    ["sha256:abc", "SHA256:" + "a" * 64, "a" * 64, "sha256:" + "A" * 64, "sha256:" + "g" * 64],
)
def test_a_malformed_pin_is_bad_input_naming_the_option(built: dict[str, Bundle], bad: str) -> None:
    root = str(built["sequential"].path)
    result = run_bundle("verify", root, "--digest", bad)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"bundle: error: --digest: {bad!r} is not a bundle digest")
    for call in (lambda: verify_bundle(root, digest=bad), lambda: load_bundle(root, digest=bad)):
        with pytest.raises(UsageError, match=r"^digest: .* is not a bundle digest"):
            call()


def test_a_signed_release_with_the_same_files_fails_a_pin_on_another(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    """Release 1.0.0 and 2.0.0 of one model may ship the same files (a new version that only
    widens what may load it, say); a pin on 2.0.0 must not accept 1.0.0, signed or not."""
    private, public = keygen(tmp_path / "publisher")
    first = copy_bundle("custom_layer")
    second = tmp_path / "second"
    shutil.copytree(first, second)

    def release_2(lock: dict[str, Any]) -> None:
        lock["version"] = "2.0.0"
        lock["components"][0]["compatible"] = ">=1.2.0 <3.0.0"

    edit_lock(second, release_2)
    for root in (first, second):
        sign_bundle(root, private)
    assert (
        json.loads((first / "bundle.lock.json").read_text())["files"]
        == json.loads((second / "bundle.lock.json").read_text())["files"]
    )
    pin = verify_bundle(second).digest
    assert pin is not None
    service = service_env()  # with the component installed: only the pin decides
    result = run_bundle("verify", str(first), "--key", str(public), "--digest", pin, env=service)
    assert result.returncode == 1, result.stdout + result.stderr
    line = f"bundle.lock.json: this bundle is {verify_bundle(first).digest}, not the pinned {pin}"
    assert f"  x {line}: refusing another bundle" in result.stdout.splitlines()
    result = run_bundle("verify", str(second), "--key", str(public), "--digest", pin, env=service)
    assert result.returncode == 0, result.stdout + result.stderr
