"""Reading ``saved_model.pb`` without TensorFlow: its meta graphs, their nodes and function library.

A SavedModel is one protobuf message; this reads the few fields the graph scan (``graph_scan``)
judges, through ``protowire``, into plain frozen records: every node of the top-level graph and of
every function in the library with the functions its attributes name, the gradient functions, the
asset file names, the object graph and the ``saver_def``. Whether any of that may be served is
``graph_scan``'s business, not this module's.

Field numbers are TensorFlow's own. Nesting is bounded by the structure read (function
attributes, which nest, at ``_MAX_FUNCTION_NESTING``); a malformed message is a ``WireError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .protowire import WireError, fields, messages, string, strings

_MAX_FUNCTION_NESTING = 16  # NameAttrList -> AttrValue -> NameAttrList ... inside one attr

# Field numbers, from tensorflow/core/protobuf/{saved_model,meta_graph,saver}.proto and
# tensorflow/core/framework/{graph,function,node_def,attr_value,op_def}.proto.
_SAVED_MODEL_META_GRAPHS = 2
_META_GRAPH_DEF = 2
_META_SAVER_DEF = 3
_META_ASSET_FILE_DEF = 6
_META_OBJECT_GRAPH = 7
_GRAPH_NODE = 1
_GRAPH_LIBRARY = 2
_LIBRARY_FUNCTION = 1
_LIBRARY_GRADIENT = 2
_GRADIENT_FUNCTION, _GRADIENT_GRADIENT = 1, 2
_FUNCTION_SIGNATURE = 1
_FUNCTION_NODE = 3
_OPDEF_NAME = 1
_NODE_NAME, _NODE_OP, _NODE_INPUT, _NODE_ATTR = 1, 2, 3, 5
_ENTRY_VALUE = 2
_ATTR_LIST, _ATTR_FUNC = 1, 10
_LIST_FUNC = 9
_NAMEATTR_NAME, _NAMEATTR_ATTR = 1, 2
_ASSET_FILENAME = 2

# The SaverDef's fields, the keys of ``MetaGraph.saver``.
SAVER_FILENAME, SAVER_SAVE, SAVER_RESTORE = 1, 2, 3


@dataclass(frozen=True)
class Node:
    """One node of a graph or of a function's body."""

    name: str
    op: str
    calls: tuple[str, ...]  # functions named in its attributes (f, then_branch, body, ...)
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetaGraph:
    """What the graph scan reads of one MetaGraphDef: the top-level graph's nodes, the function
    library (each function's nodes, and the gradients it registers), the asset file names, the
    object graph (raw bytes: only searched for names) and the ``saver_def``'s tensor names."""

    nodes: tuple[Node, ...]
    functions: dict[str, tuple[Node, ...]]
    gradients: tuple[tuple[str, str], ...]
    assets: tuple[str, ...]
    object_graph: bytes | None
    saver: dict[int, str]  # SaverDef field number -> tensor or op name (last one wins)


def _attr_functions(value: memoryview, depth: int) -> list[str]:
    """Function names in one AttrValue: ``func`` and ``list.func``, and nested in their attrs."""
    if depth > _MAX_FUNCTION_NESTING:
        raise WireError("function attributes are nested too deeply")
    names: list[str] = []
    lists = list(messages(value, _ATTR_FUNC))
    for listed in messages(value, _ATTR_LIST):
        lists += list(messages(listed, _LIST_FUNC))
    for name_attrs in lists:
        names.append(string(name_attrs, _NAMEATTR_NAME))
        for entry in messages(name_attrs, _NAMEATTR_ATTR):
            for inner in messages(entry, _ENTRY_VALUE):
                names += _attr_functions(inner, depth + 1)
    return names


def _node(buffer: memoryview) -> Node:
    calls: list[str] = []
    for entry in messages(buffer, _NODE_ATTR):
        for value in messages(entry, _ENTRY_VALUE):
            calls += _attr_functions(value, 0)
    return Node(
        string(buffer, _NODE_NAME),
        string(buffer, _NODE_OP),
        tuple(calls),
        tuple(strings(buffer, _NODE_INPUT)),
    )


def _meta_graph(buffer: memoryview) -> MetaGraph:
    nodes: list[Node] = []
    functions: dict[str, tuple[Node, ...]] = {}
    gradients: list[tuple[str, str]] = []
    for graph in messages(buffer, _META_GRAPH_DEF):
        nodes += [_node(n) for n in messages(graph, _GRAPH_NODE)]
        for library in messages(graph, _GRAPH_LIBRARY):
            for function in messages(library, _LIBRARY_FUNCTION):
                names = [
                    string(signature, _OPDEF_NAME)
                    for signature in messages(function, _FUNCTION_SIGNATURE)
                ]
                name = names[-1] if names else ""
                found = tuple(_node(n) for n in messages(function, _FUNCTION_NODE))
                functions[name] = functions.get(name, ()) + found
            for gradient in messages(library, _LIBRARY_GRADIENT):
                gradients.append(
                    (string(gradient, _GRADIENT_FUNCTION), string(gradient, _GRADIENT_GRADIENT))
                )
    assets = [string(asset, _ASSET_FILENAME) for asset in messages(buffer, _META_ASSET_FILE_DEF)]
    object_graphs = [bytes(o) for o in messages(buffer, _META_OBJECT_GRAPH)]
    saver: dict[int, str] = {}
    for saver_def in messages(buffer, _META_SAVER_DEF):
        for number in (SAVER_FILENAME, SAVER_SAVE, SAVER_RESTORE):
            named = strings(saver_def, number)
            if named:
                saver[number] = named[-1]
    return MetaGraph(
        tuple(nodes),
        functions,
        tuple(gradients),
        tuple(assets),
        b"".join(object_graphs) if object_graphs else None,
        saver,
    )


def read_meta_graphs(data: bytes) -> list[MetaGraph]:
    """The meta graphs of a ``saved_model.pb``; WireError when it is not one."""
    view = memoryview(data)
    for _ in fields(view):  # the whole top level is well formed before anything else is read
        pass
    return [_meta_graph(m) for m in messages(view, _SAVED_MODEL_META_GRAPHS)]
