"""``bundle.lock.json``: the bundle's self-description, as one value object every reader shares.

Format ``bundler.bundle/v2``::

    {
      "format": "bundler.bundle/v2",
      "name": ..., "version": ..., "description": ...,
      "digest": "sha256:<hex>",            # of the whole lock but itself and provenance (layout)
      "manifest": {...},                   # the normalized manifest the bundle was built from
      "components": [{"module", "version" (pinned), "requirement", "compatible",
                      "distribution", "objects" (used), "defined_in" (where each object is
                      defined: "module:qualname"), "sources", "source_sha256",
                      "source_hash", "source_bytes"}],
      "environment": {"python", "tensorflow", "keras", "numpy", "bundler", "platform"},
      "artifacts": {"keras": "model.keras", "saved_model": "saved_model", "examples": ...},
      "files": {"<posix path>": {"size": int, "sha256": "<hex>", "shards"?: {...}}},
      "metadata": {...}, "examples": [...], "created": "<RFC 3339 UTC>",
      "rehearsal": {"rehearsed": bool, "examples": int}   # provenance; absent in older locks
      "op_libraries": [{"module", "distribution", "version" (built with), "compatible",
                        "ops" (used by the graph)}]   # absent in older locks: none
    }

Canonical JSON is UTF-8, keys sorted, no insignificant white space, no NaN: the same document
always gives the same bytes, so the digest identifies the bundle whatever wrote the lock
(``bundler.lock.layout`` says what it covers). A ``bundler.bundle/v1`` lock (no field differs in
shape) is read through the upgrade chain and keeps its own ``format`` here, which says what its
digest covers: ``digest_covers`` is ``"files"`` for it, ``"lock"`` for the current format.

A lock is checked once, where it is read (``bundler.verify.lock_reader.read_lock``: the JSON Schema
in ``schemas/lock.schema.json``, safe paths, parseable versions, the digest), and then built with
:meth:`Lock.from_dict`, which trusts the document it is given and converts nothing: build, load,
verify, inspect, diff and push all read the same frozen records, by attribute. ``to_dict`` gives
back the document, so ``canonical_json(Lock.from_dict(d).to_dict()) == canonical_json(d)`` for every
lock as bundler writes it (every field present). The schema itself is generated from the pydantic
models in ``bundler.lock.schema``; this module imports neither pydantic nor jsonschema, so ``bundle
verify`` stays fast.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bundler.lock.layout import (
    ARTIFACT_DEFAULTS,
    DIGEST_PATTERN,
    FORMAT,
    FORMAT_V1,
    LOCK_FILENAME,
    LOCK_MAX_BYTES,
    LOCK_UPGRADES,
    MODULE_MAX_LENGTH,
    MODULE_PATTERN,
    SHA256_PATTERN,
    SIGNATURE_FILENAME,
    canonical_json,
    digest_covers,
    files_digest,
    lock_digest,
)

__all__ = [  # the layout's names are re-exported: readers of the lock find them here too
    "ARTIFACT_DEFAULTS",
    "DIGEST_PATTERN",
    "FORMAT",
    "FORMAT_V1",
    "LOCK_FILENAME",
    "LOCK_MAX_BYTES",
    "LOCK_UPGRADES",
    "MODULE_MAX_LENGTH",
    "MODULE_PATTERN",
    "SHA256_PATTERN",
    "SIGNATURE_FILENAME",
    "Artifacts",
    "BuildEnvironment",
    "FileEntry",
    "Lock",
    "LockedComponent",
    "LockedExample",
    "LockedOpLibrary",
    "Rehearsal",
    "ShardTable",
    "canonical_json",
    "digest_covers",
    "files_digest",
    "lock_digest",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardTable:
    """The sha256 of each ``size``-byte slice of a large file in order; the last may be shorter."""

    size: int
    sha256: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardTable:
        return cls(size=d["size"], sha256=tuple(d["sha256"]))

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": list(self.sha256), "size": self.size}


@dataclass(frozen=True, kw_only=True, slots=True)
class FileEntry:
    """One row of the files table; ``shards`` only for large files (checked shard by shard)."""

    size: int
    sha256: str
    shards: ShardTable | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileEntry:
        shards = d.get("shards")
        return cls(
            size=d["size"],
            sha256=d["sha256"],
            shards=None if shards is None else ShardTable.from_dict(shards),
        )

    def to_dict(self) -> dict[str, Any]:
        if self.shards is None:  # only large files have shards: the key is left out
            return {"sha256": self.sha256, "size": self.size}
        return {"sha256": self.sha256, "shards": self.shards.to_dict(), "size": self.size}


@dataclass(frozen=True, kw_only=True, slots=True)
class LockedComponent:
    """A component as the build found it: the pinned version, the ranges, the code it used."""

    module: str
    version: str  # installed at build time: the pinned version
    requirement: str  # the manifest's requirement the pinned version met
    compatible: str  # the versions that may load the bundle
    distribution: str | None = None
    objects: tuple[str, ...] = ()  # registered names of the objects the model uses
    source_sha256: str  # over ``sources``: the identity of the code the model uses
    sources: Mapping[str, str] = field(default_factory=dict)  # source path -> digest
    # how ``sources`` were hashed (bundler.compat.source_hash); None: the sha256 of the bytes (older
    # locks)
    source_hash: str | None = None
    source_bytes: Mapping[str, str] = field(default_factory=dict)  # path -> sha256 of its bytes
    # registered name -> "module:qualname" of the object, the module load imports to find it;
    # None in locks written before bundler recorded it (load then finds objects by registration)
    defined_in: Mapping[str, str] | None = None

    @property
    def defining_modules(self) -> tuple[str, ...]:
        """The modules load imports to find this component's objects, sorted, once each."""
        if self.defined_in is None:
            return ()
        return tuple(sorted({ref.split(":", 1)[0] for ref in self.defined_in.values()}))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LockedComponent:
        return cls(
            module=d["module"],
            version=d["version"],
            requirement=d["requirement"],
            compatible=d["compatible"],
            distribution=d.get("distribution"),
            objects=tuple(d.get("objects", ())),
            source_sha256=d["source_sha256"],
            sources=dict(d.get("sources", {})),
            source_hash=d.get("source_hash"),
            source_bytes=dict(d.get("source_bytes", {})),
            defined_in=None if d.get("defined_in") is None else dict(d["defined_in"]),
        )

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "compatible": self.compatible,
            "distribution": self.distribution,
            "module": self.module,
            "objects": list(self.objects),
            "requirement": self.requirement,
            "source_sha256": self.source_sha256,
            "sources": dict(self.sources),
            "version": self.version,
        }
        if self.source_hash is not None:  # a lock from before source_hash keeps its keys
            document["source_bytes"] = dict(self.source_bytes)
            document["source_hash"] = self.source_hash
        if self.defined_in is not None:  # an older lock's document stays as it was written
            document["defined_in"] = dict(self.defined_in)
        return document


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildEnvironment:
    """The versions the bundle was built with.

    ``bundler.compat.environments`` holds where a load runs.
    """

    bundler: str
    keras: str
    numpy: str
    platform: str
    python: str
    tensorflow: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BuildEnvironment:
        return cls(
            bundler=d["bundler"],
            keras=d["keras"],
            numpy=d["numpy"],
            platform=d["platform"],
            python=d["python"],
            tensorflow=d["tensorflow"],
        )

    def to_dict(self) -> dict[str, str]:
        return {
            "bundler": self.bundler,
            "keras": self.keras,
            "numpy": self.numpy,
            "platform": self.platform,
            "python": self.python,
            "tensorflow": self.tensorflow,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Artifacts:
    """Where the bundle's parts lie, relative to its folder."""

    keras: str = "model.keras"
    saved_model: str = "saved_model"
    examples: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Artifacts:
        given = {**ARTIFACT_DEFAULTS, **d}
        return cls(
            keras=given["keras"], saved_model=given["saved_model"], examples=given["examples"]
        )

    def to_dict(self) -> dict[str, str | None]:
        return {"examples": self.examples, "keras": self.keras, "saved_model": self.saved_model}

    def paths(self) -> dict[str, str]:
        """Every path given, by its key: what must stay inside the bundle."""
        return {key: value for key, value in self.to_dict().items() if value is not None}


@dataclass(frozen=True, kw_only=True, slots=True)
class LockedExample:
    """A golden example: the inputs, the outputs the build saw, and the tolerance to replay them."""

    name: str
    inputs: str
    outputs: str
    rtol: float
    atol: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LockedExample:
        return cls(
            name=d["name"], inputs=d["inputs"], outputs=d["outputs"], rtol=d["rtol"], atol=d["atol"]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "atol": self.atol,
            "inputs": self.inputs,
            "name": self.name,
            "outputs": self.outputs,
            "rtol": self.rtol,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Rehearsal:
    """Provenance: whether a fresh interpreter loaded the bundle before the build put it in place
    (``bundler.build.rehearsal.run``), and how many golden examples it replayed. Outside the
    digest."""

    rehearsed: bool
    examples: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rehearsal:
        return cls(rehearsed=d["rehearsed"], examples=d.get("examples", 0))

    def to_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "rehearsed": self.rehearsed}


@dataclass(frozen=True, kw_only=True, slots=True)
class LockedOpLibrary:
    """A library of TensorFlow ops the SavedModel graph needs (``bundler.compat.op_libraries``): the
    module the graph path imports, the distribution to install, the version the bundle was built
    with, the versions that may load it, and the ops of it the graph uses."""

    module: str
    distribution: str
    version: str
    compatible: str
    ops: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LockedOpLibrary:
        return cls(
            module=d["module"],
            distribution=d["distribution"],
            version=d["version"],
            compatible=d["compatible"],
            ops=tuple(d["ops"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "compatible": self.compatible,
            "distribution": self.distribution,
            "module": self.module,
            "ops": list(self.ops),
            "version": self.version,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Lock:
    """The contents of ``bundle.lock.json``: built from a validated document, never edited."""

    format: str
    name: str
    version: str
    description: str | None = None
    digest: str
    manifest: Mapping[str, Any]  # the normalized manifest, as JSON
    components: tuple[LockedComponent, ...]
    environment: BuildEnvironment
    artifacts: Artifacts
    files: Mapping[str, FileEntry]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    examples: tuple[LockedExample, ...] = ()
    created: str  # UTC time of the build, RFC 3339; honours SOURCE_DATE_EPOCH
    rehearsal: Rehearsal | None = None  # None: built before builds rehearsed the load
    op_libraries: tuple[LockedOpLibrary, ...] = ()  # older locks have none

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lock:
        """The lock of a document already validated (``lock_reader.read_lock``, or the build's)."""
        return cls(
            format=d["format"],
            name=d["name"],
            version=d["version"],
            description=d.get("description"),
            digest=d["digest"],
            manifest=d["manifest"],
            components=tuple(LockedComponent.from_dict(c) for c in d["components"]),
            environment=BuildEnvironment.from_dict(d["environment"]),
            artifacts=Artifacts.from_dict(d["artifacts"]),
            files={path: FileEntry.from_dict(entry) for path, entry in d["files"].items()},
            metadata=d.get("metadata", {}),
            examples=tuple(LockedExample.from_dict(e) for e in d.get("examples", ())),
            created=d["created"],
            rehearsal=None if d.get("rehearsal") is None else Rehearsal.from_dict(d["rehearsal"]),
            op_libraries=tuple(LockedOpLibrary.from_dict(o) for o in d.get("op_libraries", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        provenance = {} if self.rehearsal is None else {"rehearsal": self.rehearsal.to_dict()}
        return {
            **provenance,  # left out of older locks, which do not say
            "artifacts": self.artifacts.to_dict(),
            "components": [component.to_dict() for component in self.components],
            "created": self.created,
            "description": self.description,
            "digest": self.digest,
            "environment": self.environment.to_dict(),
            "examples": [example.to_dict() for example in self.examples],
            "files": self.files_table(),
            "format": self.format,
            "manifest": copy.deepcopy(dict(self.manifest)),  # copies the caller may change
            "metadata": copy.deepcopy(dict(self.metadata)),
            "name": self.name,
            "op_libraries": [library.to_dict() for library in self.op_libraries],
            "version": self.version,
        }

    def files_table(self) -> dict[str, dict[str, Any]]:
        """The files table as JSON."""
        return {path: entry.to_dict() for path, entry in self.files.items()}

    @property
    def digest_covers(self) -> str:
        """What the digest names: ``"lock"`` (every file and every field but provenance), or
        ``"files"`` for a lock written as ``bundler.bundle/v1`` (the files table alone)."""
        return digest_covers(self.format)

    @property
    def total_size(self) -> int:
        """The bytes of every file in the table."""
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> bytes:
        """The lock file's bytes: readable (indented, sorted), ending with a newline."""
        text = json.dumps(
            self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False
        )
        return (text + "\n").encode("utf-8")
