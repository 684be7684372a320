"""A small reader of the protobuf wire format: enough to walk a ``saved_model.pb`` without TF.

``bundle verify`` must say whether a bundle's SavedModel graph is safe to serve without importing
TensorFlow (seconds of start-up, and a large attack surface of its own). The wire format is
simple: a message is a sequence of (field number, wire type, value) records, and a nested message
is a length-delimited value read the same way. This module reads records and nothing else: no
schema, no recursion of its own (callers descend into the fields they know, so nesting is bounded
by the caller's code), and every malformation (a truncated varint, a length past the end, a wire
type that is not used any more) is a ``WireError``, never an ``IndexError`` or a hang.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT = 0
FIXED64 = 1
LENGTH = 2
FIXED32 = 5

_MAX_VARINT_BYTES = 10


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buffer: memoryview, at: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
        if at >= len(buffer):
            raise WireError("a number runs past the end of the message")
        byte = buffer[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
    raise WireError("a number is longer than 10 bytes")


def fields(buffer: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Each (field number, wire type, value) of one message: an int, or the bytes of a length
    field (a string, bytes, or a nested message for the caller to read with ``fields``)."""
    at = 0
    end = len(buffer)
    while at < end:
        key, at = _varint(buffer, at)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, at = _varint(buffer, at)
            yield number, wire, value
        elif wire == LENGTH:
            size, at = _varint(buffer, at)
            if size > end - at:
                raise WireError(f"field {number} is {size} bytes long, past the end of the message")
            yield number, wire, buffer[at : at + size]
            at += size
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            if width > end - at:
                raise WireError(f"field {number} runs past the end of the message")
            yield number, wire, int.from_bytes(buffer[at : at + width], "little")
            at += width
        else:  # 3 and 4 (groups) are long deprecated and unused by TensorFlow; 6 and 7 are invalid
            raise WireError(f"field {number} has wire type {wire}, which TensorFlow never writes")


def messages(buffer: memoryview, number: int) -> Iterator[memoryview]:
    """The values of length-delimited field ``number`` (repeated or not), in order."""
    for found, wire, value in fields(buffer):
        if found == number:
            if wire != LENGTH or not isinstance(value, memoryview):
                raise WireError(f"field {number} is not a message or a string")
            yield value


def text(value: memoryview) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as error:
        raise WireError(f"a name is not UTF-8: {error}") from error


def strings(buffer: memoryview, number: int) -> list[str]:
    return [text(value) for value in messages(buffer, number)]


def string(buffer: memoryview, number: int) -> str:
    """The last value of a singular string field (protobuf's rule), or ``""``."""
    found = strings(buffer, number)
    return found[-1] if found else ""
