"""A strict reader of the protobuf wire format: enough to walk a ``saved_model.pb`` without TF.

``bundle verify`` must say whether a bundle's SavedModel graph is safe to serve without importing
TensorFlow (seconds of start-up, and a large attack surface of its own). The wire format is
simple: a message is a sequence of (field number, wire type, value) records, and a nested message
is a length-delimited value read the same way. This module reads records against a ``Message``
(the field numbers, wire types and cardinality of one message type, copied from TensorFlow's
``.proto`` files) and nothing else: no recursion of its own (callers descend into the fields they
know, so nesting is bounded by the caller's code), and every malformation is a ``WireError``,
never an ``IndexError`` or a hang.

**Strict, because another parser decides what runs.** The graph scan judges the nodes *this*
reader sees, and TensorFlow's loaders run the nodes *their* parsers see (upb in the Python
loader, protobuf's C++ parser in TensorFlow Serving and in every ``GraphDef`` import). Wherever
conforming parsers may disagree about bytes, the bytes are refused rather than read one way:

- a field key longer than 5 bytes, or with bits above 32 (C++ keeps the low 32 bits and reads
  another field number), a field number 0 or above 2**29 - 1;
- any varint (key, length or value) encoded with more bytes than its value needs, or a value
  past 64 bits, or a length past 2**31 - 1 (C++'s limit);
- a field the message type does not declare (TensorFlow never writes unknown fields; a parser
  keeps them aside where we would have to guess), and a declared field with another wire type
  than declared (parsers file it with the unknown fields) except a repeated number sent packed
  or unpacked, which every parser must accept;
- a singular field sent twice, and two members of one oneof (parsers merge messages and keep
  the last scalar: ours would have to emulate both), groups (wire types 3 and 4, long
  deprecated) and wire types 6 and 7.

TensorFlow's own serializer writes none of these, so no real SavedModel is refused.
"""

from __future__ import annotations

from typing import Any, NamedTuple

VARINT = 0
FIXED64 = 1
LENGTH = 2
FIXED32 = 5

MAX_FIELD_NUMBER = (1 << 29) - 1
_WIRE_NAMES = {VARINT: "varint", FIXED64: "64-bit", LENGTH: "length-delimited", FIXED32: "32-bit"}


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message of the expected type."""


class Field(NamedTuple):
    """One field of a message type, as its ``.proto`` file declares it."""

    name: str
    wire: int
    repeated: bool = False
    packed: bool = False  # a repeated number: one packed (length-delimited) record, or one each
    oneof: bool = False  # a member of the message's oneof (a message type here has at most one)


class Message:
    """A message type: its name (for errors) and its fields by number."""

    __slots__ = ("fields", "keys", "name")

    def __init__(self, name: str, fields: dict[int, Field]) -> None:
        self.name = name
        self.fields = fields
        # every key a well-formed record of this type may start with -> (number, wire type,
        # repeated, oneof): one lookup checks the field number and its wire type at once
        self.keys: dict[int, tuple[int, int, bool, bool]] = {}
        for number, field in fields.items():
            wires = (field.wire, LENGTH) if field.packed else (field.wire,)
            for wire in wires:
                self.keys[number << 3 | wire] = (number, wire, field.repeated, field.oneof)


def _varint(buffer: memoryview, at: int, end: int, most: int) -> tuple[int, int]:
    """A varint of at most ``most`` bytes from ``at``, in its shortest encoding only."""
    start = at
    value = 0
    shift = 0
    while True:
        if at >= end:
            raise WireError("a number runs past the end of the message")
        byte = buffer[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        if at - start >= most:
            raise WireError(f"a number is longer than {most} bytes")
        shift += 7
    if byte == 0 and at - start > 1:
        raise WireError(
            f"a number is encoded in {at - start} bytes where fewer suffice (parsers may differ)"
        )
    return value, at


def read(buffer: memoryview, message: Message) -> dict[int, Any]:
    """The fields of one message of type ``message``, by number.

    A singular field maps to its value, a repeated one to the list of its values: an ``int``
    (varint, fixed) or a ``memoryview`` (bytes, string, nested message, packed numbers). Fields
    absent from the bytes are absent from the result. Every rule of the module docstring is
    checked; the first broken one is a ``WireError``.
    """
    keys = message.keys
    found: dict[int, Any] = {}
    oneof = 0
    at, end = 0, len(buffer)
    while at < end:
        key = buffer[at]
        if key < 0x80:
            at += 1
        else:
            key, at = _varint(buffer, at, end, 5)
        known = keys.get(key)
        if known is None:
            raise WireError(_unexpected(message, key))
        number, wire, repeated, member = known
        value: Any
        if wire == LENGTH:
            if at >= end:
                raise WireError(f"{_name(message, number)} runs past the end of the message")
            size = buffer[at]
            if size < 0x80:
                at += 1
            else:
                size, at = _varint(buffer, at, end, 5)
            if size > end - at:
                raise WireError(
                    f"{_name(message, number)} is {size} bytes long, past the end of the message"
                )
            value = buffer[at : at + size]
            at += size
        elif wire == VARINT:
            if at < end and buffer[at] < 0x80:
                value = buffer[at]
                at += 1
            else:
                value, at = _varint(buffer, at, end, 10)
                if value >> 64:
                    raise WireError(f"{_name(message, number)} holds a number past 64 bits")
        else:
            width = 4 if wire == FIXED32 else 8
            if width > end - at:
                raise WireError(f"{_name(message, number)} runs past the end of the message")
            value = int.from_bytes(buffer[at : at + width], "little")
            at += width
        if repeated:
            values = found.get(number)
            if values is None:
                found[number] = [value]
            else:
                values.append(value)
            continue
        if number in found:
            raise WireError(
                f"{_name(message, number)} appears twice, where parsers merge or keep the last"
            )
        if member:
            if oneof:
                raise WireError(
                    f"{message.name} sets both {message.fields[oneof].name} and "
                    f"{message.fields[number].name}, of which parsers keep one"
                )
            oneof = number
        found[number] = value
    return found


def _name(message: Message, number: int) -> str:
    return f"{message.name}.{message.fields[number].name} (field {number})"


def _unexpected(message: Message, key: int) -> str:
    """Why ``key`` cannot start a record of ``message``."""
    number, wire = key >> 3, key & 7
    if key >> 32:
        return (
            f"a field key of {message.name} has bits above 32 (0x{key:x}), which protobuf's C++ "
            "parser drops and reads as another field"
        )
    if number == 0:
        return f"field number 0 in a {message.name}"
    field = message.fields.get(number)
    if field is None:
        return f"{message.name} has no field {number}, and TensorFlow writes no unknown fields"
    if wire not in _WIRE_NAMES:
        return f"{_name(message, number)} has wire type {wire}, which TensorFlow never writes"
    return (
        f"{_name(message, number)} is sent {_WIRE_NAMES[wire]}, but it is "
        f"{_WIRE_NAMES[field.wire]}: parsers would set it aside as unknown"
    )


def text(value: memoryview | None) -> str:
    """A string field's value (``""`` when absent); WireError when it is not UTF-8."""
    if value is None:
        return ""
    try:
        return str(value, "utf-8")
    except UnicodeDecodeError as error:
        raise WireError(f"a name is not UTF-8: {error}") from error
