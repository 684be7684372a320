"""A component covers its module and the submodules below it, never a sibling that shares a prefix.

With the component ``acme`` declared, ``acme_evil`` is another package: the name starts with the
same letters, not below the dot. The rule is applied in four places (the config scan of verify and
load, the registry check of load, the build's coverage check, the objects a component hands to
Keras); each is held here with a real package ``acme_evil`` beside a real component ``acme``.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler import Bundle, build_bundle, load_bundle, verify_bundle
from bundler.compat.components import covers, registered_objects
from bundler.errors import BuildError, UnsafeBundleError
from bundler.scans.config import covering_component, module_allowed

from ..hostile import edit_keras_config, edit_lock, find_objects

ACME = """
import keras

__version__ = "1.0.0"


@keras.saving.register_keras_serializable(package="acme")
class Gain(keras.layers.Layer):
    def __init__(self, gain=2.0, **kwargs):
        super().__init__(**kwargs)
        self.gain = float(gain)

    def call(self, inputs):
        return inputs * self.gain

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}
"""

ACME_EVIL = """
import keras


@keras.saving.register_keras_serializable(package="acme_evil")
class Evil(keras.layers.Layer):
    def call(self, inputs):
        return inputs
"""

MODELS = """
import keras


def build(evil=False):
    from acme import Gain

    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3)(inputs)
    if evil:
        from acme_evil.layers import Evil

        hidden = Evil()(hidden)
    return keras.Model(inputs, Gain()(hidden))
"""


def _manifest(folder: Path, evil: bool) -> Path:
    manifest = folder / "manifest.yaml"
    manifest.write_text(
        "apiVersion: bundler/v1\n"
        "name: boundary\n"
        "version: 1.0.0\n"
        "model:\n"
        "  factory: boundary_models:build\n"
        f"  args: {{evil: {str(evil).lower()}}}\n"
        "components:\n"
        "  - module: acme\n"
        '    version: "1.0.0"\n'
        "paths: [src]\n"
    )
    return manifest


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project with the component ``acme`` and, beside it, the package ``acme_evil`` (imported,
    as any module a service imports may be, so its object is in Keras's registry)."""
    folder = tmp_path_factory.mktemp("boundary")
    src = folder / "src"
    (src / "acme_evil").mkdir(parents=True)
    (src / "acme.py").write_text(ACME)
    (src / "acme_evil" / "__init__.py").write_text('__version__ = "6.6.6"\n')
    (src / "acme_evil" / "layers.py").write_text(ACME_EVIL)
    (src / "boundary_models.py").write_text(MODELS)
    sys.path.insert(0, str(src))
    importlib.import_module("acme_evil.layers")
    try:
        yield folder
    finally:
        sys.path.remove(str(src))


@pytest.fixture(scope="module")
def acme_bundle(sources: Path) -> Bundle:
    return build_bundle(_manifest(sources, evil=False), sources / "bundle", rehearse=False)


@pytest.fixture()
def acme_copy(acme_bundle: Bundle, tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(acme_bundle.path, root)
    return root


BOUNDARY = [
    pytest.param("acme", True, id="the component itself"),
    pytest.param("acme.layers", True, id="a submodule"),
    pytest.param("acme_evil", False, id="a sibling whose name starts the same"),
    pytest.param("acme_evil.layers", False, id="a submodule of that sibling"),
    pytest.param("acm", False, id="a prefix of the component"),
]


@pytest.mark.parametrize(("module", "covered"), BOUNDARY)
def test_a_component_covers_itself_and_its_submodules_only(module: str, covered: bool) -> None:
    assert module_allowed(module, ["acme"]) is covered  # the config scan, the registry check
    assert (covering_component(module, ["acme"]) == "acme") is covered  # the build's coverage
    assert covers("acme", module) is covered  # the objects a component hands to Keras


def test_the_build_refuses_a_model_using_a_sibling_prefix_module(sources: Path) -> None:
    manifest = _manifest(sources, evil=True)
    with pytest.raises(BuildError) as caught:
        build_bundle(manifest, sources / "evil-out")
    assert str(caught.value).splitlines() == [
        f"{manifest}: components: the model uses 'acme_evil>Evil' from module "
        "'acme_evil.layers', which no component covers",
        "  declare its package (a component covers its submodules too):",
        "    components:",
        "      - module: acme_evil",
        '        version: "6.6.6"',
    ]
    assert not (sources / "evil-out").exists()


def _evil_layer(config: dict[str, Any]) -> dict[str, Any]:
    layer: dict[str, Any] = find_objects(config, class_name="Gain")[0]
    layer.update(class_name="Evil", registered_name="acme_evil>Evil")
    return layer


def _as_an_older_lock(lock: dict[str, Any]) -> None:
    for component in lock["components"]:
        del component["defined_in"]


def _names_the_sibling_module(config: dict[str, Any]) -> None:
    _evil_layer(config)["module"] = "acme_evil.layers"


def _names_an_object_the_sibling_registered(config: dict[str, Any]) -> None:
    _evil_layer(config)["module"] = "acme"  # claims the component; Keras looks up the name


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_verify_and_load_refuse_a_config_naming_a_sibling_prefix_module(
    acme_copy: Path, verify: bool
) -> None:
    edit_keras_config(acme_copy, _names_the_sibling_module)
    message = (
        "the model config names module 'acme_evil.layers' (for 'Evil'), which is not a "
        "component in the lock (acme); refusing to load it"
    )
    report = verify_bundle(acme_copy)
    assert report.integrity_ok
    assert [(p.path, p.kind, p.message) for p in report.problems] == [
        ("model.keras", "config", message)
    ]
    with pytest.raises(UnsafeBundleError) as caught:
        load_bundle(acme_copy, verify=verify)
    assert str(caught.value) == f"{acme_copy / 'model.keras'}: {message}"


def test_verify_and_load_refuse_an_object_the_lock_does_not_record(acme_copy: Path) -> None:
    """A lock that records where each object is defined: an object claimed for the component
    that the lock does not record is refused before anything is looked up."""
    edit_keras_config(acme_copy, _names_an_object_the_sibling_registered)
    message = (
        "the model config names 'acme_evil>Evil' from module 'acme', but the lock does not "
        "record it for component 'acme'; refusing to load it"
    )
    report = verify_bundle(acme_copy)
    assert [(p.path, p.kind, p.message) for p in report.problems] == [
        ("model.keras", "config", message)
    ]
    with pytest.raises(UnsafeBundleError) as caught:
        load_bundle(acme_copy)
    assert str(caught.value) == f"{acme_copy / 'model.keras'}: {message}"


def test_load_refuses_an_object_a_sibling_prefix_module_registered(acme_copy: Path) -> None:
    """An older lock records no object's module: what the process registered is only known
    there, so verify passes and load refuses (Keras's registry is checked, not trusted)."""
    edit_lock(acme_copy, _as_an_older_lock)
    edit_keras_config(acme_copy, _names_an_object_the_sibling_registered)
    assert verify_bundle(acme_copy).ok
    with pytest.raises(UnsafeBundleError) as caught:
        load_bundle(acme_copy)
    assert str(caught.value) == (
        f"{acme_copy / 'model.keras'}: the model config names 'acme_evil>Evil', registered by "
        "module 'acme_evil.layers', which is not a component in the lock (acme); refusing to "
        "load it"
    )


def test_a_component_hands_keras_only_the_objects_its_own_modules_registered(
    acme_bundle: Bundle,
) -> None:
    import acme  # type: ignore[import-not-found]  # written by the fixture

    assert sorted(registered_objects(acme)) == ["acme>Gain"]
    assert load_bundle(acme_bundle.path).lock.components[0].module == "acme"
