"""The checked-in JSON Schemas are generated from the models, and describe real files."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from bundler import Bundle
from bundler.lock.model import LOCK_FILENAME
from bundler.schema import SCHEMA_NAMES, checked_in, render

from .conftest import EXAMPLE_NAMES, EXAMPLES, ROOT


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_checked_in_schema_matches_the_models(name: str) -> None:
    on_disk = (ROOT / "schemas" / f"{name}.schema.json").read_text()
    assert on_disk == render(name), "schemas drifted: run `python -m bundler.schema` and commit"
    assert checked_in(name) == on_disk  # the installed copy is the same file


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_manifests_validate_against_the_schema(name: str) -> None:
    document = yaml.safe_load((EXAMPLES / name / "manifest.yaml").read_text())
    jsonschema.validate(document, json.loads(checked_in("manifest")))


def test_built_locks_validate_against_the_schema(built: dict[str, Bundle]) -> None:
    schema = json.loads(checked_in("lock"))
    for bundle in built.values():
        jsonschema.validate(json.loads((bundle.path / LOCK_FILENAME).read_text()), schema)


def test_schema_rejects_unknown_manifest_keys() -> None:
    document = yaml.safe_load((EXAMPLES / "sequential" / "manifest.yaml").read_text())
    document["vesion"] = "1.0.0"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, json.loads(checked_in("manifest")))


def test_the_layout_defaults_are_the_lock_models_defaults() -> None:
    """Readers fill in omitted artifacts from lock.layout without pydantic; they must agree."""
    from bundler.lock.layout import ARTIFACT_DEFAULTS
    from bundler.lock.model import Artifacts
    from bundler.lock.schema import Artifacts as ArtifactsSchema

    assert Artifacts().to_dict() == ArtifactsSchema().model_dump() == ARTIFACT_DEFAULTS
