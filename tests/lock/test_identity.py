"""The digest names one bundle: every lock field that decides the load is inside it.

A digest pin (``bundle verify --digest``, ``load_bundle(digest=...)``) must refuse any bundle but
the one pinned. The digest covers the files table and every other field of the lock but an explicit
list of provenance fields (``layout.PROVENANCE``: where and when it was built), so a lock whose
ranges, pinned versions, objects, examples or metadata were edited, files untouched and the digest
re-sealed, is another bundle. The fields are read from the published schema, so a field someone
adds is held to this too: it is covered unless it is listed as provenance, and the test says which
field was forgotten.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from bundler import verify_bundle
from bundler.lock.layout import FORMAT, FORMAT_V1, PROVENANCE, files_digest, lock_digest
from bundler.lock.model import LOCK_FILENAME

from ..conftest import ROOT, CopyBundle, run_bundle
from ..hostile import edit_lock

SCHEMA = json.loads((ROOT / "schemas" / "lock.schema.json").read_text())
ANY_KEY = "*"  # a mapping's first key in the lock at hand (a file's path, a source's path)
FieldPath = tuple[Any, ...]


def _resolved(node: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its ``$ref`` followed and an optional (``anyOf`` with null) unwrapped."""
    while True:
        if "$ref" in node:
            node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
        elif "anyOf" in node:
            (node,) = [choice for choice in node["anyOf"] if choice.get("type") != "null"]
        else:
            return node


def _leaves(node: dict[str, Any], path: FieldPath = ()) -> Iterator[FieldPath]:
    """Every field of the lock the schema describes, down to values: lists by their first item,
    typed mappings (the files table, a component's sources) by any key; free-form JSON (the
    manifest, the metadata) is one field."""
    node = _resolved(node)
    if "properties" in node:
        for key, inner in node["properties"].items():
            yield from _leaves(inner, (*path, key))
    elif node.get("type") == "array" and "items" in node:
        yield from _leaves(node["items"], (*path, 0))
    elif isinstance(node.get("additionalProperties"), dict) and _resolved(
        node["additionalProperties"]
    ):
        yield from _leaves(node["additionalProperties"], (*path, ANY_KEY))
    else:
        yield path


FIELDS = list(_leaves(SCHEMA))


def _dotted(path: FieldPath) -> str:
    return ".".join(str(part) for part in path)


def _is_provenance(path: FieldPath) -> bool:
    dotted = _dotted(path)
    return any(dotted == field or dotted.startswith(field + ".") for field in PROVENANCE)


def _concrete(document: Any, path: FieldPath) -> FieldPath:
    """``path`` with ``*`` replaced by the first key of that mapping in ``document``."""
    found: list[Any] = []
    node = document
    for part in path:
        if part == ANY_KEY:
            part = next(iter(node)) if isinstance(node, dict) and node else "edited"
        found.append(part)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return tuple(found)


def _has(node: Any, part: Any) -> bool:
    return part in node if isinstance(node, dict) else 0 <= part < len(node)


def _get(document: Any, path: FieldPath) -> Any:
    for part in path:
        if not (isinstance(document, (dict, list)) and _has(document, part)):
            return None
        document = document[part]
    return document


def _put(document: Any, path: FieldPath, value: Any) -> None:
    for part in path[:-1]:
        document = document.setdefault(part, {}) if isinstance(document, dict) else document[part]
    document[path[-1]] = value


def _edits(value: Any) -> Iterator[Any]:
    """Other values for a field, the likeliest to stay valid first."""
    if isinstance(value, bool):
        yield not value
    elif isinstance(value, (int, float)):
        yield value + 1
    elif isinstance(value, str):
        if value and all(c in "0123456789abcdef" for c in value):
            yield value[:-1] + ("0" if value[-1] != "0" else "1")  # another sha256
        yield value + "-edited"  # versions become pre-releases, ranges narrower, names other
        yield value + "_edited"  # module names
        yield value + " <99.0.0"  # ranges
        yield None  # an optional field's other meaning (a source_hash absent: bytes, as before)
    elif isinstance(value, list):
        yield [*value, *value[:1]] if value else ["edited"]
    elif isinstance(value, dict):
        yield {**value, "edited": True}
    else:  # absent or null: a value of some kind
        yield from ("edited", True, 1, [], {})


def test_the_fields_come_from_the_schema() -> None:
    """The walk finds the lock's fields (so a field added to the schema is found too)."""
    dotted = {_dotted(path) for path in FIELDS}
    assert {"name", "version", "components.0.compatible", "files.*.sha256", "metadata"} <= dotted
    assert {"manifest", "examples.0.atol", "environment.keras", "created"} <= dotted


def test_provenance_names_only_fields_of_the_lock() -> None:
    dotted = {_dotted(path) for path in FIELDS}
    for field in PROVENANCE:  # a field, or one holding fields
        assert any(d == field or d.startswith(field + ".") for d in dotted), field


def test_provenance_is_when_and_where_it_was_built() -> None:
    """Listing a field here takes it out of every pin: a deliberate choice, made here. The plan
    reads environment.keras and .tensorflow (the default framework windows), so they stay in."""
    assert PROVENANCE == (
        "created",
        "environment.bundler",
        "environment.numpy",
        "environment.platform",
        "environment.python",
        "rehearsal",
    )


@pytest.fixture(scope="module")
def document(built: dict[str, Any]) -> dict[str, Any]:
    """The lock of the custom_layer example (components, objects, sources, examples), with an op
    library its graph would need, so that every field of the schema has a value to edit."""
    lock: dict[str, Any] = json.loads((built["custom_layer"].path / LOCK_FILENAME).read_text())
    _with_an_op_library(lock)
    return lock


def _with_an_op_library(lock: dict[str, Any]) -> None:
    """An op_libraries entry as a model holding a keras_hub tokenizer records one."""
    lock["op_libraries"] = lock.get("op_libraries") or [
        {
            "module": "tensorflow_text",
            "distribution": "tensorflow-text",
            "version": "2.21.0",
            "compatible": ">=2.21.0 <3",
            "ops": ["CaseFoldUTF8"],
        }
    ]


@pytest.mark.parametrize("field", FIELDS, ids=_dotted)
def test_every_lock_field_is_covered_by_the_digest_or_named_provenance(
    document: dict[str, Any], field: FieldPath
) -> None:
    path = _concrete(document, field)
    if path == ("digest",):
        return  # the digest is not over itself
    edited = copy.deepcopy(document)
    _put(edited, path, next(_edits(_get(document, path))))
    changed = lock_digest(edited) != lock_digest(document)
    assert changed != _is_provenance(field), (
        f"lock field {_dotted(field)!r} is "
        + ("listed in PROVENANCE but covered" if changed else "neither covered by the digest nor")
        + " listed as provenance (bundler.lock.layout.PROVENANCE)"
    )


LOAD_FIELDS = [
    field
    for field in FIELDS
    if field not in (("digest",), ("format",))  # the format: its own test, below
    and not _is_provenance(field)
    and "shards" not in field  # only files over 128 MiB have them: covered above
]


@pytest.mark.parametrize("field", LOAD_FIELDS, ids=_dotted)
def test_a_pin_refuses_a_lock_edited_in_any_field_with_its_files_untouched(
    copy_bundle: CopyBundle, field: FieldPath
) -> None:
    """An attacker edits one field, keeps every file, and re-seals the digest: the pin refuses."""
    root = copy_bundle("custom_layer")
    edit_lock(root, _with_an_op_library)  # a value to edit there too
    pin = verify_bundle(root).digest
    original = (root / LOCK_FILENAME).read_text()
    path = _concrete(json.loads(original), field)
    for value in _edits(_get(json.loads(original), path)):
        (root / LOCK_FILENAME).write_text(original)
        edit_lock(root, functools.partial(_put, path=path, value=value))
        report = verify_bundle(root, digest=pin)
        if report.lock is not None:  # a value the lock's schema accepts
            break
    else:
        pytest.fail(f"no edit of {_dotted(field)} makes a valid lock; teach _edits one")
    assert "pinned" in [problem.kind for problem in report.problems], report.problems
    assert report.digest != pin


def test_the_cli_refuses_a_widened_range_under_a_pin(copy_bundle: CopyBundle) -> None:
    """The story the digest used to miss: `compatible` widened to let a broken release load."""
    root = copy_bundle("custom_layer")
    pin = verify_bundle(root).digest
    edit_lock(root, lambda lock: lock["components"][0].update(compatible=">=0.0.1"))
    found = verify_bundle(root).digest
    result = run_bundle("verify", str(root), "--digest", str(pin))
    assert result.returncode == 1, result.stdout + result.stderr
    line = f"bundle.lock.json: this bundle is {found}, not the pinned {pin}"
    assert f"  x {line}: refusing another bundle" in result.stdout.splitlines()


@pytest.mark.parametrize("field", PROVENANCE)
def test_provenance_can_change_under_a_pin(copy_bundle: CopyBundle, field: str) -> None:
    """Where and when it was built is not what it is: a pin still passes."""
    root = copy_bundle("custom_layer")
    pin = verify_bundle(root).digest
    path = tuple(field.split("."))
    edit_lock(root, lambda lock: _put(lock, path, _elsewhere(_get(lock, path))))
    report = verify_bundle(root, digest=pin)
    assert report.ok, report.problems


def _elsewhere(value: Any) -> Any:
    """Another value of the same type: what another build of the same bundle might record."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, dict):
        return {key: _elsewhere(inner) for key, inner in value.items()}
    return f"{value}-elsewhere"


def test_a_lock_relabelled_v1_is_another_bundle(copy_bundle: CopyBundle) -> None:
    """Calling a v2 lock v1 would make its digest cover the files only; it is then another
    bundle's digest, never the pinned one, whatever else was edited."""
    root = copy_bundle("custom_layer")
    pin = verify_bundle(root).digest
    lock = json.loads((root / LOCK_FILENAME).read_text())
    assert lock["format"] == FORMAT
    lock.update(format=FORMAT_V1)
    lock["components"][0]["compatible"] = ">=0.0.1"
    lock["digest"] = files_digest(lock["files"])
    (root / LOCK_FILENAME).write_text(json.dumps(lock))
    report = verify_bundle(root, digest=pin)
    assert [problem.kind for problem in report.problems] == ["pinned"]
    assert report.digest == files_digest(lock["files"]) != pin


def test_the_digest_of_a_built_lock_is_over_everything_but_provenance(
    built: dict[str, Any],
) -> None:
    document = json.loads((built["custom_layer"].path / LOCK_FILENAME).read_text())
    assert document["format"] == FORMAT
    assert document["digest"] == lock_digest(document) != files_digest(document["files"])


def test_a_field_left_out_is_another_document_than_one_written_empty(
    document: dict[str, Any],
) -> None:
    """The digest is over the document as written: a field left out is not a field set to its
    default (both load alike, and a pin names the document it was taken from)."""
    without = {key: value for key, value in document.items() if key != "metadata"}
    assert lock_digest(without) != lock_digest({**without, "metadata": {}})
