"""A byte range of a file read as a stream, and a sharded file whose bytes are checked first.

``FileWindow`` hands bytes [start, start + size) of an open file to a parser as if they were a
file of their own: a stored zip member (``model.weights.h5`` inside ``model.keras``) to h5py,
without copying it out. ``VerifiedFile`` is the window over a whole sharded file that checks the
sha256 of every shard a read touches, once, before handing the bytes on, so a loader parses only
bytes whose digest matched and the rest is checked on another core meanwhile.

Apart from ``bundler.files.hashing`` because this is reading, not hashing: a window reads with
``pread``, sharing no file position, and the archive checks and the weight diff read through
windows with no digest at all.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bundler.files.hashing import hash_range, run_all, shard_spans
from bundler.lock.paths import open_regular


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
        super().__init__(open_regular(path), 0, size)

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
        for result in run_all(tasks, workers):
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
