"""Reading ``saved_model.pb`` without TensorFlow: its meta graphs, their nodes and function library.

A SavedModel is one protobuf message; this reads the fields the graph scan (``graph_scan``)
judges, through the strict reader of ``protowire``, into plain frozen records: every node of the
top-level graph and of every function in the library (its op, inputs, attributes and the functions
they name), each function's arguments, the gradient functions, the asset file names, the object
graph and the ``saver_def``. Whether any of that may be served is ``graph_scan``'s business.

Every message on the way from the file to a node and its attributes is read against its type
(the ``Message`` tables below, TensorFlow's field numbers from ``tensorflow/core/protobuf/
{saved_model,meta_graph,saver}.proto`` and ``tensorflow/core/framework/{graph,function,
node_def,attr_value,op_def,tensor}.proto``; a test holds them equal to the installed
TensorFlow's descriptors): an unknown field, a wrong wire type, a singular field twice or an
attribute named twice is a ``WireError``, so no other parser can find a node here that this
reader did not. Messages no loader takes nodes from (signatures, the object graph, collections,
shapes, tensors) are length-delimited values skipped whole; a ``Const``'s tensor is read on
demand (``tensor_strings``). Nesting is bounded by the structure read (function attributes,
which nest, at ``_MAX_FUNCTION_NESTING``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from bundler.scans.protowire import (
    FIXED32,
    FIXED64,
    LENGTH,
    VARINT,
    Field,
    Message,
    WireError,
    read,
    text,
)

_MAX_FUNCTION_NESTING = 16  # NameAttrList -> AttrValue -> NameAttrList ... inside one attr


def _message(name: str, *fields: tuple[int, Field]) -> Message:
    return Message(name, dict(fields))


def _one(number: int, name: str, wire: int = LENGTH) -> tuple[int, Field]:
    return number, Field(name, wire)


def _many(number: int, name: str, wire: int = LENGTH) -> tuple[int, Field]:
    return number, Field(name, wire, repeated=True, packed=wire != LENGTH)


def _choice(number: int, name: str, wire: int = LENGTH) -> tuple[int, Field]:
    return number, Field(name, wire, oneof=True)


SAVED_MODEL = _message(
    "SavedModel", _one(1, "saved_model_schema_version", VARINT), _many(2, "meta_graphs")
)
META_GRAPH_DEF = _message(
    "MetaGraphDef",
    _one(1, "meta_info_def"),
    _one(2, "graph_def"),
    _one(3, "saver_def"),
    _many(4, "collection_def"),
    _many(5, "signature_def"),
    _many(6, "asset_file_def"),
    _one(7, "object_graph_def"),
)
GRAPH_DEF = _message(
    "GraphDef",
    _many(1, "node"),
    _one(2, "library"),
    _one(3, "version", VARINT),
    _one(4, "versions"),
    _one(5, "debug_info"),
)
FUNCTION_DEF_LIBRARY = _message(
    "FunctionDefLibrary",
    _many(1, "function"),
    _many(2, "gradient"),
    _many(3, "registered_gradients"),
)
FUNCTION_DEF = _message(
    "FunctionDef",
    _one(1, "signature"),
    _many(3, "node_def"),
    _many(4, "ret"),
    _many(5, "attr"),
    _many(6, "control_ret"),
    _many(7, "arg_attr"),
    _many(8, "resource_arg_unique_id"),
)
OP_DEF = _message(
    "OpDef",
    _one(1, "name"),
    _many(2, "input_arg"),
    _many(3, "output_arg"),
    _many(4, "attr"),
    _one(5, "summary"),
    _one(6, "description"),
    _one(8, "deprecation"),
    _one(16, "is_aggregate", VARINT),
    _one(17, "is_stateful", VARINT),
    _one(18, "is_commutative", VARINT),
    _one(19, "allows_uninitialized_input", VARINT),
    _many(20, "control_output"),
    _one(21, "is_distributed_communication", VARINT),
)
ARG_DEF = _message(
    "OpDef.ArgDef",
    _one(1, "name"),
    _one(2, "description"),
    _one(3, "type", VARINT),
    _one(4, "type_attr"),
    _one(5, "number_attr"),
    _one(6, "type_list_attr"),
    _many(7, "handle_data"),
    _one(16, "is_ref", VARINT),
    _one(17, "experimental_full_type"),
)
GRADIENT_DEF = _message("GradientDef", _one(1, "function_name"), _one(2, "gradient_func"))
NODE_DEF = _message(
    "NodeDef",
    _one(1, "name"),
    _one(2, "op"),
    _many(3, "input"),
    _one(4, "device"),
    _many(5, "attr"),
    _one(6, "experimental_debug_info"),
    _one(7, "experimental_type"),
)
ATTR_ENTRY = _message("AttrEntry", _one(1, "key"), _one(2, "value"))  # map<string, AttrValue>
ATTR_VALUE = _message(
    "AttrValue",
    _choice(1, "list"),
    _choice(2, "s"),
    _choice(3, "i", VARINT),
    _choice(4, "f", FIXED32),
    _choice(5, "b", VARINT),
    _choice(6, "type", VARINT),
    _choice(7, "shape"),
    _choice(8, "tensor"),
    _choice(9, "placeholder"),
    _choice(10, "func"),
)
LIST_VALUE = _message(
    "AttrValue.ListValue",
    _many(2, "s"),
    _many(3, "i", VARINT),
    _many(4, "f", FIXED32),
    _many(5, "b", VARINT),
    _many(6, "type", VARINT),
    _many(7, "shape"),
    _many(8, "tensor"),
    _many(9, "func"),
)
NAME_ATTR_LIST = _message("NameAttrList", _one(1, "name"), _many(2, "attr"))
SAVER_DEF = _message(
    "SaverDef",
    _one(1, "filename_tensor_name"),
    _one(2, "save_tensor_name"),
    _one(3, "restore_op_name"),
    _one(4, "max_to_keep", VARINT),
    _one(5, "sharded", VARINT),
    _one(6, "keep_checkpoint_every_n_hours", FIXED32),
    _one(7, "version", VARINT),
)
ASSET_FILE_DEF = _message("AssetFileDef", _one(1, "tensor_info"), _one(2, "filename"))
TENSOR_PROTO = _message(
    "TensorProto",
    _one(1, "dtype", VARINT),
    _one(2, "tensor_shape"),
    _one(3, "version_number", VARINT),
    _one(4, "tensor_content"),
    _many(5, "float_val", FIXED32),
    _many(6, "double_val", FIXED64),
    _many(7, "int_val", VARINT),
    _many(8, "string_val"),
    _many(9, "scomplex_val", FIXED32),
    _many(10, "int64_val", VARINT),
    _many(11, "bool_val", VARINT),
    _many(12, "dcomplex_val", FIXED64),
    _many(13, "half_val", VARINT),
    _many(14, "resource_handle_val"),
    _many(15, "variant_val"),
    _many(16, "uint32_val", VARINT),
    _many(17, "uint64_val", VARINT),
    _one(18, "float8_val"),
)
# every message type read here, for the test that compares them with TensorFlow's descriptors
MESSAGES = (
    SAVED_MODEL,
    META_GRAPH_DEF,
    GRAPH_DEF,
    FUNCTION_DEF_LIBRARY,
    FUNCTION_DEF,
    OP_DEF,
    ARG_DEF,
    GRADIENT_DEF,
    NODE_DEF,
    ATTR_VALUE,
    LIST_VALUE,
    NAME_ATTR_LIST,
    SAVER_DEF,
    ASSET_FILE_DEF,
    TENSOR_PROTO,
)

# The fields read by number
_ATTR_LIST, _ATTR_B, _ATTR_S, _ATTR_TENSOR, _ATTR_FUNC = 1, 5, 2, 8, 10
_LIST_FUNC = 9
DT_STRING = 7

# The SaverDef's fields, the keys of ``MetaGraph.saver``.
SAVER_FILENAME, SAVER_SAVE, SAVER_RESTORE = 1, 2, 3

Attr = Mapping[int, Any]  # one AttrValue: the number of the member set (at most one) -> value


class Node(NamedTuple):
    """One node of a graph or of a function's body (a named tuple, not a frozen dataclass: a
    graph has hundreds, and a frozen dataclass's constructor costs four times as much)."""

    name: str
    op: str
    calls: tuple[str, ...]  # functions named in its attributes (f, then_branch, body, ...)
    inputs: tuple[str, ...] = ()
    attrs: Mapping[str, Attr] = MappingProxyType({})

    def flag(self, name: str) -> bool | None:
        """A bool attribute (``AttrValue.b``): None when the node does not set it."""
        value = self.attrs.get(name)
        return None if value is None or _ATTR_B not in value else bool(value[_ATTR_B])

    def string(self, name: str) -> bytes | None:
        """A bytes attribute (``AttrValue.s``): None when the node does not set it."""
        value = self.attrs.get(name)
        return None if value is None or _ATTR_S not in value else bytes(value[_ATTR_S])

    def tensor(self, name: str) -> memoryview | None:
        """A tensor attribute (a ``TensorProto``, unread): None when the node does not set it."""
        value = self.attrs.get(name)
        return None if value is None else value.get(_ATTR_TENSOR)


@dataclass(frozen=True)
class Function:
    """One function of the library: its arguments' names, in order, and its body."""

    args: tuple[str, ...]
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class MetaGraph:
    """What the graph scan reads of one MetaGraphDef: the top-level graph's nodes, the function
    library (each function's arguments and nodes, and the gradients it registers), the asset file
    names, the object graph (raw bytes: only searched for names) and the ``saver_def``'s tensor
    names."""

    nodes: tuple[Node, ...]
    functions: dict[str, Function]
    gradients: tuple[tuple[str, str], ...]
    assets: tuple[str, ...]
    object_graph: bytes | None
    saver: dict[int, str]  # SaverDef field number -> tensor or op name


def tensor_strings(tensor: memoryview) -> tuple[int, list[bytes]] | None:
    """The dtype and ``string_val`` of a TensorProto, read strictly; None when its values are
    held another way (``tensor_content``), which this reader does not decode."""
    proto = read(tensor, TENSOR_PROTO)
    if 4 in proto:
        return None
    return proto.get(1, 0), [bytes(value) for value in proto.get(8, ())]


# Per read of a file: an attribute entry's bytes and depth -> its key, its value and the functions
# it names. Nodes repeat their attributes (``T``, ``_output_shapes``, ``dtype``...): a Keras
# export's 600 entries hold under 100 distinct ones, each read strictly once.
_Memo = dict[tuple[memoryview, int], tuple[str, Attr, tuple[str, ...]]]


def _attr_value(value: memoryview, depth: int, calls: list[str], memo: _Memo | None = None) -> Attr:
    """One AttrValue, read strictly; the functions it names (``func``, ``list.func``, and nested
    in their attributes) are appended to ``calls``."""
    if depth > _MAX_FUNCTION_NESTING:
        raise WireError("function attributes are nested too deeply")
    memo = {} if memo is None else memo
    attr = read(value, ATTR_VALUE)
    if _ATTR_FUNC in attr:
        _name_attrs(attr[_ATTR_FUNC], depth, calls, memo)
    elif _ATTR_LIST in attr:
        for name_attrs in read(attr[_ATTR_LIST], LIST_VALUE).get(_LIST_FUNC, ()):
            _name_attrs(name_attrs, depth, calls, memo)
    return attr


def _name_attrs(buffer: memoryview, depth: int, calls: list[str], memo: _Memo) -> None:
    name_attrs = read(buffer, NAME_ATTR_LIST)
    calls.append(text(name_attrs.get(1)))
    _attrs(name_attrs.get(2, ()), depth + 1, calls, "a function attribute", memo)


def _attrs(
    entries: list[memoryview], depth: int, calls: list[str], owner: str, memo: _Memo
) -> dict[str, Attr]:
    attrs: dict[str, Attr] = {}
    for buffer in entries:  # a read-only memoryview hashes and compares as its bytes do
        known = memo.get((buffer, depth))
        if known is None:
            named = len(calls)
            entry = read(buffer, ATTR_ENTRY)
            key = text(entry.get(1))
            value = _attr_value(entry.get(2, memoryview(b"")), depth, calls, memo)
            known = memo[(buffer, depth)] = (key, value, tuple(calls[named:]))
        else:
            calls.extend(known[2])
        key = known[0]
        if key in attrs:
            raise WireError(f"{owner} sets attribute {key!r} twice, where parsers keep the last")
        attrs[key] = known[1]
    return attrs


def _node(buffer: memoryview, memo: _Memo) -> Node:
    node = read(buffer, NODE_DEF)
    name = text(node.get(1))
    calls: list[str] = []
    try:
        attrs = _attrs(node.get(5, ()), 0, calls, "the node", memo)
        inputs = tuple(text(value) for value in node.get(3, ()))
    except WireError as error:
        raise WireError(f"node {name!r}: {error}") from error
    return Node(name, text(node.get(2)), tuple(calls), inputs, attrs)


def _function(buffer: memoryview, functions: dict[str, Function], memo: _Memo) -> None:
    function = read(buffer, FUNCTION_DEF)
    signature = read(function.get(1, memoryview(b"")), OP_DEF)
    name = text(signature.get(1))
    try:
        args = tuple(text(read(arg, ARG_DEF).get(1)) for arg in signature.get(2, ()))
        nodes = tuple(_node(node, memo) for node in function.get(3, ()))
    except WireError as error:
        raise WireError(f"function {name!r}: {error}") from error
    if name in functions:
        raise WireError(f"the function library holds {name!r} twice")
    functions[name] = Function(args, nodes)


def _meta_graph(buffer: memoryview) -> MetaGraph:
    memo: _Memo = {}
    meta = read(buffer, META_GRAPH_DEF)
    graph = read(meta.get(2, memoryview(b"")), GRAPH_DEF)
    nodes = tuple(_node(node, memo) for node in graph.get(1, ()))
    functions: dict[str, Function] = {}
    gradients: list[tuple[str, str]] = []
    if 2 in graph:
        library = read(graph[2], FUNCTION_DEF_LIBRARY)
        for function in library.get(1, ()):
            _function(function, functions, memo)
        for gradient in library.get(2, ()):
            pair = read(gradient, GRADIENT_DEF)
            gradients.append((text(pair.get(1)), text(pair.get(2))))
    assets = tuple(text(read(asset, ASSET_FILE_DEF).get(2)) for asset in meta.get(6, ()))
    object_graph = meta.get(7)
    saver: dict[int, str] = {}
    if 3 in meta:
        saver_def = read(meta[3], SAVER_DEF)
        for number in (SAVER_FILENAME, SAVER_SAVE, SAVER_RESTORE):
            if number in saver_def:
                saver[number] = text(saver_def[number])
    return MetaGraph(
        nodes,
        functions,
        tuple(gradients),
        assets,
        None if object_graph is None else bytes(object_graph),
        saver,
    )


def read_meta_graphs(data: bytes) -> list[MetaGraph]:
    """The meta graphs of a ``saved_model.pb``; WireError when it is not one, read strictly."""
    saved_model = read(memoryview(data), SAVED_MODEL)
    meta_graphs = []
    for index, buffer in enumerate(saved_model.get(2, ())):
        try:
            meta_graphs.append(_meta_graph(buffer))
        except WireError as error:
            raise WireError(f"meta graph {index}: {error}") from error
    return meta_graphs
