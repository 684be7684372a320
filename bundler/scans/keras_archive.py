"""What ``model.keras`` may hold before Keras reads it: bounded members, self-contained weights.

A ``.keras`` file is a zip of ``config.json`` (scanned by ``scan``), ``metadata.json`` and
``model.weights.h5``. Two things in it are Keras's to read and ours to bound first:

- **Inflated sizes.** A 1 MB archive can declare a member of 1 GiB of zeros; Keras reads the
  weights member whole (into memory, or to a temporary file when large). Every member's declared
  size is checked against a bound relative to the archive's size in the lock
  (``INFLATION_RATIO`` times it, plus ``INFLATION_FLOOR``) before anything is read. The declared
  size cannot lie its way past that: CPython's ``ZipExtFile`` never returns more than the declared
  ``file_size`` (it cuts the output there, and fails with ``BadZipFile`` on the CRC when the data
  was longer) and inflates deflate data a bounded chunk at a time. Bzip2 and LZMA members inflate
  a whole read at once, so only stored and deflated members are accepted; encrypted ones are not.
- **HDF5 that reaches outside.** An HDF5 file can keep a dataset's bytes in another file
  (external storage), map them from other files (virtual datasets), or link to objects of other
  files (external links). Any of these in ``model.weights.h5`` makes loading read files outside
  the bundle; Keras refuses them only since 3.13.2/3.14.1. We walk the file with h5py (metadata
  only, never a dataset's data) and refuse them, soft links, and datasets that declare far more
  bytes than the file holds (shape bombs).

Both run in ``load_bundle`` before Keras opens the archive, and in ``bundle verify``: h5py is not
TensorFlow (a small C extension Keras itself requires), so verify imports it, once, when a bundle
has HDF5 weights.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bundler.errors import LoadError, UnsafeBundleError
from bundler.files.keras_layout import data_start, weights_offset
from bundler.files.window import FileWindow
from bundler.lock.model import FileEntry
from bundler.lock.paths import UnsafeFileError, open_bundle_file
from bundler.problems import Problem

WEIGHTS_MEMBER = "model.weights.h5"
INFLATION_RATIO = 8
INFLATION_FLOOR = 64 << 20
H5_MAX_OBJECTS = 100_000
H5_MAX_DEPTH = 64


def check_archive(archive: zipfile.ZipFile, size: int, path: str, *, weights: bool = True) -> None:
    """Refuse a model.keras Keras must not read (UnsafeBundleError, LoadError for damage).

    ``size`` is the archive's size as the lock records it; ``path`` is where it lies.
    ``weights=False`` leaves out ``check_weights``, for a loader that runs it once the weights'
    bytes are verified.
    """
    bound = INFLATION_FLOOR + INFLATION_RATIO * size
    total = 0
    for info in archive.infolist():
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UnsafeBundleError(
                f"model.keras member {info.filename!r} uses compression method "
                f"{info.compress_type}; only stored and deflated members are read",
                path=path,
            )
        if info.flag_bits & 0x1:
            raise UnsafeBundleError(f"model.keras member {info.filename!r} is encrypted", path=path)
        total += info.file_size
        if total > bound:
            raise UnsafeBundleError(
                f"model.keras member {info.filename!r} inflates to {info.file_size} bytes, "
                f"beyond {bound} bytes ({INFLATION_RATIO} times the archive's {size} bytes plus "
                f"{INFLATION_FLOOR >> 20} MiB) for all members together; refusing to read it",
                path=path,
            )
    try:
        info = archive.getinfo(WEIGHTS_MEMBER)
    except KeyError:
        return  # Keras says so itself, in its own words
    if not weights:
        return
    check_weights(archive, info, path)


def _archive_window(archive: zipfile.ZipFile) -> FileWindow | None:
    """The file ``archive`` reads, as a window read with ``pread`` (no shared file position), or
    None for an archive in memory. Never a new open by name: that could reach another file than
    the one checked so far."""
    source = archive.fp
    if isinstance(source, FileWindow):
        return FileWindow(source.descriptor, source.start, source.size)
    try:
        descriptor = source.fileno()  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return FileWindow(descriptor, 0, os.fstat(descriptor).st_size)


@contextmanager
def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> Iterator[Any]:
    """A seekable stream of one member. A stored member is read in place (a window on the file
    the archive reads: HDF5 seeks back and forth, and ``ZipExtFile`` re-reads from the start on
    every backward seek); a deflated one, or one of an archive in memory, through
    ``ZipExtFile``, capped at its declared size."""
    whole = _archive_window(archive) if info.compress_type == zipfile.ZIP_STORED else None
    if whole is None:
        with archive.open(info) as stream:
            yield stream
        return
    try:
        start = data_start(whole, info)
    except zipfile.BadZipFile as error:
        message = f"model.keras member {info.filename!r} has no local header"
        raise LoadError(message, path=path) from error
    yield FileWindow(whole.descriptor, whole.start + start, info.file_size)


@contextmanager
def _weights_file(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> Iterator[Any]:
    """``model.weights.h5`` opened read-only with h5py, as a low-level file identifier.

    Where the archive is a file of our own open laid out for reading in place
    (``keras_layout``: HDF5 finds the weights' superblock in it, and nothing past their end) and
    Linux names the open file ``/proc/self/fd/N``, HDF5 reads that file itself, as the loader
    does: the same file, not a new lookup of a name, and no Python call for each of the hundred
    or so reads of its metadata. Anywhere else, and for a window that checks digests as it is
    read (``VerifiedFile``), through a stream of the member (``_member``)."""
    import h5py

    named = None
    stored = info.compress_type == zipfile.ZIP_STORED
    whole = _archive_window(archive) if stored and not isinstance(archive.fp, FileWindow) else None
    if whole is not None:
        candidate = f"/proc/self/fd/{whole.descriptor}"
        try:
            if os.path.exists(candidate) and weights_offset(whole) == data_start(whole, info):
                named = candidate
        except (OSError, ValueError, zipfile.BadZipFile):
            named = None
    if named is not None:
        from h5py import h5f

        # h5py's defaults (file locking, closing), so that the loader's own open of the same
        # file while this one is open in another thread matches it, as HDF5 requires
        weights = h5f.open(named.encode(), h5f.ACC_RDONLY)
        try:
            yield weights
        finally:
            weights.close()
        return
    with _member(archive, info, path) as stream, h5py.File(stream, "r") as opened:
        yield opened.id


def check_weights(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> None:
    """Refuse HDF5 weights that reach outside their own bytes (see the module docstring).

    Through h5py's low-level API: one C-level visit of the links (``H5Lvisit``) and one of the
    objects (``H5Ovisit``), then each dataset's creation properties and dataspace, nothing
    Python-side per object beyond that; a dataset's data is never read."""
    try:
        with _weights_file(archive, info, path) as weights:
            _check_links(weights, path)
            _check_datasets(
                weights, INFLATION_FLOOR + INFLATION_RATIO * info.file_size, info.file_size, path
            )
    except (UnsafeBundleError, LoadError):
        raise
    except (
        OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, zlib.error,
        zipfile.BadZipFile,
    ) as error:  # fmt: skip
        raise LoadError(
            f"{WEIGHTS_MEMBER} in model.keras is not a readable HDF5 file: {error}", path=path
        ) from error


def _refuse(name: str, why: str, path: str) -> None:
    raise UnsafeBundleError(f"{WEIGHTS_MEMBER}: {name!r} {why}; refusing to load it", path=path)


def _check_links(file_id: Any, path: str) -> None:
    """Every link in the file, refusing those that leave it (external links) or alias inside it
    (soft links, user-defined links); bounded in count and depth. ``H5Lvisit`` expands each group
    once however many hard links reach it, so hard-link cycles end. The visit stops at the first
    link to refuse (a callback must not raise, or call h5py, inside HDF5's iteration)."""
    from h5py import h5g, h5l

    count = 0

    def visit(raw: bytes, link: Any) -> tuple[bytes, str] | None:
        nonlocal count
        count += 1
        if count > H5_MAX_OBJECTS:
            return raw, "count"
        if raw.count(b"/") >= H5_MAX_DEPTH:
            return raw, "depth"
        return None if link.type == h5l.TYPE_HARD else (raw, str(link.type))

    root = h5g.open(file_id, b"/")
    try:  # every identifier closed before a refusal leaves: the file must close with the check
        stopped = root.links.visit(visit, info=True)
        if stopped is None:
            return
        raw, kind = stopped
        if kind == "count":
            why = f"is past the first {H5_MAX_OBJECTS} objects"
        elif kind == "depth":
            why = f"is nested deeper than {H5_MAX_DEPTH} groups"
        elif kind == str(h5l.TYPE_EXTERNAL):
            filename = root.links.get_val(raw)[0].decode("utf-8", "replace")
            why = f"is an external link to {filename!r}"
        elif kind == str(h5l.TYPE_SOFT):
            why = f"is a soft link to {root.links.get_val(raw).decode('utf-8', 'replace')!r}"
        else:
            why = f"is a user-defined link (type {kind})"
    finally:
        root.close()
    _refuse("/" + raw.decode("utf-8", "replace"), why, path)


def _check_datasets(file_id: Any, bound: int, size: int, path: str) -> None:
    """Every dataset (each object once, reached by hard links only: ``_check_links`` ran):
    no external storage, no virtual layout, and their declared sizes together within ``bound``
    (a shape bomb declares far more than the file's ``size`` bytes hold)."""
    from h5py import h5d, h5o

    datasets: list[bytes] = []
    h5o.visit(
        file_id,
        lambda raw, found: datasets.append(raw) if found.type == h5o.TYPE_DATASET else None,
        info=True,
    )
    declared = 0
    for raw in datasets:
        why = None
        dataset = h5d.open(file_id, raw)
        try:
            properties = dataset.get_create_plist()
            if properties.get_external_count():
                outside = properties.get_external(0)[0].decode("utf-8", "replace")
                why = f"keeps its data in another file ({outside!r})"
            elif properties.get_layout() == h5d.VIRTUAL:
                why = "is a virtual dataset, mapped from other files"
            else:
                declared += math.prod(dataset.shape or ()) * dataset.get_type().get_size()
                if declared > bound:
                    why = (
                        f"takes the datasets' declared size beyond {bound} bytes, "
                        f"{INFLATION_RATIO} times the {size} bytes of the file (a shape bomb)"
                    )
        finally:
            dataset.close()
        if why is not None:
            _refuse("/" + raw.decode("utf-8", "replace"), why, path)


def archive_problems(
    root: Path, keras: str, files: Mapping[str, FileEntry], earlier: Iterable[Problem]
) -> list[Problem]:
    """``check_archive``'s refusals as verify Problems (kind ``unsafe``); skipped when an earlier
    problem is about model.keras (missing, changed). An archive Keras could not read at all is
    not reported here: loading says so (and ``fallback`` serves the graph instead)."""
    if keras not in files or any(problem.path == keras for problem in earlier):
        return []
    path = os.path.join(root, keras)
    size = int(files[keras].size)
    try:
        with open_bundle_file(root, keras, size) as stream, zipfile.ZipFile(stream) as archive:
            check_archive(archive, size, path)
    except UnsafeFileError as error:  # swapped for a link, a FIFO, another size since the walk
        return [Problem(error.relative, error.kind, error.reason)]
    except UnsafeBundleError as error:
        return [Problem(keras, "unsafe", error.message)]
    except (LoadError, OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile):
        return []
    return []
