"""Versioned formats: older documents are upgraded one step at a time; newer ones are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bundler import load_bundle, verify_bundle
from bundler.errors import IntegrityError
from bundler.formats import FormatError, Upgrade, upgrade_forward
from bundler.lock.model import FORMAT, LOCK_FILENAME, LOCK_UPGRADES, files_digest

from .conftest import EXAMPLES, CopyBundle, run_bundle
from .hostile import edit_lock


def _rename(old: str, new: str, version: str) -> Any:
    def step(document: dict[str, Any]) -> dict[str, Any]:
        document[new] = document.pop(old)
        document["format"] = version
        return document

    return step


def test_the_current_version_passes_through_unchanged() -> None:
    document = {"format": "x.doc/v3", "a": 1}
    assert upgrade_forward(document, "format", "x.doc/v3", {}) == document


def test_older_documents_take_every_step_in_order() -> None:
    steps = {"x.doc/v1": _rename("a", "b", "x.doc/v2"), "x.doc/v2": _rename("b", "c", "x.doc/v3")}
    original = {"format": "x.doc/v1", "a": 1}
    assert upgrade_forward(original, "format", "x.doc/v3", steps) == {"format": "x.doc/v3", "c": 1}
    assert original == {"format": "x.doc/v1", "a": 1}, "the caller's document is not changed"


@pytest.mark.parametrize(
    ("value", "steps", "words"),
    [
        ("x.doc/v4", {}, "'x.doc/v4' is newer than this bundler understands ('x.doc/v3'); upgrade"),
        (None, {}, "is required (this bundler reads 'x.doc/v3')"),
        ("y.doc/v1", {}, "unknown format 'y.doc/v1'"),
        ("x.doc/v1", {}, "no upgrade from 'x.doc/v1'"),
        ("x.doc/v1", {"x.doc/v1": lambda d: {**d, "format": "x.doc/v1"}}, "no upgrade from"),
    ],
    ids=["newer", "missing", "other family", "no step", "a step that goes nowhere"],
)
def test_documents_that_cannot_be_read_are_refused(
    value: str | None, steps: dict[str, Upgrade], words: str
) -> None:
    with pytest.raises(FormatError) as caught:
        upgrade_forward({"format": value}, "format", "x.doc/v3", steps)
    assert words in str(caught.value)


def test_a_newer_lock_is_refused_naming_both_formats(copy_bundle: CopyBundle) -> None:
    root = copy_bundle("sequential")
    edit_lock(root, lambda lock: lock.update(format="bundler.bundle/v3", shiny_new_field=True))
    result = run_bundle("verify", str(root))
    assert result.returncode == 1, result.stdout + result.stderr
    expected = "'bundler.bundle/v3' is newer than this bundler understands ('bundler.bundle/v2')"
    assert expected in result.stdout + result.stderr
    assert "upgrade bundler" in result.stdout + result.stderr
    with pytest.raises(IntegrityError) as caught:
        load_bundle(root)
    assert str(caught.value).splitlines() == [
        f"{root}: the bundle failed verification (1 problem); refusing to load it",
        f"  {LOCK_FILENAME}: format: {expected}; upgrade bundler",
    ]


def test_a_newer_manifest_is_refused_naming_both_versions(tmp_path: Path) -> None:
    text = (EXAMPLES / "sequential" / "manifest.yaml").read_text()
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text.replace("apiVersion: bundler/v1", "apiVersion: bundler/v2"))
    result = run_bundle("build", str(manifest), "-o", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "apiVersion" in result.stderr and "'bundler/v2' is newer" in result.stderr
    assert "('bundler/v1'); upgrade bundler" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_older_lock_is_read_through_its_registered_upgrade(
    copy_bundle: CopyBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A format older than any real one (v1 is, see test_older_bundles): the path any older
    format takes through read_lock, its digest read as its own format defines it."""
    root = copy_bundle("sequential")
    lock = json.loads((root / LOCK_FILENAME).read_text())
    lock["format"] = "bundler.bundle/v0"
    lock["digest"] = files_digest(lock["files"])  # what the digest was before v2
    lock["golden"] = lock.pop("examples")  # what a v0 might have called them
    (root / LOCK_FILENAME).write_text(json.dumps(lock))
    assert not verify_bundle(root).ok
    monkeypatch.setitem(LOCK_UPGRADES, "bundler.bundle/v0", _rename("golden", "examples", FORMAT))
    report = verify_bundle(root)
    assert report.ok, report.problems
