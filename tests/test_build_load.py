"""The core loop in process: build -> verify -> load gives the model the factory built."""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bundler import Bundle, ComponentError, build_bundle, load_bundle, verify_bundle
from bundler.errors import BuildError, UsageError
from bundler.files.atomic import remove_stale_temporaries
from bundler.lock.model import LOCK_FILENAME, lock_digest
from bundler.lock.schema import Lock

from .conftest import EXAMPLE_NAMES, EXAMPLES
from .file_events import history, watching

INPUTS = {
    "sequential": np.random.default_rng(1).normal(size=(16, 8)).astype("float32"),
    "custom_layer": np.random.default_rng(2).normal(size=(16, 4)).astype("float32"),
    "with_metadata": np.random.default_rng(3).normal(size=(16, 2)).astype("float32"),
    "evolving_layer": np.random.default_rng(4).normal(size=(16, 4)).astype("float32"),
    "tcn_forecaster": np.random.default_rng(5).normal(size=(16, 16, 2)).astype("float32"),
    "tiny_bert": {
        "token_ids": np.random.default_rng(6).integers(0, 64, size=(16, 12)).astype("int32"),
        "segment_ids": np.zeros((16, 12), dtype="int32"),
        "padding_mask": np.ones((16, 12), dtype="int32"),
    },
}


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_build_verify_load_gives_the_factory_model_predictions(
    built: dict[str, Bundle], name: str
) -> None:
    bundle = built[name]
    assert verify_bundle(bundle.path).ok
    loaded = load_bundle(bundle.path)
    assert loaded.mode == "keras"
    expected = _as_numpy(bundle.model(INPUTS[name], training=False))
    _assert_close(loaded.predict(INPUTS[name]), expected, rtol=1e-6, atol=1e-6)


def _as_numpy(outputs: Any) -> Any:
    if isinstance(outputs, dict):
        return {key: value.numpy() for key, value in outputs.items()}
    return outputs.numpy()


def _assert_close(got: Any, expected: Any, *, rtol: float, atol: float) -> None:
    """Outputs equal, a single array or a dict of them (keras_hub's backbones return dicts)."""
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_allclose(_as_array(got[key]), expected[key], rtol=rtol, atol=atol)
    else:
        np.testing.assert_allclose(_as_array(got), expected, rtol=rtol, atol=atol)


def _as_array(value: Any) -> Any:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_bundle_holds_keras_file_saved_model_and_a_valid_lock(
    built: dict[str, Bundle], name: str
) -> None:
    root = built[name].path
    lock = Lock.model_validate_json((root / LOCK_FILENAME).read_bytes())
    assert lock.artifacts.keras == "model.keras" and (root / "model.keras").is_file()
    assert (root / "saved_model" / "saved_model.pb").is_file()
    assert lock.digest == lock_digest(json.loads((root / LOCK_FILENAME).read_text()))
    on_disk = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != LOCK_FILENAME
    )
    assert sorted(lock.files) == on_disk
    assert lock.environment.keras.startswith("3.")


def test_lock_pins_the_component_and_its_objects(built: dict[str, Bundle]) -> None:
    lock = built["custom_layer"].lock
    (component,) = lock.components
    assert component.module == "acme_layers.layers"
    assert component.version == "1.2.0"
    assert component.compatible == ">=1.2.0 <2.0.0"
    assert component.objects == ("acme>Scale", "acme>scaled_mse")
    assert len(component.source_sha256) == 64


def test_compiled_model_keeps_optimizer_state_and_compile_settings(
    built: dict[str, Bundle],
) -> None:
    bundle = built["sequential"]
    model = load_bundle(bundle.path).model
    original = bundle.model
    assert type(model.optimizer).__name__ == type(original.optimizer).__name__
    assert float(model.optimizer.learning_rate) == pytest.approx(
        float(original.optimizer.learning_rate)
    )
    assert int(model.optimizer.iterations) == int(original.optimizer.iterations) > 0
    for mine, theirs in zip(model.optimizer.variables, original.optimizer.variables, strict=False):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy())
    assert model.loss == original.loss
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    assert any("Total params" in line for line in lines)


def test_metadata_is_inside_the_bundle(built: dict[str, Bundle]) -> None:
    bundle = built["with_metadata"]
    manifest = yaml.safe_load((EXAMPLES / "with_metadata" / "manifest.yaml").read_text())
    loaded = load_bundle(bundle.path)
    assert loaded.metadata == manifest["metadata"]
    lock = json.loads((bundle.path / LOCK_FILENAME).read_text())
    assert lock["metadata"]["hyperparameters"]["learning_rate"] == 0.01
    assert not [p for p in bundle.path.iterdir() if p.suffix in (".yaml", ".yml")]


def test_loaded_bundle_describes_itself(built: dict[str, Bundle]) -> None:
    loaded = load_bundle(built["custom_layer"].path)
    assert loaded.digest == built["custom_layer"].digest
    assert loaded.lock.name == "custom-layer-regressor"
    assert loaded.adaptations == ()
    statuses = {c.name: c.status for c in loaded.compatibility.checks}
    assert statuses["acme_layers.layers"] == "exact"
    assert statuses["keras"] == "exact"


def test_load_from_many_threads_at_once(built: dict[str, Bundle]) -> None:
    path = built["custom_layer"].path
    expected = built["custom_layer"].model(INPUTS["custom_layer"], training=False).numpy()
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(load_bundle(path).predict(INPUTS["custom_layer"]))
        except Exception as error:  # collected and asserted below
            results.append(error)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    for result in results:
        assert isinstance(result, np.ndarray), result
        np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)


def test_source_date_epoch_sets_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    bundle = build_bundle(EXAMPLES / "sequential" / "manifest.yaml", tmp_path / "b", rehearse=False)
    assert bundle.lock.created == "2023-11-14T22:13:20Z"


def test_existing_output_is_refused_without_force(built: dict[str, Bundle]) -> None:
    with pytest.raises(UsageError, match="already exists; pass --force"):
        build_bundle(EXAMPLES / "sequential" / "manifest.yaml", built["sequential"].path)


def test_a_build_renames_its_folder_into_place_only_once_the_lock_is_in_it(
    tmp_path: Path,
) -> None:
    """Seen at every file operation of the build: OUT is absent until one rename brings in a
    folder that already holds its lock (the lock is the last file written)."""
    out = tmp_path / "b"
    with watching(out) as moments:
        build_bundle(EXAMPLES / "sequential" / "manifest.yaml", out, rehearse=False)
    renames = [m for m in moments if m.event == "os.rename" and m.paths[1:] == (str(out),)]
    assert [(m.states, m.out) for m in renames] == [(("complete", "absent"), "absent")]
    assert [seen for seen, _ in history(moments)] == ["absent", "complete"]


def test_force_replaces_a_bundle_atomically(tmp_path: Path) -> None:
    """Seen at every file operation of a --force rebuild: OUT is the old complete bundle until
    the new complete one takes its place (absent in between only where the kernel cannot swap
    two folders in one step); never rebuilt in place."""
    out = tmp_path / "b"
    first = build_bundle(EXAMPLES / "sequential" / "manifest.yaml", out, rehearse=False)
    old = os.stat(out).st_ino
    with watching(out) as moments:
        second = build_bundle(
            EXAMPLES / "sequential" / "manifest.yaml", out, force=True, rehearse=False
        )
    new = os.stat(out).st_ino
    assert history(moments) in (
        [("complete", old), ("complete", new)],  # renameat2(RENAME_EXCHANGE)
        [("complete", old), ("absent", None), ("complete", new)],  # rename aside, rename in
    )
    assert new != old
    assert verify_bundle(out).ok
    assert verify_bundle(out).digest == second.digest
    assert first.path == second.path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_force_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(UsageError, match="not a bundle"):
        build_bundle(EXAMPLES / "sequential" / "manifest.yaml", out, force=True)
    assert (out / "thesis.tex").exists()


def _manifest_copy(tmp_path: Path, name: str, **changes: object) -> Path:
    document = yaml.safe_load((EXAMPLES / name / "manifest.yaml").read_text())
    document.update(changes)
    document["paths"] = [str((EXAMPLES / name / "src").relative_to(EXAMPLES / name))]
    folder = tmp_path / "manifest"
    folder.mkdir(exist_ok=True)
    import shutil

    shutil.copytree(EXAMPLES / name / "src", folder / "src", dirs_exist_ok=True)
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_component_outside_the_requirement_refuses_the_build(tmp_path: Path) -> None:
    path = _manifest_copy(
        tmp_path,
        "custom_layer",
        components=[{"module": "acme_layers.layers", "version": ">=2.0.0"}],
    )
    out = tmp_path / "out"
    with pytest.raises(ComponentError) as caught:
        build_bundle(path, out)
    assert caught.value.field == "components[0].version"
    assert "1.2.0" in str(caught.value) and ">=2.0.0" in str(caught.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["manifest"]


def test_missing_component_module_is_named(tmp_path: Path) -> None:
    path = _manifest_copy(
        tmp_path, "custom_layer", components=[{"module": "acme_layers.nope", "version": "1.2.0"}]
    )
    with pytest.raises(ComponentError, match=r"acme_layers\.nope") as caught:
        build_bundle(path, tmp_path / "out")
    assert caught.value.field == "components[0].module"


def test_failing_factory_leaves_nothing(tmp_path: Path) -> None:
    path = _manifest_copy(
        tmp_path,
        "sequential",
        model={"factory": "sequential_demo.model:build", "args": {"no_such_argument": 1}},
    )
    with pytest.raises(BuildError, match="no_such_argument"):
        build_bundle(path, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["manifest"]


def test_stale_temporary_folders_of_dead_builds_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "b"
    dead = tmp_path / ".b.bundler-tmp.999999999.abcd1234"
    dead.mkdir()
    alive = tmp_path / f".b.bundler-tmp.{__import__('os').getpid()}.abcd1234"
    alive.mkdir()
    other = tmp_path / ".c.bundler-tmp.999999999.abcd1234"
    other.mkdir()
    dead_file = tmp_path / ".b.bundler-tmp.999999998.abcd1234"  # a killed signer's signature
    dead_file.write_text("{}")
    assert sorted(remove_stale_temporaries(out)) == [dead_file, dead]
    assert alive.exists() and other.exists() and not dead_file.exists()


def test_every_temporary_is_named_by_the_one_scheme(tmp_path: Path) -> None:
    from bundler.files.atomic import TEMP_NAME, temporary_beside

    made = temporary_beside(tmp_path / "model.keras")
    match = TEMP_NAME.match(made.name)
    assert made.parent == tmp_path and match is not None
    assert (match["name"], int(match["pid"])) == ("model.keras", __import__("os").getpid())
    assert TEMP_NAME.match(temporary_beside(tmp_path / "b", "old").name)


def _stored_values(saved_model: Path) -> int:
    """How many numbers the SavedModel's checkpoint holds, over all its variables."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(saved_model / "variables" / "variables"))
    shapes = reader.get_variable_to_shape_map()
    return sum(int(np.prod(shape)) for key, shape in shapes.items() if not key.startswith("_CHECK"))


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_saved_model_stores_each_weight_once_and_serves_the_model(
    built: dict[str, Bundle], name: str
) -> None:
    # model.export() writes every weight twice (keras-team/keras#23553); the build must not
    import tensorflow as tf

    bundle = built[name]
    weights = sum(int(np.prod(v.shape)) for v in bundle.model.variables)
    assert _stored_values(bundle.path / "saved_model") == weights
    graph = tf.saved_model.load(str(bundle.path / "saved_model"))
    assert len(graph.variables) == len(bundle.model.variables)
    expected = _as_numpy(bundle.model(INPUTS[name], training=False))
    _assert_close(graph.serve(INPUTS[name]), expected, rtol=1e-6, atol=1e-6)


EXPORT_FACTORIES = {
    # a lookup table: a resource the export must track apart from the variables
    "lookup": """
import keras


def build():
    text = keras.Input(shape=(1,), dtype="string", name="word")
    ids = keras.layers.StringLookup(vocabulary=["red", "green", "blue"])(text)
    vectors = keras.layers.Embedding(4, 3, name="embed")(ids)
    return keras.Model(text, keras.layers.Flatten()(vectors))
""",
    # named inputs, non-trainable statistics and a seed generator's state
    "stateful": """
import keras


def build():
    a = keras.Input(shape=(3,), name="a")
    b = keras.Input(shape=(2,), name="b")
    hidden = keras.layers.Dense(4)(keras.layers.Concatenate()([a, b]))
    hidden = keras.layers.BatchNormalization(moving_mean_initializer="ones")(hidden)
    hidden = keras.layers.Dropout(0.5, seed=1)(hidden)
    return keras.Model({"a": a, "b": b}, keras.layers.Dense(1)(hidden))
""",
}
EXPORT_INPUTS = {
    "lookup": lambda: {"word": np.array([["blue"], ["red"], ["purple"]])},
    "stateful": lambda: {
        "a": np.random.default_rng(5).normal(size=(4, 3)).astype("float32"),
        "b": np.random.default_rng(6).normal(size=(4, 2)).astype("float32"),
    },
}


@pytest.mark.parametrize("kind", sorted(EXPORT_FACTORIES))
def test_single_copy_export_keeps_what_model_export_keeps(tmp_path: Path, kind: str) -> None:
    import tensorflow as tf

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{kind}_demo.py").write_text(EXPORT_FACTORIES[kind])
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        f"apiVersion: bundler/v1\nname: {kind}\nversion: 1.0.0\n"
        f"model: {{factory: '{kind}_demo:build'}}\npaths: [src]\n"
    )
    bundle = build_bundle(manifest, tmp_path / "out", rehearse=False)
    weights = sum(int(np.prod(v.shape)) for v in bundle.model.variables)
    assert _stored_values(bundle.path / "saved_model") == weights
    inputs = {name: tf.constant(value) for name, value in EXPORT_INPUTS[kind]().items()}
    graph = tf.saved_model.load(str(bundle.path / "saved_model"))
    served = next(iter(graph.signatures["serving_default"](**inputs).values())).numpy()
    model_inputs = inputs["word"] if kind == "lookup" else inputs
    expected = bundle.model(model_inputs, training=False).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-6)


def test_loading_large_weights_never_writes_into_the_bundle(
    built: dict[str, Bundle], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keras copies weights it judges too large for memory (over 512 MB without psutil) into a
    # temporary folder beside the file it loads; beside model.keras, that is inside the bundle
    import zipfile

    from keras.src.saving import saving_lib

    monkeypatch.setattr(saving_lib, "is_memory_sufficient", lambda model: False)
    # a bundle laid out for it has its weights read in place, with no copy at all: this is about
    # the layout Keras reads by itself (an older bundle's)
    monkeypatch.setattr("bundler.load.keras.weights_offset", lambda path: None)
    bundle = built["custom_layer"]
    seen: list[tuple[Path, bool]] = []
    extract = zipfile.ZipFile.extract

    def spy(self: zipfile.ZipFile, member: Any, path: Any = None, pwd: Any = None) -> str:
        written = extract(self, member, path, pwd)
        seen.append((Path(written), verify_bundle(bundle.path).ok))  # a deploy gate meanwhile
        return written

    monkeypatch.setattr(zipfile.ZipFile, "extract", spy)
    loaded = load_bundle(bundle.path)
    assert [path.name for path, _ in seen] == ["model.weights.h5"]
    ((copy, still_ok),) = seen
    assert bundle.path not in copy.parents and still_ok
    expected = bundle.model(INPUTS["custom_layer"], training=False).numpy()
    np.testing.assert_allclose(loaded.predict(INPUTS["custom_layer"]), expected, rtol=1e-6)


def test_loading_a_compiled_untrained_model_does_not_warn_about_its_optimizer(
    built: dict[str, Bundle],
) -> None:
    # tcn_forecaster is compiled and never trained: its optimizer is saved unbuilt, and Keras's
    # own loader warns on every load that it skipped the two variables saved
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_bundle(built["tcn_forecaster"].path)
    assert [str(w.message) for w in caught if "optimizer" in str(w.message)] == []


@pytest.mark.parametrize(("saved", "warned"), [(2, False), (7, True)], ids=["unbuilt", "other"])
def test_an_optimizer_mismatch_other_than_an_unbuilt_optimizer_is_still_warned(
    saved: int, warned: bool
) -> None:
    import keras

    from bundler.load.keras import _quiet_about_unbuilt_optimizers

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    message = (
        "Skipping variable loading for optimizer 'adam', because it has 6 variables whereas "
        f"the saved optimizer has {saved} variables. "
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _quiet_about_unbuilt_optimizers() as loaded:
            warnings.warn(message, UserWarning, stacklevel=1)
            loaded.append(model)
    assert [str(w.message) for w in caught] == ([message] if warned else [])


def test_an_uncovered_object_from_two_packages_asks_to_declare_both(tmp_path: Path) -> None:
    src = tmp_path / "project" / "src"
    for package, layer in (("alpha_layers", "Alpha"), ("beta_layers", "Beta")):
        (src / package).mkdir(parents=True)
        (src / package / "__init__.py").write_text(
            "import keras\n\n"
            f"__version__ = '1.0.0'\n\n\n"
            f"@keras.saving.register_keras_serializable(package={package!r})\n"
            f"class {layer}(keras.layers.Layer):\n"
            "    def call(self, x):\n"
            "        return x\n",
            encoding="utf-8",
        )
    (src / "two_model.py").write_text(
        "import keras\n\nimport alpha_layers\nimport beta_layers\n\n\n"
        "def build():\n"
        "    inputs = keras.Input((2,))\n"
        "    x = alpha_layers.Alpha()(inputs)\n"
        "    return keras.Model(inputs, beta_layers.Beta()(keras.layers.Dense(1)(x)))\n",
        encoding="utf-8",
    )
    manifest = tmp_path / "project" / "manifest.yaml"
    manifest.write_text(
        "apiVersion: bundler/v1\nname: two\nversion: 1.0.0\n"
        "model: {factory: 'two_model:build'}\npaths: [src]\n",
        encoding="utf-8",
    )
    with pytest.raises(BuildError) as caught:
        build_bundle(manifest, tmp_path / "out")
    assert str(caught.value).splitlines() == [
        f"{manifest}: components: the model uses 'alpha_layers>Alpha' from module "
        "'alpha_layers', which no component covers",
        "  (also 'beta_layers>Beta' from 'beta_layers')",
        "  declare their packages (a component covers its submodules too):",
        "    components:",
        "      - module: alpha_layers",
        '        version: "1.0.0"',
        "      - module: beta_layers",
        '        version: "1.0.0"',
    ]
    assert not (tmp_path / "out").exists()
