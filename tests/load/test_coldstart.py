"""Cold start: model.keras laid out for reading the weights in place, the Keras seam and its
fallback, and a verified load that hashes the weights while the model is built."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import Bundle, load_bundle
from bundler.errors import IntegrityError
from bundler.files.keras_layout import ALIGNMENT, align_weights, weights_offset
from bundler.files.window import ShardMismatch, VerifiedFile
from bundler.load.golden import named_outputs, read_arrays

from ..conftest import EXAMPLE_NAMES, EXAMPLES, ROOT, CopyBundle
from ..files.test_sharding import _entry, _flip
from ..hostile import edit_lock, reseal

MiB = 1 << 20


def _example_feed(loaded: Any) -> Any:
    example = loaded.lock.examples[0]
    inputs = read_arrays(loaded.path, example.inputs)
    return inputs if len(inputs) > 1 else next(iter(inputs.values()))


def _bare_outputs(path: Path, feed: Any, model: Any = None) -> dict[str, Any]:
    import keras

    if model is None:
        model = keras.models.load_model(path)  # the plain Keras loader, on our model.keras
    return named_outputs(keras.tree.map_structure(np.asarray, model(feed, training=False)))


def _assert_same_variables(ours: Any, bare: Any) -> None:
    """Every variable of the two models, the optimizer's too, equal bit for bit: none was left
    holding the uninitialised memory it was created with."""
    pairs = list(zip(ours.variables, bare.variables, strict=True))
    if getattr(bare, "optimizer", None) is not None:
        pairs += zip(ours.optimizer.variables, bare.optimizer.variables, strict=True)
    for mine, theirs in pairs:  # paths differ by Keras's naming counters, the order does not
        assert mine.shape == theirs.shape
        if mine.path.endswith("seed_generator_state"):  # unseeded: Keras draws one per load too
            assert np.asarray(mine)[1] == 0  # [seed, 0], as its initialiser makes it
            continue
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=mine.path)


@pytest.fixture()
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What h5py.File is given to open, in order."""
    import h5py

    seen: list[Any] = []
    original = h5py.File

    def spy(name: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(name)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", spy)
    return seen


# bare Keras warns on every load of a compiled, untrained model (tcn_forecaster) that it skipped
# the unbuilt optimizer's two variables; bundler's loader does not (test_build_load)
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_example_reads_its_weights_in_place_and_matches_bare_keras(
    built: dict[str, Bundle], name: str, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES / name / "src"))
    keras_file = built[name].path / "model.keras"
    assert weights_offset(keras_file) == ALIGNMENT
    with zipfile.ZipFile(keras_file) as archive:
        assert archive.infolist()[0].filename == "model.weights.h5"
        assert archive.testzip() is None
    before = (keras_file.stat().st_mtime_ns, keras_file.read_bytes())
    loaded = load_bundle(built[name].path, verify=False)
    assert (keras_file.stat().st_mtime_ns, keras_file.read_bytes()) == before, "read-only"
    # HDF5 was handed model.keras itself: no copy in memory, no temporary file
    assert opened[-1] == keras_file and not any(isinstance(o, io.BytesIO) for o in opened)
    feed = _example_feed(loaded)
    ours = named_outputs(loaded.predict(feed))
    import keras

    bare_model = keras.models.load_model(keras_file)
    _assert_same_variables(loaded.model, bare_model)
    bare = _bare_outputs(keras_file, feed, bare_model)
    assert ours.keys() == bare.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], bare[key])


def _write_h5(path: Path, data: np.ndarray) -> None:
    import h5py

    with h5py.File(path, "w") as weights:
        weights.create_dataset("layers/dense/vars/0", data=data)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_align_puts_the_weights_first_at_4096_and_h5py_reads_the_zip(
    tmp_path: Path, compression: int
) -> None:
    import h5py

    data = np.arange(50_000, dtype="float32")
    _write_h5(tmp_path / "w.h5", data)
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w", compression) as archive:  # Keras's order: weights last
        archive.writestr("metadata.json", '{"keras_version": "3"}')
        archive.writestr("config.json", '{"class_name": "X"}')
        archive.write(tmp_path / "w.h5", "model.weights.h5")
    assert weights_offset(path) is None
    align_weights(path)
    offset = weights_offset(path)
    assert offset == ALIGNMENT
    before = path.read_bytes()
    align_weights(path)  # already laid out: left alone
    assert path.read_bytes() == before
    with zipfile.ZipFile(path) as archive:
        assert [i.filename for i in archive.infolist()] == [
            "model.weights.h5",
            "metadata.json",
            "config.json",
        ]
        assert archive.testzip() is None  # every CRC holds
        assert archive.read("model.weights.h5") == (tmp_path / "w.h5").read_bytes()
        assert archive.read("config.json") == b'{"class_name": "X"}'
    with h5py.File(path, "r") as weights:
        assert weights.userblock_size == ALIGNMENT
        np.testing.assert_array_equal(weights["layers/dense/vars/0"][()], data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "w.h5"], "nothing beside"


def test_a_zip64_weights_member_keeps_its_data_at_4096_for_keras_and_h5py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights over 4 GiB take zip64 records: lowering zipfile's bound makes a small model take
    the same path (the 1B benchmark is the only other thing that reaches it)."""
    import keras

    from bundler.frameworks import keras_seam

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    path = tmp_path / "model.keras"
    model.save(path)
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 256)  # every member is "too large" now
    align_weights(path)
    monkeypatch.undo()
    data = path.read_bytes()
    name_length, extra_length = int.from_bytes(data[26:28], "little"), data[28:30]
    extra = data[30 + name_length : 30 + name_length + int.from_bytes(extra_length, "little")]
    assert extra[:2] == (1).to_bytes(2, "little"), "the local header leads with a zip64 record"
    assert data[18:26] == b"\xff" * 8, "sizes deferred to the zip64 record"
    assert weights_offset(path) == ALIGNMENT
    with zipfile.ZipFile(path) as archive:
        assert archive.infolist()[0].filename == "model.weights.h5"
        assert archive.testzip() is None
        config = archive.read("config.json").decode()
    x = np.random.default_rng(0).random((3, 6), dtype="float32")
    expected = model(x, training=False).numpy()
    np.testing.assert_array_equal(keras.models.load_model(path)(x).numpy(), expected)
    with keras_seam.variables_from_weights():
        ours = keras_seam.load_in_place(config, path, custom_objects={}, safe_mode=True)
    np.testing.assert_array_equal(ours(x).numpy(), expected)


def test_layouts_that_are_not_ours_are_not_read_in_place(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    _write_h5(tmp_path / "w.h5", np.zeros(10, "float32"))
    with zipfile.ZipFile(path, "w") as archive:  # weights first, stored, but not aligned
        archive.write(tmp_path / "w.h5", "model.weights.h5")
        archive.writestr("config.json", "{}")
    assert weights_offset(path) is None
    (tmp_path / "junk.keras").write_bytes(b"PK\x03\x04" + bytes(100))
    assert weights_offset(tmp_path / "junk.keras") is None
    align_weights(path)
    assert weights_offset(path) == ALIGNMENT
    # an HDF5 signature planted at 2048 (inside the padding) would be taken for the superblock
    data = bytearray(path.read_bytes())
    data[2048:2056] = b"\x89HDF\r\n\x1a\n"
    path.write_bytes(bytes(data))
    assert weights_offset(path) is None


def test_an_old_unaligned_bundle_loads_through_keras(
    copy_bundle: CopyBundle, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES / "custom_layer" / "src"))
    root = copy_bundle("custom_layer")
    path = root / "model.keras"
    with zipfile.ZipFile(path) as archive:  # as bundler wrote it before: Keras's own layout
        members = [(i.filename, archive.read(i)) for i in archive.infolist()]
    with zipfile.ZipFile(path, "w") as out:
        for filename, data in reversed(members):
            out.writestr(filename, data)
    reseal(root)
    assert weights_offset(path) is None
    with caplog.at_level(logging.DEBUG, logger="bundler"):
        loaded = load_bundle(root)
    assert "not laid out for reading in place" in caplog.text
    feed = _example_feed(loaded)
    np.testing.assert_array_equal(
        named_outputs(loaded.predict(feed))["output_0"], _bare_outputs(path, feed)["output_0"]
    )


@pytest.mark.parametrize("change", ["missing", "reshaped"])
def test_without_the_keras_seam_the_load_falls_back_to_keras(
    built: dict[str, Bundle],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    opened: list[Any],
    change: str,
) -> None:
    from keras.src.saving import saving_lib

    monkeypatch.syspath_prepend(str(EXAMPLES / "custom_layer" / "src"))
    if change == "missing":  # called by Keras only when a load fails: its own path still works
        monkeypatch.delattr(saving_lib, "_raise_loading_failure")
        why = "saving_lib._raise_loading_failure is missing"
    else:
        original = saving_lib._model_from_config
        monkeypatch.setattr(
            saving_lib, "_model_from_config", lambda config, objects, compile, safe: original(
                config, objects, compile, safe
            )
        )  # fmt: skip
        why = "saving_lib._model_from_config takes ('config', 'objects', 'compile', 'safe')"
    bundle = built["custom_layer"]
    with caplog.at_level(logging.DEBUG, logger="bundler"):
        loaded = load_bundle(bundle.path)
    assert f"the Keras seam is unavailable: {why}" in caplog.text
    assert bundle.path / "model.keras" not in opened  # Keras read a copy, as it does
    feed = _example_feed(loaded)
    np.testing.assert_array_equal(
        named_outputs(loaded.predict(feed))["output_0"],
        _bare_outputs(bundle.path / "model.keras", feed)["output_0"],
    )


# -- a verified load overlaps hashing the weights with building the model ------------------------


def test_a_verified_file_checks_each_shard_before_its_bytes_are_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(3 * MiB + 10)
    path.write_bytes(data)
    entry = _entry(path, MiB)
    with VerifiedFile(path, entry["size"], MiB, entry["shards"]["sha256"]) as stream:
        stream.seek(MiB + 5)
        assert stream.read(10) == data[MiB + 5 : MiB + 15]
        assert stream.unchecked() == [0, 2, 3], "only the shard read was hashed"
        _flip(path, 2 * MiB + 1)
        stream.seek(2 * MiB - 1)
        with pytest.raises(
            ShardMismatch, match=rf"^content changed in shard 2 \(from byte {2 * MiB}\)"
        ):
            stream.read(2)  # the bytes of shard 1 it would return too are withheld
        with pytest.raises(ShardMismatch):
            stream.check_rest()
    _flip(path, 2 * MiB + 1)
    with VerifiedFile(path, entry["size"], MiB, entry["shards"]["sha256"]) as stream:
        stream.check_rest()
        assert stream.unchecked() == [] and stream.read() == data


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A bundle whose model.keras (~3 MB) carries 1 MiB shards, as a large one carries 128 MiB."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.workspace import write_workspace
    from bundler import build_bundle

    folder = tmp_path_factory.mktemp("sharded")
    manifest = write_workspace(folder, 800_000)
    sys.path.insert(0, str(folder / "src"))
    try:
        root = build_bundle(manifest, folder / "bundle", rehearse=False).path
        big = {
            name: _entry(root / name, MiB)
            for name, entry in json.loads((root / "bundle.lock.json").read_text())["files"].items()
            if entry["size"] > 2 * MiB
        }
        assert len(big["model.keras"]["shards"]["sha256"]) >= 3 and len(big) == 2, sorted(big)
        edit_lock(root, lambda lock: lock["files"].update(big))
        yield root
    finally:
        sys.path.remove(str(folder / "src"))
        sys.path.remove(str(ROOT))


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often Keras's build and weight-reading steps run (wrapped, signatures kept)."""
    from keras.src.saving import saving_lib

    counts = {"_model_from_config": 0, "_load_state": 0}
    for name in counts:
        original = getattr(saving_lib, name)

        def spy(*args: Any, __name: str = name, __original: Any = original, **kwargs: Any) -> Any:
            counts[__name] += 1
            return __original(*args, **kwargs)

        monkeypatch.setattr(saving_lib, name, functools.wraps(original)(spy))
    return counts


def test_a_verified_sharded_load_builds_while_hashing_and_matches_bare_keras(
    sharded: Path, calls: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="bundler"):
        loaded = load_bundle(sharded, verify=True)
    assert "reading the weights in place" in caplog.text
    assert calls["_model_from_config"] == 1 and calls["_load_state"] > 0  # recursive
    x = np.random.default_rng(0).random((3, loaded.model.inputs[0].shape[1]), dtype="float32")
    np.testing.assert_array_equal(
        loaded.predict(x), _bare_outputs(sharded / "model.keras", x)["output_0"]
    )


def _tampered(sharded: Path, tmp_path: Path, offset: int) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(sharded, root)
    _flip(root / "model.keras", offset)
    return root


def test_a_tampered_weights_shard_stops_the_load_before_the_weights(
    sharded: Path, tmp_path: Path, calls: dict[str, int]
) -> None:
    root = _tampered(sharded, tmp_path, MiB + 100)  # shard 1: weights only
    with pytest.raises(IntegrityError) as caught:
        load_bundle(root, verify=True)
    assert len(caught.value.details) == 1
    assert caught.value.details[0].startswith("model.keras: content changed in shard 1 ")
    # the model was built meanwhile, but its weights were never read, and nothing was returned
    assert calls == {"_model_from_config": 1, "_load_state": 0}


def test_a_tampered_config_shard_stops_the_load_before_the_model_is_built(
    sharded: Path, tmp_path: Path, calls: dict[str, int]
) -> None:
    size = (sharded / "model.keras").stat().st_size
    with zipfile.ZipFile(sharded / "model.keras") as archive:
        config = archive.getinfo("config.json")
    root = _tampered(sharded, tmp_path, config.header_offset + 40)
    assert config.header_offset // MiB == (size - 1) // MiB, "config.json lies in the last shard"
    with pytest.raises(IntegrityError, match="refusing to load it") as caught:
        load_bundle(root, verify=True)
    last = (size - 1) // MiB
    assert caught.value.details[0].startswith(f"model.keras: content changed in shard {last} ")
    assert calls == {"_model_from_config": 0, "_load_state": 0}


def test_a_tampered_large_file_the_keras_path_never_reads_still_stops_the_load(
    sharded: Path, tmp_path: Path
) -> None:
    lock = json.loads((sharded / "bundle.lock.json").read_text())
    (variables,) = [name for name in lock["files"] if "variables.data" in name]
    root = tmp_path / "bundle"
    shutil.copytree(sharded, root)
    _flip(root / variables, MiB + 5)
    with pytest.raises(IntegrityError) as caught:
        load_bundle(root, verify=True)
    assert caught.value.details == [
        f"{variables}: content changed in shard 1 (from byte {MiB}): "
        + caught.value.details[0].split("): ", 1)[1]
    ]


def test_the_fallback_policy_serves_no_graph_from_a_tampered_bundle(
    sharded: Path, tmp_path: Path
) -> None:
    root = _tampered(sharded, tmp_path, MiB + 100)
    lock = json.loads((root / "bundle.lock.json").read_text())
    assert lock["files"]["model.keras"]["shards"]["size"] == MiB
    with pytest.raises(IntegrityError):
        load_bundle(root, verify=True, policy="fallback")


@pytest.mark.slow
def test_weights_over_512_mb_read_in_place_match_bare_keras(tmp_path: Path) -> None:
    import keras

    from benchmarks.models import build
    from bundler.frameworks import keras_seam

    if shutil.disk_usage(tmp_path).free < 4 << 30:
        pytest.skip("needs 4 GB of free disk")
    model = build(140_000_000)  # 560 MB of float32
    path = tmp_path / "model.keras"
    model.save(path)
    del model
    align_weights(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("model.weights.h5").file_size > 512 * MiB
        config = archive.read("config.json").decode()
    assert keras_seam.unavailable() is None and keras_seam.variables_unavailable() is None
    with keras_seam.variables_from_weights():
        ours = keras_seam.load_in_place(config, path, custom_objects={}, safe_mode=True)
    x = np.random.default_rng(0).random((2, ours.inputs[0].shape[1]), dtype="float32")
    expected = ours(x, training=False).numpy()
    bare = keras.models.load_model(path)
    _assert_same_variables(ours, bare)
    del ours
    np.testing.assert_array_equal(bare(x, training=False).numpy(), expected)
    os.remove(path)


# -- variables start uninitialised and take their values from the weights ------------------------


def _dense(units: int = 3, **options: Any) -> Any:
    import keras

    layer = keras.layers.Dense(units, **options)
    layer.build((None, 4))
    return layer


def test_variables_the_weights_do_not_set_take_their_initialisers() -> None:
    from bundler.frameworks import keras_seam

    assert keras_seam.variables_unavailable() is None  # else the fast path is never taken
    with keras_seam.variables_from_weights():
        layer = _dense(kernel_initializer="ones", bias_initializer="ones")
        layer.kernel.assign(np.full((4, 3), 7.0, "float32"))  # as the weights file would
    np.testing.assert_array_equal(layer.kernel.numpy(), np.full((4, 3), 7.0))
    np.testing.assert_array_equal(layer.bias.numpy(), np.ones(3))  # its initialiser, not garbage


def test_a_failed_block_and_its_end_give_keras_its_variables_back() -> None:
    from keras.src.backend.tensorflow.core import Variable

    from bundler.frameworks import keras_seam

    originals = (Variable._initialize_with_initializer, Variable._direct_assign)
    with (
        pytest.raises(RuntimeError, match="weights unreadable"),
        keras_seam.variables_from_weights(),
    ):
        assert Variable._initialize_with_initializer is not originals[0]
        raise RuntimeError("weights unreadable")
    assert (Variable._initialize_with_initializer, Variable._direct_assign) == originals
    np.testing.assert_array_equal(_dense(bias_initializer="ones").bias.numpy(), np.ones(3))


def test_other_threads_build_with_their_initialisers_during_a_load() -> None:
    import threading

    from bundler.frameworks import keras_seam

    seen: list[Any] = []
    with keras_seam.variables_from_weights():
        mine = _dense(bias_initializer="zeros")  # pending: uninitialised until the block ends
        worker = threading.Thread(target=lambda: seen.append(_dense(bias_initializer="ones")))
        worker.start()
        worker.join()
        # the other thread's variables were initialised at once, inside this thread's block
        np.testing.assert_array_equal(seen[0].bias.numpy(), np.ones(3))
    np.testing.assert_array_equal(mine.bias.numpy(), np.zeros(3))


def test_without_the_variable_seam_the_initialisers_run(
    built: dict[str, Bundle], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keras.src.backend.tensorflow.core import Variable

    original = Variable._direct_assign
    monkeypatch.setattr(Variable, "_direct_assign", lambda self, tensor: original(self, tensor))
    monkeypatch.syspath_prepend(str(EXAMPLES / "custom_layer" / "src"))
    bundle = built["custom_layer"]
    with caplog.at_level(logging.DEBUG, logger="bundler"):
        loaded = load_bundle(bundle.path, verify=False)
    why = "Variable._direct_assign takes ('self', 'tensor'), not ('self', 'value')"
    assert f"variables are initialised as Keras does: {why}" in caplog.text
    import keras

    _assert_same_variables(loaded.model, keras.models.load_model(bundle.path / "model.keras"))


def _zoo() -> Any:
    """Layers whose variables are not all kernels: batch statistics, a normalizer's adapted
    state, an embedding, recurrent weights, a float16 policy, an integer counter."""
    import keras

    keras.utils.set_random_seed(1)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    values = keras.Input((3,), name="values")
    embedded = keras.layers.Embedding(20, 4)(tokens)
    recurrent = keras.layers.LSTM(3)(embedded)
    normalizer = keras.layers.Normalization()
    normalizer.adapt(np.random.default_rng(1).normal(5.0, 2.0, (64, 3)).astype("float32"))
    scaled = keras.layers.BatchNormalization()(normalizer(values))
    half = keras.layers.Dense(2, dtype="mixed_float16")(scaled)
    joined = keras.layers.Concatenate()([recurrent, keras.layers.Activation("linear")(half)])
    model = keras.Model([tokens, values], keras.layers.Dense(1)(joined))
    model.compile(optimizer="adam", loss="mse")
    feed = [np.arange(10, dtype="int32").reshape(2, 5) % 20, np.ones((2, 3), "float32")]
    model.fit(feed, np.ones((2, 1), "float32"), epochs=1, verbose=0)  # moves every statistic
    return model, feed


@pytest.mark.parametrize("assets", [False, True], ids=["in place", "keras's own loader"])
def test_uninitialised_variables_match_bare_keras_for_a_zoo_of_layers(
    tmp_path: Path, assets: bool
) -> None:
    import keras

    from bundler.frameworks import keras_seam

    model, feed = _zoo()
    path = tmp_path / "model.keras"
    model.save(path)
    align_weights(path)
    bare = keras.models.load_model(path)
    with keras_seam.variables_from_weights():
        if assets:  # Keras's own path (a bundle with assets, adapters that migrate weights)
            with open(path, "rb") as stream:
                ours = keras_seam.load_archive(stream, custom_objects={}, safe_mode=True)
        else:
            with zipfile.ZipFile(path) as archive:
                config = archive.read("config.json").decode()
            ours = keras_seam.load_in_place(config, path, custom_objects={}, safe_mode=True)
    _assert_same_variables(ours, bare)
    np.testing.assert_array_equal(ours(feed).numpy(), bare(feed).numpy())
