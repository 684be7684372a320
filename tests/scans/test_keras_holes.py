"""Safety that does not depend on the Keras release: every known Keras load hole, refused by us.

Each hole was closed by some Keras release (a TFSMLayer loading a SavedModel from anywhere, a
vocabulary read from any path, HDF5 weights kept in other files, non-modeling functions such as
``keras.utils.get_file`` or Python's ``eval`` named in a config, a zip bomb). Each test first takes
Keras's own check out (monkeypatched, as an older release without it would be), shows that
the hole is then open in Keras, and that loading the re-sealed bundle is still refused, by our
own check, with our own message.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler import Bundle, UnsafeBundleError, load_bundle, verify_bundle
from bundler.scans.keras_archive import INFLATION_FLOOR, INFLATION_RATIO

from ..conftest import ROOT, CopyBundle, run_python
from ..hostile import edit_keras_config, find_objects, replace_keras_member, reseal


@pytest.fixture()
def plain(copy_bundle: CopyBundle) -> Path:
    """A bundle with no components: it loads through Keras in this process."""
    return copy_bundle("sequential")


def _first_dense(config: dict[str, Any]) -> dict[str, Any]:
    return find_objects(config, class_name="Dense")[0]


def _refusal(root: Path) -> str:
    with pytest.raises(UnsafeBundleError) as caught:
        load_bundle(root)
    return str(caught.value)


def test_pyproject_requires_a_keras_with_the_known_fixes() -> None:
    # CVE-2025-1550 (3.9.0), CVE-2025-8747 and -9906 (3.11.0), CVE-2025-9905 (3.11.3),
    # CVE-2026-1462 (3.13.2)
    assert '\n    "keras>=3.13.2",\n' in (ROOT / "pyproject.toml").read_text()


# -- TFSMLayer -------------------------------------------------------------------------------------


def test_tfsm_layer_is_refused_where_keras_would_load_it(
    plain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    outside = plain.parent / "outside_saved_model"
    outside.symlink_to(plain / "saved_model")
    layer_class = keras.layers.TFSMLayer
    with pytest.raises(ValueError, match="TFSMLayer"):  # Keras 3.13.2+ refuses on its own
        layer_class.from_config({"filepath": str(outside), "call_endpoint": "serve"})
    # an older Keras: from_config builds the layer, which loads the SavedModel at once
    monkeypatch.setattr(
        layer_class, "from_config", classmethod(lambda cls, config, **_: cls(**config))
    )
    assert layer_class.from_config({"filepath": str(outside), "call_endpoint": "serve"})

    def plant(config: dict[str, Any]) -> None:
        dense = _first_dense(config)
        dense.update(class_name="TFSMLayer", module="keras.layers")
        dense["config"] = {"name": "tfsm", "filepath": str(outside), "call_endpoint": "serve"}

    edit_keras_config(plain, plant)
    assert _refusal(plain) == (
        f"{plain / 'model.keras'}: the model config contains a TFSMLayer (TFSMLayer loads and "
        "runs a TensorFlow SavedModel from a path outside the bundle); a bundle must carry "
        "everything its model loads; refusing to load it"
    )


def test_a_torch_module_wrapper_is_refused_by_name_under_any_module() -> None:
    from bundler.scans.config import check_config_modules

    for module, registered in (("keras.layers", None), ("acme", "TorchModuleWrapper")):
        config = {"module": module, "class_name": "Wrapped", "registered_name": registered,
                  "config": {"module": "gASV..."}}  # fmt: skip
        if registered is None:
            config["class_name"] = "TorchModuleWrapper"
        with pytest.raises(UnsafeBundleError, match="unpickles a torch module"):
            check_config_modules({"layers": [config]}, ["acme"], "model.keras")


# -- file paths in layer configs -------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["StringLookup", "IntegerLookup", "TextVectorization"])
def test_a_vocabulary_read_from_a_path_is_refused(
    plain: Path, layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras
    from keras.src.saving import serialization_lib

    with serialization_lib.SafeModeScope(True), pytest.raises(ValueError, match="outside"):
        keras.layers.StringLookup(vocabulary="/etc/passwd")  # Keras 3.x's own check
    # an older Keras, whose check never sees safe mode on (no SafeModeScope here: it would save
    # the patched False and leave it as Keras's global state, safe mode off for the session)
    monkeypatch.setattr(serialization_lib, "in_safe_mode", lambda: False)
    read = keras.layers.StringLookup(vocabulary="/etc/passwd").get_vocabulary()
    assert any(line.startswith("root:") for line in read)

    def plant(config: dict[str, Any]) -> None:
        dense = _first_dense(config)
        dense.update(class_name=layer, module="keras.layers")
        dense["config"] = {"name": "lookup", "vocabulary": "/etc/passwd"}

    edit_keras_config(plain, plant)
    assert _refusal(plain) == (
        f"{plain / 'model.keras'}: the model config's {layer!r} names a vocabulary file by path "
        "in 'vocabulary' ('/etc/passwd'), which Keras would open outside the bundle; refusing "
        "to load it"
    )


# -- functions that are not modeling functions -----------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name", "message"),
    [
        pytest.param(
            "keras.utils",
            "get_file",
            "names keras.utils.get_file, which is not a modeling function",
            id="get_file",
        ),
        pytest.param(
            "keras.config",
            "enable_unsafe_deserialization",
            "names keras.config.enable_unsafe_deserialization, which is not a modeling function",
            id="enable_unsafe_deserialization",
        ),
        pytest.param(
            "keras.models",
            "load_model",
            "names keras.models.load_model, which is not a modeling function",
            id="load_model",
        ),
        pytest.param(
            "keras.src.saving.saving_api",
            "load_model",
            "names keras.src.saving.saving_api.load_model, which is not a modeling function",
            id="src-path",
        ),
        pytest.param("builtins", "eval", "names Python's built-in 'eval' as a function", id="eval"),
        pytest.param("builtins", "open", "names Python's built-in 'open' as a function", id="open"),
    ],
)
def test_a_non_modeling_function_is_refused(
    plain: Path, module: str, name: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keras.src.saving import serialization_lib

    monkeypatch.setattr(serialization_lib, "NON_MODELING_APIS", frozenset())  # an older Keras

    def plant(config: dict[str, Any]) -> None:
        _first_dense(config)["config"]["activation"] = {
            "module": module,
            "class_name": "function",
            "config": name,
            "registered_name": "function",
        }

    edit_keras_config(plain, plant)
    refusal = _refusal(plain)
    assert refusal.startswith(f"{plain / 'model.keras'}: the model config {message}")
    assert refusal.endswith("refusing to load it")


def test_keras_modeling_objects_pass_the_scan(built: dict[str, Bundle], tmp_path: Path) -> None:
    """No false refusals: the example bundles, and a model saved by Keras with many kinds of
    layers, a learning-rate schedule, losses and metrics."""
    import keras
    from keras import layers

    from bundler.scans.config import check_config_modules, read_config

    tokens = keras.Input((6,), dtype="int32")
    x = layers.Embedding(20, 8)(tokens)
    x = layers.MultiHeadAttention(2, 4)(x, x)
    x = layers.LSTM(4, return_sequences=True)(layers.Conv1D(4, 2, activation="gelu")(x))
    x = layers.Dropout(0.1)(layers.GlobalAveragePooling1D()(x))
    words = keras.Input((1,), dtype="string")
    looked_up = layers.StringLookup(vocabulary=["a", "b"], output_mode="one_hot")(words)
    out = layers.Dense(2, activation="softmax", kernel_regularizer="l2")(
        layers.Concatenate()([x, looked_up])
    )
    model = keras.Model([tokens, words], out)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.9)
    model.compile(
        keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy", keras.metrics.AUC()],
    )
    model.save(tmp_path / "many.keras")
    paths = [tmp_path / "many.keras", *(b.path / "model.keras" for b in built.values())]
    components = [[], *([c.module for c in b.lock.components] for b in built.values())]
    for path, modules in zip(paths, components, strict=True):
        with zipfile.ZipFile(path) as archive:
            check_config_modules(read_config(archive, str(path)), modules, str(path))


# -- HDF5 weights that reach outside ---------------------------------------------------------------

BIAS = "layers/dense/vars/1"  # float32 (32,) in the sequential example: 128 bytes


def _edit_weights(root: Path, change: Callable[[Any], None]) -> None:
    import h5py

    with zipfile.ZipFile(root / "model.keras") as archive:
        buffer = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(buffer, "r+") as weights:
        change(weights)
    replace_keras_member(root, "model.weights.h5", buffer.getvalue())


def _without_kerass_h5_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """As Keras before 3.13.2: datasets and groups fetched without looking at what they are."""
    from keras.src.saving import saving_lib

    monkeypatch.setattr(saving_lib, "safe_get_h5_dataset", lambda group, name: group[name])
    monkeypatch.setattr(saving_lib, "safe_get_h5_group", lambda parent, name: parent[name])


def test_external_storage_in_the_weights_is_refused(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(32, dtype="<f4").tobytes())

    def external(weights: Any) -> None:
        del weights[BIAS]
        weights.create_dataset(BIAS, shape=(32,), dtype="<f4", external=[(str(secret), 0, 128)])

    _edit_weights(plain, external)
    _without_kerass_h5_checks(monkeypatch)
    expected = (
        f"{plain / 'model.keras'}: model.weights.h5: '/{BIAS}' keeps its data in another file "
        f"({str(secret)!r}); refusing to load it"
    )
    assert _refusal(plain) == expected
    report = verify_bundle(plain)
    assert [(p.path, p.kind, str(p)) for p in report.problems] == [
        ("model.keras", "unsafe", expected.replace(str(plain / "model.keras"), "model.keras"))
    ]
    # what the check stands between: with it out too, Keras reads the outside file as a weight
    monkeypatch.setattr("bundler.load.keras.check_archive", lambda *args: None)
    loaded = load_bundle(plain)
    bias = loaded.model.get_layer(index=0).bias.numpy()
    np.testing.assert_array_equal(bias, np.arange(32, dtype="<f4"))


def _outside(tmp_path: Path) -> Path:
    """An HDF5 file beside the bundle, for the weights to reach out to."""
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as source:
        source["data"] = np.arange(32, dtype="<f4")
    return other


def _plant(kind: str, other: Path) -> Callable[[Any], None]:
    """An edit of the weights that makes the bias reach ``other`` (or declare too much)."""
    import h5py

    def plant(weights: Any) -> None:
        del weights[BIAS]
        if kind == "external-link":
            weights[BIAS] = h5py.ExternalLink(str(other), "/data")
        elif kind == "soft-link":
            weights[BIAS] = h5py.SoftLink("/layers/dense_1/vars/1")
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=(32,), dtype="<f4")
            layout[:] = h5py.VirtualSource(str(other), "data", shape=(32,))
            weights.create_virtual_dataset(BIAS, layout)
        elif kind == "external-storage":
            weights.create_dataset(BIAS, shape=(32,), dtype="<f4", external=[(str(other), 0, 128)])
        else:
            weights.create_dataset(BIAS, shape=(1 << 40,), dtype="<f4", chunks=(1 << 16,))

    return plant


@pytest.mark.parametrize("kind", ["external-link", "soft-link", "virtual"])
def test_links_and_virtual_datasets_in_the_weights_are_refused(
    plain: Path, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _outside(tmp_path)
    _edit_weights(plain, _plant(kind, other))
    _without_kerass_h5_checks(monkeypatch)
    why = {
        "external-link": f"is an external link to {str(other)!r}",
        "soft-link": "is a soft link to '/layers/dense_1/vars/1'",
        "virtual": "is a virtual dataset, mapped from other files",
    }[kind]
    assert _refusal(plain) == (
        f"{plain / 'model.keras'}: model.weights.h5: '/{BIAS}' {why}; refusing to load it"
    )


@pytest.mark.parametrize(
    "kind", ["external-link", "soft-link", "virtual", "external-storage", "shape-bomb"]
)
def test_the_weights_are_judged_alike_read_in_place_or_through_the_archive(
    plain: Path, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model.keras laid out for reading in place has its weights opened by HDF5 as the file
    itself (/proc/self/fd/N on Linux), any other through a stream of the member: each refusal
    is the same both ways."""
    import h5py

    from bundler.files.keras_layout import align_weights, weights_offset

    _edit_weights(plain, _plant(kind, _outside(tmp_path)))  # rewritten as zipfile writes it
    keras_file = plain / "model.keras"
    assert weights_offset(keras_file) is None
    through_the_archive = [str(p) for p in verify_bundle(plain).problems]
    assert len(through_the_archive) == 1 and "refusing to load it" in through_the_archive[0]

    align_weights(keras_file)
    reseal(plain)
    assert weights_offset(keras_file) is not None
    opened: list[bytes] = []
    real_open = h5py.h5f.open

    def spy(name: bytes, *args: Any, **kwargs: Any) -> Any:
        opened.append(name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(h5py.h5f, "open", spy)
    assert [str(p) for p in verify_bundle(plain).problems] == through_the_archive
    if Path("/proc/self/fd").is_dir():
        assert [name.startswith(b"/proc/self/fd/") for name in opened] == [True]


def test_weights_nested_past_the_depth_bound_are_refused(plain: Path) -> None:
    """Groups nested deeper than the bound are refused before any of them is opened."""
    deep = "/".join(["g"] * 70)
    _edit_weights(plain, lambda weights: weights.create_group(deep))
    expected = f"'/{'/'.join(['g'] * 65)}' is nested deeper than 64 groups; refusing to load it"
    assert _refusal(plain).endswith(f"model.weights.h5: {expected}")
    assert [p.kind for p in verify_bundle(plain).problems] == ["unsafe"]


def test_weights_past_the_object_bound_are_refused(
    plain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The links are counted as they are visited; the visit stops at the bound (lowered here:
    the file holds fewer than 100,000 objects, and building one that does takes a while)."""
    import h5py

    with zipfile.ZipFile(plain / "model.keras") as archive:
        member = io.BytesIO(archive.read("model.weights.h5"))
    links: list[str] = []
    with h5py.File(member, "r") as weights:
        weights.visit(links.append)
    monkeypatch.setattr("bundler.scans.keras_archive.H5_MAX_OBJECTS", len(links) - 1)
    assert f"is past the first {len(links) - 1} objects; refusing" in _refusal(plain)
    monkeypatch.setattr("bundler.scans.keras_archive.H5_MAX_OBJECTS", len(links))
    assert load_bundle(plain).mode == "keras"


def test_a_shape_bomb_in_the_weights_is_refused(plain: Path, tmp_path: Path) -> None:
    _edit_weights(plain, _plant("shape-bomb", tmp_path))
    assert "(a shape bomb); refusing to load it" in _refusal(plain)


# -- zip bombs -------------------------------------------------------------------------------------

BOMB = """
import resource, sys, warnings
import bundler, keras  # noqa: F401 - the baseline includes TensorFlow and Keras
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    bundler.load_bundle(sys.argv[1])
    print("LOADED")
except bundler.BundleError as error:
    print(type(error).__name__, str(error).splitlines()[0])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)
"""


def _zip_bomb(root: Path, inflated: int) -> None:
    """model.keras with its weights member replaced by ``inflated`` bytes of zeros, deflated.

    Written by hand, in a second rather than the seconds zlib takes to deflate a GiB: after a
    full flush a deflate stream starts afresh, so every MiB of zeros deflates to the same block.
    """
    path = root / "model.keras"
    with zipfile.ZipFile(path) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    chunk = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated >> 20):
        crc = zlib.crc32(chunk, crc)
    entries = [
        (name, 0, zlib.crc32(data), data, len(data))
        for name, data in members.items()
        if name != "model.weights.h5"
    ]
    bomb = block * (inflated >> 20) + deflate.flush()
    entries.append(("model.weights.h5", zipfile.ZIP_DEFLATED, crc, bomb, inflated))
    local, central = b"", b""
    for name, method, checksum, data, size in entries:
        fields = (method, 0, 0x21, checksum, len(data), size, len(name))
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 0, 20, 0, 0, *fields,
                               0, 0, 0, 0, 0, len(local)) + name.encode()  # fmt: skip
        local += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, *fields, 0)
        local += name.encode() + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                      len(central), len(local), 0)  # fmt: skip
    path.write_bytes(local + central + end)
    reseal(root)


@pytest.mark.slow
def test_a_zip_bomb_is_refused_before_it_is_read(plain: Path) -> None:
    _zip_bomb(plain, 1 << 30)
    size = (plain / "model.keras").stat().st_size
    assert size < 2 << 20  # about 1 MB on disk, 1 GiB inflated
    bound = INFLATION_FLOOR + INFLATION_RATIO * size
    result = run_python(BOMB.replace("sys.argv[1]", repr(str(plain))))
    refusal, grown = result.stdout.splitlines()
    assert refusal == (
        f"UnsafeBundleError {plain / 'model.keras'}: model.keras member 'model.weights.h5' "
        f"inflates to {1 << 30} bytes, beyond {bound} bytes ({INFLATION_RATIO} times the "
        f"archive's {size} bytes plus {INFLATION_FLOOR >> 20} MiB) for all members together; "
        "refusing to read it"
    ), result.stderr
    assert int(grown) < 64, f"peak RSS grew by {grown} MiB while refusing"
    assert [p.kind for p in verify_bundle(plain).problems] == ["unsafe"]


def test_a_member_longer_than_declared_is_cut_at_its_declared_size(tmp_path: Path) -> None:
    """The declared size can lie; CPython's reader never returns more than it declares."""
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("model.weights.h5", bytes(1 << 20))
    data = bytearray(path.read_bytes())
    # patch the declared size (central directory) down to 1 KiB; the data stays 1 MiB
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1024).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    read = b""
    with (
        zipfile.ZipFile(path) as archive,
        archive.open("model.weights.h5") as stream,
        pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"),
    ):
        while chunk := stream.read(100):
            read += chunk
    assert len(read) <= 1024


def test_the_archive_check_needs_no_tensorflow(plain: Path) -> None:
    code = (
        "import sys, bundler\n"
        f"print(bundler.verify_bundle({str(plain)!r}).ok)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules, 'h5py' in sys.modules)\n"
    )
    assert run_python(code).stdout.splitlines() == ["True", "False False True"]


def test_a_deflated_model_keras_is_checked_and_loads(plain: Path) -> None:
    """Keras stores its members; a deflated archive is read through ZipExtFile, still checked."""
    path = plain / "model.keras"
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in members.items():
            out.writestr(name, data)
    reseal(plain)
    assert verify_bundle(plain).ok
    assert load_bundle(plain).mode == "keras"
    _edit_weights(plain, lambda weights: weights.__setitem__("x", _soft_link_to_layers()))
    assert "is a soft link to '/layers'" in _refusal(plain)


def _soft_link_to_layers() -> Any:
    import h5py

    return h5py.SoftLink("/layers")


def test_a_hard_link_inside_the_weights_is_no_problem(plain: Path) -> None:
    _edit_weights(plain, lambda weights: weights.__setitem__("again", weights["/layers"]))
    report = verify_bundle(plain)
    assert report.ok, [str(p) for p in report.problems]


@settings(
    max_examples=int(os.environ.get("BUNDLER_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzzed_model_keras_gives_a_verdict_never_an_exception(
    built: dict[str, Bundle], tmp_path: Path, data: st.DataObject
) -> None:
    """A real model.keras (stored or deflated) with bytes changed and cut: the archive check
    refuses, passes or says it cannot read it; never another exception."""
    from bundler.errors import LoadError
    from bundler.lock.model import FileEntry
    from bundler.scans.keras_archive import archive_problems, check_archive

    original = (built["sequential"].path / "model.keras").read_bytes()
    if data.draw(st.booleans()):
        with zipfile.ZipFile(io.BytesIO(original)) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
            for name, member in members.items():
                out.writestr(name, member)
        original = buffer.getvalue()
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "model.keras"
    path.write_bytes(bytes(damaged[: data.draw(st.integers(1, len(damaged)))]))
    files = {"model.keras": FileEntry(size=path.stat().st_size, sha256="0" * 64)}
    assert all(p.kind == "unsafe" for p in archive_problems(tmp_path, "model.keras", files, []))
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(archive, files["model.keras"].size, str(path))
    except zipfile.BadZipFile:
        pass  # the loader's own open says so, before the check runs
    except (UnsafeBundleError, LoadError):
        pass
