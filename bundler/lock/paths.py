"""Where a bundle's files may be and how they are reached: path rules, a walk, plain-file opens.

A bundle is plain files in plain folders. Every path a manifest or a lock names is judged on its
text first (``unsafe_path_reason``: relative, normalized, bounded), before the file system is
touched; the walk of a bundle folder uses ``lstat`` only and never follows a link, so anything
else (symlink, FIFO, device, socket) is reported by name. A file hard-linked elsewhere is a plain
file, judged by its bytes like any other. Files are opened with ``O_NOFOLLOW`` and checked to be
regular after the open, so a symlink or FIFO swapped in after the walk is refused rather than
followed out of the bundle or blocked on.

``open_in_bundle`` is how every reader of a bundle's files (verify's archive checks, ``diff``,
the replay of golden examples, ``load_bundle``) opens one, by its path in the lock: the path
judged on its text, then each folder on the way opened relative to the one before with
``O_NOFOLLOW | O_DIRECTORY`` (so neither the file nor a folder above it can be a link out of the
bundle), the file itself looked at with ``lstat`` before it is opened ``O_NONBLOCK`` (a FIFO or
a device is refused unopened, and one swapped in meanwhile cannot block), checked to be a regular
file after the open, and of the size the lock lists. What it refuses is an ``UnsafeFileError``
naming the entry at fault, with the problem kind ``bundle verify`` would report for it.

These rules are apart from hashing (``bundler.files.hashing``) because the manifest, the lock
schema, the OCI client and the graph scan apply them to text alone, with no bytes to hash.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from bundler.types import EntryKind, ProblemKind

MAX_PATH_LENGTH = 1024
MAX_PATH_DEPTH = 32
_CONTROL = re.compile("[\x00-\x1f\x7f]")


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
    if _CONTROL.search(path):
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


def enclosing_file(path: str, files: Collection[str]) -> str | None:
    """The first folder on ``path``'s way that ``files`` holds as a file (``model.keras`` for
    ``model.keras/inner``), or None: the two cannot both be in one folder tree."""
    parts = path.split("/")
    return next(
        (folder for depth in range(1, len(parts)) if (folder := "/".join(parts[:depth])) in files),
        None,
    )


def holds_files(path: str, files: Collection[str]) -> bool:
    """Whether ``files`` holds a file inside ``path``, which therefore must be a folder."""
    folder = path + "/"
    return any(name.startswith(folder) for name in files)


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


class UnsafeFileError(OSError):
    """A bundle file that may not be read as it is: ``relative`` names the entry at fault (the
    file, or a folder on its way), ``kind`` is the problem ``bundle verify`` reports for it, and
    ``reason`` says what is wrong in the words verify uses."""

    def __init__(self, relative: str, kind: ProblemKind, reason: str) -> None:
        super().__init__(reason)
        self.relative, self.kind, self.reason = relative, kind, reason

    def __str__(self) -> str:
        return f"{self.relative}: {self.reason}"


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = (
    os.O_RDONLY
    | _NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _not_plain(relative: str, kind: EntryKind) -> UnsafeFileError:
    """Why the entry at ``relative`` is not what the lock's path needs there."""
    if kind == "dir":
        return UnsafeFileError(relative, "type", "is a folder, the lock lists a file")
    if kind == "file":
        return UnsafeFileError(relative, "type", "is a file, the lock lists files inside it")
    problem: ProblemKind = "other" if kind == "other" else kind
    return UnsafeFileError(relative, problem, f"is a {kind}; bundles hold plain files only")


def open_in_bundle(root: Path, relative: str, size: int | None = None) -> int:
    """A read-only descriptor of the plain file at ``relative`` (a lock path) inside ``root``,
    reached as the module docstring says, never outside the bundle and never blocking; with
    ``size``, it must have that many bytes. UnsafeFileError (an OSError) otherwise."""
    reason = unsafe_path_reason(relative)
    if reason is not None:
        raise UnsafeFileError(relative, "unsafe", f"path {relative!r} {reason}")
    parts = relative.split("/")
    try:
        folder = os.open(root, _FOLDER_FLAGS)  # the bundle folder itself: bundle_root resolved it
    except OSError as error:
        raise UnsafeFileError(".", "unreadable", f"cannot be read: {error.strerror}") from None
    try:
        for depth, part in enumerate(parts):
            here = "/".join(parts[: depth + 1])
            last = depth == len(parts) - 1
            try:
                kind = _kind(os.stat(part, dir_fd=folder, follow_symlinks=False).st_mode)
                if kind != ("file" if last else "dir"):
                    raise _not_plain(here, kind)
                # the flags refuse a link or a FIFO swapped in since the lstat
                opened = os.open(
                    part, _FILE_FLAGS if last else _FOLDER_FLAGS | _NOFOLLOW, dir_fd=folder
                )
            except FileNotFoundError:
                raise UnsafeFileError(here, "missing", "is missing") from None
            except UnsafeFileError:
                raise
            except OSError as error:
                if error.errno == errno.ELOOP:  # O_NOFOLLOW met a link swapped in since the lstat
                    raise _not_plain(here, "symlink") from None
                why = f"cannot be read: {error.strerror}"
                raise UnsafeFileError(here, "unreadable", why) from None
            os.close(folder)
            folder = opened
        info = os.fstat(folder)
        if not stat.S_ISREG(info.st_mode):
            raise _not_plain(relative, _kind(info.st_mode))
        if size is not None and info.st_size != size:
            raise UnsafeFileError(
                relative, "size", f"has {info.st_size} bytes, the lock says {size}"
            )
    except BaseException:
        os.close(folder)
        raise
    return folder


@contextmanager
def open_bundle_file(root: Path, relative: str, size: int | None = None) -> Iterator[BinaryIO]:
    """``open_in_bundle`` as a binary file object, closed on exit."""
    with os.fdopen(open_in_bundle(root, relative, size), "rb") as stream:
        yield stream
