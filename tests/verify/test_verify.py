"""Verification: every kind of damage fails, naming the file, and TensorFlow is never imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler import Bundle, IntegrityError, load_bundle, verify_bundle
from bundler.errors import UsageError
from bundler.lock.model import lock_digest

from ..conftest import CopyBundle, run_bundle, run_python, service_env


def _flip_byte(root: Path) -> str:
    target = root / "model.keras"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    return "model.keras"


def _truncate(root: Path) -> str:
    target = root / "saved_model" / "saved_model.pb"
    target.write_bytes(target.read_bytes()[:-10])
    return "saved_model/saved_model.pb"


def _extra_file(root: Path) -> str:
    (root / "saved_model" / "notes.txt").write_text("hello")
    return "saved_model/notes.txt"


def _missing_file(root: Path) -> str:
    (root / "saved_model" / "fingerprint.pb").unlink()
    return "saved_model/fingerprint.pb"


def _renamed_file(root: Path) -> str:
    (root / "model.keras").rename(root / "model2.keras")
    return "model.keras"


def _symlink_file(root: Path) -> str:
    target = root / "model.keras"
    outside = root.parent / "outside.keras"
    shutil.move(target, outside)
    target.symlink_to(outside)
    return "model.keras"


def _symlink_folder(root: Path) -> str:
    folder = root / "saved_model"
    outside = root.parent / "outside_saved_model"
    shutil.move(folder, outside)
    folder.symlink_to(outside, target_is_directory=True)
    return "saved_model"


def _hard_link_changed(root: Path) -> str:
    # a hard link is judged by its bytes: changed through its other name, it is a changed file
    target = root / "model.keras"
    os.link(target, root.parent / "elsewhere.keras")
    with open(root.parent / "elsewhere.keras", "r+b") as stream:
        stream.seek(100)
        byte = stream.read(1)
        stream.seek(100)
        stream.write(bytes([byte[0] ^ 0xFF]))
    return "model.keras"


def _fifo(root: Path) -> str:
    os.mkfifo(root / "saved_model" / "pipe")
    return "saved_model/pipe"


def _edited_lock_entry(root: Path) -> str:
    lock_path = root / "bundle.lock.json"
    lock = json.loads(lock_path.read_text())
    lock["files"]["model.keras"]["sha256"] = "0" * 64
    lock_path.write_text(json.dumps(lock))
    return "bundle.lock.json"


def _rehashed_lock_entry(root: Path) -> str:
    """An attacker who edits a file and its lock entry, but cannot fix the digest."""
    (root / "model.keras").write_bytes(b"not a model")
    lock_path = root / "bundle.lock.json"
    lock = json.loads(lock_path.read_text())
    import hashlib

    lock["files"]["model.keras"] = {
        "size": 11,
        "sha256": hashlib.sha256(b"not a model").hexdigest(),
    }
    lock_path.write_text(json.dumps(lock))
    return "bundle.lock.json"


def _lock_path_escape(root: Path) -> str:
    lock_path = root / "bundle.lock.json"
    lock = json.loads(lock_path.read_text())
    lock["files"]["../outside.txt"] = {"size": 1, "sha256": "0" * 64}
    lock["digest"] = lock_digest(lock)
    lock_path.write_text(json.dumps(lock))
    return "bundle.lock.json"


def _garbage_lock(root: Path) -> str:
    (root / "bundle.lock.json").write_bytes(b"\x00garbage{")
    return "bundle.lock.json"


def _lock_wrong_type(root: Path) -> str:
    lock_path = root / "bundle.lock.json"
    lock = json.loads(lock_path.read_text())
    lock["components"] = "acme"
    lock_path.write_text(json.dumps(lock))
    return "bundle.lock.json"


DAMAGE: list[tuple[str, Callable[[Path], str], str]] = [
    ("flipped byte", _flip_byte, "content changed"),
    ("truncated file", _truncate, "bytes, the lock says"),
    ("extra file", _extra_file, "extra file"),
    ("missing file", _missing_file, "is missing"),
    ("renamed file", _renamed_file, "is missing"),
    ("symlinked file", _symlink_file, "symlink"),
    ("symlinked folder", _symlink_folder, "symlink"),
    ("hard link changed elsewhere", _hard_link_changed, "content changed"),
    ("fifo", _fifo, "fifo"),
    ("edited lock entry", _edited_lock_entry, "digest does not match"),
    ("edited file and lock entry", _rehashed_lock_entry, "digest does not match"),
    ("lock path leaves the bundle", _lock_path_escape, "leaves its root"),
    ("garbage lock", _garbage_lock, "is not valid JSON (line 1, column 1: Expecting value)"),
    ("lock field of the wrong type", _lock_wrong_type, "components"),
]
IDS = [d[0] for d in DAMAGE]


def test_intact_bundle_verifies(built: dict[str, Bundle]) -> None:
    report = verify_bundle(built["custom_layer"].path)
    assert report.ok, report.problems
    assert report.digest == built["custom_layer"].digest
    assert report.plan is not None and report.plan.mode == "keras"
    assert report.bytes_hashed == sum(e.size for e in built["custom_layer"].lock.files.values())


@pytest.mark.parametrize(("label", "damage", "words"), DAMAGE, ids=IDS)
def test_verify_names_the_damaged_file(
    copy_bundle: CopyBundle, label: str, damage: Callable[[Path], str], words: str
) -> None:
    root = copy_bundle()
    named = damage(root)
    report = verify_bundle(root)
    assert not report.ok
    assert any(p.path == named and words in p.message for p in report.problems), report.problems


@pytest.mark.parametrize(("label", "damage", "words"), DAMAGE, ids=IDS)
def test_load_refuses_a_damaged_bundle(
    copy_bundle: CopyBundle, label: str, damage: Callable[[Path], str], words: str
) -> None:
    root = copy_bundle()
    named = damage(root)
    with pytest.raises(IntegrityError) as caught:
        load_bundle(root)
    assert named in str(caught.value)


def test_verify_reports_every_problem_not_just_the_first(copy_bundle: CopyBundle) -> None:
    root = copy_bundle()
    _flip_byte(root)
    _extra_file(root)
    _missing_file(root)
    paths = {p.path for p in verify_bundle(root).problems}
    assert {"model.keras", "saved_model/notes.txt", "saved_model/fingerprint.pb"} <= paths


def test_verify_never_reads_outside_through_a_symlinked_folder(copy_bundle: CopyBundle) -> None:
    root = copy_bundle()
    _symlink_folder(root)
    report = verify_bundle(root)
    assert report.lock is not None
    # files below the link are reported missing, never hashed through the link
    assert (
        report.bytes_hashed
        < sum(
            e.size for name, e in report.lock.files.items() if not name.startswith("saved_model/")
        )
        + 1
    )


def test_not_a_bundle_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such bundle folder"):
        verify_bundle(tmp_path / "nope")
    with pytest.raises(UsageError, match=r"has no bundle\.lock\.json"):
        verify_bundle(tmp_path)


@pytest.mark.parametrize(
    ("label", "damage", "words"),
    [DAMAGE[0], DAMAGE[2], DAMAGE[5], DAMAGE[9]],
    ids=[IDS[0], IDS[2], IDS[5], IDS[9]],
)
def test_cli_verify_exits_1_and_names_the_file(
    copy_bundle: CopyBundle, label: str, damage: Callable[[Path], str], words: str
) -> None:
    root = copy_bundle()
    named = damage(root)
    result = run_bundle("verify", str(root))
    assert result.returncode == 1, result.stdout + result.stderr
    assert named in result.stdout and "FAILED" in result.stdout
    assert "Traceback" not in result.stderr

    as_json = run_bundle("verify", str(root), "--json")
    document = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and document["ok"] is False
    assert any(p["path"] == named for p in document["problems"])


def test_cli_verify_ok_json(built: dict[str, Bundle]) -> None:
    result = run_bundle("verify", str(built["custom_layer"].path), "--json", env=service_env())
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert document["digest"] == built["custom_layer"].digest
    assert document["problems"] == []
    assert document["plan"]["mode"] == "keras"


def test_cli_verify_not_a_bundle_exits_2(tmp_path: Path) -> None:
    result = run_bundle("verify", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "no such bundle folder" in result.stderr and "Traceback" not in result.stderr


def test_verify_does_not_import_tensorflow_or_keras(built: dict[str, Bundle]) -> None:
    code = (
        "import sys, bundler\n"
        f"report = bundler.verify_bundle({str(built['custom_layer'].path)!r})\n"
        "assert report.ok, report.problems\n"
        # pydantic too: verify's start-up budget (issue 5) leaves no room for it
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('tensorflow', 'keras', 'pydantic'))\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
    )
    result = run_python(code, env=service_env())  # the component is importable, yet not imported
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"


def test_a_hard_linked_backup_does_not_fail_the_original(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    """`cp -al` (or rsync --link-dest) shares every file's bytes; both copies stay verifiable."""
    root = copy_bundle()
    backup = tmp_path / "backup"
    subprocess.run(["cp", "-al", str(root), str(backup)], check=True)
    assert os.stat(root / "model.keras").st_nlink == 2
    assert verify_bundle(root).ok, verify_bundle(root).problems
    assert verify_bundle(backup).ok


def test_a_symlink_to_a_bundle_folder_is_the_bundle(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    """`current -> v3` is how deploys flip versions: verify and load follow it, once."""
    root = copy_bundle()
    current = tmp_path / "current"
    current.symlink_to(root, target_is_directory=True)
    report = verify_bundle(current)
    assert report.ok, report.problems
    assert report.bundle == str(root)  # resolved once: a flip mid-verify cannot mix two bundles
    assert load_bundle(current, verify=True).path == root
    (root / "saved_model" / "inner").symlink_to(root / "model.keras")  # links inside: refused
    assert any(p.kind == "symlink" for p in verify_bundle(current).problems)
