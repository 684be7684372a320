"""The JSON Schemas of the manifest and the lock, generated from the pydantic models.

The generated files are checked in under ``schemas/`` (installed as the data package
``bundler.schemas``); a test fails when they drift from the models. Regenerate with
``python -m bundler.schema``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_NAMES = ("manifest", "lock")
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def generate(name: str) -> dict[str, Any]:
    if name == "manifest":
        from bundler.manifest.schema import Manifest as model
    elif name == "lock":
        from bundler.lock.schema import Lock as model  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown schema {name!r}; choose one of {', '.join(SCHEMA_NAMES)}")
    return {"$schema": DIALECT, **model.model_json_schema(mode="validation")}


def render(name: str) -> str:
    return json.dumps(generate(name), indent=2, sort_keys=True) + "\n"


def checked_in(name: str) -> str:
    from importlib import resources

    return resources.files("bundler.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")


def write_all(folder: Path) -> list[Path]:
    written = []
    for name in SCHEMA_NAMES:
        path = folder / f"{name}.schema.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parent.parent / "schemas"
    )
    for path in write_all(target):
        print(path)
