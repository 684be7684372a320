"""What a folder was at every file operation of a build, seen through Python's audit hooks.

``sys.addaudithook`` (PEP 578) calls a hook just *before* each file operation Python performs
(``open``, ``os.rename``, ``os.remove``, ``shutil.rmtree``, ...), in every thread. Recording the
state of OUT at each of them shows what any reader of OUT could have seen between two steps, with
no timing luck (a SIGKILL that has to land in a window) and no function replaced. TensorFlow's own
C++ writes (``saved_model/``) raise no events; Python's writes, renames and removals all do, and
so does every step between the build's last write and its rename.

A hook cannot be removed once added: one is added per process, on first use, and does nothing
while no ``watching`` block is open.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.lock.layout import LOCK_FILENAME

# the audit events of operations that change or open files
FILE_EVENTS = frozenset(
    {"open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"}
)


@dataclass(frozen=True)
class Moment:
    """One file operation, seen just before it ran, and what the watched folder was then."""

    event: str  # the audit event: "open", "os.rename", "shutil.rmtree", ...
    paths: tuple[str, ...]  # its path arguments, absolute
    states: tuple[str, ...]  # what each of them was: see ``state``
    out: str  # what the watched folder was
    folder: int | None  # the watched folder's inode (which folder it was), None when absent


def state(path: str | Path) -> str:
    """``absent``; ``complete``: a folder holding its lock; ``incomplete``: anything else."""
    if not os.path.lexists(path):
        return "absent"
    return "complete" if os.path.isfile(os.path.join(path, LOCK_FILENAME)) else "incomplete"


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


@dataclass
class _Watch:
    out: Path
    moments: list[Moment]


_watches: list[_Watch] = []
_guard = threading.local()
_hooked = False


def _path(value: Any) -> str | None:
    if isinstance(value, (str, bytes, os.PathLike)):
        text = os.fsdecode(value)
        return text if os.path.isabs(text) else None  # relative: *at() calls inside a folder
    return None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _watches or event not in FILE_EVENTS or getattr(_guard, "busy", False):
        return
    _guard.busy = True  # the hook's own stat calls raise no file events, but stay safe
    try:
        paths = tuple(p for p in (_path(a) for a in args[:2]) if p is not None)
        states = tuple(state(p) for p in paths)
        for watch in _watches:
            watch.moments.append(Moment(event, paths, states, state(watch.out), _inode(watch.out)))
    finally:
        _guard.busy = False


@contextlib.contextmanager
def watching(out: Path) -> Iterator[list[Moment]]:
    """The moments of every file operation in this process while the block runs, each with the
    state of ``out`` just before it."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_hook)
        _hooked = True
    watch = _Watch(out, [])
    _watches.append(watch)
    try:
        yield watch.moments
    finally:
        _watches.remove(watch)


def history(moments: list[Moment]) -> list[tuple[str, int | None]]:
    """The watched folder's successive (state, inode), each change once."""
    seen: list[tuple[str, int | None]] = []
    for moment in moments:
        if not seen or seen[-1] != (moment.out, moment.folder):
            seen.append((moment.out, moment.folder))
    return seen
