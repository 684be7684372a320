"""model.keras laid out for reading in place: the weights first, stored, their bytes at 4096.

Keras reads the ``model.weights.h5`` member of a ``.keras`` zip by copying it whole, into memory or
into a temporary file, before HDF5 opens the copy: for a 4 GB model that is 4 GB written, or held,
on every load. HDF5 finds a file's superblock at offset 0, 512, 1024, 2048, 4096, ... (what comes
before is a "user block") and ignores bytes after the end the superblock records. So when the
weights member is the archive's first, stored uncompressed, with its data starting at 4096, the
archive *is* an HDF5 file: h5py opens ``model.keras`` itself and reads the weights where they lie.

``align_weights`` rewrites a ``.keras`` file that way after Keras saved it: the weights member
first, its local header padded to 4096 with a well-formed extra field (id 0xD935, as Android's
zipalign pads), then the other members as they were, zip64 where sizes need it. Plain
``keras.models.load_model`` reads members by name, so it opens the result as before.
``weights_offset`` tells whether a file is laid out this way, checking every byte it relies on,
so a loader can choose the in-place read and fall back to Keras's own for any other layout.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from bundler.files.atomic import temporary_beside

WEIGHTS_MEMBER = "model.weights.h5"
ALIGNMENT = 4096
PADDING_ID = 0xD935  # zipalign's: <id><length><alignment:u16><zeros>
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_LOCAL = struct.Struct("<4sHHHHHLLLHH")  # signature ... name length, extra length: 30 bytes
_ZIP64_LIMIT = 0xFFFFFFFF
_COPY_CHUNK = 64 << 20


def weights_offset(path: str | Path | BinaryIO | io.RawIOBase) -> int | None:
    """Where ``model.weights.h5``'s bytes start in ``path`` when it is laid out for reading in
    place (the first member, stored, at a power of two, no HDF5 signature earlier, its HDF5 end
    within the member); None for any other layout or for a file that is not a zip at all."""
    if isinstance(path, (str, Path)):
        with open(path, "rb") as opened:
            return weights_offset(opened)
    stream: Any = path
    try:
        stream.seek(0)
        header = stream.read(_LOCAL.size)
        if len(header) != _LOCAL.size:
            return None
        fields = _LOCAL.unpack(header)
        if fields[0] != b"PK\x03\x04" or fields[3] != zipfile.ZIP_STORED or fields[2] & 0x1:
            return None
        name_length, extra_length = fields[9], fields[10]
        if stream.read(name_length) != WEIGHTS_MEMBER.encode():
            return None
        start = _LOCAL.size + name_length + extra_length
        if start < 512 or start & (start - 1):
            return None
        with zipfile.ZipFile(stream) as archive:
            info = archive.getinfo(WEIGHTS_MEMBER)
            later = [i.header_offset for i in archive.infolist() if i is not info]
        if info.header_offset != 0 or info.compress_type != zipfile.ZIP_STORED:
            return None
        if info.compress_size != info.file_size or any(o < start + info.file_size for o in later):
            return None
        probe = 512
        while probe < start:  # HDF5 would take an earlier signature for the superblock
            stream.seek(probe)
            if stream.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return None
            probe *= 2
        stream.seek(start)
        superblock = stream.read(96)
        end = _hdf5_end(superblock)
        if end is None or end > info.file_size:
            return None
        return int(start)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, struct.error):
        return None


def _hdf5_end(superblock: bytes) -> int | None:
    """The end-of-file address an HDF5 superblock records (relative to its own start)."""
    if not superblock.startswith(HDF5_SIGNATURE) or len(superblock) < 12:
        return None
    version = superblock[8]
    if version in (0, 1):
        size = superblock[13]
        at = 24 + (4 if version == 1 else 0) + 2 * size  # base address, free-space address
    elif version in (2, 3):
        size = superblock[9]
        at = 12 + 2 * size  # base address, superblock extension address
    else:
        return None
    if size not in (2, 4, 8) or len(superblock) < at + size:
        return None
    return int.from_bytes(superblock[at : at + size], "little")


def align_weights(path: str | Path) -> None:
    """Rewrite the ``.keras`` file at ``path`` so its weights can be read in place.

    The weights member goes first, stored, its data at ``ALIGNMENT`` bytes; the other members
    follow with their bytes (and compression) unchanged. Data is copied file to file by the
    kernel where it can (``copy_file_range``), never held in memory whole, into a file beside
    ``path`` that replaces it atomically once complete. A file already laid out so is left alone;
    one without a weights member too.
    """
    path = Path(path)
    if weights_offset(path) is not None:
        return
    with zipfile.ZipFile(path) as archive:
        try:
            weights = archive.getinfo(WEIGHTS_MEMBER)
        except KeyError:
            return
        others = [info for info in archive.infolist() if info is not weights]
        partial = temporary_beside(path)
        try:
            with open(path, "rb") as source, open(partial, "wb") as out:
                _write_first(archive, source, weights, out)
                with zipfile.ZipFile(out, "w") as rest:
                    for info in others:
                        _copy_member(archive, source, info, rest)
                    rest.filelist.insert(0, weights)
                    rest.NameToInfo[weights.filename] = weights
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def data_start(source: BinaryIO | io.RawIOBase, info: zipfile.ZipInfo) -> int:
    """Where the bytes of member ``info`` start in the archive ``source``: past its local header,
    whose name and extra field may differ in length from the central directory's (BadZipFile if
    there is no local header there)."""
    source.seek(info.header_offset)
    header = source.read(_LOCAL.size)
    if len(header) != _LOCAL.size or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"member {info.filename!r} has no local header")
    fields = _LOCAL.unpack(header)
    return int(info.header_offset + _LOCAL.size + fields[9] + fields[10])


def _write_first(
    archive: zipfile.ZipFile, source: BinaryIO, info: zipfile.ZipInfo, out: BinaryIO
) -> None:
    """The weights member at offset 0 of ``out``, stored, its data at ALIGNMENT; ``info`` is
    updated to describe it there (the central directory is written from it)."""
    name = info.filename.encode()
    size = info.file_size
    zip64 = size > zipfile.ZIP64_LIMIT  # the bound zipfile itself uses for its central directory
    extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
    pad = ALIGNMENT - (_LOCAL.size + len(name) + len(extra) + 6)
    extra += struct.pack("<HHH", PADDING_ID, 2 + pad, ALIGNMENT) + bytes(pad)
    # a deflated member's CRC is computed while it is inflated, then written back to the header
    crc = info.CRC if info.compress_type == zipfile.ZIP_STORED else 0
    recorded = _ZIP64_LIMIT if zip64 else size
    version = 45 if zip64 else 20
    dostime = info.date_time
    time = dostime[3] << 11 | dostime[4] << 5 | dostime[5] // 2
    date = (dostime[0] - 1980) << 9 | dostime[1] << 5 | dostime[2]

    def header(crc: int) -> bytes:
        fields = (b"PK\x03\x04", version, 0, 0, time, date, crc, recorded, recorded)
        return _LOCAL.pack(*fields, len(name), len(extra)) + name + extra

    out.write(header(crc))
    assert out.tell() == ALIGNMENT
    if info.compress_type == zipfile.ZIP_STORED:
        _copy_range(source, data_start(source, info), size, out)
    else:
        with archive.open(info) as member:
            while chunk := member.read(_COPY_CHUNK):
                crc = zlib.crc32(chunk, crc)
                out.write(chunk)
        out.seek(0)
        out.write(header(crc))
        out.seek(0, os.SEEK_END)
    info.header_offset = 0
    info.compress_type = zipfile.ZIP_STORED
    info.compress_size = size
    info.CRC = crc
    info.extra = b""  # the padding belongs to the local header only
    info.flag_bits = 0
    info.create_version = info.extract_version = version


def _copy_member(
    archive: zipfile.ZipFile, source: BinaryIO, info: zipfile.ZipInfo, rest: zipfile.ZipFile
) -> None:
    """One member appended to ``rest`` with its bytes and compression as they are."""
    copy = zipfile.ZipInfo(info.filename, info.date_time)
    copy.compress_type = info.compress_type
    copy.external_attr = info.external_attr
    copy.create_system = info.create_system
    copy.file_size = info.file_size  # zipfile sizes its local header (zip64 or not) from it
    with archive.open(info) as member, rest.open(copy, "w") as target:
        shutil.copyfileobj(member, target, _COPY_CHUNK)


def _copy_range(source: BinaryIO, start: int, length: int, out: BinaryIO) -> None:
    """``length`` bytes of ``source`` from ``start`` to the end of ``out``, kernel to kernel."""
    out.flush()
    src, dst = source.fileno(), out.fileno()
    offset = start
    end = start + length
    while offset < end:
        try:
            count = os.copy_file_range(src, dst, end - offset, offset)
        except (AttributeError, OSError):
            count = _copy_slow(source, offset, end - offset, out)
        if count == 0:
            raise zipfile.BadZipFile("the archive ended inside its weights member")
        offset += count
    out.seek(0, os.SEEK_END)


def _copy_slow(source: BinaryIO, offset: int, length: int, out: BinaryIO) -> int:
    source.seek(offset)
    chunk = source.read(min(length, _COPY_CHUNK))
    out.seek(0, os.SEEK_END)
    out.write(chunk)
    out.flush()
    return len(chunk)
