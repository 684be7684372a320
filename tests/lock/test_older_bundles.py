"""Bundles made by an earlier release: they verify, keep their digest and signatures, and load.

``tests/fixtures/bundler-0.1.0/`` holds a bundle that release built and signed (lock format
``bundler.bundle/v1``), byte for byte as it wrote it; its README says how it was made. A service
that pinned its digest, or trusts its publisher's key, must keep deploying it after an upgrade.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ..conftest import ROOT, cli_env, run_bundle, run_python

RELEASE = ROOT / "tests" / "fixtures" / "bundler-0.1.0"
# the digest 0.1.0 printed for it: a pin a user may hold
OLD_DIGEST = "sha256:03ec69fcc213bdfa2974e94b233a6aa6b0a8bbd952ecee035ca890eb28cd0384"


def _service_env() -> dict[str, str]:
    """A service with the component the bundle pins installed, at the code it pins."""
    return cli_env(PYTHONPATH=str(RELEASE / "src"))


@pytest.fixture()
def old_bundle(tmp_path: Path) -> Path:
    """A private copy of the bundle 0.1.0 made (verify and load never write, but a test might)."""
    return Path(shutil.copytree(RELEASE / "custom_layer", tmp_path / "custom_layer"))


def test_the_fixture_is_what_the_earlier_release_wrote() -> None:
    lock = json.loads((RELEASE / "custom_layer" / "bundle.lock.json").read_text())
    assert (lock["format"], lock["digest"]) == ("bundler.bundle/v1", OLD_DIGEST)
    assert lock["environment"]["bundler"] == "0.1.0"


def test_an_old_bundle_verifies_under_the_digest_it_was_pinned_by(old_bundle: Path) -> None:
    result = run_bundle(
        "verify", "custom_layer", "--digest", OLD_DIGEST, cwd=old_bundle.parent, env=_service_env()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        result.stdout.splitlines()[0]
        == f"OK  custom_layer  custom-layer-regressor 0.3.0  {OLD_DIGEST}"
    )


@pytest.mark.parametrize("key", ["publisher.pub.pem", "publisher-ec.pub.pem"])
def test_signatures_the_earlier_release_made_still_verify(old_bundle: Path, key: str) -> None:
    shutil.copy(RELEASE / key, old_bundle.parent / key)
    result = run_bundle(
        "verify", "custom_layer", "--key", key, cwd=old_bundle.parent, env=_service_env()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"    signature: valid ({key})" in result.stdout.splitlines()


LOAD = """
from bundler import load_bundle
loaded = load_bundle({bundle!r}, digest={digest!r}, trusted_keys=[{key!r}], check_examples=True)
print(loaded.mode, loaded.digest, loaded.lock.name, loaded.lock.version)
"""


def test_an_old_bundle_loads_pinned_and_signed(old_bundle: Path) -> None:
    key = str(RELEASE / "publisher.pub.pem")
    code = LOAD.format(bundle=str(old_bundle), digest=OLD_DIGEST, key=key)
    result = run_python(code, env=_service_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["keras", OLD_DIGEST, "custom-layer-regressor", "0.3.0"]


def test_inspect_says_an_old_digest_names_the_files_only(old_bundle: Path) -> None:
    result = run_bundle("inspect", "custom_layer", cwd=old_bundle.parent, env=_service_env())
    assert result.returncode == 0, result.stderr
    line = f"  digest   {OLD_DIGEST}  (of the files only: a bundler.bundle/v1 lock)"
    assert result.stdout.splitlines()[1] == line
    result = run_bundle("inspect", "custom_layer", "--json", cwd=old_bundle.parent)
    document = json.loads(result.stdout)
    assert (document["format"], document["digest_covers"]) == ("bundler.bundle/v1", "files")
    assert document["lock_problems"] == []
