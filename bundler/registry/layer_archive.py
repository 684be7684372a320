"""Unpack a ModelPack tar layer into a pulled bundle, refusing everything a bundle cannot hold.

ModelPack tools (the ``modelpack`` CLI for a folder, ``modctl``, KitOps) send a folder such as
``saved_model/`` as one tar layer (``…v1.tar`` or ``…v1.tar+gzip``). A registry is someone on the
path, so the archive is read as hostile: the lock (pulled first, as its own layer) bounds it. A
member is unpacked only when it is

- a regular file whose path the lock lists, with the size the lock gives it, appearing once
  across every layer (no links, devices, FIFOs or sparse files), neither inside a file another
  layer sent nor where another layer's files make a folder; folder entries are only
  path-checked, never created (a file's folders are made as it is written);
- at a path checked like every lock path (relative, normalized, no ``..``) before the file system
  is touched; files are created with ``O_EXCL`` so nothing is overwritten or followed;

and the archive is read with bounds: at most the lock's bytes plus 16 MiB of headers in all, and
no header (PAX, GNU long name) over 1 MiB, so neither a decompression bomb nor a giant header
costs more than that. The unpacked folder is then verified against the lock like any pull.
"""

from __future__ import annotations

import gzip
import tarfile
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

from bundler.errors import IntegrityError
from bundler.lock.paths import enclosing_file, holds_files, unsafe_path_reason

HEADER_MAX_BYTES = 1 << 20
SLACK_BYTES = 16 << 20
_EXTENDED = {
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
}


class _Bounded:
    """A read-only stream that fails once more than ``limit`` bytes were read through it."""

    def __init__(self, stream: IO[bytes], limit: int, where: str) -> None:
        self.stream, self.left, self.where = stream, limit, where

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size if size >= 0 else self.left + 1)
        self.left -= len(chunk)
        if self.left < 0:
            raise IntegrityError(
                "the layer unpacks to more than the lock's files; refusing it", path=self.where
            )
        return chunk


class _BoundedInfo(tarfile.TarInfo):
    def _proc_member(self, archive: Any) -> Any:
        if self.type in _EXTENDED and self.size > HEADER_MAX_BYTES:
            raise tarfile.ReadError(f"a {self.size}-byte header, over 1 MiB")
        return super()._proc_member(archive)  # type: ignore[misc]


def layer_clash(path: str, written: Collection[str]) -> str | None:
    """Why a file cannot be written at ``path`` beside the files other layers ``written``: it
    would lie inside one of them, or be where their folder is; None when it can."""
    if holds_files(path, written):
        return "is a folder of files another layer sent"
    inside = enclosing_file(path, written)
    return None if inside is None else f"lies inside {inside!r}, which another layer sent as a file"


def unpack(
    blob: Path,
    compressed: bool,
    root: Path,
    sizes: dict[str, int],
    written: set[str],
    where: str,
) -> None:
    """Unpack the tar ``blob`` into ``root``; ``sizes`` is the lock's {path: size} and ``written``
    the paths already pulled (updated here)."""
    limit = sum(sizes.values()) + SLACK_BYTES
    with blob.open("rb") as raw:
        source: Any = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        bounded = _Bounded(source, limit, where)
        try:
            with tarfile.open(fileobj=bounded, mode="r|", tarinfo=_BoundedInfo) as archive:  # type: ignore[call-overload]
                for member in archive:
                    _unpack_member(archive, member, root, sizes, written, where)
        except (tarfile.TarError, OSError, EOFError) as error:
            raise IntegrityError(
                f"the layer is not a readable tar archive: {error}", path=where
            ) from None


def _unpack_member(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    root: Path,
    sizes: dict[str, int],
    written: set[str],
    where: str,
) -> None:
    name = member.name.removeprefix("./").rstrip("/") if member.isdir() else member.name
    reason = unsafe_path_reason(name)
    if reason is None and member.isdir():
        return  # a file's folders are made when it is written; empty ones are not needed
    if reason is None and member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        reason = "is not a plain file or folder (links, devices and FIFOs are refused)"
    if reason is None and name not in sizes:
        reason = "is not a file the lock lists"
    if reason is None and name in written:
        reason = "is sent twice"
    if reason is None and member.size != sizes[name]:
        reason = f"has {member.size} bytes, the lock says {sizes[name]}"
    if reason is None:
        reason = layer_clash(name, written)
    if reason is not None:
        raise IntegrityError(f"the layer's member {name!r} {reason}; refusing it", path=where)
    target = root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    content = archive.extractfile(member)
    assert content is not None  # a regular file
    left = member.size
    with target.open("xb") as out:
        while left:
            chunk = content.read(min(left, 1 << 20))
            if not chunk:
                raise IntegrityError(f"the layer's member {name!r} is truncated", path=where)
            out.write(chunk)
            left -= len(chunk)
    written.add(name)
