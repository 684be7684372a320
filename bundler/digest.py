"""Bytes to digests: streaming, parallel file hashing and a walk of a bundle that trusts nothing.

Hashing reads each file once, in large chunks, on a pool of threads: hashlib releases the GIL while
it digests a chunk, so with one thread per core every core is busy and memory stays flat whatever
the file size. Files are opened with ``O_NOFOLLOW`` so that a symlink swapped in after the walk is
refused rather than followed out of the bundle.

The walk uses ``lstat`` only and never follows a link: a bundle is plain files in plain folders, and
anything else (symlink, FIFO, device, socket, a file hard-linked elsewhere) is reported by name.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK_SIZE = 4 << 20  # large reads amortise syscalls; 4 MiB keeps a thread's buffer small
MAX_PATH_LENGTH = 1024
MAX_PATH_DEPTH = 32

Progress = Callable[[int], None]


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str


@dataclass(frozen=True)
class TreeEntry:
    """One thing found under a bundle root, by its POSIX path relative to the root."""

    path: str
    kind: str  # "file", "dir", "symlink", "fifo", "device", "socket", "other"
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


def _kind(mode: int) -> str:
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


def hash_file(path: Path, progress: Progress | None = None) -> FileDigest:
    """sha256 and size of one regular file, streamed; refuses to follow a symlink."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    with os.fdopen(os.open(path, flags), "rb", buffering=0) as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray(CHUNK_SIZE)
        view = memoryview(buffer)
        while count := stream.readinto(buffer):
            digest.update(view[:count])
            size += count
            if progress is not None:
                progress(count)
        return FileDigest(size, digest.hexdigest())


def hash_files(
    root: Path,
    paths: Iterable[str],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, FileDigest | OSError]:
    """Hash many files below ``root`` in parallel; a file that cannot be read maps to its OSError.

    Larger files are submitted first so that one big file does not start last and leave a core idle.
    """
    items = list(paths)

    def size_of(rel: str) -> int:
        try:
            return (root / rel).lstat().st_size
        except OSError:
            return 0

    items.sort(key=size_of, reverse=True)

    def one(rel: str) -> FileDigest | OSError:
        try:
            return hash_file(root / rel, progress)
        except OSError as error:
            return error

    if not items:
        return {}
    count = min(len(items), workers or os.cpu_count() or 1)
    if count == 1:
        return {rel: one(rel) for rel in items}
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="bundler-hash") as pool:
        return dict(zip(items, pool.map(one, items), strict=False))
