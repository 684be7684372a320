"""Where the model's objects are defined: what the build records, what verify and load refuse.

The layouts themselves (submodules nothing imports, unregistered classes, namespace packages,
editable installs, PyPI packages) are in ``test_conformance``; here are the records' edges: what
the build refuses to record, a lock that records something outside its component, and what a
deploy target's ``bundle env`` file says about modules.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from bundler import Bundle, build_bundle, load_bundle
from bundler.errors import BuildError, LoadError, UnsafeBundleError
from bundler.load.smoke import verify_bundle

from ..conftest import CopyBundle
from ..hostile import edit_lock, reseal


def _edit_lock(bundle: Path, **defined_in: str) -> None:
    """The lock records ``defined_in``, resealed: its digest covers the field, and what is tested
    is the refusal of the record, not of the seal."""
    edit_lock(bundle, lambda lock: lock["components"][0].update(defined_in=defined_in))


def test_the_lock_records_where_each_used_object_is_defined(built: dict[str, Bundle]) -> None:
    components = {c.module: c.defined_in for b in built.values() for c in b.lock.components}
    assert components["acme_layers.layers"] == {
        "acme>Scale": "acme_layers.layers:Scale",
        "acme>scaled_mse": "acme_layers.layers:scaled_mse",
    }
    assert components["tcn"] == {"Custom>TCN": "tcn.tcn:TCN"}
    assert components["keras_hub"] == {
        "keras_hub>BertBackbone": "keras_hub.src.models.bert.bert_backbone:BertBackbone"
    }


LAYER = """
import keras

class Twin(keras.layers.Layer):
    def call(self, x):
        return x * FACTOR
"""

REFUSALS = {
    "a-class-inside-a-function": (
        {
            "__init__.py": '__version__ = "1.0.0"\n',
            "factory.py": """
import keras

def build():
    @keras.saving.register_keras_serializable(package="inner")
    class Local(keras.layers.Layer):
        def call(self, x):
            return x

    inputs = keras.Input((2,))
    return keras.Model(inputs, Local()(inputs))
""",
        },
        "the model uses 'inner>Local' of component '{pkg}', but load could not find it again: "
        "it is defined inside a function ({pkg}.factory.build.<locals>.Local), where no other "
        "process can find it; define it at module level",
    ),
    "two-classes-under-one-name": (
        {
            "__init__.py": '__version__ = "1.0.0"\n',
            "a.py": LAYER.replace("FACTOR", "1"),
            "b.py": LAYER.replace("FACTOR", "2"),
            "factory.py": """
import keras
from . import a, b

def build():
    inputs = keras.Input((2,))
    return keras.Model(inputs, b.Twin()(a.Twin()(inputs)))
""",
        },
        "the model uses two objects saved under the name 'Twin' ({pkg}.a:Twin and {pkg}.b:Twin); "
        "Keras finds objects by that name, so it cannot tell them apart: register them under "
        "distinct names (@keras.saving.register_keras_serializable(package=...))",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_the_build_refuses_what_no_other_process_could_find(case: str, tmp_path: Path) -> None:
    files, message = REFUSALS[case]
    package = "refused_" + case.replace("-", "_")
    for name, text in files.items():
        path = tmp_path / "src" / package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "manifest.yaml").write_text(
        "apiVersion: bundler/v1\nname: refused\nversion: 0.1.0\n"
        f"model: {{factory: '{package}.factory:build'}}\n"
        f"components: [{{module: {package}, version: '1.0.0'}}]\npaths: [src]\nexamples: []\n"
    )
    with pytest.raises(BuildError) as refused:
        build_bundle(tmp_path / "manifest.yaml", tmp_path / "out")
    assert refused.value.message == message.format(pkg=package)
    assert not (tmp_path / "out").exists()


SCALE: tuple[str, str, dict[str, str]] = (
    "custom_layer",
    "acme>Scale",
    {"acme>scaled_mse": "acme_layers.layers:scaled_mse"},
)
BERT: tuple[str, str, dict[str, str]] = ("tiny_bert", "keras_hub>BertBackbone", {})


@pytest.mark.parametrize(
    ("bundle", "reference", "message"),
    [
        pytest.param(
            SCALE,
            "os:system",
            "the lock records 'acme>Scale' of component 'acme_layers.layers' in module 'os', "
            "which that component does not cover; refusing to load it",
            id="outside-the-component",
        ),
        pytest.param(
            SCALE,
            "acme_layers.layers:Scale.__init__.__globals__",
            "the lock records 'acme>Scale' as 'acme_layers.layers:Scale.__init__.__globals__', "
            "which is not a name defined in that module; refusing to load it",
            id="a-walk-out-of-the-module",
        ),
        pytest.param(
            BERT,
            "keras_hub.models:BertBackbone",
            "the model config names 'keras_hub>BertBackbone' from module "
            "'keras_hub.src.models.bert.bert_backbone', but the lock records it in "
            "'keras_hub.models' for component 'keras_hub'; refusing to load it",
            id="another-module-than-the-config",
        ),
    ],
)
def test_verify_refuses_a_lock_that_records_an_object_elsewhere(
    bundle: tuple[str, str, dict[str, str]],
    reference: str,
    message: str,
    copy_bundle: CopyBundle,
) -> None:
    example, name, others = bundle
    copy = copy_bundle(example)
    _edit_lock(copy, **{name: reference}, **others)
    problems = [p.message for p in verify_bundle(copy).problems]
    assert problems[0] == message


def test_load_refuses_a_recorded_name_that_leads_outside_the_component(
    copy_bundle: CopyBundle,
) -> None:
    """`keras` is a name in the component's module; following it reaches Keras's TFSMLayer,
    which loads a SavedModel from any path. The module is the component's; the object is not."""
    bundle = copy_bundle("custom_layer")
    _edit_lock(
        bundle,
        **{
            "acme>Scale": "acme_layers.layers:keras.layers.TFSMLayer",
            "acme>scaled_mse": "acme_layers.layers:scaled_mse",
        },
    )
    with pytest.raises(UnsafeBundleError) as refused:
        load_bundle(bundle)
    assert refused.value.message.startswith(
        "acme_layers.layers:keras.layers.TFSMLayer (recorded as 'acme>Scale' of component "
        "'acme_layers.layers') is keras.src.export.tfsm_layer.TFSMLayer, from outside the "
        "component; refusing to load it"
    )


# -- a deploy target's `bundle env` file -----------------------------------------------------------


def _target(tmp_path: Path, built: dict[str, Bundle], tcn: str, *extra: str) -> Path:
    env = built["tcn_forecaster"].lock.environment
    lines = [f"keras=={env.keras}", f"tensorflow=={env.tensorflow}", f"keras-tcn=={tcn}", *extra]
    target = tmp_path / "target.txt"
    target.write_text("\n".join(lines) + "\n")
    return target


def test_verify_env_refuses_a_target_without_a_recorded_module(
    built: dict[str, Bundle], tmp_path: Path
) -> None:
    missing = '# bundler-modules {"found": [], "missing": ["tcn.tcn"], "module": "tcn"}'
    report = verify_bundle(
        built["tcn_forecaster"].path, env=_target(tmp_path, built, "3.5.5", missing)
    )
    assert report.plan is not None
    check = report.plan.checks[0]
    assert (check.status, check.missing_modules) == ("incompatible", ("tcn.tcn",))
    assert check.reason == (
        "installed without the module the model's objects are defined in: tcn.tcn "
        "(defines Custom>TCN)"
    )
    assert report.plan.remedies()[0] == (
        "pip install 'keras-tcn==3.5.5' (the version the bundle was built with has tcn.tcn)"
    )


@pytest.mark.parametrize(
    ("version", "notes"),
    [
        pytest.param("3.5.5", [], id="same-version-here-stands-for-the-target"),
        pytest.param(
            "3.6.0",
            [
                "not checked: whether {target} has tcn's modules tcn.tcn; write the environment "
                "file with 'bundle env --bundle BUNDLE' there to check them"
            ],
            id="another-version-is-not-checked",
        ),
    ],
)
def test_a_plain_pip_freeze_says_nothing_of_modules(
    version: str, notes: list[str], built: dict[str, Bundle], tmp_path: Path
) -> None:
    target = _target(tmp_path, built, version)
    report = verify_bundle(built["tcn_forecaster"].path, env=target)
    assert report.ok
    assert report.plan is not None
    assert list(report.plan.notes) == [note.format(target=target) for note in notes]


def test_a_keras_failure_says_its_cause_not_the_config(copy_bundle: CopyBundle) -> None:
    """Keras wraps a constructor's error in a message that quotes the whole model config; the
    load error says what went wrong, for which layer, in one line."""
    bundle = copy_bundle("custom_layer")
    keras_file = bundle / "model.keras"
    with zipfile.ZipFile(keras_file) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Scale":
            layer["config"]["bogus"] = 1
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(keras_file, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    reseal(bundle)  # sealed as its author would: the failure is Keras's, not the lock's
    with pytest.raises(LoadError) as failed:
        load_bundle(bundle, verify=False)
    assert failed.value.message == (
        "Keras could not load the model: ValueError: Unrecognized keyword arguments passed to "
        "Scale: {'bogus': 1}"
    )
