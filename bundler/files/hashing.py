"""Bytes to digests: streaming, parallel file hashing, and the check of files against the lock.

Hashing reads each file once, in large chunks, on one thread per core, the calling thread among
them: hashlib releases the GIL while it digests a chunk, so every core is busy and memory stays
flat whatever the file size. A thread needs the GIL back between chunks, so Python run beside the
hashing stalls it: callers run their checks before they hash. Files are opened only as regular
files, never through a symlink (``bundle_paths.open_regular``), so a symlink swapped in after the
walk is refused rather than followed out of the bundle.

A file larger than ``SHARD_SIZE`` also gets the sha256 of each ``SHARD_SIZE`` slice (its shards),
as OpenSSF model-signing does: the build computes them in the same single read as the whole-file
sha256 (a second thread digests the shards), and verification checks the shards, which cover
every byte, in parallel, so a bundle dominated by one 1 GB variables file still keeps every core
busy. The whole-file sha256 stays in the lock for ``sha256sum`` and other tools.

``check_digests`` is the files table's check: every file against its lock entry, by whole-file
sha256 or shard by shard. Reading a sharded file through its checks as a parser consumes it is
``bundler.files.window``; where a bundle's files may be and how a folder is walked is
``bundler.lock.paths``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bundler.lock.model import FileEntry
from bundler.lock.paths import open_regular
from bundler.types import ProblemKind

CHUNK_SIZE = 4 << 20  # large reads amortise syscalls; 4 MiB keeps a thread's buffer small
SHARD_SIZE = 128 << 20  # 8 shards for 1 GB: enough to balance two cores, few enough to list

Progress = Callable[[int], None]
ProgressFactory = Callable[[int], Progress | None]  # total bytes -> a callback for bytes done


@dataclass(frozen=True)
class FileDigest:
    """What hashing one file found: its size, its sha256, and its shards' sha256 if it has any."""

    size: int
    sha256: str
    shards: tuple[str, ...] = ()  # sha256 of each SHARD_SIZE slice, for files over SHARD_SIZE


def _digest_shards(chunks: queue.Queue[bytes | None], shard_size: int, out: list[str]) -> None:
    """Consume chunks (None ends them) and append the sha256 of every shard_size slice."""
    current, filled = hashlib.sha256(), 0
    while (chunk := chunks.get()) is not None:
        view = memoryview(chunk)
        while view:
            take = min(len(view), shard_size - filled)
            current.update(view[:take])
            filled += take
            view = view[take:]
            if filled == shard_size:
                out.append(current.hexdigest())
                current, filled = hashlib.sha256(), 0
    if filled:
        out.append(current.hexdigest())


def hash_file(
    path: Path, progress: Progress | None = None, *, shard_size: int | None = None
) -> FileDigest:
    """sha256 and size of one regular file, streamed; refuses to follow a symlink.

    With ``shard_size``, a file larger than it also gets its shard digests, from the same read:
    this thread digests the whole file while a helper thread digests the shards.
    """
    fd = open_regular(path)
    with os.fdopen(fd, "rb", buffering=0) as stream:
        digest = hashlib.sha256()
        size = 0
        sharded = shard_size is not None and os.fstat(fd).st_size > shard_size
        if not sharded:
            buffer = bytearray(CHUNK_SIZE)
            view = memoryview(buffer)
            while count := stream.readinto(buffer):
                digest.update(view[:count])
                size += count
                if progress is not None:
                    progress(count)
            return FileDigest(size, digest.hexdigest())
        assert shard_size is not None
        shards: list[str] = []
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)  # bounded: memory stays flat
        helper = threading.Thread(
            target=_digest_shards, args=(chunks, shard_size, shards), name="bundler-shards"
        )
        helper.start()
        try:
            while chunk := stream.read(CHUNK_SIZE):  # a fresh buffer: the helper still reads it
                digest.update(chunk)
                chunks.put(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        finally:
            chunks.put(None)
            helper.join()
        return FileDigest(size, digest.hexdigest(), tuple(shards))


def hash_range(path: Path, start: int, length: int, progress: Progress | None = None) -> str:
    """sha256 of ``length`` bytes of a regular file from ``start`` (one shard), with preads.

    OSError if the file ends early.
    """
    fd = open_regular(path)
    try:
        digest = hashlib.sha256()
        buffer = bytearray(min(CHUNK_SIZE, max(length, 1)))
        view = memoryview(buffer)
        offset, end = start, start + length
        while offset < end:
            count = os.preadv(fd, [view[: min(len(buffer), end - offset)]], offset)
            if count == 0:
                raise OSError(f"{path} ended at byte {offset}, before the {end} the lock lists")
            digest.update(view[:count])
            offset += count
            if progress is not None:
                progress(count)
        return digest.hexdigest()
    finally:
        os.close(fd)


def hash_and_keep(
    path: Path, entry: FileEntry, progress: Progress | None
) -> tuple[FileDigest, bytes | None]:
    """sha256 and size of a small file from one read of all its bytes, with those bytes when
    they are the ones ``entry`` lists (else None): a check that parses the file reads it no
    second time. At most one byte more than the entry's size is read (a file that grew is seen,
    not read)."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb", buffering=0) as stream:
        parts = []
        left = entry.size + 1
        while left > 0 and (part := stream.read(left)):
            parts.append(part)
            left -= len(part)
    data = b"".join(parts)
    sha256 = hashlib.sha256(data).hexdigest()
    if progress is not None:
        progress(len(data))
    intact = len(data) == entry.size and sha256 == entry.sha256
    return FileDigest(len(data), sha256), data if intact else None


def _largest_first(root: Path, items: list[str]) -> list[str]:
    def size_of(rel: str) -> int:
        try:
            return (root / rel).lstat().st_size
        except OSError:
            return 0

    return sorted(items, key=size_of, reverse=True)


def run_all(tasks: list[Callable[[], object]], workers: int | None) -> list[object]:
    """Run every task on up to ``workers`` threads (one per core by default), the calling thread
    being one of them: the results in the tasks' order, an OSError a task raises being its
    result. Each thread takes the next task in order when it is free, so larger files listed
    first start first. Any other exception (an interrupt too) stops every thread after the task
    it is on, and is raised here."""
    count = min(len(tasks), workers or os.cpu_count() or 1)
    results: list[object] = [None] * len(tasks)
    failures: list[BaseException] = []
    order = itertools.count()  # next() on it is atomic: each task is taken once

    def work() -> None:
        try:
            while not failures and (index := next(order)) < len(tasks):
                try:
                    results[index] = tasks[index]()
                except OSError as error:
                    results[index] = error
        except BaseException as error:  # re-raised by the calling thread
            failures.append(error)

    helpers = [
        threading.Thread(target=work, name=f"bundler-hash-{number}", daemon=True)
        for number in range(count - 1)
    ]
    for helper in helpers:
        helper.start()
    try:
        work()
    finally:
        for helper in helpers:
            helper.join()
    if failures:
        raise failures[0]
    return results


@contextlib.contextmanager
def metered(on_hashing: ProgressFactory | None, total: int) -> Iterator[Progress | None]:
    """The callback ``on_hashing`` gives for ``total`` bytes; closed afterwards if it can be."""
    meter = on_hashing(total) if on_hashing is not None else None
    try:
        yield meter
    finally:
        close = getattr(meter, "close", None)
        if close is not None:
            close()


def hash_files(
    root: Path,
    paths: Iterable[str],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    shard_size: int | None = SHARD_SIZE,
    then: Callable[[Path], None] | None = None,
) -> dict[str, FileDigest | OSError]:
    """Hash many files below ``root`` in parallel; a file that cannot be read maps to its OSError.

    Larger files are submitted first so that one big file does not start last and leave a core
    idle. Files over ``shard_size`` get their shard digests too (see ``hash_file``). ``then``
    is called with each file's path once it is hashed, by the same worker (the build flushes it).
    """
    items = _largest_first(root, list(paths))

    def hash_then(path: Path) -> FileDigest:
        result = hash_file(path, progress, shard_size=shard_size)
        if then is not None:
            then(path)
        return result

    results = run_all([functools.partial(hash_then, root / rel) for rel in items], workers)
    return dict(zip(items, results, strict=True))  # type: ignore[arg-type, unused-ignore]


def shard_spans(size: int, shard_size: int) -> list[tuple[int, int]]:
    """(start, length) of each shard of a file of ``size`` bytes."""
    return [(start, min(shard_size, size - start)) for start in range(0, size, shard_size)]


def check_digests(
    root: Path,
    expected: Mapping[str, FileEntry],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    consumers: Mapping[str, Callable[[bytes], None]] | None = None,
) -> dict[str, tuple[ProblemKind, str] | None]:
    """Check files against lock entries in parallel: name -> None if intact, else (kind, why).

    An entry with ``shards`` is checked shard by shard (each shard a task of its own, so one
    large file is spread over every core); the others by their whole-file sha256.

    A small file named in ``consumers`` is read whole by the calling thread (``hash_and_keep``),
    and its bytes, once they match, go to its consumer there, before the workers start on the
    other files: a parser of that file reads nothing again, and does not run beside the hashing
    (on the GIL it would slow the workers by more than it takes alone; benchmarks/README.md).
    """
    verdicts: dict[str, tuple[ProblemKind, str] | None] = dict.fromkeys(expected)
    handed = {
        rel: consume
        for rel, consume in (consumers or {}).items()
        if rel in expected and expected[rel].shards is None
    }
    for rel, consume in handed.items():
        try:
            digest, data = hash_and_keep(root / rel, expected[rel], progress)
        except OSError as error:
            verdicts[rel] = _verdict(rel, -1, error, expected[rel])
            continue
        verdicts[rel] = _verdict(rel, -1, digest, expected[rel])
        if data is not None:
            consume(data)
    tasks: list[Callable[[], object]] = []
    owners: list[tuple[str, int]] = []  # (file, shard index or -1 for the whole file)
    # larger first, by the sizes the lock lists (the walk found them so, or they are problems)
    for rel in sorted(
        (rel for rel in expected if rel not in handed), key=lambda rel: -expected[rel].size
    ):
        entry = expected[rel]
        shards = entry.shards
        if shards is not None:
            spans = shard_spans(int(entry.size), int(shards.size))
            if len(spans) != len(shards.sha256):
                verdicts[rel] = (
                    "shards",
                    f"the lock lists {len(shards.sha256)} shards of {shards.size} bytes "
                    f"for {entry.size} bytes; they must cover the file exactly",
                )
                continue
            for index, (start, length) in enumerate(spans):
                tasks.append(functools.partial(hash_range, root / rel, start, length, progress))
                owners.append((rel, index))
        else:
            tasks.append(functools.partial(hash_file, root / rel, progress))
            owners.append((rel, -1))
    for (rel, index), result in zip(owners, run_all(tasks, workers), strict=True):
        if verdicts[rel] is not None:
            continue  # the first problem of a file is enough
        verdicts[rel] = _verdict(rel, index, result, expected[rel])
    return verdicts


def _verdict(
    rel: str, index: int, result: object, entry: FileEntry
) -> tuple[ProblemKind, str] | None:
    if isinstance(result, OSError):
        return "unreadable", f"cannot be read: {result.strerror or result}"
    if index < 0:
        assert isinstance(result, FileDigest)
        if result.sha256 != entry.sha256:
            return "changed", (
                f"content changed: sha256 {result.sha256[:16]}..., "
                f"the lock says {entry.sha256[:16]}..."
            )
        if result.size != entry.size:
            return "size", "changed size while being read"
        return None
    shards = entry.shards
    assert shards is not None and isinstance(result, str)
    want = shards.sha256[index]
    if result != want:
        start = index * shards.size
        return "changed", (
            f"content changed in shard {index} (from byte {start}): sha256 {result[:16]}..., "
            f"the lock says {want[:16]}..."
        )
    return None
