"""Reproducible builds: the same manifest and installed versions give the same bytes, every time.

Keras and TensorFlow write a few things that change from one save to the next even when the
model does not. Each is canonicalised here, where it is written, without changing what loads:

``model.keras`` (a zip: ``metadata.json``, ``config.json``, ``model.weights.h5``, maybe assets)
    - zip entry timestamps (the weights entry carries the wall clock) and header fields: the
      archive is rewritten with its entries sorted by name (``bundler.files.keras_layout`` then
      moves the weights first, aligned, as deterministically), dated 1980-01-01 00:00, fixed
      attributes. Entries other than the two JSON files are copied as they are, byte for byte (in
      the kernel, with ``copy_file_range``). The copy of a large weights entry is not free (about
      0.8 s for 800 MB), so the build runs it on the thread that hashes ``model.keras``, while
      TensorFlow exports the SavedModel.
    - ``metadata.json`` ``date_saved`` (the wall clock): set to ``1980-01-01@00:00:00``. The time
      of a build is recorded once, in the lock's ``created``, outside the digest.
    - ``config.json`` ``shared_object_id`` (Python ``id()`` of the shared object, a memory
      address): renumbered 1, 2, 3 ... in order of first appearance. Keras only uses the numbers
      to tell which references share an object, and renumbering keeps that relation.
    - ``model.weights.h5`` needs nothing: h5py does not record object times by default
      (``track_times``), and Keras writes groups and datasets in a fixed order.

``saved_model/``
    - the order of the exported archive's ``_all_variables`` list, which Keras collects from the
      serving function's captures in an order that changes from process to process; it shapes
      both ``saved_model.pb`` (the object graph) and the checkpoint's object graph. The archive
      made by ``export_archive`` puts it in the model's own variable order before writing.
    - ``fingerprint.pb`` ``uuid``: TensorFlow draws it at random on every save. It is replaced by a
      number derived from the fingerprint's own content hashes, in the same form (a decimal
      128-bit integer), so equal SavedModels carry equal fingerprints.
    - function names (``__inference_serve_123``) carry a per-process counter. They are equal in two
      fresh processes running the same build, which is why ``check_reproducible`` rebuilds in a
      fresh process, as a CI rebuild or a second party would; they are not rewritten, because
      renaming functions inside a GraphDef is not something TensorFlow offers to do safely.

``check_reproducible`` builds a manifest a second time, in a fresh process, into a folder beside the
first bundle, and says which files differ (and, through ``bundler.diff.bundles``, which weights), so
a factory that is not deterministic (unseeded initialisers or shuffling) is named, not hidden.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.errors import BuildError
from bundler.files.atomic import temporary_beside

if TYPE_CHECKING:
    from bundler.diff.bundles import BundleDiff

DATE_SAVED = "1980-01-01@00:00:00"
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME = 0
_MADE_BY = (3 << 8) | 20  # unix, zip 2.0
_FILE_MODE = 0o100644 << 16
_ZIP64_SENTINEL = 0xFFFFFFFF  # "see the zip64 extra field"
ZIP64_ABOVE = 0xFFFFFFFF  # sizes and offsets from here on need zip64 records
_COPY_BLOCK = 64 << 20


# -- model.keras ----------------------------------------------------------------------------------


def canonical_config(text: str) -> str:
    """``config.json`` with ``shared_object_id`` values renumbered in order of appearance."""
    numbers: dict[Any, int] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "shared_object_id" and not isinstance(value, (dict, list)):
                    out[key] = numbers.setdefault(value, len(numbers) + 1)
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return json.dumps(walk(json.loads(text)))


def canonical_metadata(text: str) -> str:
    """``metadata.json`` with the save date fixed."""
    metadata = json.loads(text)
    if isinstance(metadata, dict) and "date_saved" in metadata:
        metadata["date_saved"] = DATE_SAVED
    return json.dumps(metadata)


_REWRITTEN = {"config.json": canonical_config, "metadata.json": canonical_metadata}


@dataclass
class _Entry:
    name: bytes
    method: int
    crc: int
    compressed: int
    size: int
    offset: int = 0
    data: bytes | None = None  # rewritten content; None: copied from the source at ``source_at``
    source_at: int = 0

    def zip64(self) -> bool:
        return max(self.compressed, self.size) >= ZIP64_ABOVE


def _data_offset(stream: Any, info: zipfile.ZipInfo) -> int:
    stream.seek(info.header_offset)
    header = stream.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return int(info.header_offset) + 30 + int(name_length) + int(extra_length)


def _copy_range(source: int, target: int, start: int, length: int) -> None:
    done = 0
    try:
        while done < length:
            copied = os.copy_file_range(source, target, min(length - done, 1 << 30), start + done)
            if copied == 0:
                raise OSError("unexpected end of file")
            done += copied
        return
    except (AttributeError, OSError):
        if done:
            raise
    while done < length:  # a file system (or a system) without copy_file_range
        block = os.pread(source, min(length - done, _COPY_BLOCK), start + done)
        if not block:
            raise OSError("unexpected end of file")
        os.write(target, block)
        done += len(block)


def _local_header(entry: _Entry) -> bytes:
    extra = b""
    compressed, size, needed = entry.compressed, entry.size, 20
    if entry.zip64():
        extra = struct.pack("<HHQQ", 1, 16, entry.size, entry.compressed)
        compressed = size = _ZIP64_SENTINEL
        needed = 45
    fixed = struct.pack(
        "<4sHHHHHIIIHH",
        b"PK\x03\x04",
        needed,
        0x800 if not entry.name.isascii() else 0,
        entry.method,
        _DOS_TIME,
        _DOS_DATE,
        entry.crc,
        compressed,
        size,
        len(entry.name),
        len(extra),
    )
    return fixed + entry.name + extra


def _central_header(entry: _Entry) -> bytes:
    fields: list[int] = []
    compressed, size, offset, needed = entry.compressed, entry.size, entry.offset, 20
    if entry.zip64():
        fields += [entry.size, entry.compressed]
        compressed = size = _ZIP64_SENTINEL
    if entry.offset >= ZIP64_ABOVE:
        fields.append(entry.offset)
        offset = _ZIP64_SENTINEL
    extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
    if fields:
        needed = 45
    fixed = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02",
        _MADE_BY,
        needed,
        0x800 if not entry.name.isascii() else 0,
        entry.method,
        _DOS_TIME,
        _DOS_DATE,
        entry.crc,
        compressed,
        size,
        len(entry.name),
        len(extra),
        0,
        0,
        0,
        _FILE_MODE,
        offset,
    )
    return fixed + entry.name + extra


def _end_records(count: int, start: int, length: int) -> bytes:
    records = b""
    if count >= 0xFFFF or start >= ZIP64_ABOVE or length >= ZIP64_ABOVE:
        here = start + length
        records += struct.pack(
            "<4sQHHIIQQQQ", b"PK\x06\x06", 44, _MADE_BY, 45, 0, 0, count, count, length, start
        )
        records += struct.pack("<4sIQI", b"PK\x06\x07", 0, here, 1)
        count = min(count, 0xFFFF)
        start, length = _ZIP64_SENTINEL, _ZIP64_SENTINEL
    return records + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, length, start, 0)


def canonicalise_keras_file(path: Path) -> None:
    """Rewrite a ``.keras`` file in place so that equal models give equal bytes (see above)."""
    temporary = temporary_beside(path)
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            entries = []
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                rewrite = _REWRITTEN.get(info.filename)
                if rewrite is not None:
                    data = rewrite(archive.read(info).decode("utf-8")).encode("utf-8")
                    entries.append(
                        _Entry(
                            info.filename.encode("utf-8"),
                            zipfile.ZIP_STORED,
                            zipfile.crc32(data),  # type: ignore[attr-defined]
                            len(data),
                            len(data),
                            data=data,
                        )
                    )
                else:
                    entries.append(
                        _Entry(
                            info.filename.encode("utf-8"),
                            info.compress_type,
                            info.CRC,
                            info.compress_size,
                            info.file_size,
                            source_at=_data_offset(raw, info),
                        )
                    )
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                position = 0
                for entry in entries:
                    entry.offset = position
                    header = _local_header(entry)
                    os.write(descriptor, header)
                    if entry.data is not None:
                        os.write(descriptor, entry.data)
                    else:
                        _copy_range(raw.fileno(), descriptor, entry.source_at, entry.compressed)
                    position += len(header) + entry.compressed
                directory = b"".join(_central_header(entry) for entry in entries)
                ending = _end_records(len(entries), position, len(directory))
                os.write(descriptor, directory + ending)
            finally:
                os.close(descriptor)
        os.replace(temporary, path)
    except (zipfile.BadZipFile, ValueError, KeyError) as error:
        raise BuildError(f"cannot canonicalise {path.name}: {error}", path=path) from error
    finally:
        if temporary.exists():
            temporary.unlink()


# -- saved_model/ ---------------------------------------------------------------------------------


def export_archive(model: Any) -> Any:
    """A ``keras.export.ExportArchive`` that writes the model's variables in the model's order.

    ``ExportArchive.write_out`` tracks ``_all_variables`` (what the serving function captures) in
    capture order, which varies from process to process; the object graph and the checkpoint
    follow that order. This archive sorts the list by the model's ``variables`` before writing.
    """
    import keras

    archive = keras.export.ExportArchive()  # an instance of the backend's own archive class
    collect = getattr(archive, "_filter_and_track_resources", None)
    if collect is None:  # another Keras: its own order
        return archive
    order = {id(variable.value): index for index, variable in enumerate(model.variables)}

    def collect_in_model_order() -> None:
        collect()
        captured = list(getattr(archive._tf_trackable, "_all_variables", []))

        def rank(pair: tuple[int, Any]) -> tuple[int, str, int]:
            index, variable = pair
            return order.get(id(variable), len(order)), str(getattr(variable, "name", "")), index

        ranked = sorted(enumerate(captured), key=rank)
        archive._tf_trackable._all_variables = [variable for _, variable in ranked]

    archive._filter_and_track_resources = collect_in_model_order
    return archive


def canonicalise_saved_model(folder: Path) -> None:
    """Replace the random ``uuid`` of ``fingerprint.pb`` by one derived from its content hashes."""
    path = folder / "fingerprint.pb"
    if not path.is_file():
        return
    from tensorflow.core.protobuf import fingerprint_pb2

    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString(path.read_bytes())
    if not fingerprint.uuid:
        return
    fingerprint.uuid = ""
    content = fingerprint.SerializeToString(deterministic=True)
    fingerprint.uuid = str(int.from_bytes(hashlib.sha256(content).digest()[:16], "big"))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


# -- checking a build -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReproducibilityReport:
    """Two builds of one manifest compared: equal digests, or which files (and weights) differ."""

    first: Path
    first_digest: str
    second_digest: str
    differences: BundleDiff | None = field(default=None, compare=False)

    @property
    def reproducible(self) -> bool:
        return self.first_digest == self.second_digest

    def to_json(self) -> dict[str, Any]:
        return {
            "reproducible": self.reproducible,
            "bundle": str(self.first),
            "digests": [self.first_digest, self.second_digest],
            "differences": self.differences.to_json() if self.differences is not None else None,
        }


def check_reproducible(manifest: str | Path, first: Path) -> ReproducibilityReport:
    """Build ``manifest`` again in a fresh process, beside ``first``, and compare the two.

    A fresh process because that is what a rebuild is (a CI job, a second party): Keras names
    layers and TensorFlow numbers functions from per-process counters, so a second build inside
    the same process would differ for reasons no rebuild ever meets.
    """
    from bundler.diff.bundles import diff_bundles
    from bundler.verify.lock_reader import bundle_root, read_lock

    first = Path(first)
    # named as a build's temporary folder of ``first``, so that the next build of it removes
    # this one if the process dies before its own ``finally`` does
    second = temporary_beside(first)
    try:
        # the first build proved the load; the second is only compared with it
        command = [sys.executable, "-m", "bundler", "build", str(manifest), "-o", str(second)]
        command.append("--no-rehearse")
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            raise BuildError(
                "the second build (to check reproducibility) failed: "
                + (lines[-1] if lines else f"exit {result.returncode}"),
                path=manifest,
            )
        first_lock, _ = read_lock(bundle_root(first))
        second_lock, _ = read_lock(bundle_root(second))
        if first_lock is None or second_lock is None:
            raise BuildError("cannot read the locks of the two builds", path=first)
        differences = None
        if first_lock.digest != second_lock.digest:
            differences = diff_bundles(first, second, labels=("first build", "second build"))
        return ReproducibilityReport(first, first_lock.digest, second_lock.digest, differences)
    finally:
        shutil.rmtree(second, ignore_errors=True)
