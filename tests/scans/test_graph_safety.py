"""The graph path: a hostile ``saved_model/`` is refused before TensorFlow runs any of it.

The attacker writes the whole bundle and re-seals the lock, so integrity passes. Their SavedModel's
serving function reads a file outside the bundle and writes another one; or calls back into
Python; or saves a checkpoint wherever it likes; or names an asset outside the bundle. Loading
under ``policy="fallback"`` and ``bundle verify`` (without TensorFlow) both refuse, naming the op,
the function and the node; ``unsafe=True`` serves it anyway, loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler import Bundle, UnsafeBundleError, load_bundle, verify_bundle
from bundler.errors import UnsafeLoadWarning
from bundler.scans.graph import SAVED_MODEL_MAX_BYTES, scan_saved_model
from bundler.scans.graph_ops import ALLOWED_OPS, REFUSED_OPS, SAVER_OPS

from ..conftest import CopyBundle, run_bundle, run_python, service_env
from ..hostile import reseal
from ..hostile_graphs import replace_serving_function

HOSTNAME = Path("/etc/hostname")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture()
def hostile_graph(copy_bundle: CopyBundle, tmp_path: Path) -> tuple[Path, Path]:
    """A re-sealed bundle whose graph copies /etc/hostname to a file outside the bundle."""
    import tensorflow as tf

    root = copy_bundle("custom_layer")
    stolen = tmp_path / "outside" / "stolen.txt"
    stolen.parent.mkdir()

    def steal(x: Any) -> Any:
        tf.io.write_file(str(stolen), tf.io.read_file(str(HOSTNAME)))
        return x

    replace_serving_function(root, steal)
    return root, stolen


def _zeros_for(loaded: Any) -> np.ndarray:
    """An input the served signature accepts: zeros of its shape (unknown sizes 1)."""
    ((spec),) = loaded._signature.structured_input_signature[1].values()
    return np.zeros([d or 1 for d in spec.shape], spec.dtype.as_numpy_dtype)


def test_a_graph_that_reads_and_writes_files_is_refused_under_fallback(
    hostile_graph: tuple[Path, Path],
) -> None:
    root, stolen = hostile_graph
    assert not [p for p in verify_bundle(root, policy="fallback").problems if p.kind != "unsafe"]
    with pytest.raises(UnsafeBundleError) as caught:
        load_bundle(root, policy="fallback")
    message = str(caught.value).splitlines()[0]
    assert message.startswith(f"{root / 'saved_model' / 'saved_model.pb'}: ")
    assert "the SavedModel graph is not served: function '__inference_serve_" in message
    assert "node 'ReadFile': op 'ReadFile' reads, writes, lists or deletes files" in message
    assert message.endswith("; load with unsafe=True only if you made it")
    assert "'WriteFile'" in str(caught.value)  # the second finding, in the details
    assert not stolen.exists()


@pytest.mark.filterwarnings("ignore::bundler.errors.FallbackWarning")
def test_unsafe_true_serves_the_refused_graph_and_says_so(
    hostile_graph: tuple[Path, Path],
) -> None:
    root, stolen = hostile_graph
    with pytest.warns(UnsafeLoadWarning, match="unsafe=True although the graph scan refuses it"):
        loaded = load_bundle(root, policy="fallback", unsafe=True)
    assert loaded.mode == "graph"
    loaded.predict(_zeros_for(loaded))
    assert stolen.read_bytes() == HOSTNAME.read_bytes()  # what the scan stood between


def test_cli_verify_fallback_names_the_op_without_tensorflow(
    hostile_graph: tuple[Path, Path],
) -> None:
    root, _ = hostile_graph
    result = run_bundle("verify", str(root), "--policy", "fallback", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    problems = json.loads(result.stdout)["problems"]
    unsafe = [p for p in problems if p["kind"] == "unsafe"]
    assert {p["path"] for p in unsafe} == {"saved_model/saved_model.pb"}
    ops = sorted(p["message"].rsplit("node ", 1)[1].split(":")[0] for p in unsafe)
    assert ops == ["'ReadFile'", "'WriteFile'"]
    assert all(p["message"].startswith("function '__inference_serve_") for p in unsafe)
    # and the same report from the API, in a process that never imports TensorFlow
    code = (
        "import sys, bundler\n"
        f"report = bundler.verify_bundle({str(root)!r}, policy='fallback')\n"
        "print(sorted(p.kind for p in report.problems))\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    shown = run_python(code).stdout.splitlines()
    assert shown == ["['unsafe', 'unsafe']", "False False"]


def test_verify_reports_an_unsafe_graph_under_every_policy(
    hostile_graph: tuple[Path, Path],
) -> None:
    root, _ = hostile_graph
    for policy in ("strict", "adapt", "fallback"):
        kinds = [p.kind for p in verify_bundle(root, policy=policy).problems]
        assert kinds.count("unsafe") == 2, (policy, kinds)


def test_a_python_callback_in_the_graph_is_refused(copy_bundle: CopyBundle) -> None:
    import tensorflow as tf

    root = copy_bundle("custom_layer")
    replace_serving_function(root, lambda x: tf.py_function(lambda t: t, [x], x.dtype))
    with pytest.raises(UnsafeBundleError, match="op 'EagerPyFunc' calls back into Python"):
        load_bundle(root, policy="fallback")


def test_a_checkpoint_written_from_the_serving_function_is_refused(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    import tensorflow as tf

    root = copy_bundle("custom_layer")
    target = tmp_path / "planted"

    def save(x: Any) -> Any:
        tf.raw_ops.SaveV2(
            prefix=str(target), tensor_names=["x"], shape_and_slices=[""], tensors=[x]
        )
        return x

    replace_serving_function(root, save)
    with pytest.raises(
        UnsafeBundleError, match="op 'SaveV2' reads or writes a checkpoint at a path"
    ):
        load_bundle(root, policy="fallback")
    assert not list(tmp_path.glob("planted*"))


def test_an_asset_path_outside_the_bundle_is_refused(copy_bundle: CopyBundle) -> None:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    root = copy_bundle("custom_layer")
    vocabulary = root.parent / "vocabulary.txt"
    vocabulary.write_text("a\nb\n")
    asset = tf.saved_model.Asset(str(vocabulary))
    replace_serving_function(root, lambda x: x)
    module = tf.Module()
    module.asset = asset
    folder = root / "saved_model"
    shutil.rmtree(folder)
    tf.saved_model.save(module, str(folder))
    pb = folder / "saved_model.pb"
    model = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    model.meta_graphs[0].asset_file_def[0].filename = "../../../etc/passwd"
    pb.write_bytes(model.SerializeToString())
    reseal(root)
    found = scan_saved_model(root, "saved_model", _files(root)).findings
    assert found == ("asset path '../../../etc/passwd' leaves its root through '..'",)
    report = verify_bundle(root, policy="fallback")
    assert [(p.path, p.kind, p.message) for p in report.problems if p.kind == "unsafe"] == [
        ("saved_model/saved_model.pb", "unsafe", found[0])
    ]


def test_every_example_bundle_graph_passes_the_scan(built: dict[str, Bundle]) -> None:
    for name, bundle in built.items():
        assert scan_saved_model(bundle.path, "saved_model", _files(bundle.path)).findings == (), (
            name
        )


def test_keras_exports_of_common_layers_pass_the_scan(tmp_path: Path) -> None:
    """The allowlist is what Keras exports contain: a few layer kinds, exported as Keras does."""
    import keras
    from keras import layers

    def dense() -> Any:
        i = keras.Input((8,))
        return keras.Model(i, layers.Dense(2)(layers.Dropout(0.5)(layers.Dense(4)(i))))

    def conv() -> Any:
        i = keras.Input((8, 8, 3))
        x = layers.BatchNormalization()(layers.Conv2D(2, 3)(i))
        return keras.Model(i, layers.GlobalAveragePooling2D()(layers.MaxPooling2D()(x)))

    def recurrent() -> Any:
        i = keras.Input((5, 3))
        return keras.Model(i, layers.GRU(2)(layers.LSTM(2, return_sequences=True)(i)))

    def attention() -> Any:
        i = keras.Input((4,), dtype="int32")
        x = layers.Embedding(10, 4)(i)
        return keras.Model(i, layers.LayerNormalization()(layers.MultiHeadAttention(2, 2)(x, x)))

    def text() -> Any:
        i = keras.Input((), dtype="string")
        vectorize = layers.TextVectorization(max_tokens=8, output_sequence_length=3)
        vectorize.adapt(["a b", "b c d"])
        lookup = layers.StringLookup(vocabulary=["a", "b"])
        return keras.Model(i, [vectorize(i), lookup(i)])

    def normalization() -> Any:
        i = keras.Input((3,))
        normalize = layers.Normalization()
        normalize.adapt(np.arange(12.0).reshape(4, 3))
        return keras.Model(i, layers.IntegerLookup(vocabulary=[1, 2])(layers.Discretization(
            bin_boundaries=[0.0, 1.0])(normalize(i))))  # fmt: skip

    for make in (dense, conv, recurrent, attention, text, normalization):
        folder = tmp_path / make.__name__
        make().export(str(folder), format="tf_saved_model", verbose=False)
        files = {f"{make.__name__}/{path}" for path in _files(folder)}
        assert scan_saved_model(tmp_path, make.__name__, files).findings == (), make.__name__


def test_the_op_tables_do_not_overlap() -> None:
    assert not set(ALLOWED_OPS) & set(REFUSED_OPS)
    assert set(SAVER_OPS) <= set(REFUSED_OPS)
    assert not set(SAVER_OPS) & set(ALLOWED_OPS)


def _sealed_pb(root: Path, data: bytes) -> None:
    (root / "saved_model" / "saved_model.pb").write_bytes(data)
    reseal(root)


@pytest.mark.parametrize(
    ("data", "finding"),
    [
        pytest.param(b"", "holds no graph", id="empty"),
        pytest.param(
            b"\xff" * 11,
            "is not a valid SavedModel: a number is longer than 5 bytes",
            id="endless-varint",
        ),
        pytest.param(
            b"\x12\xff\xff\xff\x7f",
            "is not a valid SavedModel: SavedModel.meta_graphs (field 2) is 268435455 "
            "bytes long, past the end of the message",
            id="length-past-end",
        ),
        pytest.param(
            b"\x13",
            "is not a valid SavedModel: SavedModel.meta_graphs (field 2) has wire type 3, which "
            "TensorFlow never writes",
            id="group",
        ),
        pytest.param(
            b"\x12\x02\x12\x00",
            "the SavedModel has no object graph (a TensorFlow 1 "
            "SavedModel, whose loader runs its init ops); Keras exports always have one",
            id="no-object-graph",
        ),
    ],
)
def test_a_malformed_saved_model_is_a_problem_not_an_exception(
    copy_bundle: CopyBundle, data: bytes, finding: str
) -> None:
    root = copy_bundle("custom_layer")
    _sealed_pb(root, data)
    assert scan_saved_model(root, "saved_model", _files(root)).findings == (finding,)
    report = verify_bundle(root, policy="fallback")
    assert [p.message for p in report.problems if p.kind == "unsafe"] == [finding]


def test_function_attributes_nested_too_deeply_are_a_problem() -> None:
    from bundler.scans.protowire import WireError
    from bundler.scans.saved_model_proto import _attr_value

    def nest(depth: int) -> bytes:
        # AttrValue{func: NameAttrList{name: "f", attr: {key: "a", value: <deeper>}}}
        value = b""
        for _ in range(depth):
            entry = b"\x0a\x01a" + b"\x12" + _length(value) + value
            name_attrs = b"\x0a\x01f" + b"\x12" + _length(entry) + entry
            value = b"\x52" + _length(name_attrs) + name_attrs
        return value

    calls: list[str] = []
    _attr_value(memoryview(nest(5)), 0, calls)
    assert calls == ["f"] * 5
    with pytest.raises(WireError, match="nested too deeply"):
        _attr_value(memoryview(nest(40)), 0, [])


def _length(data: bytes) -> bytes:
    size, out = len(data), b""
    while True:
        byte, size = size & 0x7F, size >> 7
        out += bytes([byte | (0x80 if size else 0)])
        if not size:
            return out


def test_an_oversized_saved_model_is_refused_before_reading(tmp_path: Path) -> None:
    folder = tmp_path / "saved_model"
    folder.mkdir()
    with (folder / "saved_model.pb").open("wb") as stream:
        stream.truncate(SAVED_MODEL_MAX_BYTES + 1)  # sparse: no disk, no hashing
    assert scan_saved_model(tmp_path, "saved_model", {"saved_model/saved_model.pb"}).findings == (
        f"is larger than {SAVED_MODEL_MAX_BYTES} bytes",
    )


@settings(
    max_examples=int(os.environ.get("BUNDLER_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzzed_saved_model_gives_findings_never_an_exception(
    built: dict[str, Bundle], tmp_path: Path, data: st.DataObject
) -> None:
    """A real saved_model.pb with bytes changed and cut: a list of findings, never an exception."""
    original = (built["custom_layer"].path / "saved_model" / "saved_model.pb").read_bytes()
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(damaged)))
    folder = tmp_path / "saved_model"
    folder.mkdir(exist_ok=True)
    (folder / "saved_model.pb").write_bytes(bytes(damaged[:cut]))
    found = scan_saved_model(tmp_path, "saved_model", {"saved_model/saved_model.pb"}).findings
    assert isinstance(found, tuple) and all(isinstance(line, str) for line in found)


def test_the_scan_never_imports_tensorflow() -> None:
    assert "bundler.scans.graph" in sys.modules
    code = (
        "import sys, bundler.scans.graph, bundler.verify.checks; print('tensorflow' in sys.modules)"
    )
    assert run_python(code).stdout.strip() == "False"


def test_checkpoint_ops_are_allowed_only_in_functions_only_the_saver_calls() -> None:
    from bundler.scans.graph import scan_meta_graph
    from bundler.scans.saved_model_proto import Function, MetaGraph, Node

    save = Function(
        ("file_prefix",),
        (
            Node("SaveV2", "SaveV2", (), ("file_prefix",)),
            Node("Merge", "MergeV2Checkpoints", (), ("file_prefix", "file_prefix")),
        ),
    )
    call = Node("Call", "StatefulPartitionedCall", ("traced_save",), ("saver_filename",))
    placeholder = Node("saver_filename", "Placeholder", ())
    saver = {1: "saver_filename:0", 2: "Call:0", 3: "Restore"}

    def findings(
        serve: tuple[Any, ...] = (),
        object_graph: bytes = b"\x0a\x00",
        caller: Any = call,
        filename: Any = placeholder,
    ) -> list[str]:
        functions = {"traced_save": save, "serve": Function((), serve)}
        meta = MetaGraph((filename, caller), functions, (), (), object_graph, saver)
        return [str(f) for f in scan_meta_graph(meta, lambda _: True)]

    assert findings() == []
    calls_the_saver = (Node("Steal", "PartitionedCall", ("traced_save",)),)
    assert findings(calls_the_saver) == [
        "function 'traced_save', node 'SaveV2': op 'SaveV2' reads or writes a checkpoint at a path "
        "the graph chooses (allowed only in the save and restore functions that only the "
        "top-level graph's saver calls, restoring in one and saving in the other)",
        "function 'traced_save', node 'Merge': op 'MergeV2Checkpoints' reads or writes a "
        "checkpoint at a path the graph chooses (allowed only in the save and restore functions "
        "that only the top-level graph's saver calls, restoring in one and saving in the other)",
    ]
    assert len(findings(object_graph=b"\x0a\x0btraced_save")) == 2
    # called from the top level by a node the saver_def does not name, or not with the loader's path
    assert len(findings(caller=Node("Other", call.op, call.calls, call.inputs))) == 2
    assert len(findings(filename=Node("saver_filename", "Const", ()))) == 2
    assert len(findings(caller=Node("Call", call.op, call.calls, ("path_const",)))) == 2


CALLBACK_COMPONENT = '''
"""A component whose layer calls back into Python from its graph."""

import keras
import tensorflow as tf

__version__ = "1.0.0"


@keras.saving.register_keras_serializable(package="callback")
class Echo(keras.layers.Layer):
    def call(self, x):
        echoed = tf.py_function(lambda t: t, [x], x.dtype)
        echoed.set_shape(x.shape)
        return echoed


def build():
    x = keras.Input((3,), name="x")
    return keras.Model(x, keras.layers.Dense(1)(Echo()(x)))
'''


def test_the_build_refuses_a_graph_its_verify_would_refuse(tmp_path: Path) -> None:
    import re

    from bundler import BuildError, build_bundle

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "callback_layers.py").write_text(CALLBACK_COMPONENT)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "apiVersion: bundler/v1\nname: echo\nversion: 1.0.0\n"
        "model: {factory: 'callback_layers:build'}\n"
        "components: [{module: callback_layers, version: '1.0.0'}]\npaths: [src]\n"
    )
    out = tmp_path / "out"
    with pytest.raises(BuildError) as refused:
        build_bundle(manifest, out)
    assert re.fullmatch(
        re.escape(
            f"{manifest}: model.factory: the exported SavedModel would fail 'bundle verify' "
            "under every policy: function '"
        )
        + r"__inference_[^']+', node '[^']+': op 'EagerPyFunc' calls back into Python"
        + re.escape(
            "; bundler serves only graphs it can judge (docs/graph-safety.md lists the ops it "
            "allows, and how to ask for another): leave the layer that adds the op out of the model"
        ),
        str(refused.value).splitlines()[0],
    )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.yaml", "src"]  # no leftovers


def test_verify_reads_saved_model_pb_once_for_hashing_and_scanning(
    built: dict[str, Bundle],
) -> None:
    """The worker that hashes saved_model.pb hands its bytes to the scan: one open, not two."""
    root = built["custom_layer"].path
    code = (
        "import sys, bundler\n"
        "opened = []\n"
        "sys.addaudithook(lambda event, args: event == 'open' and opened.append(str(args[0])))\n"
        f"report = bundler.verify_bundle({str(root)!r})\n"
        "print(report.ok, sum(path.endswith('saved_model.pb') for path in opened))\n"
    )
    assert run_python(code, env=service_env()).stdout.split() == ["True", "1"]
