"""Atomic folder commits: a folder is written beside its target, flushed, and renamed into place.

Builds, pulls into the cache or an output folder, and ``--force`` replacements all go through
here, so OUT is only ever absent, the old complete folder or the new complete one. The temporary
folder is named ``.<out-name>.bundler-tmp.<pid>.<token>`` (an old one being replaced,
``...bundler-old...``): a process that dies, even by SIGKILL, leaves at most that recognisably
named folder, which the next commit to the same target removes once the process that made it is
gone. Every temporary bundler makes beside something it is about to replace (a rewritten
``model.keras``, a signature, a second build for ``--check-reproducible``) is named by
``temporary_beside``, the one scheme, so a killed process's leftovers are always recognisable.
``--force`` swaps the new folder in with ``renameat2(RENAME_EXCHANGE)`` where the kernel
offers it (one atomic step); elsewhere it renames the old folder aside, then the new one in.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from bundler.errors import BuildError, UsageError
from bundler.lock.layout import LOCK_FILENAME


def temporary_beside(target: Path, kind: str = "tmp") -> Path:
    """The path of a temporary beside ``target`` that becomes (``tmp``) or was (``old``) it:
    ``.<name>.bundler-<kind>.<pid>.<token>``, matched by ``TEMP_NAME``."""
    return target.parent / f".{target.name}.bundler-{kind}.{os.getpid()}.{secrets.token_hex(4)}"


def prepare_workdir(target: Path, force: bool) -> Path:
    """Check OUT, then create the temporary folder beside it that ``install`` renames to OUT."""
    check_target(target, force)
    workdir = temporary_beside(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        workdir.mkdir()
    except OSError as error:  # a read-only or full file system, a missing permission
        raise BuildError(
            f"cannot create a temporary folder beside it: {error.strerror or error}", path=target
        ) from error
    return workdir


def check_target(target: Path, force: bool) -> None:
    """OUT may be written: absent, or a bundle (or an empty folder) that ``force`` replaces.

    A file, a link or a folder holding something else is never replaced, ``force`` or not, so
    the error for it says so instead of suggesting ``--force``."""
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise UsageError(
            "exists and is not a bundle folder; it is never replaced: choose another output",
            path=target,
        )
    if any(target.iterdir()) and not (target / LOCK_FILENAME).is_file():
        raise UsageError(
            f"exists and is not a bundle (no {LOCK_FILENAME}); it is never replaced: choose "
            "another output",
            path=target,
        )
    if not force:
        raise UsageError("already exists; pass --force to replace it", path=target)


# (a ``.layer`` suffix: where bundler 0.1.0's pulls downloaded a tar layer, swept like the rest)
TEMP_NAME = re.compile(
    r"^\.(?P<name>.+)\.bundler-(?:tmp|old)\.(?P<pid>\d+)\.[0-9a-f]+(?:\.layer)?$"
)


def remove_stale_temporaries(target: Path, *, every_name: bool = False) -> list[Path]:
    """Remove the temporaries (folders or files) of earlier work on ``target`` whose process no
    longer runs (``every_name``: beside ``target`` whatever they were for, as in the pull cache)."""
    removed: list[Path] = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = TEMP_NAME.match(sibling.name)
        if not match or (match["name"] != target.name and not every_name):
            continue
        if _process_alive(int(match["pid"])):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """Flush every file and folder of the new bundle before it is renamed into place."""
    for folder, _, names in os.walk(root):
        for name in names:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder), directory=True)


_RENAME_EXCHANGE = 2


_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def install(workdir: Path, target: Path, force: bool, what: str = "build") -> None:
    """Flush ``workdir`` and rename it to ``target`` (swapped in atomically with ``force``)."""
    _sync_tree(workdir)
    try:
        if force and os.path.lexists(target):
            if _exchange(workdir, target):
                shutil.rmtree(workdir, ignore_errors=True)  # now holds the old bundle
            else:
                aside = temporary_beside(target, "old")
                os.rename(target, aside)
                os.rename(workdir, target)
                shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(workdir, target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise BuildError(
                f"another {what} created it while this one ran; pass --force to replace it",
                path=target,
            ) from error
        raise BuildError(
            f"cannot move the bundle into place: {error.strerror}", path=target
        ) from error
    fsync_path(target.parent, directory=True)
