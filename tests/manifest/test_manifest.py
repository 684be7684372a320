"""Reading manifests: every example validates, and every kind of bad manifest is refused clearly."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.errors import BundleError, ManifestError
from bundler.manifest.reader import manifest_from_document, parse_document, read_manifest

from ..conftest import EXAMPLE_NAMES, EXAMPLES, run_bundle

VALID = {
    "apiVersion": "bundler/v1",
    "name": "demo",
    "version": "1.0.0",
    "model": {"factory": "demo.model:build"},
}


def write(tmp_path: Path, text: str, name: str = "manifest.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_example_manifest_validates(name: str) -> None:
    source = read_manifest(EXAMPLES / name / "manifest.yaml")
    assert source.manifest.apiVersion == "bundler/v1"
    assert source.root == (EXAMPLES / name).resolve()


def test_json_and_yaml_manifests_read_the_same(tmp_path: Path) -> None:
    from_yaml = read_manifest(write(tmp_path, yaml.safe_dump(VALID)))
    from_json = read_manifest(write(tmp_path, json.dumps(VALID), "manifest.json"))
    assert from_yaml.manifest == from_json.manifest


def test_defaults_are_filled_in(tmp_path: Path) -> None:
    manifest = read_manifest(write(tmp_path, yaml.safe_dump(VALID))).manifest
    assert manifest.components == [] and manifest.paths == [] and manifest.metadata == {}
    assert manifest.model.args == {}


BAD = [
    # (description, document change, field named in the error, words in the message)
    ("unknown key, near miss", {"vesion": "1.0.0"}, "vesion", "did you mean 'version'"),
    (
        "unknown nested key",
        {"model": {"factory": "a:b", "arg": {}}},
        "model.arg",
        "did you mean 'args'",
    ),
    ("bad semver", {"version": "1.0"}, "version", "1.0"),
    (
        "bad component range",
        {"components": [{"module": "a.b", "version": ">>1.0.0"}]},
        "components[0].version",
        ">>1.0.0",
    ),
    (
        "unknown component key",
        {"components": [{"module": "a.b", "version": "1.0.0", "compatable": "^1.0.0"}]},
        "components[0].compatable",
        "did you mean 'compatible'",
    ),
    ("missing factory", {"model": {}}, "model.factory", "required"),
    (
        "factory without attribute",
        {"model": {"factory": "demo.model"}},
        "model.factory",
        "demo.model",
    ),
    ("unsafe name", {"name": "../../etc"}, "name", "../../etc"),
    ("upper-case name", {"name": "Demo"}, "name", "Demo"),
    ("absolute path", {"paths": ["/usr/lib"]}, "paths[0]", "absolute"),
    ("path escaping", {"paths": ["src/../../x"]}, "paths[0]", ".."),
    (
        "backslash path",
        {"model": {"factory": "a:b", "weights": "w\\x.h5"}},
        "model.weights",
        "backslash",
    ),
    (
        "duplicate component",
        {"components": [{"module": "a", "version": "1.0.0"}, {"module": "a", "version": "1.0.0"}]},
        "",
        "repeats 'a'",
    ),
    ("metadata not a mapping", {"metadata": [1, 2]}, "metadata", "dictionary"),
    (
        "negative tolerance",
        {"examples": [{"name": "e", "inputs": [[1.0]], "rtol": -1}]},
        "examples[0].rtol",
        "greater",
    ),
]


@pytest.mark.parametrize(("label", "change", "field", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_manifest_names_field_and_value(
    tmp_path: Path, label: str, change: dict[str, Any], field: str, words: str
) -> None:
    document = {**VALID, **change}
    path = write(tmp_path, yaml.safe_dump(document))
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    error = caught.value
    assert error.exit_code == 2
    assert error.path == str(path)
    assert field in (error.field or "")
    assert words in str(error)


BAD_TEXT = [
    (
        "python tag",
        "apiVersion: bundler/v1\nname: !!python/object/apply:os.system ['true']\n",
        "not allowed",
    ),
    ("python name tag", "x: !!python/name:os.system\n", "not allowed"),
    ("duplicate key", "apiVersion: bundler/v1\nname: a\nname: b\n", "duplicate key 'name'"),
    ("not a mapping", "- a\n- b\n", "not list"),
    ("empty", "", "empty document"),
    ("invalid yaml", "name: [unclosed\n", "invalid YAML at line"),
    ("newer apiVersion", "apiVersion: bundler/v9\nname: a\n", "upgrade bundler"),
    ("foreign apiVersion", "apiVersion: v1\nname: a\n", "unknown apiVersion"),
    ("no apiVersion", "name: a\n", "apiVersion"),
    ("too deep", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(("label", "text", "words"), BAD_TEXT, ids=[b[0] for b in BAD_TEXT])
def test_bad_manifest_text_is_refused(tmp_path: Path, label: str, text: str, words: str) -> None:
    with pytest.raises(ManifestError) as caught:
        read_manifest(write(tmp_path, text))
    assert words in str(caught.value)


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 9)]
    text = "apiVersion: bundler/v1\nmetadata:\n" + "\n".join("  " + line for line in lines) + "\n"
    with pytest.raises(ManifestError, match="aliases are expanded"):
        read_manifest(write(tmp_path, text))


def test_huge_manifest_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "apiVersion: bundler/v1\n# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ManifestError, match="larger than"):
        read_manifest(path)


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest file"):
        read_manifest(tmp_path / "nope.yaml")


def test_cli_bad_manifest_exits_2_names_field_and_creates_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump({**VALID, "vesion": "1.0.0"}))
    out = tmp_path / "out"
    result = run_bundle("build", str(path), "-o", str(out))
    assert result.returncode == 2, result.stderr
    assert "vesion" in result.stderr and "did you mean 'version'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.yaml"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=st.dictionaries(
        st.sampled_from([*VALID, "components", "paths", "examples", "metadata", "x"]),
        json_values,
        max_size=8,
    )
)
def test_any_document_gives_a_manifest_or_a_manifest_error(document: dict[str, Any]) -> None:
    with contextlib.suppress(ManifestError):
        manifest_from_document(document, "fuzz.yaml")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_gives_a_document_or_a_manifest_error(text: str) -> None:
    try:
        document = parse_document(text, Path("fuzz.yaml"))
        manifest_from_document(document, "fuzz.yaml")
    except BundleError:
        pass


# -- YAML merge keys ------------------------------------------------------------------------------

MERGED = """\
apiVersion: bundler/v1
name: demo
version: 1.0.0
model: {factory: "demo.model:build"}
components:
  - &layers {module: acme.layers, version: "1.2.0", compatible: ">=1.2.0 <2.0.0"}
  - {<<: *layers, module: acme.losses}
metadata:
  defaults: &defaults {optimizer: adam, epochs: 10, seed: 1}
  tuned: &tuned {epochs: 50, lr: 0.01}
  run:
    <<: [*tuned, *defaults]
    seed: 7
"""


def test_merge_keys_are_read_as_yaml_defines_them(tmp_path: Path) -> None:
    manifest = read_manifest(write(tmp_path, MERGED)).manifest
    assert [(c.module, c.version, c.compatible) for c in manifest.components] == [
        ("acme.layers", "1.2.0", ">=1.2.0 <2.0.0"),
        ("acme.losses", "1.2.0", ">=1.2.0 <2.0.0"),
    ]
    # own keys override merged ones; of two merged mappings, the first listed wins
    assert manifest.metadata["run"] == {"optimizer": "adam", "epochs": 50, "seed": 7, "lr": 0.01}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: &a {x: 1}\nb:\n  <<: *a\n  y: 1\n  y: 2\n", "duplicate key 'y'"),
        ("a: &a {x: 1}\nb:\n  <<: *a\n  <<: *a\n", "duplicate key '<<'"),
        ("a: &a [1, 2]\nb: {<<: *a}\n", "a merge key (<<) takes a mapping or a list of mappings"),
        ("a: &a {<<: *a}\n", "recursive"),
    ],
    ids=["own key twice", "merge key twice", "merging a list", "merging itself"],
)
def test_merge_keys_keep_duplicates_and_nonsense_refused(
    tmp_path: Path, text: str, words: str
) -> None:
    with pytest.raises(ManifestError, match=re.escape(words)):
        read_manifest(write(tmp_path, "apiVersion: bundler/v1\nmetadata:\n" + _indent(text)))


def _indent(text: str) -> str:
    return "".join("  " + line + "\n" for line in text.splitlines())


def test_merge_keys_cannot_build_an_alias_bomb(tmp_path: Path) -> None:
    """Twenty levels each merging the previous one ten times: 10**20 pairs if merged node by
    node; a merged mapping is copied by key, so it stays ten keys."""
    lines = ["m0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(10)) + "}"]
    lines += [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}]}}" for i in range(1, 21)]
    started = time.perf_counter()
    source = read_manifest(write(tmp_path, VALID_TEXT + "metadata:\n" + _indent("\n".join(lines))))
    assert time.perf_counter() - started < 5
    assert source.manifest.metadata["m20"] == {f"k{i}": i for i in range(10)}


VALID_TEXT = yaml.safe_dump(VALID)


# -- the first line a user reads: exact, in words, pointing at the fix ----------------------------

FIRST_LINES = [
    pytest.param(
        "name: Demo_Model\n",
        "name: must be a name of lowercase letters, digits, '.', '_' and '-', starting with a "
        "letter or digit, at most 128 characters (e.g. 'text-classifier') (got \"Demo_Model\")",
        id="name-pattern-in-words",
    ),
    pytest.param(
        "model: {factory: 'not a factory'}\n",
        "model.factory: must be 'module:attribute', the module's dotted name and the callable in "
        "it (e.g. 'text_classifier.model:build') (got \"not a factory\")",
        id="factory-pattern-in-words",
    ),
    pytest.param(
        "version: 1.0\n",
        'version: YAML read 1.0 as a number; write it in quotes, e.g. "1.0.0"',
        id="unquoted-version",
    ),
    pytest.param(
        "components: [{module: a.b, version: 2}]\n",
        'components[0].version: YAML read 2 as a number; write it in quotes, e.g. "2.0.0"',
        id="unquoted-component-version",
    ),
    pytest.param(
        "components: [{module: a.b, version: '=>1.0.0'}]\n",
        "components[0].version: '=>1.0.0' is not a version range: '=>1.0.0' is not a version "
        "comparator; did you mean '>=1.0.0'? (got \"=>1.0.0\")",
        id="reversed-operator",
    ),
    pytest.param(
        "model: {factroy: a.b:c}\n",
        "model.factroy: unknown key 'factroy'; did you mean 'factory'?",
        id="nested-typo-not-reported-as-missing",
    ),
    pytest.param(
        "components: [{module: keras-tcn, version: '3.5.5'}]\n",
        "components[0].module: 'keras-tcn' is the name of an installed distribution, whose "
        "module is 'tcn': write that under 'module'",
        id="distribution-name-as-module",
    ),
    pytest.param(
        "components: [{module: 'no such', version: '1.0.0'}]\n",
        "components[0].module: must be a dotted module name as Python imports it (e.g. "
        "'text_classifier.layers') (got \"no such\")",
        id="module-pattern-in-words",
    ),
]


@pytest.mark.parametrize(("change", "line"), FIRST_LINES)
def test_a_bad_manifest_is_told_in_words_with_the_fix(
    tmp_path: Path, change: str, line: str
) -> None:
    base = (
        "apiVersion: bundler/v1\nname: demo\nversion: 1.0.0\nmodel: {factory: demo.model:build}\n"
    )
    keys = {text.split(":", 1)[0] for text in change.splitlines()}
    kept = [text for text in base.splitlines() if text.split(":", 1)[0] not in keys]
    path = write(tmp_path, "\n".join(kept) + "\n" + change)
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    assert str(caught.value) == f"{path}: {line}"
