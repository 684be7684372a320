"""Source identity covers the code the model runs, and only code changes it.

``pinlab``, a component written here as real files: the config names ``Outer`` (whose base class
lives in ``base.py`` and whose constructor makes a ``Shift`` from ``inner.py``) and the activation
``wobble`` (``acts.py``), and Outer gives its Dense an initializer from ``inits.py``;
``unused.py`` holds nothing the model runs. keras_hub's ``ViTBackbone``
is the same story in a package none of us wrote: its config holds sizes, and its constructor
makes the encoder layers of ``vit_layers.py``. Each edit is made to a copy of the package placed
ahead of the installed one (same version), then verify and load run in a fresh process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import Bundle, build_bundle, verify_bundle
from bundler.compat.components import static_version

from ..conftest import cli_env
from ..hostile import edit_lock

POLICIES = ("strict", "adapt", "fallback")

PINLAB = {
    "__init__.py": '''"""pinlab: layers for the source identity tests."""

__version__ = "1.0.0"

from pinlab.acts import wobble  # noqa: E402 - importing pinlab registers its objects
from pinlab.outer import Outer  # noqa: E402
''',
    "base.py": '''"""The base of pinlab's layers."""

import keras


class Passing(keras.layers.Layer):
    """A layer that lets part of its input through."""

    keep = 0.5

    def passed(self, inputs):
        return inputs * self.keep
''',
    "inner.py": '''"""A sublayer Outer makes in its constructor: no config names it."""

import keras
from keras import ops


class Shift(keras.layers.Layer):
    def call(self, inputs):
        return inputs + ops.ones_like(inputs) * 0.25
''',
    "acts.py": '''"""Activations."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="pinlab")
def wobble(x):
    """x times its sigmoid."""
    return x * ops.sigmoid(x)
''',
    "outer.py": '''"""The layer the config names."""

import keras

from pinlab.base import Passing
from pinlab.inits import Halves
from pinlab.inner import Shift


@keras.saving.register_keras_serializable(package="pinlab")
class Outer(Passing):
    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.shift = Shift()
        self.dense = keras.layers.Dense(units, kernel_initializer=Halves())

    def build(self, input_shape):
        self.shift.build(input_shape)
        self.dense.build(input_shape)

    def call(self, inputs):
        return self.passed(self.dense(self.shift(inputs)))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
''',
    "inits.py": '''"""An initializer Outer's constructor gives its Dense."""

import keras


class Halves(keras.initializers.Initializer):
    def __call__(self, shape, dtype=None):
        return keras.ops.full(shape, 0.5, dtype=dtype)
''',
    "unused.py": '"""Nothing the model runs."""\n\nVALUE = 1\n',
}
PINNED = ["acts.py", "base.py", "inits.py", "inner.py", "outer.py"]

FACTORY = """import keras

from pinlab.acts import wobble
from pinlab.outer import Outer


def build():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, activation=wobble)(Outer(units=4)(inputs))
    return keras.Model(inputs, outputs)
"""

MANIFEST = """apiVersion: bundler/v1
name: {name}
version: 1.0.0
model:
  factory: {factory}
components:
  - module: {module}
    version: "{version}"
paths: [src, lib]
"""


def _write_package(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / "pinlab").mkdir(parents=True, exist_ok=True)
        (folder / "pinlab" / name).write_bytes(text.encode())


@pytest.fixture(scope="module")
def pinlab(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = tmp_path_factory.mktemp("pinlab")
    _write_package(root / "lib", PINLAB)
    (root / "src" / "pinlab_demo").mkdir(parents=True)
    (root / "src" / "pinlab_demo" / "model.py").write_text(FACTORY)
    manifest = root / "manifest.yaml"
    manifest.write_text(
        MANIFEST.format(
            name="pinlab-demo", factory="pinlab_demo.model:build", module="pinlab", version="1.0.0"
        )
    )
    return build_bundle(manifest, root / "bundle", rehearse=False)


def test_the_lock_pins_every_file_of_code_the_model_runs(pinlab: Bundle) -> None:
    """The sublayer and the initializer made in a constructor, the base class in another file,
    the activation a config names; not the package's other modules, nor its __init__."""
    component = pinlab.lock.components[0]
    assert component.objects == ("pinlab>Outer", "pinlab>wobble")
    assert sorted(component.sources) == [f"pinlab/{name}" for name in PINNED]
    assert component.source_hash == "python-tokens/v1"
    assert sorted(component.source_bytes) == sorted(component.sources)


def _edited(text: str, edit: str) -> str:
    if edit == "comment":
        return "# edited: a comment and nothing else\n" + text.replace("\n\n", "\n\n# more\n", 1)
    if edit == "whitespace":  # tabs for indents, trailing blanks, CRLF, one more blank line
        lines = []
        for line in text.split("\n"):
            lines.append(line.replace("    ", "\t") + "   ")
            if not line.strip():
                lines.append("")
        return "\r\n".join(lines)
    raise AssertionError(edit)


# (id, file, the edit, status)
EDITS: list[tuple[str, str, Any, str]] = [
    *[(f"{name}-comment", name, "comment", "exact") for name in PINNED],
    *[(f"{name}-whitespace", name, "whitespace", "exact") for name in PINNED],
    ("unused.py-code", "unused.py", ("VALUE = 1", "VALUE = 2"), "exact"),
    ("acts.py-docstring", "acts.py", ("x times its sigmoid.", "x, gated."), "modified"),
    ("inner.py-constant", "inner.py", ("* 0.25", "* 0.5"), "modified"),
    ("base.py-operator", "base.py", ("inputs * self.keep", "inputs / self.keep"), "modified"),
    ("outer.py-constructor", "outer.py", ("Dense(units,", "Dense(units, use_bias=0,"), "modified"),
    ("inits.py-constant", "inits.py", ("0.5", "0.25"), "modified"),
]

VERIFY_EACH = """
import json, sys
import bundler

root, folders = sys.argv[1], json.loads(sys.argv[2])
out = {}
for case, folder in folders.items():
    sys.path.insert(0, folder)
    out[case] = {}
    for policy in ("strict", "adapt", "fallback"):
        report = bundler.verify_bundle(root, policy=policy)
        out[case][policy] = [report.ok, report.plan.checks[0].status]
    sys.path.remove(folder)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def edit_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """case -> a folder holding pinlab 1.0.0 with that one edit."""
    root = tmp_path_factory.mktemp("edits")
    folders = {}
    for case, name, edit, _ in EDITS:
        files = dict(PINLAB)
        if isinstance(edit, tuple):
            assert files[name].count(edit[0]) == 1
            files[name] = files[name].replace(*edit)
        else:
            files[name] = _edited(files[name], edit)
        assert files[name] != PINLAB[name]
        _write_package(root / case, files)
        folders[case] = str(root / case)
    return folders


@pytest.fixture(scope="module")
def verified(pinlab: Bundle, edit_folders: dict[str, str]) -> dict[str, dict[str, list[Any]]]:
    """case -> policy -> [verify ok, status], in one fresh process without TensorFlow."""
    completed = subprocess.run(
        [sys.executable, "-c", VERIFY_EACH, str(pinlab.path), json.dumps(edit_folders)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome: dict[str, dict[str, list[Any]]] = json.loads(completed.stdout.splitlines()[-1])
    return outcome


@pytest.mark.parametrize(
    ("case", "status"), [pytest.param(case, status, id=case) for case, _, _, status in EDITS]
)
def test_verify_tells_code_edits_from_comment_and_layout_edits(
    verified: dict[str, dict[str, list[Any]]], case: str, status: str
) -> None:
    """Comments and layout: exact, OK under every policy. Code: modified, which strict refuses
    and adapt does not promise without replaying the examples."""
    expected_ok = {"strict": status == "exact", "adapt": status == "exact", "fallback": True}
    assert verified[case] == {policy: [expected_ok[policy], status] for policy in POLICIES}


LOAD_EVERY_POLICY = """
import json, sys, warnings
import numpy as np
import bundler
from bundler.errors import BundleError

root = sys.argv[1]
with np.load(f"{root}/examples/generated.inputs.npz") as archive:
    x = archive[archive.files[0]]
out = {}
for policy in ("strict", "adapt", "fallback"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = bundler.load_bundle(root, policy=policy, check_examples=True)
        except BundleError as error:
            out[policy] = {"error": type(error).__name__, "message": str(error)}
            continue
    out[policy] = {
        "mode": loaded.mode,
        "statuses": [c.status for c in loaded.compatibility.checks],
        "predictions": np.asarray(loaded.predict(x)).tolist(),
    }
print(json.dumps(out))
"""


def _load_every_policy(root: Path, pythonpath: str) -> dict[str, dict[str, Any]]:
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_EVERY_POLICY, str(root)],
        env=cli_env(PYTHONPATH=pythonpath),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome: dict[str, dict[str, Any]] = json.loads(completed.stdout.splitlines()[-1])
    return outcome


def _golden(root: Path) -> np.ndarray:
    with np.load(root / "examples" / "generated.outputs.npz") as archive:
        golden: np.ndarray = archive[archive.files[0]]
    return golden


def test_comment_and_layout_edits_to_every_pinned_file_load_as_exact(
    pinlab: Bundle, tmp_path: Path
) -> None:
    files = {
        name: _edited(_edited(text, "comment"), "whitespace") if name in PINNED else text
        for name, text in PINLAB.items()
    }
    _write_package(tmp_path, files)
    outcome = _load_every_policy(pinlab.path, str(tmp_path))
    for policy in POLICIES:
        entry = outcome[policy]
        assert (entry.get("mode"), entry.get("statuses")) == ("keras", ["exact"] * 3), entry
        np.testing.assert_allclose(entry["predictions"], _golden(pinlab.path), rtol=1e-5)


def test_an_older_lock_still_compares_the_bytes(
    pinlab: Bundle, edit_folders: dict[str, str], tmp_path: Path
) -> None:
    """A lock from before source_hash pinned each file's sha256: there, a comment is a change,
    as it was when that bundle was built."""
    import hashlib

    root = tmp_path / "old"
    shutil.copytree(pinlab.path, root)
    base = Path(static_version("pinlab").origin or "").parents[1]  # the folder holding pinlab/

    def as_before(lock: dict[str, Any]) -> None:
        component = lock["components"][0]
        del component["source_hash"], component["source_bytes"]
        component["sources"] = {
            rel: hashlib.sha256((base / rel).read_bytes()).hexdigest()
            for rel in component["sources"]
        }
        text = json.dumps(component["sources"], sort_keys=True, separators=(",", ":"))
        component["source_sha256"] = hashlib.sha256(text.encode()).hexdigest()

    edit_lock(root, as_before)
    plan = verify_bundle(root).plan
    assert plan is not None and plan.checks[0].status == "exact"
    completed = subprocess.run(
        [sys.executable, "-c", VERIFY_EACH, str(root),
         json.dumps({"comment": edit_folders["inner.py-comment"]})],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout)["comment"]["strict"] == [False, "modified"]


# -- keras_hub's ViT: the encoder its constructor makes ------------------------------------------

VIT_FACTORY = """import keras
import keras_hub


def build():
    keras.utils.set_random_seed(5)
    return keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=8,
        mlp_dim=16,
    )
"""
VIT_LAYERS = "keras_hub/src/models/vit/vit_layers.py"
VIT_EDIT = ("        return x + y\n", "        return x + 2.0 * y\n")  # in ViTEncoderBlock.call


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    import keras_hub

    root = tmp_path_factory.mktemp("vit")
    (root / "src" / "vit_demo").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "src" / "vit_demo" / "model.py").write_text(VIT_FACTORY)
    manifest = root / "manifest.yaml"
    manifest.write_text(
        MANIFEST.format(
            name="tiny-vit",
            factory="vit_demo.model:build",
            module="keras_hub",
            version=keras_hub.__version__,
        )
    )
    return build_bundle(manifest, root / "bundle", rehearse=False)


def test_vit_pins_the_layers_its_constructor_makes(vit: Bundle) -> None:
    component = vit.lock.components[0]
    assert component.objects == ("keras_hub>ViTBackbone",)
    assert sorted(component.sources) == [
        "keras_hub/src/models/backbone.py",
        "keras_hub/src/models/vit/vit_backbone.py",
        VIT_LAYERS,
    ]


def test_a_patched_vit_encoder_is_modified_and_its_drift_refused(
    vit: Bundle, tmp_path: Path
) -> None:
    """keras_hub copied ahead of the installed one, same version, vit_layers.py patched: verify
    and load say modified; adapt replays the examples and refuses the drift; fallback serves the
    graph, whose outputs are the build's."""
    installed = static_version("keras_hub")
    assert installed.origin is not None
    site = installed.origin.parents[1]
    shutil.copytree(site / "keras_hub", tmp_path / "keras_hub",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for info in site.glob("keras_hub-*.dist-info"):
        shutil.copytree(info, tmp_path / info.name)
    patched = tmp_path / VIT_LAYERS
    text = patched.read_text()
    assert text.count(VIT_EDIT[0]) == 1
    patched.write_text(text.replace(*VIT_EDIT))

    completed = subprocess.run(
        [sys.executable, "-c", VERIFY_EACH, str(vit.path), json.dumps({"patched": str(tmp_path)})],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout)["patched"] == {
        "strict": [False, "modified"],
        "adapt": [False, "modified"],
        "fallback": [True, "modified"],
    }
    outcome = _load_every_policy(vit.path, str(tmp_path))
    assert outcome["strict"]["error"] == "IncompatibleBundleError"
    assert (
        "its code differs from the build's under the same version" in outcome["strict"]["message"]
    )
    assert outcome["adapt"]["error"] == "ExampleMismatchError"
    assert "example 'generated' drifted" in outcome["adapt"]["message"]
    assert outcome["fallback"]["mode"] == "graph"
    np.testing.assert_allclose(
        outcome["fallback"]["predictions"], _golden(vit.path), rtol=1e-4, atol=1e-5
    )


# -- a deploy target's file: sources compared only when hashed the lock's way ---------------------

TARGET_LINE = '# bundler-sources {"module": "pinlab", "sha256": "' + "ab" * 32 + '"'


@pytest.mark.parametrize(
    ("line", "compared"),
    [
        pytest.param(TARGET_LINE + ', "source_hash": "python-tokens/v1"}', True, id="same-method"),
        pytest.param(TARGET_LINE + "}", False, id="bytes-from-an-older-bundler"),
        pytest.param(TARGET_LINE + ', "source_hash": "python-tokens/v9"}', False, id="other"),
    ],
)
def test_a_target_file_says_the_sources_digest_only_in_the_locks_terms(
    pinlab: Bundle, tmp_path: Path, line: str, compared: bool
) -> None:
    from bundler.compat.environments import TargetEnvironment

    (tmp_path / "target.txt").write_text(f"pinlab==1.0.0\n{line}\n")
    target = TargetEnvironment(tmp_path / "target.txt")
    component = pinlab.lock.components[0]
    installed = target.component("pinlab", None)
    assert target.sources_digest(installed, component) == ("ab" * 32 if compared else None)


def test_a_malformed_source_hash_in_a_target_file_is_bad_input(tmp_path: Path) -> None:
    from bundler.compat.environments import TargetEnvironment
    from bundler.errors import UsageError

    (tmp_path / "target.txt").write_text(TARGET_LINE + ', "source_hash": 7}\n')
    with pytest.raises(UsageError) as caught:
        TargetEnvironment(tmp_path / "target.txt")
    assert str(caught.value) == (
        f"{tmp_path / 'target.txt'}: line 1 is not a valid sources line: source_hash is 7"
    )


def test_a_file_the_tokenizer_refuses_is_pinned_by_its_bytes_and_named(tmp_path: Path) -> None:
    """The build notes it (``component_pins``): any edit to that file is then a change."""
    from bundler.compat.components import pin_sources

    (tmp_path / "good.py").write_text("x = 1\n")
    (tmp_path / "broken.py").write_text("x = (1,\n")
    pinned = pin_sources(
        {"pkg/good.py": tmp_path / "good.py", "pkg/broken.py": tmp_path / "broken.py"}
    )
    assert list(pinned.untokenizable) == ["pkg/broken.py"]
    assert pinned.untokenizable["pkg/broken.py"] == "line 2: EOF in multi-line statement"
    assert sorted(pinned.sources) == sorted(pinned.source_bytes) == ["pkg/broken.py", "pkg/good.py"]
