"""The lock's value object: read once, the same for every reader, and written back byte for byte."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from bundler import verify_bundle
from bundler.lock import model as value
from bundler.lock import schema
from bundler.lock.model import LOCK_FILENAME, Lock, canonical_json, lock_digest
from bundler.verify.lock_reader import read_lock

from ..conftest import EXAMPLE_NAMES
from ..hostile import edit_lock

PAIRS = [
    (value.ShardTable, schema.ShardTable),
    (value.FileEntry, schema.FileEntry),
    (value.LockedComponent, schema.LockedComponent),
    (value.BuildEnvironment, schema.BuildEnvironment),
    (value.Artifacts, schema.Artifacts),
    (value.LockedExample, schema.LockedExample),
    (value.Lock, schema.Lock),
]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_example_lock_round_trips_byte_for_byte(built: dict[str, Any], name: str) -> None:
    raw = (built[name].path / LOCK_FILENAME).read_bytes()
    document = json.loads(raw)
    lock = Lock.from_dict(document)
    assert canonical_json(lock.to_dict()) == canonical_json(document)
    assert lock.to_json() == raw  # what the build wrote is what the object writes
    assert lock_digest(document) == lock.digest == built[name].lock.digest
    assert lock == built[name].lock  # the build returns the object every reader builds


def test_a_sharded_entry_round_trips_and_an_unsharded_one_has_no_shards_key() -> None:
    shards = {"sha256": ["b" * 64, "c" * 64], "size": 1 << 20}
    sharded: dict[str, Any] = {"sha256": "a" * 64, "shards": shards, "size": (1 << 20) + 1}
    plain: dict[str, Any] = {"sha256": "d" * 64, "size": 3}
    table = {"big": sharded, "small": plain}
    entries = {path: value.FileEntry.from_dict(entry) for path, entry in table.items()}
    assert entries["big"].shards == value.ShardTable(size=1 << 20, sha256=("b" * 64, "c" * 64))
    assert {path: entry.to_dict() for path, entry in entries.items()} == table
    assert "shards" not in entries["small"].to_dict()


@pytest.mark.parametrize(("record", "model"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_the_value_object_and_the_schema_models_name_the_same_fields(
    record: type, model: Any
) -> None:
    """The published schema comes from the pydantic models; readers get the dataclasses."""
    assert {f.name for f in dataclasses.fields(record)} == set(model.model_fields)
    for field in dataclasses.fields(record):
        spec = model.model_fields[field.name]
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            assert spec.is_required(), field.name
            continue
        default = (
            field.default
            if field.default_factory is dataclasses.MISSING
            else field.default_factory()
        )
        assert json.dumps(default) == json.dumps(spec.get_default(call_default_factory=True))


def test_the_value_objects_are_frozen_and_keyword_only(built: dict[str, Any]) -> None:
    lock = built["custom_layer"].lock
    with pytest.raises(dataclasses.FrozenInstanceError):
        lock.name = "other"
    with pytest.raises(TypeError):
        value.LockedExample("a", "b", "c", 0.1, 0.1)  # type: ignore[call-arg]
    assert not hasattr(lock, "__dict__")  # slots


def test_omitted_fields_take_the_schema_models_defaults(copy_bundle: Any) -> None:
    root = copy_bundle("custom_layer")

    def strip(document: dict[str, Any]) -> None:
        document["artifacts"] = {}
        for component in document["components"]:
            del component["objects"], component["distribution"]

    edit_lock(root, strip)
    lock, problems = read_lock(root)
    assert problems == [] and lock is not None
    assert lock.artifacts == value.Artifacts(keras="model.keras", saved_model="saved_model")
    assert dataclasses.asdict(lock.artifacts) == schema.Artifacts().model_dump()
    assert all(c.objects == () and c.distribution is None for c in lock.components)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        pytest.param(
            lambda d: d["components"][0].update(module="os\n"),
            "components[0].module: 'os\\n' does not match",
            id="module name ending in a newline",
        ),
        pytest.param(
            lambda d: d["components"][0].update(source_sha256="0" * 64 + "\n"),
            "components[0].source_sha256:",
            id="sha256 ending in a newline",
        ),
        pytest.param(
            lambda d: d["files"]["model.keras"].update(sha256="0" * 64 + "\n"),
            "files.model.keras.sha256:",
            id="file digest ending in a newline",
        ),
    ],
)
def test_a_pattern_is_matched_to_the_end_of_the_text(
    copy_bundle: Any, change: Any, where: str
) -> None:
    """Python's ``$`` also matches before a final newline; JSON Schema's (and pydantic's) does
    not. The one validator of the lock follows the schema, as load's second one used to."""
    root = copy_bundle("custom_layer")
    edit_lock(root, change)
    report = verify_bundle(root)
    assert [(p.kind, p.path) for p in report.problems] == [("schema", LOCK_FILENAME)]
    assert report.problems[0].message.startswith(where), report.problems[0].message
    with pytest.raises(ValueError, match="should match pattern"):
        schema.Lock.model_validate(json.loads((root / LOCK_FILENAME).read_text()))
