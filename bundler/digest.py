"""Bytes to digests: streaming, parallel file hashing and a walk of a bundle that trusts nothing.

Hashing reads each file once, in large chunks, on a pool of threads: hashlib releases the GIL while
it digests a chunk, so with one thread per core every core is busy and memory stays flat whatever
the file size. Files are opened with ``O_NOFOLLOW`` so that a symlink swapped in after the walk is
refused rather than followed out of the bundle.

A file larger than ``SHARD_SIZE`` also gets the sha256 of each ``SHARD_SIZE`` slice (its shards),
as OpenSSF model-signing does: the build computes them in the same single read as the whole-file
sha256 (a second thread digests the shards), and verification checks the shards, which cover
every byte, in parallel, so a bundle dominated by one 1 GB variables file still keeps every core
busy. The whole-file sha256 stays in the lock for ``sha256sum`` and other tools.

The walk uses ``lstat`` only and never follows a link: a bundle is plain files in plain folders, and
anything else (symlink, FIFO, device, socket) is reported by name. A file hard-linked elsewhere is a
plain file, judged by its bytes like any other.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .lock import FileEntry
from .types import EntryKind, ProblemKind

CHUNK_SIZE = 4 << 20  # large reads amortise syscalls; 4 MiB keeps a thread's buffer small
SHARD_SIZE = 128 << 20  # 8 shards for 1 GB: enough to balance two cores, few enough to list
MAX_PATH_LENGTH = 1024
MAX_PATH_DEPTH = 32

Progress = Callable[[int], None]
ProgressFactory = Callable[[int], Progress | None]  # total bytes -> a callback for bytes done


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    shards: tuple[str, ...] = ()  # sha256 of each SHARD_SIZE slice, for files over SHARD_SIZE


@dataclass(frozen=True)
class TreeEntry:
    """One thing found under a bundle root, by its POSIX path relative to the root."""

    path: str
    kind: EntryKind
    size: int
    links: int  # st_nlink: more than one means the bytes are shared with a file elsewhere


def unsafe_path_reason(path: str) -> str | None:
    """Why ``path`` may not appear in a manifest or a lock, or None when it is safe.

    Safe means: relative, POSIX separators, already normalized, no ``..``, no NUL or control
    characters, bounded length. Checked on the text alone, before the file system is touched.
    """
    if not isinstance(path, str) or not path:
        return "is empty"
    if len(path) > MAX_PATH_LENGTH:
        return f"is longer than {MAX_PATH_LENGTH} characters"
    if any(ord(ch) < 32 or ch == "\x7f" for ch in path):
        return "contains a control character"
    if "\\" in path:
        return "contains a backslash (paths use '/')"
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return "is absolute"
    parts = path.split("/")
    if ".." in parts:
        return "leaves its root through '..'"
    if any(part in ("", ".") for part in parts) or str(PurePosixPath(path)) != path:
        return "is not normalized"
    if len(parts) > MAX_PATH_DEPTH:
        return f"is nested deeper than {MAX_PATH_DEPTH} levels"
    return None


def _kind(mode: int) -> EntryKind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "other"


def walk_tree(root: Path) -> list[TreeEntry]:
    """Every entry below ``root`` (not ``root`` itself), sorted by path, without following links."""
    entries: list[TreeEntry] = []
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as scan:
            for item in scan:
                info = item.stat(follow_symlinks=False)
                rel = f"{prefix}{item.name}"
                kind = _kind(info.st_mode)
                entries.append(TreeEntry(rel, kind, info.st_size, info.st_nlink))
                if kind == "dir":
                    pending.append((rel + "/", Path(item.path)))
    entries.sort(key=lambda entry: entry.path)
    return entries


def read_plain_file(path: Path, limit: int) -> bytes:
    """A small regular file's bytes, at most ``limit``: never through a symlink, never blocking
    on a FIFO or a device swapped in after an earlier check (ValueError for those)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    with os.fdopen(os.open(path, flags), "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise ValueError("is not a plain file")
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"is larger than {limit} bytes")
    return data


def _open_regular(path: Path) -> int:
    """A descriptor for reading a regular file, never through a symlink (OSError otherwise)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


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
    fd = _open_regular(path)
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
    fd = _open_regular(path)
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


def _largest_first(root: Path, items: list[str]) -> list[str]:
    def size_of(rel: str) -> int:
        try:
            return (root / rel).lstat().st_size
        except OSError:
            return 0

    return sorted(items, key=size_of, reverse=True)


def _run_all(tasks: list[Callable[[], object]], workers: int | None) -> list[object]:
    """Run every task on up to ``workers`` threads; an OSError a task raises is its result."""

    def run(task: Callable[[], object]) -> object:
        try:
            return task()
        except OSError as error:
            return error

    count = min(len(tasks), workers or os.cpu_count() or 1)
    if count <= 1:
        return [run(task) for task in tasks]
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="bundler-hash") as pool:
        return list(pool.map(run, tasks))


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

    results = _run_all([functools.partial(hash_then, root / rel) for rel in items], workers)
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
) -> dict[str, tuple[ProblemKind, str] | None]:
    """Check files against lock entries in parallel: name -> None if intact, else (kind, why).

    An entry with ``shards`` is checked shard by shard (each shard a task of its own, so one
    large file is spread over every core); the others by their whole-file sha256.
    """
    tasks: list[Callable[[], object]] = []
    owners: list[tuple[str, int]] = []  # (file, shard index or -1 for the whole file)
    verdicts: dict[str, tuple[ProblemKind, str] | None] = dict.fromkeys(expected)
    for rel in _largest_first(root, list(expected)):
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
    for (rel, index), result in zip(owners, _run_all(tasks, workers), strict=True):
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


class ShardMismatch(Exception):
    """A shard of a file does not match its digest (the message says which, from which byte)."""


class FileWindow(io.RawIOBase):
    """Bytes [start, start + size) of an open file descriptor as a read-only, seekable stream: a
    stored zip member handed to h5py as if it were its own file, or a whole file read through a
    check (``VerifiedFile``). Reads use ``pread``: no shared file position, no copy beyond one."""

    def __init__(self, descriptor: int, start: int, size: int) -> None:
        super().__init__()
        self.descriptor, self.start, self.size, self.position = descriptor, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = max(0, min(len(view), self.size - self.position))
        if wanted == 0:
            return 0
        self.before_read(self.position, wanted)
        at = self.start + self.position
        if hasattr(os, "preadv"):
            count = os.preadv(self.descriptor, [view[:wanted]], at)
        else:  # a system without preadv
            data = os.pread(self.descriptor, wanted, at)
            count = len(data)
            view[:count] = data
        self.position += count
        return count

    def before_read(self, offset: int, size: int) -> None:
        """Called before bytes [offset, offset + size) of the window are read; nothing here."""


class VerifiedFile(FileWindow):
    """A sharded file whose bytes are checked before they are read: each read first verifies, once,
    every shard it touches, so a parser reading through it sees only bytes whose digest matched.

    ``check_rest`` verifies the shards no read has touched, in parallel; a loader runs it on
    another core while it builds from what it already read. A mismatch raises ShardMismatch, and
    ``failure`` keeps its message (a parser may turn the exception into its own).
    """

    def __init__(self, path: Path, size: int, shard_size: int, digests: list[str]) -> None:
        self.path = path
        self._spans = shard_spans(size, shard_size)
        if len(self._spans) != len(digests):
            raise ValueError(f"{len(digests)} shard digests for {len(self._spans)} shards")
        self._shard_size, self._digests = shard_size, digests
        self._checked = [False] * len(digests)
        self._locks = [threading.Lock() for _ in digests]
        self.failure: str | None = None
        super().__init__(_open_regular(path), 0, size)

    def before_read(self, offset: int, size: int) -> None:
        self._verify(range(offset // self._shard_size, (offset + size - 1) // self._shard_size + 1))

    def close(self) -> None:
        if not self.closed:
            os.close(self.descriptor)
        super().close()

    def unchecked(self) -> list[int]:
        return [index for index, done in enumerate(self._checked) if not done]

    def check(self, indices: Iterable[int], workers: int | None = None) -> None:
        """Verify these shards now, in parallel (ShardMismatch, or OSError, on a bad one)."""
        self._verify(indices, workers)

    def check_rest(self, workers: int | None = None) -> None:
        """Verify every shard not yet verified (ShardMismatch, or OSError, on the first bad one)."""
        self._verify(self.unchecked(), workers)

    def _verify(self, indices: Iterable[int], workers: int | None = 1) -> None:
        todo = [index for index in indices if not self._checked[index]]
        if not todo:
            return  # bytes already verified stay readable, whatever was found elsewhere since
        if self.failure is not None:
            raise ShardMismatch(self.failure)
        tasks: list[Callable[[], object]] = [
            functools.partial(self._check_one, index) for index in todo
        ]
        for result in _run_all(tasks, workers):
            if isinstance(result, OSError):
                raise result

    def _check_one(self, index: int) -> None:
        # one lock a shard: a read waits for a shard another thread is hashing, never hashes twice
        with self._locks[index]:
            if self._checked[index]:
                return
            if self.failure is not None:
                raise ShardMismatch(self.failure)
            start, length = self._spans[index]
            result = hash_range(self.path, start, length)
            if result != self._digests[index]:
                self.failure = (
                    f"content changed in shard {index} (from byte {start}): "
                    f"sha256 {result[:16]}..., the lock says {self._digests[index][:16]}..."
                )
                raise ShardMismatch(self.failure)
            self._checked[index] = True
