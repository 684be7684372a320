"""What a registry can and cannot do to the one who pulls from it.

A registry (or whoever can push to it) is someone on the path: it may serve a signed bundle without
its signature, another validly signed bundle, an endless or 2 GiB manifest, a token answer that
never ends, or manifests that are garbage in every way a fuzzer finds. Each is refused with one
clear error, in bounded memory; a signature pushed with a bundle comes back with it.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundler import Bundle, load_bundle, verify_bundle
from bundler.errors import IntegrityError, SignatureError
from bundler.lock.model import SIGNATURE_FILENAME
from bundler.registry.api import ARTIFACT_TYPE, fetch
from bundler.trust.signing import keygen, sign_bundle, verify_signature

from ..conftest import CopyBundle, Registry, cli_env, run_bundle
from ..fuzzing import FUZZ, assert_pull_gives_a_verdict, mutated_document, run_main
from ..hostile import edit_lock
from ..hostile_registry import HostileRegistry
from .test_oci import pull, push


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: keygen(folder / name) for name in ("publisher", "attacker")}


@pytest.fixture(scope="module")
def signed_push(
    built: dict[str, Bundle],
    registry: Registry,
    keys: dict[str, tuple[Path, Path]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The sequential example, signed by the publisher and pushed."""
    root = tmp_path_factory.mktemp("signed") / "sequential"
    import shutil

    shutil.copytree(built["sequential"].path, root)
    sign_bundle(root, keys["publisher"][0])
    return push(root, f"oci://{registry.host}/ml/signed")


# -- signatures through the registry --------------------------------------------------------------


def test_a_signature_travels_through_push_and_pull(
    signed_push: dict[str, Any], keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    public = str(keys["publisher"][1])
    assert signed_push["signed_by"].startswith("sha256:")
    result = pull(signed_push["reference"], tmp_path / "cache", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert verify_signature(tmp_path / "out", [public]) == signed_push["signed_by"]
    keyed = pull(signed_push["reference"], tmp_path / "cache2", "--key", public)
    assert keyed.returncode == 0, keyed.stderr
    assert "signature valid" in keyed.stdout


def test_load_from_the_registry_with_trusted_keys(
    signed_push: dict[str, Any],
    keys: dict[str, tuple[Path, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    loaded = load_bundle(signed_push["reference"], trusted_keys=[keys["publisher"][1]])
    assert loaded.mode == "keras"
    assert loaded.digest == signed_push["bundle_digest"]


def test_the_wrong_key_is_refused_after_a_pull(
    signed_push: dict[str, Any],
    keys: dict[str, tuple[Path, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attacker = keys["attacker"][1]
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        load_bundle(signed_push["reference"], trusted_keys=[attacker])
    result = pull(signed_push["reference"], tmp_path / "fresh", "--key", str(attacker))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not among the trusted keys" in result.stderr
    assert signed_push["reference"] in result.stderr, "named by the reference, not a temp folder"
    assert not (tmp_path / "fresh" / "sha256").exists() or not any(
        (tmp_path / "fresh" / "sha256").iterdir()
    ), "a bundle refused for its signature does not enter the cache"


def test_an_unsigned_push_pulled_with_a_key_is_refused(
    built: dict[str, Bundle], registry: Registry, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    pushed = push(built["sequential"].path, f"oci://{registry.host}/ml/unsigned")
    assert pushed["signed_by"] is None
    result = pull(pushed["reference"], tmp_path / "cache", "--key", str(keys["publisher"][1]))
    assert result.returncode == 1 and "not signed" in result.stderr, result.stderr


def test_a_stale_signature_is_not_pushed(
    copy_bundle: CopyBundle, registry: Registry, keys: dict[str, tuple[Path, Path]]
) -> None:
    root = copy_bundle("sequential")
    sign_bundle(root, keys["publisher"][0])
    edit_lock(root, lambda lock: lock["metadata"].update(owner="someone else"))
    result = run_bundle("push", str(root), f"oci://{registry.host}/ml/stale")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "digest differs); sign the bundle again before pushing it" in result.stderr


def test_a_digest_pin_refuses_another_signed_bundle_from_the_registry(
    built: dict[str, Bundle],
    signed_push: dict[str, Any],
    registry: Registry,
    keys: dict[str, tuple[Path, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rollback: the registry serves a validly signed bundle, but not the one deployed."""
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    expected = built["custom_layer"].digest
    with pytest.raises(IntegrityError) as caught:
        load_bundle(signed_push["reference"], trusted_keys=[keys["publisher"][1]], digest=expected)
    assert str(caught.value).endswith(
        f": this bundle is {signed_push['bundle_digest']}, not the pinned {expected}: refusing "
        "another bundle"
    )
    loaded = load_bundle(signed_push["reference"], digest=signed_push["bundle_digest"])
    assert loaded.digest == signed_push["bundle_digest"]


# -- a killed pull ----------------------------------------------------------------------------


def test_a_killed_pull_leaves_a_folder_the_next_pull_sweeps(
    copy_bundle: CopyBundle, registry: Registry, tmp_path: Path
) -> None:
    from ..hostile import add_sealed_file

    root = copy_bundle("sequential")
    add_sealed_file(root, "saved_model/variables/big.data", 256 << 20)  # zeros: cheap to make
    pushed = push(root, f"oci://{registry.host}/ml/killed")
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "bundler", "pull", pushed["reference"]]
    victim = subprocess.Popen(command, env=cli_env(BUNDLER_CACHE=str(cache)))
    deadline = time.monotonic() + 120
    while not list((cache / "sha256").glob(".*.bundler-tmp.*")):
        assert victim.poll() is None, "the pull ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    left = list((cache / "sha256").iterdir())
    assert [p.name for p in left if ".bundler-tmp." in p.name], "SIGKILL leaves its folder"
    other = run_bundle(
        "pull", push(copy_bundle("custom_layer"), f"oci://{registry.host}/ml/other")["reference"],
        env=cli_env(BUNDLER_CACHE=str(cache)),
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert not [p for p in (cache / "sha256").iterdir() if ".bundler-tmp." in p.name]


MEASURE = """
import resource, sys, time
from bundler.errors import BundleError
from bundler.registry.api import fetch
import requests, oras.provider  # imported before the baseline, as a service has them
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    fetch(sys.argv[1])
    print("fetched")
except BundleError as error:
    print("refused:", error)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{before} {after} {time.perf_counter() - started:.2f}")
"""


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("endless manifest", "the registry sent a manifest over 4 MiB; refusing it"),
        ("declared 2 GiB", "the registry sent a manifest over 4 MiB (2147483648 bytes declared)"),
        ("endless token", "the registry sent an answer over 4 MiB; refusing it"),
        ("endless error body", "the registry answered 500 for the manifest"),
    ],
)
def test_a_huge_registry_answer_is_refused_in_bounded_memory(
    hostile: HostileRegistry, tmp_path: Path, mode: str, words: str
) -> None:
    """1 GiB answers (2 GiB declared): refused while they stream (an error body is not read at
    all), and the peak RSS of the process grows by less than 32 MiB."""
    hostile.mode = mode
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, f"oci://{hostile.host}/ml/huge:1.0.0"],
        env=cli_env(BUNDLER_CACHE=str(tmp_path / "cache")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    verdict, numbers = result.stdout.strip().splitlines()
    before, after, seconds = numbers.split()
    grown = (int(after) - int(before)) / 1024
    assert grown < 32, f"peak RSS grew by {grown:.0f} MiB reading a hostile answer"
    assert words in verdict, verdict
    assert float(seconds) < 30


def test_a_huge_manifest_is_one_line_from_the_cli(hostile: HostileRegistry, tmp_path: Path) -> None:
    hostile.mode = "endless manifest"
    result = run_bundle(
        "pull", f"oci://{hostile.host}/ml/huge:1.0.0", env=cli_env(BUNDLER_CACHE=str(tmp_path))
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"bundle: error: oci://{hostile.host}/ml/huge:1.0.0: "
        "the registry sent a manifest over 4 MiB; refusing it"
    ]


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("[1, 2]", "the registry's authentication answer is malformed"),
        ("<html>", "the registry answered with something that is not JSON"),
        ('"a string"', "the registry's authentication answer is malformed"),
    ],
    ids=["a JSON list", "not JSON", "a JSON string"],
)
def test_a_malformed_token_answer_is_one_clear_line(
    hostile: HostileRegistry, tmp_path: Path, token: str, words: str
) -> None:
    hostile.mode = f"token: {token}"
    reference = f"oci://{hostile.host}/ml/token:1.0.0"
    code, _, errors = run_main("pull", reference)
    assert code == 1 and errors.startswith(f"bundle: error: {reference}: {words}"), errors
    assert len(errors.strip().splitlines()) == 1


# -- fuzzed manifests -------------------------------------------------------------------------

VALID_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": ARTIFACT_TYPE,
    "config": {
        "mediaType": "application/vnd.bundler.lock.v1+json",
        "digest": "sha256:" + "1" * 64,
        "size": 10,
    },
    "layers": [
        {
            "mediaType": "application/vnd.bundler.file.v1",
            "digest": "sha256:" + "2" * 64,
            "size": 5,
            "annotations": {"org.opencontainers.image.title": "model.keras"},
        },
        {
            "mediaType": "application/vnd.bundler.signature.v1+json",
            "digest": "sha256:" + "3" * 64,
            "size": 5,
            "annotations": {"org.opencontainers.image.title": SIGNATURE_FILENAME},
        },
    ],
    "annotations": {"dev.bundler.digest": "sha256:" + "4" * 64},
}


def test_a_pull_by_digest_refuses_a_manifest_with_another_digest(
    hostile: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for one digest, the registry serves another manifest (a well-formed one): refused
    before any blob is asked for, and nothing enters the cache."""
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    hostile.mode = "manifest"
    hostile.manifest = json.dumps(VALID_MANIFEST).encode()
    served = "sha256:" + hashlib.sha256(hostile.manifest).hexdigest()
    asked = "sha256:" + hashlib.sha256(b"the manifest the publisher pushed").hexdigest()
    reference = f"oci://{hostile.host}/ml/lie@{asked}"
    with pytest.raises(IntegrityError) as caught:
        fetch(reference)
    assert str(caught.value) == (
        f"{reference}: the registry served a manifest whose digest is {served}, not {asked}"
    )
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_fuzzed_registry_manifest_is_a_verdict_never_a_crash(
    hostile: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    assert_pull_gives_a_verdict(hostile, mutated_document(data, VALID_MANIFEST))


def test_the_pulled_bundle_verifies_as_pushed(signed_push: dict[str, Any], tmp_path: Path) -> None:
    """The signature layer is beside the bundle's files, not one of them."""
    result = pull(signed_push["reference"], tmp_path / "cache", "-o", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    report = verify_bundle(tmp_path / "b")
    assert report.ok and report.digest == signed_push["bundle_digest"]
    assert (tmp_path / "b" / SIGNATURE_FILENAME).is_file()
