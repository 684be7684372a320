"""A verdict for every value: hostile lock and signature values end in a problem, never a crash.

Values the JSON Schema lets through, or that Python's json module accepts but no encoder or
formatter does (duplicate keys, NaN, 1e400, 4,000-digit integers, lone surrogates, ranges that do
not parse), used to end in ``internal error ... (this is a bug in bundler)`` or a raw exception
from ``verify_bundle``/``load_bundle``. Each is now one problem naming what is wrong; property
tests hold the line for locks and signature files: the command line exits 0, 1 or 2 with a
message and never an internal error, the API raises only ``BundleError`` subclasses.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundler import Bundle, BundleError, load_bundle, verify_bundle
from bundler.errors import IntegrityError, SignatureError
from bundler.lock.model import LOCK_FILENAME, SIGNATURE_FILENAME, lock_digest
from bundler.trust.signing import keygen, sign_bundle, verify_signature

from ..conftest import EXAMPLES, ROOT, CopyBundle, run_bundle, service_env
from ..fuzzing import (
    FUZZ,
    assert_signature_file_gives_a_verdict,
    json_values,
    mutated_document,
    run_main,
)
from ..hostile import edit_lock


def _text(change: Callable[[str], str]) -> Callable[[Path], None]:
    """Edit the lock's text (for what json.dumps cannot write: duplicate keys, huge numbers)."""

    def damage(root: Path) -> None:
        path = root / LOCK_FILENAME
        path.write_text(change(path.read_text()))

    return damage


def _field(where: list[Any], value: Any) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        def change(lock: dict[str, Any]) -> None:
            parent = lock
            for part in where[:-1]:
                parent = parent[part]
            parent[where[-1]] = value

        edit_lock(root, change)

    return damage


def _surrogate_path(root: Path) -> None:
    # json.dumps writes "\ud800" as an escape; lock_digest cannot encode it, so no re-seal
    path = root / LOCK_FILENAME
    lock = json.loads(path.read_text())
    lock["files"]["model\ud800.keras"] = lock["files"]["model.keras"]
    path.write_text(json.dumps(lock))


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


BAD_VALUES: list[tuple[str, Callable[[Path], None], str]] = [
    ("duplicate key", _text(lambda t: t.replace("{", '{"name": "other", ', 1)),
     "has the key 'name' twice"),
    ("NaN", _field(["metadata", "x"], math.nan), "holds NaN, which is not JSON"),
    ("Infinity", _field(["metadata", "x"], math.inf), "holds Infinity, which is not JSON"),
    ("1e400", _text(lambda t: t.replace('"metadata": {', '"metadata": {"x": 1e400, ', 1)),
     "holds the number 1e400, outside the range of a double"),
    ("size of 10**30", _field(["files", "model.keras", "size"], 10**30),
     "holds the integer 10000000000000000000..., outside the 64-bit range"),
    ("5000-digit integer", _text(lambda t: t.replace('"metadata": {', '"metadata": {"x": '
                                                     + "9" * 5000 + ", ", 1)),
     "holds the integer 99999999999999999999..., outside the 64-bit range"),
    ("lone surrogate in the name", _field(["name"], "\ud800"),
     "holds a lone surrogate (an escape like \\ud800 that is no character) at name"),
    ("lone surrogate in a path", _surrogate_path, "lone surrogate"),
    ("65 levels of metadata", _field(["metadata", "x"], _deep(65)),
     "is nested too deeply (over 64 levels, at metadata.x"),
    ("pinned version not a version", _field(["components", 0, "version"], "latest"),
     "components[0].version: 'latest' is not a version"),
    ("compatible range garbage", _field(["components", 0, "compatible"], "!!"),
     "components[0].compatible: '!!'"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "damage", "words"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_hostile_lock_value_is_one_problem_from_api_and_cli(
    copy_bundle: CopyBundle, label: str, damage: Callable[[Path], None], words: str
) -> None:
    root = copy_bundle("custom_layer")
    damage(root)
    report = verify_bundle(root)
    assert not report.ok and words in "\n".join(str(p) for p in report.problems), report.problems
    with pytest.raises(IntegrityError) as caught:
        load_bundle(root, verify=False)
    first = str(caught.value).splitlines()[0]
    assert re.fullmatch(
        rf"{re.escape(str(root))}: the bundle failed verification \(\d+ problems?\); refusing to "
        "load it",
        first,
    ), first
    for args in (["verify"], ["verify", "--json"], ["inspect"]):  # a terminal that speaks UTF-8
        result = run_bundle(args[0], str(root), *args[1:], env=service_env())
        assert result.returncode in (1, 2), result.stdout + result.stderr
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
        if args == ["verify", "--json"]:
            problems = json.loads(result.stdout)["problems"]
            assert words in "\n".join(p["message"] for p in problems)


def test_a_manifest_with_nan_builds_no_lock_that_is_not_json(tmp_path: Path) -> None:
    text = (EXAMPLES / "sequential" / "manifest.yaml").read_text()
    shutil.copytree(EXAMPLES / "sequential" / "src", tmp_path / "src")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text + "metadata:\n  loss: .nan\n")
    result = run_bundle("build", str(manifest), "-o", str(tmp_path / "out"), "--no-rehearse")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "holds nan, which is not JSON, at metadata.loss" in result.stderr
    assert not (tmp_path / "out").exists()


# -- property tests ------------------------------------------------------------------------------

hostile_values = json_values | st.sampled_from(
    ["\ud800", "\x1b[2J", "\u202eevil", 10**30, -(2**63), math.inf, 1e308, _deep(70)]
)


@pytest.fixture(scope="module")
def fuzz_bundle(
    built: dict[str, Bundle], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("values") / "bundle"
    shutil.copytree(built["custom_layer"].path, root)
    return root, json.loads((root / LOCK_FILENAME).read_text())


def _mutated_lock(data: st.DataObject, original: dict[str, Any]) -> str:
    lock = copy.deepcopy(original)
    text = mutated_document(data, lock) if data.draw(st.booleans()) else None
    if text is None:  # a value anywhere, the lock re-sealed so that the digest check passes
        where = data.draw(st.sampled_from(["name", "version", "created", "description"]))
        lock[where] = data.draw(hostile_values)
        if data.draw(st.booleans()):
            entry = data.draw(st.sampled_from(sorted(lock["files"])))
            lock["files"][entry][data.draw(st.sampled_from(["size", "sha256"]))] = data.draw(
                hostile_values
            )
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            lock["digest"] = lock_digest(lock)
        text = json.dumps(lock)
    return text


def _never_a_crash(*args: str) -> None:
    code, out, errors = run_main(*args)
    assert code in (0, 1, 2), (code, errors)
    assert "internal error" not in errors, errors
    if code:
        assert errors.startswith("bundle: error: ") or out, "a failure says why"
    if "--json" not in args:
        assert "\x1b" not in out + errors, "raw escape in text output"


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_fuzzed_lock_gives_a_verdict_from_cli_and_load(
    fuzz_bundle: tuple[Path, dict[str, Any]], data: st.DataObject
) -> None:
    fuzz_root, original = fuzz_bundle
    (fuzz_root / LOCK_FILENAME).write_text(_mutated_lock(data, original))
    with contextlib.suppress(BundleError):
        verify_bundle(fuzz_root)
    with contextlib.suppress(BundleError):
        load_bundle(fuzz_root, verify=False)
    for args in (["verify"], ["verify", "--json"], ["inspect"], ["inspect", "--json"]):
        _never_a_crash(args[0], str(fuzz_root), *args[1:])


@pytest.fixture(scope="module")
def signed_root(
    built: dict[str, Bundle], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("signature-fuzz")
    root = folder / "bundle"
    shutil.copytree(built["sequential"].path, root)
    private, public = keygen(folder / "key")
    sign_bundle(root, private)
    original = json.loads((root / SIGNATURE_FILENAME).read_text())
    return {"root": root, "public": public, "original": original}


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_fuzzed_signature_file_is_refused_never_a_crash(
    signed_root: dict[str, Any], data: st.DataObject
) -> None:
    root, public = signed_root["root"], signed_root["public"]
    text = mutated_document(data, signed_root["original"])
    assert_signature_file_gives_a_verdict(root, SIGNATURE_FILENAME, text, public)


def test_duplicate_keys_in_a_signature_file_are_refused(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    root = copy_bundle("sequential")
    private, public = keygen(tmp_path / "key")
    sign_bundle(root, private)
    path = root / SIGNATURE_FILENAME
    path.write_text(path.read_text().replace("{", '{"key_id": "sha256:' + "0" * 64 + '", ', 1))
    with pytest.raises(SignatureError, match="has the key 'key_id' twice"):
        verify_signature(root, [public])


def test_the_fuzzers_run_in_ci_with_a_bounded_budget() -> None:
    """The slow marker is documentation here, not a filter: CI runs every test."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "-m" not in pyproject.split("addopts", 1)[1].split("\n", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pytest -q" in ci and "not slow" not in ci
