"""A keras_hub tokenizer in a model: its tensorflow-text ops are judged, recorded and loaded.

A ``BertTokenizer`` with an in-memory vocabulary feeding an Embedding exports three ops of
tensorflow-text (``RegexSplitWithOffsets``, ``CaseFoldUTF8``,
``FastWordpieceTokenizeWithOffsets``). The build judges them (string compute in memory), records
the library in the lock, and the bundle verifies under every policy and loads with the build's
outputs on the Keras path and on the graph path. Where tensorflow-text is not installed (a fresh
interpreter over a copy of this environment without it), ``bundle verify`` and ``load_bundle``
name the package to install; a lock naming a module bundler does not know as an op library is
refused without importing it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import Bundle, IncompatibleBundleError, build_bundle, load_bundle, verify_bundle
from bundler.lock.model import LockedOpLibrary

from ..conftest import ROOT, cli_env
from ..hostile import edit_lock
from ..hostile_graphs import serve_only_the_graph

FACTORY = '''
"""A keras_hub BertTokenizer with an in-memory vocabulary, feeding an Embedding."""

import keras
import keras_hub

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "##es"]


def build(seed=3):
    keras.utils.set_random_seed(seed)
    text = keras.Input((), dtype="string", name="text")
    tokenizer = keras_hub.tokenizers.BertTokenizer(
        vocabulary=VOCABULARY, lowercase=True, sequence_length=6
    )
    embedded = keras.layers.Embedding(len(VOCABULARY), 4)(tokenizer(text))
    return keras.Model(text, keras.layers.GlobalAveragePooling1D()(embedded))
'''
MANIFEST = """\
apiVersion: bundler/v1
name: tokenizer-demo
version: 0.1.0
model:
  factory: tokenizer_demo:build
components:
  - module: keras_hub
    version: ">=0.21"
paths: [src]
"""
SENTENCES = np.array(["The quick brown fox", "foxes", "words it has never seen"])
OPS = ("CaseFoldUTF8", "FastWordpieceTokenizeWithOffsets", "RegexSplitWithOffsets")


@pytest.fixture(scope="module")
def tokenizer_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    work = tmp_path_factory.mktemp("tokenizer")
    (work / "src").mkdir()
    (work / "src" / "tokenizer_demo.py").write_text(FACTORY)
    (work / "manifest.yaml").write_text(MANIFEST)
    return build_bundle(work / "manifest.yaml", work / "bundle")


def _copy(bundle: Bundle, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(bundle.path, tmp_path / "bundle"))


def test_the_lock_records_the_op_library_the_graph_needs(tokenizer_bundle: Bundle) -> None:
    from importlib.metadata import version

    installed = version("tensorflow-text")
    assert tokenizer_bundle.lock.op_libraries == (
        LockedOpLibrary(
            module="tensorflow_text",
            distribution="tensorflow-text",
            version=installed,
            compatible=f">={installed} <3",
            ops=OPS,
        ),
    )


@pytest.mark.parametrize("policy", ["strict", "adapt", "fallback"])
def test_the_tokenizer_bundle_verifies_under_every_policy(
    tokenizer_bundle: Bundle, policy: Any
) -> None:
    report = verify_bundle(tokenizer_bundle.path, policy=policy)
    assert report.problems == ()
    assert report.plan is not None
    (check,) = [c for c in report.plan.checks if c.kind == "op_library"]
    assert (check.name, check.status) == ("tensorflow-text", "exact")


def test_the_tokenizer_bundle_loads_with_the_builds_outputs_on_both_paths(
    tokenizer_bundle: Bundle, tmp_path: Path
) -> None:
    expected = np.asarray(tokenizer_bundle.model(SENTENCES))
    keras_path = load_bundle(tokenizer_bundle.path, check_examples=True)
    assert keras_path.mode == "keras"
    np.testing.assert_allclose(keras_path.predict(SENTENCES), expected, rtol=1e-6)
    root = _copy(tokenizer_bundle, tmp_path)
    serve_only_the_graph(root)
    with pytest.warns(UserWarning, match="serving the SavedModel graph"):
        graph_path = load_bundle(root, policy="fallback", check_examples=True)
    assert graph_path.mode == "graph"
    np.testing.assert_allclose(graph_path.predict(SENTENCES), expected, rtol=1e-6)


def test_a_lock_that_does_not_name_the_library_has_its_ops_refused(
    tokenizer_bundle: Bundle, tmp_path: Path
) -> None:
    root = _copy(tokenizer_bundle, tmp_path)
    edit_lock(root, lambda lock: lock.update(op_libraries=[]))
    unsafe = [p.message for p in verify_bundle(root).problems if p.kind == "unsafe"]
    assert len(unsafe) == 3
    assert re.fullmatch(  # node names hold Keras's process-wide layer counters
        r"function '__inference_[^']+', node '[^']+/RegexSplitWithOffsets': "
        + re.escape(
            "op 'RegexSplitWithOffsets' is an op of tensorflow-text, which the lock does not name "
            "among the op libraries to load"
        ),
        unsafe[0],
    )


def test_a_lock_naming_an_unknown_op_library_is_refused_without_importing_it(
    tokenizer_bundle: Bundle, tmp_path: Path
) -> None:
    root = _copy(tokenizer_bundle, tmp_path)
    probe = tmp_path / "probe"
    probe.mkdir()
    marker = tmp_path / "imported"
    (probe / "op_library_probe.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    def name_the_probe(lock: dict[str, Any]) -> None:
        lock["op_libraries"][0].update(module="op_library_probe", distribution="op-library-probe")

    edit_lock(root, name_the_probe)
    sys.path.insert(0, str(probe))
    try:
        report = verify_bundle(root)
        with pytest.raises(IncompatibleBundleError) as caught:
            load_bundle(root, policy="fallback")
    finally:
        sys.path.remove(str(probe))
    why = "op-library-probe (missing): bundler does not know this op library: upgrade bundler"
    (incompatible,) = [p.message for p in report.problems if p.kind == "incompatible"]
    assert incompatible.splitlines()[0] == f"cannot be loaded under policy 'adapt': {why}"
    assert caught.value.message.splitlines()[0] == (
        f"cannot be loaded under policy 'fallback': {why}"
    )
    assert not marker.exists()


@pytest.fixture()
def without_tensorflow_text(tmp_path: Path) -> Iterator[list[str]]:
    """A command line for this interpreter over a copy of its site-packages (links) that lacks
    tensorflow-text: the module and its distribution metadata, as if never installed."""
    site = tmp_path / "site"
    site.mkdir()
    seen: set[str] = set()
    for folder in [entry for entry in sys.path if entry.endswith("site-packages")]:
        for entry in sorted(Path(folder).iterdir()):
            name = entry.name
            hidden = name == "tensorflow_text" or name.startswith("tensorflow_text-")
            if hidden or name in seen or name == "_base_main_venv.pth":
                continue  # (the .pth that adds the main environment's folder: linked here)
            seen.add(name)
            (site / name).symlink_to(entry)
    yield [sys.executable, "-S", "-c", f"import site; site.addsitedir({str(site)!r})\n"]


def _run(command: list[str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command[:-1], command[-1] + code],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_verify_and_load_name_the_package_where_tensorflow_text_is_missing(
    tokenizer_bundle: Bundle, without_tensorflow_text: list[str]
) -> None:
    import tensorflow as tf

    series = ".".join(tf.__version__.split(".")[:2])
    hint = f"pip install 'tensorflow-text=={series}.*'"
    path = str(tokenizer_bundle.path)
    probe = _run(without_tensorflow_text, "import tensorflow_text")
    assert probe.returncode == 1 and "No module named 'tensorflow_text'" in probe.stderr
    verify = _run(
        without_tensorflow_text,
        f"import sys, runpy; sys.argv = ['bundle', 'verify', {path!r}, '--json']\n"
        "runpy.run_module('bundler', run_name='__main__')",
    )
    assert verify.returncode == 1, verify.stderr
    (problem,) = json.loads(verify.stdout)["problems"]
    lines = problem["message"].splitlines()
    assert lines[0] == (
        "cannot be loaded under policy 'adapt': tensorflow-text (missing): not installed; the "
        f"model's ops need it ({', '.join(OPS)})"
    )
    assert lines[-1] == f"to load it: {hint}"
    load = _run(
        without_tensorflow_text,
        "import bundler\n"
        "try:\n"
        f"    bundler.load_bundle({path!r}, policy='fallback')\n"
        "except bundler.IncompatibleBundleError as error:\n"
        "    print(str(error).splitlines()[-1])\n",
    )
    assert load.stdout.splitlines() == [f"to load it: {hint}"], load.stderr


def test_the_graph_path_imports_the_library_the_lock_names_and_no_other(
    tokenizer_bundle: Bundle, tmp_path: Path
) -> None:
    """In a fresh interpreter where nothing else imports tensorflow_text (the lock's component
    is a module nobody has, so keras_hub is never imported and the graph is served), the graph
    path imports it, and nothing the lock does not name."""
    root = _copy(tokenizer_bundle, tmp_path)

    def component_nobody_has(lock: dict[str, Any]) -> None:
        lock["components"][0].update(module="tokenizer_layers_nobody_has", distribution=None)

    edit_lock(root, component_nobody_has)
    code = (
        "import sys, warnings, numpy as np, bundler\n"
        "warnings.simplefilter('ignore')\n"
        f"loaded = bundler.load_bundle({str(root)!r}, policy='fallback')\n"
        f"print(loaded.mode, loaded.predict(np.array({SENTENCES.tolist()!r})).shape)\n"
        "print(sorted(m for m in ('tensorflow_text', 'keras_hub') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.splitlines() == ["graph (3, 4)", "['tensorflow_text']"], result.stderr


def test_a_graph_served_with_unsafe_true_names_the_package_its_ops_need(
    tokenizer_bundle: Bundle, tmp_path: Path, without_tensorflow_text: list[str]
) -> None:
    """A lock that does not name the library (one written before locks named them): the scan
    refuses the ops, ``unsafe=True`` serves the graph anyway, and where tensorflow-text is
    missing TensorFlow's 'Op type not registered' comes with the package to install."""
    import tensorflow as tf

    root = _copy(tokenizer_bundle, tmp_path)

    def unnamed(lock: dict[str, Any]) -> None:
        lock.update(op_libraries=[])
        lock["components"][0].update(module="tokenizer_layers_nobody_has", distribution=None)

    edit_lock(root, unnamed)
    load = _run(
        without_tensorflow_text,
        "import warnings, bundler\n"
        "warnings.simplefilter('ignore')\n"
        "try:\n"
        f"    bundler.load_bundle({str(root)!r}, policy='fallback', unsafe=True)\n"
        "except bundler.LoadError as error:\n"
        "    print(error.message.rsplit('; ', 1)[-1])\n",
    )
    series = ".".join(tf.__version__.split(".")[:2])
    assert load.stdout.splitlines() == [
        f"the op is tensorflow-text's: pip install 'tensorflow-text=={series}.*'"
    ], load.stderr


@pytest.mark.parametrize(
    ("installed", "status", "reason", "hint"),
    [
        pytest.param(("2.21.0", "2.21.1"), "exact", "same version as pinned", None, id="as built"),
        pytest.param(
            ("2.21.0", "2.21.3"), "compatible", "inside >=2.21.1 <2.22.0", None, id="newer patch"
        ),
        pytest.param(
            ("2.22.0", "2.21.1"),
            "incompatible",
            "built for TensorFlow 2.21, not the 2.22.0 installed here",
            "pip install 'tensorflow-text==2.22.*'",
            id="another TensorFlow",
        ),
        pytest.param(
            ("2.21.0", "2.21.0"),
            "incompatible",
            "older than the build's 2.21.1",
            "pip install 'tensorflow-text==2.21.*'",
            id="older",
        ),
        pytest.param(
            ("2.21.0", None),
            "missing",
            f"not installed; the model's ops need it ({', '.join(OPS)})",
            "pip install 'tensorflow-text==2.21.*'",
            id="missing",
        ),
    ],
)
def test_a_target_needs_the_op_library_of_its_tensorflow_series(
    tokenizer_bundle: Bundle,
    tmp_path: Path,
    installed: tuple[str, str | None],
    status: str,
    reason: str,
    hint: str | None,
) -> None:
    """``bundle verify --env``: the library is compiled for one TensorFlow series, so the
    versions that fit follow the target's TensorFlow; the hint names that series."""
    root = _copy(tokenizer_bundle, tmp_path)

    def built_with(lock: dict[str, Any]) -> None:  # the versions the table is written against
        lock["environment"]["tensorflow"] = "2.21.0"
        lock["op_libraries"][0].update(version="2.21.1", compatible=">=2.21.1 <3")

    edit_lock(root, built_with)
    tensorflow, text = installed
    lines = [f"tensorflow=={tensorflow}", "keras==3.15.1", "keras-hub==0.32.0"]
    target = tmp_path / "target.txt"
    target.write_text("\n".join(lines + ([f"tensorflow-text=={text}"] if text else [])) + "\n")
    report = verify_bundle(root, env=target)
    assert report.plan is not None
    (check,) = [c for c in report.plan.checks if c.kind == "op_library"]
    assert (check.status, check.reason, check.hint) == (status, reason, hint)
