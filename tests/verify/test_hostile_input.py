"""Hostile paths, files and documents: each refused by name, in bounded time, never a traceback.

Paths: every path in a lock or a manifest is relative, normalized, inside its root, without NUL or
backslash, and bounded; anything in a bundle but plain files and folders fails verification; and
``verify`` never opens a file outside the bundle, whatever the lock says (shown with FIFOs outside
the bundle, which would block forever if opened).

Documents: garbage, empty, truncated, deeply nested, huge and wrongly typed locks and manifests
give one clear error (exit 1 or 2), and fuzzed locks give problem reports, never another exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler import Bundle, BundleError, IntegrityError, load_bundle, verify_bundle
from bundler.errors import ManifestError
from bundler.lock.model import LOCK_FILENAME, LOCK_MAX_BYTES
from bundler.manifest.reader import read_manifest

from ..conftest import CopyBundle, run_bundle
from ..fuzzing import mutated
from ..hostile import edit_lock
from ..trust.test_signing import _in_thread

# -- paths in a lock ------------------------------------------------------------------------------

BAD_PATHS = [
    ("absolute", "/etc/passwd", "is absolute"),
    ("parent", "../secret", "leaves its root"),
    ("parent inside", "saved_model/../../secret", "leaves its root"),
    ("backslash", "..\\secret", "backslash"),
    ("windows drive", "C:/secret", "is absolute"),
    ("NUL", "model.keras\x00.txt", "control character"),
    ("newline", "model\n.keras", "control character"),
    ("over-long", "a/" * 600 + "b", "longer than"),
    ("too deep", "a/" * 40 + "b", "deeper than"),
    ("dot segment", "./model.keras", "not normalized"),
    ("double slash", "saved_model//saved_model.pb", "not normalized"),
    ("trailing slash", "saved_model/", "not normalized"),
    ("empty", "", "is empty"),
    ("inside a file", "model.keras/inner", "lies inside 'model.keras', which the table lists"),
]


@pytest.mark.parametrize(("label", "bad", "words"), BAD_PATHS, ids=[b[0] for b in BAD_PATHS])
def test_unsafe_lock_path_is_refused_by_name(
    copy_bundle: CopyBundle, label: str, bad: str, words: str
) -> None:
    root = copy_bundle("sequential")
    edit_lock(root, lambda lock: lock["files"].update({bad: {"size": 1, "sha256": "0" * 64}}))
    report = verify_bundle(root)
    assert [p.kind for p in report.problems] == ["unsafe"]
    assert repr(bad) in report.problems[0].message and words in report.problems[0].message
    with pytest.raises(IntegrityError, match=words):
        load_bundle(root, verify=False)


@pytest.mark.parametrize("field", ["keras", "saved_model", "examples"])
def test_artifact_paths_outside_the_files_table_are_refused(
    copy_bundle: CopyBundle, field: str
) -> None:
    root = copy_bundle("sequential")
    edit_lock(root, lambda lock: lock["artifacts"].update({field: "../secret"}))
    problem = f"artifacts.{field}: path '../secret' leaves its root through '..'"
    report = verify_bundle(root)
    assert [(p.path, p.kind, p.message) for p in report.problems] == [
        (LOCK_FILENAME, "unsafe", problem)
    ]
    with pytest.raises(IntegrityError) as caught:
        load_bundle(root, verify=False)
    assert str(caught.value).splitlines() == [
        f"{root}: the bundle failed verification (1 problem); refusing to load it",
        f"  {LOCK_FILENAME}: {problem}",
    ]


def test_component_module_name_cannot_steer_verify_off_sys_path(copy_bundle: CopyBundle) -> None:
    # verify looks components up on sys.path by name, without importing; a name like '/tmp.x'
    # would make it read /tmp/x.py. Guards the lock schema's module pattern.
    root = copy_bundle("custom_layer")
    edit_lock(root, lambda lock: lock["components"][0].update(module="/tmp.evil"))
    report = verify_bundle(root)
    assert any(p.kind == "schema" and "components[0].module" in p.message for p in report.problems)


@pytest.mark.parametrize("where", ["../secret", "/ABSOLUTE/secret"])
def test_verify_never_opens_a_file_outside_the_bundle(copy_bundle: CopyBundle, where: str) -> None:
    """A FIFO outside the bundle blocks whoever opens it: verify returns promptly, refusing."""
    root = copy_bundle("sequential")
    fifo = root.parent / "secret"
    os.mkfifo(fifo)
    listed = where.replace("/ABSOLUTE", str(root.parent))
    edit_lock(root, lambda lock: lock["files"].update({listed: {"size": 1, "sha256": "0" * 64}}))
    try:
        report = _in_thread(lambda: verify_bundle(root), timeout=20)
    finally:  # release a reader that did open it, so no thread is left blocked
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert not report.ok and report.problems[0].kind == "unsafe"


# -- what is in the bundle folder ---------------------------------------------------------------


def _fifo_instead_of_file(root: Path) -> str:
    (root / "model.keras").unlink()
    os.mkfifo(root / "model.keras")  # opening it would block: it must not be opened
    return "model.keras"


def _device(root: Path) -> str:
    try:
        os.mknod(root / "model.keras.dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device file needs privileges")
    return "model.keras.dev"


def _device_instead_of_file(root: Path) -> str:
    (root / "model.keras").unlink()
    try:
        os.mknod(root / "model.keras", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        pytest.skip("creating a device file needs privileges")
    return "model.keras"


def _socket(root: Path) -> str:
    server = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(root)  # a socket's path is limited to ~100 bytes; bind it relative to the bundle
    try:
        server.bind("model.sock")
    finally:
        os.chdir(cwd)
        server.close()
    return "model.sock"


def _folder_instead_of_file(root: Path) -> str:
    (root / "model.keras").unlink()
    (root / "model.keras").mkdir()
    return "model.keras"


def _hard_link_to_outside(root: Path) -> str:
    # judged by its bytes, like any file (a `cp -al` backup must not fail the original)
    (root / "model.keras").unlink()
    outside = root.parent / "outside"
    outside.write_bytes(b"x")
    os.link(outside, root / "model.keras")
    return "model.keras"


ODD_FILES: list[tuple[str, Callable[[Path], str], str]] = [
    ("fifo instead of a file", _fifo_instead_of_file, "fifo"),
    ("device file", _device, "device"),
    ("device instead of a file", _device_instead_of_file, "device"),
    ("socket", _socket, "socket"),
    ("folder instead of a file", _folder_instead_of_file, "folder"),
    ("hard link to another file outside", _hard_link_to_outside, "the lock says"),
]


@pytest.mark.parametrize(("label", "damage", "words"), ODD_FILES, ids=[o[0] for o in ODD_FILES])
def test_odd_files_fail_verification_by_name(
    copy_bundle: CopyBundle, label: str, damage: Callable[[Path], str], words: str
) -> None:
    root = copy_bundle("sequential")
    named = damage(root)
    report = _in_thread(lambda: verify_bundle(root), timeout=20)
    assert any(p.path == named and words in p.message for p in report.problems), report.problems
    with pytest.raises(IntegrityError, match=named):
        _in_thread(lambda: load_bundle(root), timeout=20)


# -- paths in a manifest ------------------------------------------------------------------------

MANIFEST = {
    "apiVersion": "bundler/v1",
    "name": "demo",
    "version": "1.0.0",
    "model": {"factory": "demo.model:build"},
}
MANIFEST_FIELDS: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
    ("paths[0]", lambda p: {"paths": [p]}),
    ("model.weights", lambda p: {"model": {"factory": "demo.model:build", "weights": p}}),
    ("examples[0].inputs", lambda p: {"examples": [{"name": "e", "inputs": p + ".npz"}]}),
]


@pytest.mark.parametrize(("field", "place"), MANIFEST_FIELDS, ids=[f[0] for f in MANIFEST_FIELDS])
@pytest.mark.parametrize(
    ("label", "bad", "words"), BAD_PATHS[:9], ids=[b[0] for b in BAD_PATHS[:9]]
)
def test_unsafe_manifest_path_is_refused(
    tmp_path: Path,
    field: str,
    place: Callable[[str], dict[str, Any]],
    label: str,
    bad: str,
    words: str,
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**MANIFEST, **place(bad)}))
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    assert caught.value.field == field and words in str(caught.value)


# -- malformed documents ------------------------------------------------------------------------


def _write_lock(text: bytes) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        (root / LOCK_FILENAME).write_bytes(text)

    return write


def _truncated_lock(root: Path) -> None:
    path = root / LOCK_FILENAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _huge_lock(root: Path) -> None:
    with open(root / LOCK_FILENAME, "r+b") as stream:
        stream.truncate(LOCK_MAX_BYTES + 1)  # sparse: costs no disk, would cost memory if read


def _wrong_types(root: Path) -> None:
    edit_lock(root, lambda lock: lock.update(environment=[], artifacts="x", examples={}))


def _wrong_file_entry(root: Path) -> None:
    edit_lock(root, lambda lock: lock["files"].update({"model.keras": {"size": -1, "sha256": 3}}))


BAD_LOCKS: list[tuple[str, Callable[[Path], None], str]] = [
    ("garbage", _write_lock(b"\x89PNG\r\n\x1a\n\x00\x00"), "not UTF-8"),
    ("empty", _write_lock(b""), "not valid JSON"),
    ("truncated", _truncated_lock, "not valid JSON"),
    ("100k-deep nesting", _write_lock(b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
    ("deep nesting in metadata", _write_lock(b'{"metadata":' + b"[" * 5000 + b"]" * 5000 + b"}"),
     "nested too deeply"),
    ("over the size limit", _huge_lock, "larger than"),
    ("a JSON string", _write_lock(b'"bundle"'), "not a JSON object"),
    ("NaN", _write_lock(b'{"format": NaN}'), ""),
    ("wrong types", _wrong_types, "schema"),
    ("wrong file entry", _wrong_file_entry, "model.keras"),
    ("newer format", _write_lock(b'{"format": "bundler.bundle/v9"}'), "upgrade bundler"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "damage", "words"), BAD_LOCKS, ids=[b[0] for b in BAD_LOCKS])
def test_malformed_lock_is_one_clear_failure(
    copy_bundle: CopyBundle, label: str, damage: Callable[[Path], None], words: str
) -> None:
    root = copy_bundle("sequential")
    damage(root)
    started = time.perf_counter()
    report = verify_bundle(root)
    assert time.perf_counter() - started < 10
    assert not report.ok and words in "\n".join(f"{p.kind} {p}" for p in report.problems)
    with pytest.raises(IntegrityError):
        load_bundle(root)


@pytest.mark.parametrize("label", ["garbage", "100k-deep nesting", "wrong types"])
def test_cli_malformed_lock_exits_1_without_traceback(copy_bundle: CopyBundle, label: str) -> None:
    root = copy_bundle("sequential")
    dict((b[0], b[1]) for b in BAD_LOCKS)[label](root)
    for extra in ([], ["--json"]):
        result = run_bundle("verify", str(root), *extra)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    inspected = run_bundle("inspect", str(root))
    assert inspected.returncode == 2 and "Traceback" not in inspected.stderr


BAD_MANIFEST_TEXT = [
    ("garbage", b"\x00\x01\x02\xff", "not UTF-8"),
    ("truncated JSON", json.dumps(MANIFEST).encode()[:30], "invalid JSON"),
    ("100k-deep JSON", b"{" + b'"a":{' * 100_000 + b"}" * 100_001, "nested too deeply"),
    ("100k-deep YAML", b"a: " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("over 1 MiB", b"a:\n" + b"".join(b" " * i + b"- \n" for i in range(1, 3000)), "larger than"),
    ("wrong types", json.dumps({**MANIFEST, "components": "x", "model": []}).encode(), "model"),
    ("NUL", b"apiVersion: bundler/v1\nname: a\x00b\n", "invalid YAML: unacceptable character"),
]


@pytest.mark.parametrize(
    ("label", "text", "words"), BAD_MANIFEST_TEXT, ids=[b[0] for b in BAD_MANIFEST_TEXT]
)
def test_malformed_manifest_is_one_clear_error(
    tmp_path: Path, label: str, text: bytes, words: str
) -> None:
    path = tmp_path / ("manifest.json" if "JSON" in label else "manifest.yaml")
    path.write_bytes(text)
    started = time.perf_counter()
    with pytest.raises(ManifestError, match=words):
        read_manifest(path)
    assert time.perf_counter() - started < 10


def test_cli_yaml_anchor_bomb_exits_2_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 12)]
    document = yaml.safe_dump(MANIFEST) + "metadata:\n" + "".join(f"  {x}\n" for x in lines)
    (tmp_path / "manifest.yaml").write_text(document)
    started = time.perf_counter()
    result = run_bundle("build", str(tmp_path / "manifest.yaml"), "-o", str(tmp_path / "out"))
    assert time.perf_counter() - started < 30
    assert result.returncode == 2 and "aliases are expanded" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.yaml"]


# -- fuzzing the lock reader --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_bundle(
    built: dict[str, Bundle], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("fuzz") / "bundle"
    shutil.copytree(built["custom_layer"].path, root)
    return root, json.loads((root / LOCK_FILENAME).read_text())


@settings(
    max_examples=int(os.environ.get("BUNDLER_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzzed_lock_gives_a_report_never_an_exception(
    fuzz_bundle: tuple[Path, dict[str, Any]], data: st.DataObject
) -> None:
    root, original = fuzz_bundle
    lock = mutated(data, original)
    if data.draw(st.booleans()) and isinstance(lock, dict) and isinstance(lock.get("files"), dict):
        # get past the digest check too, where the mutated lock still has a digest: one whose
        # files table entries are no longer {sha256, size} objects has none (and nothing else is
        # excused, so a reseal that stopped working would fail here, not stop the fuzzing)
        with contextlib.suppress(TypeError, KeyError, AttributeError, ValueError):
            from bundler.lock.model import lock_digest

            lock["digest"] = lock_digest(lock)
    text = json.dumps(lock)
    if data.draw(st.booleans()):
        text = text[: data.draw(st.integers(0, len(text)))]
    (root / LOCK_FILENAME).write_text(text)
    try:
        report = verify_bundle(root)
    except BundleError:
        return
    assert report.ok == (not report.problems)
    json.dumps(report.to_json())  # the --json output can always be written
