"""Where a bundle's files may be and how they are reached: path rules, a walk, plain-file opens.

A bundle is plain files in plain folders. Every path a manifest or a lock names is judged on its
text first (``unsafe_path_reason``: relative, normalized, bounded), before the file system is
touched; the walk of a bundle folder uses ``lstat`` only and never follows a link, so anything
else (symlink, FIFO, device, socket) is reported by name. A file hard-linked elsewhere is a plain
file, judged by its bytes like any other. Files are opened with ``O_NOFOLLOW`` and checked to be
regular after the open, so a symlink or FIFO swapped in after the walk is refused rather than
followed out of the bundle or blocked on.

These rules are apart from hashing (``bundler.digest``) because the manifest, the lock schema,
the OCI client and the graph scan apply them to text alone, with no bytes to hash.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .types import EntryKind

MAX_PATH_LENGTH = 1024
MAX_PATH_DEPTH = 32


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


def open_regular(path: Path) -> int:
    """A descriptor for reading a regular file, never through a symlink (OSError otherwise)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd
