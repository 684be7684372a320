"""The strict wire reader: bytes two protobuf parsers could read differently are refused.

The graph scan judges the nodes ``protowire`` and ``saved_model_proto`` find; TensorFlow runs
the nodes its own parsers find (upb in ``tf.saved_model.load``, protobuf's C++ parser in
TensorFlow Serving and in every ``GraphDef`` import). So the message tables must be
TensorFlow's, every ambiguous encoding must be refused, and, checked by a differential fuzzer
over mutated real ``saved_model.pb`` files: whenever TensorFlow's parsers see a node, the reader
saw it too (or refused the file).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest

from bundler import Bundle
from bundler.scans.protowire import LENGTH, WireError, read
from bundler.scans.saved_model_proto import (
    ATTR_VALUE,
    LIST_VALUE,
    MESSAGES,
    SAVED_MODEL,
    read_meta_graphs,
)

from ..hostile_graphs import field, varint

Seen = set[tuple[str | None, str, str]]  # (function or None for the top level, node, op)


def _descriptors() -> dict[str, Any]:
    from tensorflow.core.framework import (
        attr_value_pb2,
        function_pb2,
        graph_pb2,
        node_def_pb2,
        op_def_pb2,
        tensor_pb2,
    )
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2, saver_pb2

    return {
        "SavedModel": saved_model_pb2.SavedModel,
        "MetaGraphDef": meta_graph_pb2.MetaGraphDef,
        "GraphDef": graph_pb2.GraphDef,
        "FunctionDefLibrary": function_pb2.FunctionDefLibrary,
        "FunctionDef": function_pb2.FunctionDef,
        "OpDef": op_def_pb2.OpDef,
        "OpDef.ArgDef": op_def_pb2.OpDef.ArgDef,
        "GradientDef": function_pb2.GradientDef,
        "NodeDef": node_def_pb2.NodeDef,
        "AttrValue": attr_value_pb2.AttrValue,
        "AttrValue.ListValue": attr_value_pb2.AttrValue.ListValue,
        "NameAttrList": attr_value_pb2.NameAttrList,
        "SaverDef": saver_pb2.SaverDef,
        "AssetFileDef": meta_graph_pb2.AssetFileDef,
        "TensorProto": tensor_pb2.TensorProto,
    }


def test_the_message_tables_are_the_installed_tensorflows() -> None:
    """Field numbers, names, wire types, cardinality, packing and oneofs, as TensorFlow declares
    them: a TensorFlow release that adds a field fails here first (the reader would refuse it)."""
    from google.protobuf.descriptor import FieldDescriptor as Descriptor

    fixed = {
        Descriptor.TYPE_FLOAT: 5,
        Descriptor.TYPE_FIXED32: 5,
        Descriptor.TYPE_DOUBLE: 1,
        Descriptor.TYPE_FIXED64: 1,
    }
    lengths = (Descriptor.TYPE_MESSAGE, Descriptor.TYPE_STRING, Descriptor.TYPE_BYTES)
    types = _descriptors()
    assert sorted(types) == sorted(message.name for message in MESSAGES)
    for message in MESSAGES:
        declared = {}
        for f in types[message.name].DESCRIPTOR.fields:
            wire = LENGTH if f.type in lengths else fixed.get(f.type, 0)
            repeated = f.is_repeated
            oneof = f.containing_oneof is not None
            declared[f.number] = (f.name, wire, repeated, repeated and wire != LENGTH, oneof)
        assert {n: tuple(f) for n, f in message.fields.items()} == declared, message.name


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        pytest.param(
            bytes([0x88, 0x80, 0x80, 0x80, 0x10, 0x01]),
            "a field key of SavedModel has bits above 32 (0x100000008), which protobuf's C++ "
            "parser drops and reads as another field",
            id="key over 32 bits",
        ),
        pytest.param(
            bytes([0x88, 0x80, 0x80, 0x80, 0x80, 0x00]),
            "a number is longer than 5 bytes",
            id="key over 5 bytes",
        ),
        pytest.param(
            b"\x88\x00\x01",
            "a number is encoded in 2 bytes where fewer suffice (parsers may differ)",
            id="overlong key",
        ),
        pytest.param(
            b"\x08\x81\x80\x00",
            "a number is encoded in 3 bytes where fewer suffice (parsers may differ)",
            id="overlong value",
        ),
        pytest.param(
            b"\x12\x80\x00",
            "a number is encoded in 2 bytes where fewer suffice (parsers may differ)",
            id="overlong length",
        ),
        pytest.param(
            b"\x08" + b"\xff" * 9 + b"\x7f",
            "SavedModel.saved_model_schema_version (field 1) holds a number past 64 bits",
            id="value past 64 bits",
        ),
        pytest.param(
            b"\x08" + b"\xff" * 10 + b"\x01",
            "a number is longer than 10 bytes",
            id="value over 10 bytes",
        ),
        pytest.param(b"\x00\x00", "field number 0 in a SavedModel", id="field 0"),
        pytest.param(
            b"\x18\x01",
            "SavedModel has no field 3, and TensorFlow writes no unknown fields",
            id="unknown field",
        ),
        pytest.param(
            bytes([0xF8, 0xFF, 0xFF, 0xFF, 0x0F, 0x01]),
            "SavedModel has no field 536870911, and TensorFlow writes no unknown fields",
            id="largest field number",
        ),
        pytest.param(
            b"\x0d\x01\x00\x00\x00",
            "SavedModel.saved_model_schema_version (field 1) is sent 32-bit, but it is varint: "
            "parsers would set it aside as unknown",
            id="wrong wire type",
        ),
        pytest.param(
            b"\x10\x01",
            "SavedModel.meta_graphs (field 2) is sent varint, but it is length-delimited: "
            "parsers would set it aside as unknown",
            id="message sent as a number",
        ),
        pytest.param(
            b"\x0b\x0c",
            "SavedModel.saved_model_schema_version (field 1) has wire type 3, which TensorFlow "
            "never writes",
            id="group",
        ),
        pytest.param(
            b"\x0f",
            "SavedModel.saved_model_schema_version (field 1) has wire type 7, which TensorFlow "
            "never writes",
            id="wire type 7",
        ),
        pytest.param(
            b"\x08\x01\x08\x02",
            "SavedModel.saved_model_schema_version (field 1) appears twice, where parsers merge "
            "or keep the last",
            id="singular twice",
        ),
        pytest.param(b"\x08", "a number runs past the end of the message", id="cut value"),
        pytest.param(
            b"\x12", "SavedModel.meta_graphs (field 2) runs past the end of the message", id="cut"
        ),
        pytest.param(
            b"\x12\x05\x00",
            "SavedModel.meta_graphs (field 2) is 5 bytes long, past the end of the message",
            id="length past the end",
        ),
    ],
)
def test_an_encoding_parsers_may_read_differently_is_refused(data: bytes, refusal: str) -> None:
    with pytest.raises(WireError) as caught:
        read(memoryview(data), SAVED_MODEL)
    assert str(caught.value) == refusal


def test_what_every_parser_must_accept_is_read() -> None:
    """A negative number in 10 bytes, repeated numbers packed and unpacked (mixed), a repeated
    message, the members of a oneof one at a time."""
    minus_one = b"\x08" + b"\xff" * 9 + b"\x01"
    assert read(memoryview(minus_one), SAVED_MODEL) == {1: (1 << 64) - 1}
    listed = read(memoryview(b"\x1a\x02\x01\x02\x18\x03\x4a\x00\x4a\x00"), LIST_VALUE)
    assert {
        k: [bytes(v) if isinstance(v, memoryview) else v for v in vs] for k, vs in listed.items()
    } == {
        3: [b"\x01\x02", 3],
        9: [b"", b""],
    }
    assert read(memoryview(b"\x28\x01"), ATTR_VALUE) == {5: 1}
    with pytest.raises(
        WireError, match="AttrValue sets both b and type, of which parsers keep one"
    ):
        read(memoryview(b"\x28\x01\x30\x07"), ATTR_VALUE)


def _ours(data: bytes) -> Seen | None:
    """The nodes the scan's reader finds, or None when it refuses the bytes."""
    try:
        meta_graphs = read_meta_graphs(data)
    except WireError:
        return None
    seen: Seen = set()
    for meta in meta_graphs:
        seen |= {(None, node.name, node.op) for node in meta.nodes}
        for name, function in meta.functions.items():
            seen |= {(name, node.name, node.op) for node in function.nodes}
    return seen


def _graph_nodes(graph: Any) -> Seen:
    seen: Seen = {(None, node.name, node.op) for node in graph.node}
    for function in graph.library.function:
        seen |= {(function.signature.name, n.name, n.op) for n in function.node_def}
    return seen


def test_real_saved_models_read_as_tensorflow_reads_them(built: dict[str, Bundle]) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    for name, bundle in built.items():
        data = (bundle.path / "saved_model" / "saved_model.pb").read_bytes()
        theirs: Seen = set()
        for meta in saved_model_pb2.SavedModel.FromString(data).meta_graphs:
            theirs |= _graph_nodes(meta.graph_def)
        assert _ours(data) == theirs, name


# -- the differential fuzzer ----------------------------------------------------------------------

Record = list[Any]  # [key, wire, payload, canonical length?]: payload bytes, or records


def _records(data: bytes, depth: int = 0) -> list[Record] | None:
    """``data`` as a tree of records (a length-delimited value that reads as a message becomes
    its records), or None when it does not read as a message at all."""
    records: list[Record] = []
    at = 0
    try:
        while at < len(data):
            key, at = _varint(data, at)
            wire = key & 7
            if key >> 3 == 0 or wire not in (0, 1, 2, 5):
                return None
            if wire == 0:
                _, end = _varint(data, at)
            elif wire in (1, 5):
                end = at + (8 if wire == 1 else 4)
            else:
                size, at = _varint(data, at)
                end = at + size
            if end > len(data):
                return None
            payload: Any = data[at:end]
            if wire == 2 and depth < 12:
                payload = _records(payload, depth + 1) or payload
            records.append([key, wire, payload, True])
            at = end
    except IndexError:
        return None
    return records


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def _encode(records: list[Record]) -> bytes:
    out = bytearray()
    for key, wire, payload, canonical in records:
        out += key if isinstance(key, bytes) else varint(key)
        body = _encode(payload) if isinstance(payload, list) else payload
        if wire == 2:
            size = varint(len(body))
            out += size if canonical else bytes([*size[:-1], size[-1] | 0x80, 0])
        out += body
    return bytes(out)


def _all(records: list[Record], into: list[tuple[list[Record], int]]) -> None:
    for index, record in enumerate(records):
        into.append((records, index))
        if isinstance(record[2], list):
            _all(record[2], into)


def _mutate(records: list[Record], rng: random.Random) -> str:
    """One change somewhere in the tree, in place; what it was, to reproduce a failure."""
    places: list[tuple[list[Record], int]] = []
    _all(records, places)
    siblings, index = rng.choice(places)
    record = siblings[index]
    key = record[0] if isinstance(record[0], int) else 0x0A
    kind = rng.choice(
        ["high key", "overlong key", "wire", "twice", "drop", "number", "length", "byte", "swap"]
    )
    if kind == "high key":  # a 5-byte key with bits above 32 that C++ drops
        high = key | rng.choice([1, 2, 4]) << 32
        record[0] = bytes([(high >> (7 * i)) & 0x7F | (0x80 if i < 4 else 0) for i in range(5)])
    elif kind == "overlong key":
        shortest = varint(key)
        record[0] = bytes([*shortest[:-1], shortest[-1] | 0x80, 0])
    elif kind == "wire":
        record[0] = key & ~7 | rng.choice([0, 1, 2, 5])
    elif kind == "twice":
        siblings.insert(index, [record[0], record[1], record[2], record[3]])
    elif kind == "drop":
        del siblings[index]
    elif kind == "number":
        record[0] = rng.randint(1, 20) << 3 | key & 7
    elif kind == "length":
        record[3] = False
    elif kind == "swap":
        other = rng.randrange(len(siblings))
        siblings[index], siblings[other] = siblings[other], siblings[index]
    elif isinstance(record[2], bytes) and record[2]:
        payload = bytearray(record[2])
        payload[rng.randrange(len(payload))] = rng.randrange(256)
        record[2] = bytes(payload)
    return f"{kind} at depth-first record {places.index((siblings, index))}"


def _upb(data: bytes) -> Seen | None:
    """The nodes ``tf.saved_model.load``'s parser (upb) finds, or None when it refuses."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        saved_model = saved_model_pb2.SavedModel.FromString(data)
    except DecodeError:
        return None
    seen: Seen = set()
    for meta in saved_model.meta_graphs:
        seen |= _graph_nodes(meta.graph_def)
    return seen


def _cpp(graph_bytes: bytes) -> Seen | None:
    """The nodes protobuf's C++ parser finds in a GraphDef, as TensorFlow imports it
    (``TF_GraphImportGraphDef``), or None when the import fails."""
    import tensorflow as tf
    from tensorflow.python.client import pywrap_tf_session as c_api

    graph = tf.Graph()
    options = c_api.TF_NewImportGraphDefOptions()
    try:
        c_api.TF_GraphImportGraphDefWithResults(
            graph._c_graph, c_api.TF_NewBufferFromString(graph_bytes), options
        )
    except Exception:
        return None
    finally:
        c_api.TF_DeleteImportGraphDefOptions(options)
    graph._add_new_tf_operations(compute_devices=False)
    return _graph_nodes(graph.as_graph_def())


@pytest.mark.slow
def test_every_node_tensorflow_parses_from_mutated_bytes_the_scan_saw_too(
    built: dict[str, Bundle],
) -> None:
    """Mutate real files (structure-aware: keys with bits above 32, overlong keys and lengths,
    wire types, duplicated, dropped, renumbered and swapped fields, bytes) for a budget of
    seconds; whenever upb (on the whole SavedModel) or the C++ import (on its GraphDef) reads a
    node, the reader read it too or refused the file. BUNDLER_FUZZ_SEED and
    BUNDLER_FUZZ_SECONDS (default 0 and 20) reproduce and extend a run."""
    from tensorflow.core.protobuf import saved_model_pb2

    seed = int(os.environ.get("BUNDLER_FUZZ_SEED", "0"))
    budget = float(os.environ.get("BUNDLER_FUZZ_SECONDS", "20"))
    rng = random.Random(seed)
    files = [
        (bundle.path / "saved_model" / "saved_model.pb").read_bytes() for bundle in built.values()
    ]
    deadline = time.monotonic() + budget
    tried = {"whole file": 0, "graph": 0}
    read_by_tensorflow = {"whole file": 0, "graph": 0}
    while time.monotonic() < deadline:
        original = rng.choice(files)
        level = rng.choice(["whole file", "graph"])
        if level == "whole file":
            tree = _records(original)
            assert tree is not None and _encode(tree) == original
            what = ", ".join(_mutate(tree, rng) for _ in range(rng.randint(1, 3)))
            data = _encode(tree)
            theirs = _upb(data)
        else:
            saved_model = saved_model_pb2.SavedModel.FromString(original)
            meta = saved_model.meta_graphs[0]
            graph_tree = _records(meta.graph_def.SerializeToString())
            assert graph_tree is not None
            what = ", ".join(_mutate(graph_tree, rng) for _ in range(rng.randint(1, 3)))
            graph = _encode(graph_tree)
            meta.ClearField("graph_def")
            data = b"\x08\x01" + field(2, meta.SerializeToString() + field(2, graph))
            theirs = _cpp(graph)
        tried[level] += 1
        if theirs is None:
            continue
        read_by_tensorflow[level] += 1
        ours = _ours(data)
        if ours is not None:
            assert theirs <= ours, (
                f"seed {seed}, {level}, {what}: TensorFlow reads nodes the scan did not: "
                f"{sorted(theirs - ours, key=str)[:5]}"
            )
    assert all(tried.values()), tried
    print(f"fuzzed (seed {seed}): {tried}; read by TensorFlow: {read_by_tensorflow}")
