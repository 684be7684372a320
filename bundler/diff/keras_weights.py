"""The weights of a ``model.keras`` read where they lie: variables by name, mapped, never loaded.

``KerasFile`` opens a bundle's ``.keras`` zip for reading: its ``config.json``, and the variables
of its ``model.weights.h5`` member with their shapes, dtypes and, for contiguous uncompressed
datasets (what Keras writes), the byte offset of their values. h5py reads the layout only; a
stored member is handed to h5py as a ``FileWindow`` on the archive, so nothing is copied out of
the zip, and ``mapped`` maps a range of a variable's values from the page cache with no copy at
all. A member that is compressed (not written by Keras) is still read, streamed through
``zipfile``.

It reads a bundle as verify does: the file is opened by its lock path inside the bundle
(``bundle_paths.open_in_bundle``: no link, nothing that blocks, the lock's size), once, and
everything after reads that descriptor; before a byte of the weights is read the archive passes
the checks ``load_bundle`` runs before Keras sees it (``keras_archive.check_archive``: members'
inflated sizes bounded, HDF5 that keeps no data in another file and links nowhere, no shape
bombs), so no value from outside the bundle ever reaches a diff.

Apart from ``bundler.files.keras_layout``, which writes and recognises the aligned layout and is
imported by the build: this module reads HDF5 with h5py and serves the weight diff, and it reads any
stored weights member, aligned or not (``keras_layout.data_start`` finds its bytes). Apart from
``bundler.scans.keras_archive`` too, which bounds what Keras may be handed; this one hands nothing
to Keras. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import mmap
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import LoadError, UnsafeBundleError, UsageError
from bundler.files.keras_layout import WEIGHTS_MEMBER, data_start
from bundler.files.window import FileWindow
from bundler.lock.paths import UnsafeFileError, open_in_bundle
from bundler.scans.config import read_config
from bundler.scans.keras_archive import check_archive


@dataclass(frozen=True)
class H5Variable:
    """One dataset of the weights file: where it is, its shape and dtype, where its values are."""

    path: str  # inside the h5 file
    shape: tuple[int, ...]
    dtype: Any
    offset: int | None  # of contiguous raw values inside the h5 file, else None

    @property
    def layer(self) -> str:
        """The layer's group as the weights file names it (``dense_1``, ``optimizer``)."""
        group = self.path.rpartition("/vars/")[0] if "/vars/" in self.path else ""
        group = group or self.path.rpartition("/")[0]
        parts = group.split("/")
        return "/".join(p for i, p in enumerate(parts) if not (p == "layers" and i % 2 == 0))

    @property
    def variable(self) -> str:
        """The variable's name within its layer (``0``, ``1``, ...)."""
        return self.path.rpartition("/vars/" if "/vars/" in self.path else "/")[2]


class KerasFile:
    """A bundle's ``model.keras`` (``relative`` to ``root``, of ``size`` bytes as the lock says),
    opened for reading its config and its weights, never loaded whole.

    A context manager: the file opens and the archive is checked on entry (UsageError naming the
    file when it may not be read); ``variables`` opens the weights member, and everything closes
    on exit. ``h5`` is the open ``h5py.File`` once ``variables`` has run.
    """

    def __init__(self, root: Path, relative: str, size: int) -> None:
        self.root, self.relative, self.size = root, relative, size
        self.path = root / relative
        self.archive: zipfile.ZipFile | None = None
        self.descriptor: int | None = None
        self.stream: Any = None
        self.h5: Any = None
        self.member: Any = None
        self.base = 0
        self.end = 0

    def __enter__(self) -> KerasFile:
        try:
            self.descriptor = open_in_bundle(self.root, self.relative, self.size)
        except UnsafeFileError as error:
            raise UsageError(error.reason, path=self.root / error.relative) from None
        try:
            # zipfile alone moves this stream's position; the weights are read with pread
            self.stream = open(self.descriptor, "rb", closefd=False)
            self.archive = zipfile.ZipFile(self.stream)
            check_archive(self.archive, self.size, str(self.path))
        except (UnsafeBundleError, LoadError) as error:
            self.__exit__()
            raise UsageError(error.message, path=self.path) from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            self.__exit__()
            raise UsageError(f"cannot read it as a .keras file: {error}", path=self.path) from None
        return self

    def __exit__(self, *exc: object) -> None:
        for close in (self.h5, self.member, self.archive, self.stream):
            if close is not None:
                close.close()
        if self.descriptor is not None:
            os.close(self.descriptor)
        self.h5 = self.member = self.archive = self.stream = self.descriptor = None

    def config(self) -> Any:
        """The archive's ``config.json``, parsed and bounded (UsageError if missing or not JSON)."""
        assert self.archive is not None
        try:
            return read_config(self.archive, str(self.path))
        except (LoadError, UnsafeBundleError) as error:
            raise UsageError(error.message, path=self.path) from None

    def variables(self) -> dict[str, H5Variable]:
        """Every dataset of ``model.weights.h5`` by path; empty when the archive has none."""
        import h5py

        assert self.archive is not None
        try:
            info = self.archive.getinfo(WEIGHTS_MEMBER)
        except KeyError:
            return {}
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                assert self.descriptor is not None
                whole = FileWindow(self.descriptor, 0, os.fstat(self.descriptor).st_size)
                self.base = data_start(whole, info)
                self.end = min(self.base + info.file_size, whole.size)
                self.member = FileWindow(self.descriptor, self.base, info.file_size)
            else:  # not written by Keras: slower, but still streamed
                self.member = self.archive.open(info)
            self.h5 = h5py.File(self.member, "r")
            found: dict[str, H5Variable] = {}

            def visit(name: str, node: Any) -> None:
                if isinstance(node, h5py.Dataset):
                    raw = (
                        node.chunks is None
                        and node.compression is None
                        and isinstance(self.member, FileWindow)
                    )
                    offset = node.id.get_offset() if raw else None
                    found[name] = H5Variable(name, tuple(node.shape), node.dtype, offset)

            self.h5.visititems(visit)
            return found
        except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as error:
            raise UsageError(f"cannot read {WEIGHTS_MEMBER}: {error}", path=self.path) from error

    def mapped(self, variable: H5Variable, start: int, count: int) -> tuple[mmap.mmap, int]:
        """Elements ``start`` to ``start + count`` of a contiguous variable, mapped from the page
        cache with no copy: (the mapping, the byte offset of the first element in it)."""
        assert variable.offset is not None and self.descriptor is not None
        itemsize = variable.dtype.itemsize
        where = self.base + variable.offset + start * itemsize
        aligned = where - where % mmap.ALLOCATIONGRANULARITY
        length = where - aligned + count * itemsize
        if where + count * itemsize > self.end:  # the member's own bytes, nothing beyond
            raise UsageError(f"{WEIGHTS_MEMBER}: {variable.path} is cut short", path=self.path)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # one fault, not one a page
        mapping = mmap.mmap(
            self.descriptor, length, flags=flags, prot=mmap.PROT_READ, offset=aligned
        )
        return mapping, where - aligned

    def blocks(self, variable: H5Variable, count: int) -> Iterator[Any]:
        """The variable's values through h5py, flattened, about ``count`` at a time."""
        import numpy as np

        dataset = self.h5[variable.path]
        if not variable.shape:
            yield np.asarray(dataset[()]).reshape(1)
            return
        row = max(1, int(np.prod(variable.shape[1:], dtype=np.int64)))
        rows = max(1, count // row)
        for start in range(0, variable.shape[0], rows):
            yield np.asarray(dataset[start : start + rows]).reshape(-1)
