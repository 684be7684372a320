"""Large files are hashed in shards: built in one read, verified in parallel, every byte covered."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bundler import verify_bundle
from bundler.build.lock_writer import files_table
from bundler.files.hashing import SHARD_SIZE, check_digests, hash_file
from bundler.lock.model import LOCK_FILENAME, FileEntry
from bundler.types import ProblemKind

from ..conftest import ROOT, CopyBundle, cli_env
from ..hostile import add_sealed_file

MiB = 1 << 20
BIG = "saved_model/variables/big.data"


def _random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 0x01]))


def test_one_read_gives_the_whole_file_digest_and_every_shard(tmp_path: Path) -> None:
    data = _random_file(tmp_path / "f", 5 * MiB + 123)
    seen: list[int] = []
    result = hash_file(tmp_path / "f", seen.append, shard_size=MiB)
    assert result.size == len(data) and sum(seen) == len(data), "each byte read once"
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    expected = [hashlib.sha256(data[i : i + MiB]).hexdigest() for i in range(0, len(data), MiB)]
    assert list(result.shards) == expected and len(expected) == 6
    assert hash_file(tmp_path / "f", shard_size=8 * MiB).shards == (), "small files: no shards"


def _entry(path: Path, shard_size: int) -> dict[str, Any]:
    result = hash_file(path, shard_size=shard_size)
    shards = {"size": shard_size, "sha256": list(result.shards)}
    return {"size": result.size, "sha256": result.sha256, "shards": shards}


def _check(root: Path, entry: dict[str, Any]) -> dict[str, tuple[ProblemKind, str] | None]:
    return check_digests(root, {"f": FileEntry.from_dict(entry)})


@pytest.mark.parametrize("offset", [0, MiB - 1, MiB, 3 * MiB + 7, 4 * MiB + 99])
def test_a_flipped_byte_in_any_shard_is_found_and_named(tmp_path: Path, offset: int) -> None:
    path = tmp_path / "f"
    _random_file(path, 4 * MiB + 100)
    entry = _entry(path, MiB)
    assert _check(tmp_path, entry) == {"f": None}
    _flip(path, offset)
    problem = _check(tmp_path, entry)["f"]
    assert problem is not None
    kind, message = problem
    assert kind == "changed"
    assert f"shard {offset // MiB} (from byte {offset // MiB * MiB})" in message


def test_a_shard_table_must_cover_the_file_exactly(tmp_path: Path) -> None:
    path = tmp_path / "f"
    _random_file(path, 3 * MiB)
    entry = _entry(path, MiB)
    entry["shards"]["sha256"].pop()  # the last MiB would go unchecked
    problem = _check(tmp_path, entry)["f"]
    assert problem is not None
    kind, message = problem
    assert kind == "shards" and "must cover the file exactly" in message


def test_a_file_cut_short_is_unreadable_not_silently_shorter(tmp_path: Path) -> None:
    path = tmp_path / "f"
    _random_file(path, 3 * MiB)
    entry = _entry(path, MiB)
    os.truncate(path, 2 * MiB + 5)
    problem = _check(tmp_path, entry)["f"]
    assert problem is not None
    kind, message = problem
    assert kind == "unreadable" and "ended at byte" in message


def test_build_records_shards_for_large_files_only(tmp_path: Path) -> None:
    big = tmp_path / "variables.data"
    with big.open("wb") as stream:  # sparse: fast to write, read like any file
        stream.truncate(2 * SHARD_SIZE + 5)
    (tmp_path / "small").write_bytes(b"x")
    files = files_table(tmp_path)
    assert "shards" not in files["small"]
    assert files["variables.data"]["shards"]["size"] == SHARD_SIZE
    assert len(files["variables.data"]["shards"]["sha256"]) == 3


def test_a_sharded_bundle_verifies_and_names_damage_by_shard(copy_bundle: CopyBundle) -> None:
    root = copy_bundle("sequential")
    big = add_sealed_file(root, BIG, SHARD_SIZE + 10 * MiB, at=SHARD_SIZE + 5, data=os.urandom(64))
    lock_path = root / LOCK_FILENAME
    lock = json.loads(lock_path.read_text())
    report = verify_bundle(root)
    assert report.ok, report.problems

    _flip(big, SHARD_SIZE + 6)
    report = verify_bundle(root)
    assert [(p.path, p.kind) for p in report.problems] == [(BIG, "changed")]
    assert "shard 1" in report.problems[0].message

    # the digest covers the shard table: editing it without resealing is caught
    _flip(big, SHARD_SIZE + 6)
    lock["files"][BIG]["shards"]["sha256"][0] = "0" * 64
    lock_path.write_text(json.dumps(lock))
    assert "digest" in [p.kind for p in verify_bundle(root).problems]


def _peak_rss_of_verify(root: Path) -> int:
    """Exit code checked, peak resident memory in bytes of one `bundle verify` process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bundler", "verify", str(root)],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0
    return usage.ru_maxrss * 1024  # kilobytes on Linux


def test_verify_memory_stays_flat_whatever_the_bundle_size(copy_bundle: CopyBundle) -> None:
    root = copy_bundle("sequential")
    small = _peak_rss_of_verify(root)
    add_sealed_file(root, BIG, 1 << 30)  # 1 GiB that costs no disk: a sparse file reads as zeros
    grown = _peak_rss_of_verify(root) - small
    # read buffers of a few MiB per thread, whatever the size: not the file, nor a slice of it
    assert grown < 64 * MiB, f"verify of a 1 GiB file used {grown / MiB:.0f} MiB more"
