"""Bundles through a real OCI registry (CNCF Distribution, Debian's docker-registry package)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import Bundle, load_bundle, verify_bundle
from bundler.errors import UsageError
from bundler.registry.api import credentials, parse_reference

from ..conftest import PACKAGE, ROOT, CopyBundle, Registry, cli_env, run_bundle
from ..hostile import add_sealed_file


def push(bundle: Path, reference: str) -> dict[str, Any]:
    result = run_bundle("push", str(bundle), reference, "--json")
    assert result.returncode == 0, result.stderr
    pushed: dict[str, Any] = json.loads(result.stdout)
    return pushed


def pull(reference: str, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bundle("pull", reference, *args, env=cli_env(BUNDLER_CACHE=str(cache)))


def test_push_pull_verify_load_round_trip(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = built["with_metadata"].path
    pushed = push(original, f"oci://{registry.host}/ml/moons")
    assert pushed["tag"] == f"oci://{registry.host}/ml/moons:2.1.0", "the tag defaults to version"
    assert pushed["digest"].startswith("sha256:") and pushed["files"] >= 5

    cache = tmp_path / "cache"
    result = pull(pushed["reference"], cache, "-o", str(tmp_path / "pulled"), "--json")
    assert result.returncode == 0, result.stderr
    assert verify_bundle(tmp_path / "pulled").ok
    cached = cache / "sha256" / pushed["digest"].split(":", 1)[1]
    assert json.loads(result.stdout)["path"] == str(tmp_path / "pulled")
    assert verify_bundle(cached).digest == built["with_metadata"].digest

    monkeypatch.setenv("BUNDLER_CACHE", str(cache))
    x = np.random.default_rng(5).normal(size=(8, 2)).astype("float32")
    remote = load_bundle(pushed["reference"])
    assert Path(remote.path) == cached
    np.testing.assert_allclose(remote.predict(x), load_bundle(original).predict(x), atol=1e-6)


def test_pull_by_tag_and_by_digest_give_the_same_bundle(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path
) -> None:
    pushed = push(built["sequential"].path, f"oci://{registry.host}/ml/sequential:stable")
    by_tag = pull(pushed["tag"], tmp_path / "a", "--json")
    by_digest = pull(f"oci://{registry.host}/ml/sequential@{pushed['digest']}", tmp_path / "b")
    assert by_tag.returncode == 0 and by_digest.returncode == 0, by_tag.stderr + by_digest.stderr
    assert Path(json.loads(by_tag.stdout)["path"]).name == pushed["digest"].split(":", 1)[1]
    assert "pulled" in by_digest.stdout and "downloaded and verified" in by_digest.stdout


def test_push_and_pull_return_the_results_their_commands_print(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bundler import PullResult, PushResult
    from bundler.registry.api import pull as pull_bundle
    from bundler.registry.api import push as push_bundle

    bundle = built["sequential"]
    pushed = push_bundle(bundle.path, f"oci://{registry.host}/ml/results")
    assert isinstance(pushed, PushResult)
    assert pushed.tag == f"oci://{registry.host}/ml/results:{bundle.lock.version}"
    assert pushed.reference == f"{pushed.tag}@{pushed.digest}"
    assert (pushed.bundle_digest, pushed.format, pushed.signed_by) == (
        bundle.digest, "modelpack", None
    )  # fmt: skip
    assert (pushed.file_count, pushed.total_size) == (
        len(bundle.lock.files),
        bundle.lock.total_size,
    )
    # the same bundle to the same tag: the same manifest, so the same document
    assert push(bundle.path, f"oci://{registry.host}/ml/results") == pushed.to_json()

    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    placed = pull_bundle(pushed.reference, output=tmp_path / "out")
    cached = pull_bundle(pushed.reference)
    assert isinstance(placed, PullResult) and isinstance(cached, PullResult)
    assert (placed.path, placed.downloaded, placed.signature_checked) == (
        tmp_path / "out", True, False
    )  # fmt: skip
    assert (cached.path.name, cached.downloaded) == (pushed.digest.split(":", 1)[1], False)
    assert verify_bundle(placed.path).digest == verify_bundle(cached.path).digest == bundle.digest
    printed = json.loads(pull(pushed.reference, tmp_path / "cache", "--json").stdout)
    expected = cached.to_json()
    assert printed.pop("seconds") >= 0 and expected.pop("seconds") >= 0  # the one thing that varies
    assert printed == expected


def test_a_tampered_blob_in_the_registry_is_refused(
    built: dict[str, Bundle], private_registry: Registry, tmp_path: Path
) -> None:
    pushed = push(built["with_metadata"].path, f"oci://{private_registry.host}/ml/moons")
    keras_sha = json.loads((built["with_metadata"].path / "bundle.lock.json").read_text())
    blob = private_registry.blob("sha256:" + keras_sha["files"]["model.keras"]["sha256"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    result = pull(pushed["reference"], cache)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not match its digest" in result.stderr and "Traceback" not in result.stderr
    assert list((cache / "sha256").iterdir()) == [], "nothing half-pulled is left in the cache"


def test_a_cached_digest_loads_with_the_registry_stopped(
    built: dict[str, Bundle],
    private_registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pushed = push(built["sequential"].path, f"oci://{private_registry.host}/ml/sequential")
    cache = tmp_path / "cache"
    assert pull(pushed["reference"], cache).returncode == 0
    private_registry.stop()
    again = pull(pushed["reference"], cache)
    assert again.returncode == 0, again.stderr
    assert "from the cache" in again.stdout
    monkeypatch.setenv("BUNDLER_CACHE", str(cache))
    assert load_bundle(pushed["reference"]).mode == "keras"
    by_tag = pull(pushed["tag"], cache)  # a tag must be resolved: the registry is needed
    assert by_tag.returncode == 1 and "cannot reach the registry" in by_tag.stderr
    assert len(by_tag.stderr.strip().splitlines()) == 1


def test_two_processes_pulling_one_digest_share_one_cache_entry(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path
) -> None:
    pushed = push(built["custom_layer"].path, f"oci://{registry.host}/ml/regressor")
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "bundler", "pull", pushed["reference"]]
    env = cli_env(BUNDLER_CACHE=str(cache))
    racers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for racer in racers:
        _, stderr = racer.communicate(timeout=120)
        assert racer.returncode == 0, stderr.decode()
    entries = sorted(p.name for p in (cache / "sha256").iterdir())
    assert entries == [pushed["digest"].split(":", 1)[1]], entries
    assert verify_bundle(cache / "sha256" / entries[0]).integrity_ok


def test_a_damaged_bundle_is_not_pushed(copy_bundle: CopyBundle, registry: Registry) -> None:
    root = copy_bundle("sequential")
    with (root / "model.keras").open("r+b") as stream:
        stream.seek(100)
        stream.write(b"\x00\x01\x02")
    result = run_bundle("push", str(root), f"oci://{registry.host}/ml/damaged")
    assert result.returncode == 1
    assert "failed verification; refusing to push it" in result.stderr
    assert "model.keras" in result.stderr


def test_an_unknown_tag_is_one_clear_line(registry: Registry, tmp_path: Path) -> None:
    result = pull(f"oci://{registry.host}/ml/nothing:1.0.0", tmp_path)
    assert result.returncode == 1 and "no artifact '1.0.0'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_without_oras_the_message_says_what_to_install(built: dict[str, Bundle]) -> None:
    code = (
        "import sys; sys.modules['oras'] = None\n"
        "from bundler.cli.main import main\n"
        f"sys.exit(main(['push', {str(built['sequential'].path)!r}, 'oci://127.0.0.1:1/x/y']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'keras-bundler[oci]'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "text",
    [
        "registry.example.com/ml/x",
        "oci://registry.example.com",
        "oci://registry.example.com/ML/x",
        "oci://host/ml/x@sha256:abc",
        "oci://host/ml/../x",
    ],
)
def test_bad_references_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="oci://HOST"):
        parse_reference(text)


def test_references_parse() -> None:
    digest = "sha256:" + "a" * 64
    ref = parse_reference(f"oci://localhost:5000/ml/moons:2.1.0@{digest}")
    assert (ref.host, ref.repository, ref.tag, ref.digest) == (
        "localhost:5000",
        "ml/moons",
        "2.1.0",
        digest,
    )
    assert ref.local and not parse_reference("oci://ghcr.io/acme/moons").local


def test_credentials_come_from_the_environment_or_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUNDLER_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("BUNDLER_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert credentials("registry.example.com") is None
    token = base64.b64encode(b"robot:s3cret:with-colon").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"registry.example.com": {"auth": token}}})
    )
    assert credentials("registry.example.com") == ("robot", "s3cret:with-colon")
    assert credentials("other.example.com") is None
    monkeypatch.setenv("BUNDLER_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("BUNDLER_REGISTRY_PASSWORD", "token")
    assert credentials("registry.example.com") == ("ci", "token")


def test_a_large_file_goes_up_in_chunks_and_comes_back_intact(
    copy_bundle: CopyBundle, registry: Registry, tmp_path: Path
) -> None:
    """Over 32 MiB a blob is uploaded in PATCH chunks (oras's single PUT reads it whole)."""
    import os

    from bundler.registry.api import CHUNKED_ABOVE

    root = copy_bundle("sequential")
    size = CHUNKED_ABOVE + 5_000_001
    add_sealed_file(root, "saved_model/variables/big.data", size, data=os.urandom(size))
    lock = json.loads((root / "bundle.lock.json").read_text())
    pushed = push(root, f"oci://{registry.host}/ml/large")
    result = pull(pushed["reference"], tmp_path / "cache", "-o", str(tmp_path / "pulled"))
    assert result.returncode == 0, result.stderr
    assert verify_bundle(tmp_path / "pulled").digest == lock["digest"]


# The names other tools and earlier releases read in a registry: a format, fixed once published.
WIRE_NAMES = {
    "application/vnd.bundler.bundle.v1+json",
    "application/vnd.bundler.lock.v1+json",
    "application/vnd.bundler.file.v1",
    "application/vnd.bundler.signature.v1+json",
    "dev.bundler.digest",
}


def test_the_names_a_registry_sees_are_the_published_ones() -> None:
    """Every media type and annotation key of bundler's own in the registry code is one the format
    page publishes, spelled the same. (A rewrite of module paths once turned dev.bundler.digest
    into another key: every test of push and pull still passed, both sides using the constant.)"""
    registry = PACKAGE / "registry"
    code = "\n".join(path.read_text() for path in sorted(registry.glob("*.py")))
    used = set(re.findall(r'"((?:application/vnd\.bundler|dev\.bundler)[^"]*)"', code))
    assert used == WIRE_NAMES
    page = (ROOT / "docs" / "bundle-format.md").read_text()
    assert sorted(name for name in WIRE_NAMES if f"`{name}`" not in page) == []
