"""What other loaders run: a graph TensorFlow Serving would run, or read otherwise, is refused.

TensorFlow Serving (and ``tf.compat.v1.saved_model.loader.load``) runs the ``saver_def``'s
restore op and the init op of ``saved_model/`` at every load, and protobuf's C++ parser reads its
bytes. The attacker writes the whole bundle and re-seals the lock: a checkpoint written from the
restore function, weights restored from outside the bundle, a node hidden behind a field key only
the C++ parser reads, uninitialised memory, encodings parsers read differently. Each is refused by
``bundle verify`` under every policy (without TensorFlow), by ``bundle sign``, and by
``load_bundle`` whichever path it would take; and the first three are shown to work on
TensorFlow's own loaders, so the refusal is what stands between.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import UnsafeBundleError, load_bundle, verify_bundle
from bundler.errors import SignatureError
from bundler.trust.signing import keygen, sign_bundle
from bundler.types import Policy

from ..conftest import CopyBundle
from ..hostile_graphs import (
    add_node_bytes,
    field,
    hide_a_write_in_the_init_op,
    plant_a_checkpoint_in_the_restore_function,
    read_saved_model,
    replace_serving_function,
    restore_from_outside,
    saver_function,
    serve_only_the_graph,
    varint,
    write_sealed,
)

POLICIES: tuple[Policy, ...] = ("strict", "adapt", "fallback")
PB = "saved_model/saved_model.pb"


@pytest.fixture(scope="module")
def private_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    private, _ = keygen(tmp_path_factory.mktemp("keys") / "publisher")
    return private


def _restore_function(root: Path) -> str:
    return str(saver_function(read_saved_model(root).meta_graphs[0], "restore").signature.name)


def _plant(root: Path, tmp_path: Path) -> list[str]:
    plant_a_checkpoint_in_the_restore_function(root, tmp_path / "planted")
    where = f"function {_restore_function(root)!r}, node 'planted/save'"
    return [
        f"{where}: op 'SaveV2' reads or writes a checkpoint at a path the graph chooses (allowed "
        "only in the save and restore functions that only the top-level graph's saver calls, "
        "restoring in one and saving in the other)",
        f"{where}: op 'SaveV2' takes a checkpoint path ('planted/prefix:output:0') not made from "
        "the filename the loader feeds the saver",
    ]


def _restore_outside(root: Path, tmp_path: Path) -> list[str]:
    restore_from_outside(root, tmp_path / "elsewhere" / "variables")
    return [
        f"function {_restore_function(root)!r}, node 'RestoreV2': op 'RestoreV2' takes a "
        "checkpoint path ('outside/prefix:output:0') not made from the filename the loader "
        "feeds the saver"
    ]


def _hidden_node(root: Path, tmp_path: Path) -> list[str]:
    hide_a_write_in_the_init_op(root, tmp_path / "hidden.txt")
    return [
        "is not a valid SavedModel: meta graph 0: a field key of GraphDef has bits above 32 "
        "(0x10000000a), which protobuf's C++ parser drops and reads as another field"
    ]


def _empty(root: Path, tmp_path: Path) -> list[str]:
    import tensorflow as tf

    replace_serving_function(
        root, lambda x: x + tf.raw_ops.Empty(shape=tf.shape(x), dtype=x.dtype, init=False)
    )
    function = next(
        f.signature.name
        for f in read_saved_model(root).meta_graphs[0].graph_def.library.function
        if any(n.op == "Empty" for n in f.node_def)
    )
    return [
        f"function {function!r}, node 'Empty': op 'Empty' without init=true returns "
        "uninitialised memory: whatever the process freed there last, another request's data "
        "included"
    ]


def _raw(transform: Callable[[bytes], bytes], finding: str) -> Callable[[Path, Path], list[str]]:
    """A case that rewrites saved_model.pb's bytes: ``transform`` on the real file."""

    def forge(root: Path, tmp_path: Path) -> list[str]:
        data = (root / PB).read_bytes()
        assert data[:2] == b"\x08\x01"  # saved_model_schema_version: 1, then the meta graphs
        write_sealed(root, transform(data))
        return [f"is not a valid SavedModel: {finding}"]

    return forge


def _overlong_length(root: Path, tmp_path: Path) -> list[str]:
    """The meta graph's length encoded in one byte more than it needs (the same value)."""
    data = (root / PB).read_bytes()
    at, size, shift = 3, 0, 0  # after saved_model_schema_version and the meta graph's key
    while True:
        byte = data[at]
        size |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            break
    shortest = varint(size)
    write_sealed(root, data[:3] + bytes([*shortest[:-1], shortest[-1] | 0x80, 0]) + data[at:])
    return [
        f"is not a valid SavedModel: a number is encoded in {len(shortest) + 1} bytes where "
        "fewer suffice (parsers may differ)"
    ]


def _node_case(node: bytes, finding: str) -> Callable[[Path, Path], list[str]]:
    def forge(root: Path, tmp_path: Path) -> list[str]:
        add_node_bytes(root, node)
        return [f"is not a valid SavedModel: meta graph 0: {finding}"]

    return forge


def _attr(key: bytes, value: bytes) -> bytes:
    return field(5, field(1, key) + field(2, value))


def _beside(name: str) -> Callable[[Path, Path], list[str]]:
    def forge(root: Path, tmp_path: Path) -> list[str]:
        (root / "saved_model" / name).write_bytes((root / PB).read_bytes())
        write_sealed(root, (root / PB).read_bytes())
        return [
            f"saved_model/{name} is read by TensorFlow's loaders instead of saved_model.pb; a "
            "Keras export never writes it"
        ]

    return forge


HOSTILE: dict[str, Callable[[Path, Path], list[str]]] = {
    "checkpoint planted in the restore function": _plant,
    "weights restored from outside": _restore_outside,
    "node hidden behind a key over 32 bits": _hidden_node,
    "Empty with init=false": _empty,
    "overlong key": _raw(
        lambda data: b"\x88\x00\x01" + data[2:],
        "a number is encoded in 2 bytes where fewer suffice (parsers may differ)",
    ),
    "overlong length": _overlong_length,
    "wrong wire type": _raw(
        lambda data: b"\x0d\x01\x00\x00\x00" + data[2:],
        "SavedModel.saved_model_schema_version (field 1) is sent 32-bit, but it is varint: "
        "parsers would set it aside as unknown",
    ),
    "singular field twice": _raw(
        lambda data: b"\x08\x01" + data,
        "SavedModel.saved_model_schema_version (field 1) appears twice, where parsers merge or "
        "keep the last",
    ),
    "unknown field": _raw(
        lambda data: data + b"\x18\x01",
        "SavedModel has no field 3, and TensorFlow writes no unknown fields",
    ),
    "attribute twice": _node_case(
        field(1, b"twice") + field(2, b"NoOp") + _attr(b"x", b"\x28\x01") * 2,
        "node 'twice': the node sets attribute 'x' twice, where parsers keep the last",
    ),
    "two members of a oneof": _node_case(
        field(1, b"both") + field(2, b"NoOp") + _attr(b"x", b"\x30\x07\x12\x00"),
        "node 'both': AttrValue sets both type and s, of which parsers keep one",
    ),
    "saved_model.cpb beside": _beside("saved_model.cpb"),
    "saved_model.pbtxt beside": _beside("saved_model.pbtxt"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_graph_other_loaders_would_run_is_refused_by_verify_sign_and_load(
    copy_bundle: CopyBundle, tmp_path: Path, private_key: Path, case: str
) -> None:
    root = copy_bundle("custom_layer")
    findings = HOSTILE[case](root, tmp_path)
    for policy in POLICIES:
        report = verify_bundle(root, policy=policy)
        assert [(p.path, p.kind, p.message) for p in report.problems if p.kind == "unsafe"] == [
            (PB, "unsafe", finding) for finding in findings
        ], policy
    with pytest.raises(SignatureError) as refused:
        sign_bundle(root, private_key)
    assert refused.value.message == "refusing to sign a bundle that fails verification"
    assert f"{PB}: {findings[0]}" in refused.value.details
    assert not (root / "bundle.sig.json").exists()
    first = f"the SavedModel graph is not served: {findings[0]}"
    if case != "Empty with init=false":  # forged with its component pinned away already
        with pytest.raises(UnsafeBundleError) as caught:
            load_bundle(root)  # the Keras path: the graph is the bundle's all the same
        assert caught.value.message.startswith(first)
    serve_only_the_graph(root)
    with pytest.raises(UnsafeBundleError) as caught:
        load_bundle(root, policy="fallback")
    assert caught.value.message.startswith(first)
    assert not (tmp_path / "planted.index").exists()


def _serve_with_tensorflow_1(folder: Path) -> Any:
    """What TensorFlow Serving does at load, in Python: import the graph, run the restore op
    with the variables' path fed, run the init op; then the serving signature on ones."""
    import tensorflow as tf

    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(folder))
        signature = meta_graph.signature_def["serving_default"]
        ((given,),) = [signature.inputs.values()]
        (answer,) = signature.outputs.values()
        shape = [dim.size if dim.size > 0 else 1 for dim in given.tensor_shape.dim]
        return session.run(answer.name, {given.name: np.ones(shape, np.float32)})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_serving_load_runs_the_checkpoint_planted_in_the_restore_function(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    root = copy_bundle("custom_layer")
    plant_a_checkpoint_in_the_restore_function(root, tmp_path / "planted")
    _serve_with_tensorflow_1(root / "saved_model")
    assert (tmp_path / "planted.index").exists()  # written outside the bundle: what is refused


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_serving_load_restores_the_weights_the_restore_function_names(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    import tensorflow as tf

    root = copy_bundle("custom_layer")
    honest = _serve_with_tensorflow_1(root / "saved_model")
    variables = root / "saved_model" / "variables" / "variables"
    reader = tf.train.load_checkpoint(str(variables))
    names = sorted(reader.get_variable_to_shape_map())
    values = [reader.get_tensor(name) for name in names]
    outside = tmp_path / "elsewhere" / "variables"
    tf.raw_ops.SaveV2(
        prefix=str(outside),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[np.full_like(v, 0.5) if isinstance(v, np.ndarray) else v for v in values],
    )
    restore_from_outside(root, outside)
    served = _serve_with_tensorflow_1(root / "saved_model")
    assert not np.allclose(served, honest)  # the attacker's weights, not the bundle's


def test_the_cpp_parser_runs_the_node_hidden_behind_a_key_over_32_bits(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    import tensorflow as tf
    from tensorflow.python.client import pywrap_tf_session as c_api

    root = copy_bundle("custom_layer")
    target = tmp_path / "hidden.txt"
    signature = read_saved_model(root).meta_graphs[0].signature_def["__saved_model_init_op"]
    init = signature.outputs["__saved_model_init_op"].name.split(":")[0]
    graph_bytes = hide_a_write_in_the_init_op(root, target)
    graph = tf.Graph()
    options = c_api.TF_NewImportGraphDefOptions()
    try:  # TF_GraphImportGraphDef: protobuf's C++ parser, as TensorFlow Serving's loader uses
        c_api.TF_GraphImportGraphDefWithResults(
            graph._c_graph, c_api.TF_NewBufferFromString(graph_bytes), options
        )
    finally:
        c_api.TF_DeleteImportGraphDefOptions(options)
    graph._add_new_tf_operations(compute_devices=False)  # what import_graph_def does next
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(graph.get_operation_by_name(init))
    assert target.read_bytes() == b"written by a node verify never saw"


def test_the_export_of_every_example_bundle_keeps_its_saver_within_the_rules(
    built: dict[str, Any],
) -> None:
    """The saver functions TensorFlow writes pass the path rules: their paths are made from the
    filename only (a suffix picked by Select, StringJoin, ShardedFilename, Pack)."""
    for name, bundle in built.items():
        report = verify_bundle(bundle.path, policy="fallback")
        assert [p for p in report.problems if p.kind == "unsafe"] == [], name


def test_the_hidden_node_file_is_left_unread_by_the_python_loader(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    """upb, the parser of ``tf.saved_model.load``, refuses the key outright: only the C++
    loaders run the hidden node, which is why the scan must read as strictly as the strictest."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    root = copy_bundle("custom_layer")
    hide_a_write_in_the_init_op(root, tmp_path / "hidden.txt")
    with pytest.raises(DecodeError):
        saved_model_pb2.SavedModel.FromString((root / PB).read_bytes())
