"""The saver's functions: which functions only the saver calls, and what paths they write.

Every SavedModel TensorFlow writes carries a save function and a restore function, called from
the top-level graph through the ``saver_def`` by loaders that restore variables by running the
graph (TensorFlow Serving runs the restore op at every load, feeding the ``saver_def``'s filename
tensor the path of ``variables/variables``). Their checkpoint ops (``SaveV2``, ``RestoreV2``,
``MergeV2Checkpoints``, ``ShardedFilename``) take their path as a tensor, so the graph scan
(``graph_scan``) allows them only where that path can only be the loader's:

- ``saver_roles``: a function no other function calls and the object graph never names, called
  at the top level only by the save or restore node the ``saver_def`` names, with the filename
  placeholder as its first argument; its role (save, restore) is the node's;
- ``path_problems``: inside it, every path a checkpoint op takes is made from that argument, by
  ``_path_of``'s grammar (the argument; ``Identity`` of a path; ``StringJoin`` without separator
  of a path and constant suffixes holding no ``..`` or NUL; ``Select`` between two such
  suffixes; ``ShardedFilename`` and ``Pack`` of paths), never from a constant or another argument.
"""

from __future__ import annotations

from collections.abc import Callable

from bundler.scans.graph_ops import SAVER_OPS
from bundler.scans.protowire import WireError
from bundler.scans.saved_model_proto import (
    DT_STRING,
    SAVER_FILENAME,
    SAVER_RESTORE,
    SAVER_SAVE,
    Function,
    MetaGraph,
    Node,
    tensor_strings,
)

# what a saver function of each role may hold, and the inputs of each that are a path
ROLE_OPS: dict[str, set[str]] = {
    "save": {"SaveV2", "MergeV2Checkpoints", "ShardedFilename"},
    "restore": {"RestoreV2"},
}
_PATH_INPUTS = {
    "SaveV2": (0,),
    "RestoreV2": (0,),
    "MergeV2Checkpoints": (0, 1),
    "ShardedFilename": (0,),
}


def _node_name(tensor: str) -> str:
    """``saver_filename`` for ``saver_filename:0`` and ``^saver_filename`` (a control input)."""
    return tensor.lstrip("^").split(":", 1)[0]


def saver_roles(meta: MetaGraph) -> dict[str, frozenset[str]]:
    """Functions that hold checkpoint ops and that only the saver calls, with the loader's path,
    each with its role: ``save``, ``restore`` (both, when one function is called for both).

    Such a function is called by no other function and not named by the object graph; in the
    top-level graph, only by the nodes the ``saver_def`` names as its save and restore ops, whose
    first input is the ``saver_def``'s filename placeholder (what the loader feeds).
    """
    called_by_functions = {
        callee
        for function in meta.functions.values()
        for node in function.nodes
        for callee in (*node.calls, node.op)
    }
    called_by_functions |= {name for pair in meta.gradients for name in pair}
    roles_of_nodes = {
        _node_name(meta.saver.get(SAVER_SAVE, "")): "save",
        _node_name(meta.saver.get(SAVER_RESTORE, "")): "restore",
    }
    filename = _node_name(meta.saver.get(SAVER_FILENAME, ""))
    placeholders = {node.name for node in meta.nodes if node.op == "Placeholder"}
    savers: dict[str, frozenset[str]] = {}
    for name, function in meta.functions.items():
        if name in called_by_functions or not any(n.op in SAVER_OPS for n in function.nodes):
            continue
        callers = [node for node in meta.nodes if name in (*node.calls, node.op)]
        if not callers or not all(
            node.name in roles_of_nodes
            and node.inputs[:1] in ((filename,), (f"{filename}:0",))
            and filename in placeholders
            for node in callers
        ):
            continue
        if meta.object_graph is not None and name.encode() in meta.object_graph:
            continue  # the Python loader could call it with a path of the graph's choosing
        savers[name] = frozenset(roles_of_nodes[node.name] for node in callers)
    return savers


def _suffix(node: Node) -> bool:
    """A string constant that may end a checkpoint path: no ``..`` and no NUL in any value."""
    tensor = node.tensor("value")
    if node.op != "Const" or tensor is None:
        return False
    try:
        strings = tensor_strings(tensor)
    except WireError:
        return False
    return (
        strings is not None
        and strings[0] == DT_STRING
        and all(b".." not in value and b"\0" not in value for value in strings[1])
    )


def _combined(node: Node, data: list[str | None]) -> str | None:
    """What ``node`` makes of its data inputs' kinds (``_path_of``): a path stays a path through
    these ops only."""
    op = node.op
    if op == "Identity" and data:
        return data[0]
    if op in ("Select", "SelectV2") and len(data) == 3 and data[1] == data[2]:
        return data[1]  # the save function picks its temporary suffix by the filename's form
    if op == "StringJoin" and data and not node.string("separator"):
        tail_ok = all(kind == "suffix" for kind in data[1:])
        return data[0] if tail_ok and data[0] in ("path", "suffix") else None
    if op == "ShardedFilename" and data[:1] == ["path"]:
        return "path"
    if op == "Pack" and data and all(kind == "path" for kind in data):
        return "path"
    return None


def _path_of(function: Function) -> Callable[[str], str | None]:
    """What a tensor of a saver function is: ``"path"`` (made from its first argument, the
    filename the loader feeds), ``"suffix"`` (constants that may end a path), or None."""
    nodes = {node.name: node for node in function.nodes}
    filename = function.args[0] if function.args else None
    seen: dict[str, str | None] = {}

    def kind(tensor: str, depth: int = 0) -> str | None:
        if ":" not in tensor:  # in a function's body, an argument; a node's output has colons
            return "path" if tensor == filename else None
        name = tensor.split(":", 1)[0]
        node = nodes.get(name)
        if node is None or depth > 64 or name in seen:
            return seen.get(name)
        seen[name] = None  # a cycle is no path
        data = [kind(t, depth + 1) for t in node.inputs if not t.startswith("^")]
        found = "suffix" if _suffix(node) else _combined(node, data)
        seen[name] = found
        return found

    return kind


def path_problems(function: Function) -> list[tuple[str, str, str]]:
    """(node, op, why) for each checkpoint path of a saver function not made from the filename
    the loader feeds it."""
    problems = []
    kind = _path_of(function)
    for node in function.nodes:
        data = [tensor for tensor in node.inputs if not tensor.startswith("^")]
        for index in _PATH_INPUTS.get(node.op, ()):
            tensor = data[index] if index < len(data) else ""
            if kind(tensor) != "path":
                problems.append(
                    (
                        node.name,
                        node.op,
                        f"op {node.op!r} takes a checkpoint path ({tensor!r}) not made from the "
                        "filename the loader feeds the saver",
                    )
                )
    return problems
