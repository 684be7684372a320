"""Safe loading: a hostile model.keras whose lock was re-sealed to match is still refused.

The attacker here can write the whole bundle folder, so integrity verification passes (each test
asserts it does); what stops them is the loader: it imports nothing the lock does not name, lets
Keras resolve no registered object from another module, keeps safe_mode on, and never unpickles.
Every refusal is a BundleError subclass, with and without ``verify=False``.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import BundleError, UnsafeBundleError, load_bundle, verify_bundle
from bundler.errors import ExampleMismatchError, LoadError, UnsafeLoadWarning

from ..conftest import CopyBundle
from ..hostile import edit_keras_config, edit_lock, find_objects, replace_keras_member, reseal

EVIL_MODULE = """
from pathlib import Path
Path(__file__).with_name("imported.marker").touch()
import keras

@keras.saving.register_keras_serializable(package="evil")
class Evil(keras.layers.Layer):
    pass
"""


@pytest.fixture()
def evil_module(tmp_path: Path) -> Iterator[Path]:
    """An importable module ``evil_mod`` that leaves a marker file when it is imported."""
    folder = tmp_path / "evil_path"
    folder.mkdir()
    (folder / "evil_mod.py").write_text(EVIL_MODULE)
    sys.path.insert(0, str(folder))
    try:
        yield folder / "imported.marker"
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("evil_mod", None)


class _Marker:
    """A payload whose unpickling creates a file: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.fixture()
def rogue_registered(tmp_path: Path) -> Iterator[Path]:
    """A class and a function registered with Keras by a module the lock does not name.

    Services import many modules; any of them may register objects in Keras's process-wide
    registry. Instantiating one leaves a marker file.
    """
    import keras

    marker = tmp_path / "rogue.marker"

    class Rogue(keras.layers.Layer):  # type: ignore[misc]  # Keras has no type hints
        def __init__(self, **kwargs: Any) -> None:
            marker.touch()
            super().__init__()

    def rogue_fn(y_true: Any, y_pred: Any) -> Any:
        marker.touch()
        return y_pred

    for obj in (Rogue, rogue_fn):
        obj.__module__ = "rogue_mod"
    registry = keras.saving.get_custom_objects()
    registry["rogue>Rogue"] = Rogue
    registry["rogue>rogue_fn"] = rogue_fn
    try:
        yield marker
    finally:
        registry.pop("rogue>Rogue", None)
        registry.pop("rogue>rogue_fn", None)


def _scale_layer(config: dict[str, Any]) -> dict[str, Any]:
    return find_objects(config, class_name="Scale")[0]


def _foreign_module_with_registered_name(config: dict[str, Any]) -> None:
    # Keras would find Scale by its registered name and never look at `module`: unguarded, this
    # loads; the loader must still refuse a config that names a module outside the lock.
    _scale_layer(config)["module"] = "evil_mod"


def _foreign_module_only(config: dict[str, Any]) -> None:
    # Unguarded, Keras raises a TypeError (turned into LoadError); the guard names the module.
    layer = _scale_layer(config)
    layer.update(module="evil_mod", class_name="Evil", registered_name=None)


def _foreign_registered_class(config: dict[str, Any]) -> None:
    # Unguarded, Keras resolves 'rogue>Rogue' from its global registry and instantiates it.
    layer = _scale_layer(config)
    layer.update(module="keras.layers", registered_name="rogue>Rogue")


def _foreign_registered_function(config: dict[str, Any]) -> None:
    # Unguarded, Keras resolves the loss 'rogue>rogue_fn' from its global registry.
    loss = config["compile_config"]["loss"]
    loss["config"] = "rogue>rogue_fn"


def _nested_lambda(config: dict[str, Any]) -> None:
    # bytecode hidden in a config value: refused by the loader's own scan, whatever Keras does
    layer = _scale_layer(config)
    layer["config"]["factor"] = {
        "class_name": "__lambda__",
        "config": {"code": "YQ==", "defaults": None, "closure": None},
    }


def _reduce_payload(config: dict[str, Any]) -> None:
    # a pickle-style object in the config: JSON cannot unpickle, Keras finds no such class
    layer = _scale_layer(config)
    layer["config"]["factor"] = {
        "module": "keras.layers",
        "class_name": "__reduce__",
        "config": {"callable": "os.system", "args": ["touch /tmp/never"]},
        "registered_name": None,
    }


HOSTILE_CONFIGS: list[tuple[str, Callable[[dict[str, Any]], None], type[BundleError], str]] = [
    ("foreign module beside a registered name", _foreign_module_with_registered_name,
     UnsafeBundleError, "evil_mod"),
    ("foreign module", _foreign_module_only, UnsafeBundleError, "evil_mod"),
    ("registered class from another module", _foreign_registered_class, UnsafeBundleError,
     "rogue_mod"),
    ("registered function from another module", _foreign_registered_function,
     UnsafeBundleError, "rogue_mod"),
    ("lambda bytecode in a config value", _nested_lambda, UnsafeBundleError, "Lambda"),
    ("__reduce__ payload in a config value", _reduce_payload, LoadError, "could not load"),
]  # fmt: skip


VERIFY_SEES = {
    "foreign module beside a registered name",
    "foreign module",
    "lambda bytecode in a config value",
}


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize(
    ("label", "change", "error", "words"), HOSTILE_CONFIGS, ids=[c[0] for c in HOSTILE_CONFIGS]
)
def test_load_refuses_a_hostile_config_even_with_a_resealed_lock(
    copy_bundle: CopyBundle,
    evil_module: Path,
    rogue_registered: Path,
    label: str,
    change: Callable[[dict[str, Any]], None],
    error: type[BundleError],
    words: str,
    verify: bool,
) -> None:
    root = copy_bundle("custom_layer")
    edit_keras_config(root, change)
    report = verify_bundle(root)
    assert report.integrity_ok  # the forgery passes integrity checks
    if label in VERIFY_SEES:  # ... and verify runs the loader's scan, without TensorFlow
        assert [(p.kind, words in p.message) for p in report.problems] == [("config", True)]
    else:  # what another module registered is only known in the loading process
        assert report.ok
    with pytest.raises(error) as caught:
        load_bundle(root, verify=verify)
    assert words in str(caught.value)
    assert not evil_module.exists() and "evil_mod" not in sys.modules  # never imported
    assert not rogue_registered.exists()  # never instantiated nor called


def test_load_ignores_the_manifest_paths_of_a_hostile_lock(copy_bundle: CopyBundle) -> None:
    """The lock's manifest `paths` served the build; load never puts them on sys.path."""
    root = copy_bundle("custom_layer")
    (root / "evil_mod.py").write_text(EVIL_MODULE)  # importable only through the bundle
    edit_keras_config(root, _foreign_module_only)
    edit_lock(root, lambda lock: lock["manifest"].update(paths=["."]))
    report = verify_bundle(root)
    assert report.integrity_ok and [p.kind for p in report.problems] == ["config"]
    assert "evil_mod" in report.problems[0].message
    with pytest.raises(UnsafeBundleError, match="evil_mod"):
        load_bundle(root)
    assert not (root / "imported.marker").exists() and "evil_mod" not in sys.modules


@pytest.fixture(scope="module")
def lambda_keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model with a Lambda layer (Python bytecode in its config), saved by Keras."""
    import keras

    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path_factory.mktemp("lambda") / "model.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def _lambda_bundle(copy_bundle: CopyBundle, lambda_keras_file: Path) -> Path:
    root = copy_bundle("custom_layer")
    (root / "model.keras").write_bytes(lambda_keras_file.read_bytes())
    reseal(root)
    report = verify_bundle(root)
    assert report.integrity_ok and [p.kind for p in report.problems] == ["config"]
    assert "Lambda layer with Python bytecode" in report.problems[0].message
    return root


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_lambda_layer_is_refused_in_safe_mode(
    copy_bundle: CopyBundle, lambda_keras_file: Path, verify: bool
) -> None:
    root = _lambda_bundle(copy_bundle, lambda_keras_file)
    with pytest.raises(UnsafeBundleError, match="Lambda"):
        load_bundle(root, verify=verify)


def test_unsafe_load_runs_the_lambda_and_says_so_loudly(
    copy_bundle: CopyBundle, lambda_keras_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _lambda_bundle(copy_bundle, lambda_keras_file)
    with (
        caplog.at_level(logging.WARNING, logger="bundler"),
        pytest.warns(UnsafeLoadWarning, match="safe_mode OFF"),
    ):
        loaded = load_bundle(root, unsafe=True)
    assert any("safe_mode OFF" in record.message for record in caplog.records)
    x = np.ones((1, 4), dtype="float32")
    np.testing.assert_allclose(loaded.predict(x), 2 * x)


def test_pickled_weights_file_is_never_unpickled(copy_bundle: CopyBundle, tmp_path: Path) -> None:
    """model.weights.h5 replaced by a pickle: Keras reads HDF5 only, so loading fails cleanly."""
    marker = tmp_path / "unpickled.marker"
    root = copy_bundle("custom_layer")
    replace_keras_member(root, "model.weights.h5", pickle.dumps(_Marker(marker)))
    assert verify_bundle(root).ok
    for verify in (True, False):
        with pytest.raises(LoadError) as caught:
            load_bundle(root, verify=verify)
        assert str(caught.value).startswith(
            f"{root / 'model.keras'}: model.weights.h5 in model.keras is not a readable HDF5 file: "
        )
    assert not marker.exists()


def _pickled_example(root: Path, marker: Path) -> None:
    """Golden example inputs replaced by an object array: a pickle inside a .npz."""
    payload = np.array([_Marker(marker)], dtype=object)
    np.savez(root / "examples" / "smoke.inputs.npz", x=payload)  # np.savez pickles objects
    reseal(root)


def test_golden_example_with_a_pickle_is_refused_not_unpickled(
    copy_bundle: CopyBundle, tmp_path: Path
) -> None:
    # Guards the example replay: allow_pickle stays off, and numpy's refusal (a ValueError) is
    # turned into a problem report instead of escaping load_bundle as a raw exception.
    marker = tmp_path / "unpickled.marker"
    root = copy_bundle("with_metadata")
    _pickled_example(root, marker)
    assert verify_bundle(root).ok
    with pytest.raises(ExampleMismatchError, match="cannot be read"):
        load_bundle(root, check_examples=True)
    report = verify_bundle(root, smoke=True)  # verify --smoke reports it as a problem
    assert not report.ok and any("cannot be read" in p.message for p in report.problems)
    assert not marker.exists()


# -- Keras's own safe_mode, as a layer of the model sees it ----------------------------------------

PROBE = """
import keras
from keras.src.saving import serialization_lib

__version__ = "1.0.0"
safe_modes_seen = []  # Keras's safe_mode each time a Probe is rebuilt from its config


@keras.saving.register_keras_serializable(package="safe_probe")
class Probe(keras.layers.Layer):
    @classmethod
    def from_config(cls, config):
        safe_modes_seen.append(serialization_lib.in_safe_mode())
        return super().from_config(config)

    def call(self, inputs):
        return inputs


def build():
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, Probe()(keras.layers.Dense(2)(inputs)))
"""


@pytest.fixture(scope="module")
def probe_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A bundle whose component layer records Keras's safe_mode while Keras rebuilds it."""
    from bundler import build_bundle

    folder = tmp_path_factory.mktemp("probe")
    (folder / "src").mkdir()
    (folder / "src" / "safe_probe.py").write_text(PROBE)
    (folder / "manifest.yaml").write_text(
        "apiVersion: bundler/v1\nname: probe\nversion: 1.0.0\n"
        "model: {factory: 'safe_probe:build'}\n"
        "components: [{module: safe_probe, version: '1.0.0'}]\npaths: [src]\nexamples: []\n"
    )
    sys.path.insert(0, str(folder / "src"))
    try:
        yield build_bundle(folder / "manifest.yaml", folder / "bundle", rehearse=False).path
    finally:
        sys.path.remove(str(folder / "src"))


def _deflated(root: Path) -> None:
    """model.keras re-zipped deflated: its weights cannot be read in place, so Keras's own
    loader reads the archive (the other of the two ways the loader calls Keras)."""
    path = root / "model.keras"
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in members.items():
            out.writestr(name, data)
    reseal(root)


@pytest.mark.parametrize("deflated", [False, True], ids=["weights in place", "through keras"])
@pytest.mark.parametrize(
    ("unsafe", "seen"), [(False, [True]), (True, [False])], ids=["safe", "unsafe"]
)
def test_keras_rebuilds_the_model_in_safe_mode_unless_unsafe_is_asked(
    probe_bundle: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    deflated: bool,
    unsafe: bool,
    seen: list[bool],
) -> None:
    import safe_probe  # type: ignore[import-not-found]  # written by the fixture

    root = tmp_path / "bundle"
    shutil.copytree(probe_bundle, root)
    if deflated:
        _deflated(root)
    safe_probe.safe_modes_seen.clear()
    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG, logger="bundler"):
        warnings.simplefilter("ignore", UnsafeLoadWarning)  # asserted by the test above
        load_bundle(root, unsafe=unsafe)
    assert safe_probe.safe_modes_seen == seen
    way = "loading through keras.saving" if deflated else "reading the weights in place"
    assert [r.message for r in caplog.records if way in r.message], caplog.text


def test_a_service_that_turned_safe_mode_off_still_loads_bundles_in_safe_mode(
    probe_bundle: Path,
) -> None:
    """Keras lets `keras.config.enable_unsafe_deserialization()` (thread-wide) override the
    safe_mode argument of every later load; bundler's loader sets the mode itself, and gives the
    caller's setting back afterwards."""
    import keras
    import safe_probe  # written by the fixture
    from keras.src.saving import serialization_lib

    safe_probe.safe_modes_seen.clear()
    keras.config.enable_unsafe_deserialization()
    try:
        load_bundle(probe_bundle)
        assert serialization_lib.in_safe_mode() is False  # the service's own choice, kept
    finally:
        serialization_lib.SafeModeScope(None).__enter__()  # this thread back to Keras's default
    assert safe_probe.safe_modes_seen == [True]
