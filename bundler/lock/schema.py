"""The pydantic models of ``bundle.lock.json``: the source of the published ``lock.schema.json``.

``python -m bundler.schema`` generates ``schemas/lock.schema.json`` from :class:`Lock` here, and the
build validates the lock it writes against these models. Every reader reads a lock through the value
object of ``bundler.lock.model`` instead, after the JSON Schema has checked the document, so that
``bundle verify`` never imports pydantic. The two describe the same records under the same names; a
test keeps their fields in step.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from bundler.lock.layout import (
    ARTIFACT_DEFAULTS,
    DIGEST_PATTERN,
    MODULE_MAX_LENGTH,
    MODULE_PATTERN,
    OBJECT_REF_PATTERN,
    SHA256_PATTERN,
)
from bundler.lock.paths import unsafe_path_reason


def _bundle_path(value: str) -> str:
    reason = unsafe_path_reason(value)
    if reason:
        raise ValueError(f"path {value!r} {reason}")
    return value


BundlePath = Annotated[str, AfterValidator(_bundle_path)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShardTable(_Frozen):
    """The sha256 of each ``size``-byte slice of a large file in order; the last may be shorter."""

    size: int = Field(ge=1 << 20, description="Bytes per shard.")
    sha256: list[Annotated[str, Field(pattern=SHA256_PATTERN)]] = Field(min_length=2)


class FileEntry(_Frozen):
    size: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)
    shards: ShardTable | None = Field(
        default=None,
        description="For files over 128 MiB: shard digests, checked in parallel by verify.",
    )


class LockedComponent(_Frozen):
    module: str = Field(
        pattern=MODULE_PATTERN,
        max_length=MODULE_MAX_LENGTH,
        description="Importable dotted module name.",
    )
    version: str = Field(description="The version installed at build time (pinned).")
    requirement: str = Field(description="The manifest's requirement the pinned version met.")
    compatible: str = Field(description="Versions that may load the bundle.")
    distribution: str | None = Field(
        default=None, description="The installed distribution providing the module, if any."
    )
    objects: list[str] = Field(
        default_factory=list,
        description="The registered names of the component's objects that the model uses.",
    )
    source_sha256: str = Field(
        pattern=SHA256_PATTERN,
        description="sha256 over the sources table: the identity of the code the model uses.",
    )
    sources: dict[str, Annotated[str, Field(pattern=SHA256_PATTERN)]] = Field(
        default_factory=dict,
        description="The digest of each source file of the code the model runs that the "
        "component holds (the classes of the model's object graph, their base classes inside the "
        "component, the functions it references), by its path below the sys.path entry of the "
        "package; hashed as source_hash says.",
    )
    source_hash: Literal["python-tokens/v1"] | None = Field(
        default=None,
        description="How sources were hashed: 'python-tokens/v1', the sha256 of the file's Python "
        "tokens without comments and layout (comment and white-space edits do not change it). "
        "Absent (older locks): the sha256 of each file's bytes.",
    )
    source_bytes: dict[str, Annotated[str, Field(pattern=SHA256_PATTERN)]] = Field(
        default_factory=dict,
        description="The sha256 of the bytes of each file in sources, as built: a file with "
        "the same bytes has the same code, and needs no tokenizing to be checked.",
    )
    defined_in: (
        dict[str, Annotated[str, Field(pattern=OBJECT_REF_PATTERN, max_length=MODULE_MAX_LENGTH)]]
        | None
    ) = Field(
        default=None,
        description="Where each used object is defined, by its registered name: "
        "'module:qualname'. load_bundle imports exactly these modules and hands Keras the objects; "
        "verify checks the modules are installed. Absent in locks of older bundlers.",
    )


class BuildEnvironment(_Frozen):
    """The versions the bundle was built with."""

    python: str
    tensorflow: str
    keras: str
    numpy: str
    bundler: str
    platform: str


class Artifacts(_Frozen):
    keras: BundlePath = ARTIFACT_DEFAULTS["keras"]  # type: ignore[assignment]
    saved_model: BundlePath = ARTIFACT_DEFAULTS["saved_model"]  # type: ignore[assignment]
    examples: BundlePath | None = ARTIFACT_DEFAULTS["examples"]


class LockedExample(_Frozen):
    name: str
    inputs: BundlePath
    outputs: BundlePath
    rtol: float = Field(ge=0)
    atol: float = Field(ge=0)


class Rehearsal(_Frozen):
    """Provenance: whether a fresh interpreter loaded the bundle before the build put it in place.

    Outside the digest (it says how the bundle was made, not what loads), and without timings, so
    that a rebuild under ``SOURCE_DATE_EPOCH`` writes the same lock.
    """

    rehearsed: bool = Field(
        description="True: the build loaded the bundle in a fresh interpreter that saw only the "
        "installed packages and the declared components, and would have refused it otherwise. "
        "False: built with --no-rehearse (rehearse=False)."
    )
    examples: int = Field(ge=0, description="The golden examples that load replayed.")


class LockedOpLibrary(_Frozen):
    """A library of TensorFlow ops the SavedModel graph needs, imported before it is served."""

    module: str = Field(
        pattern=MODULE_PATTERN,
        max_length=MODULE_MAX_LENGTH,
        description="The module the graph path imports to register the ops (tensorflow_text).",
    )
    distribution: str = Field(description="The distribution to install (tensorflow-text).")
    version: str = Field(description="The version installed at build time.")
    compatible: str = Field(description="Versions that may load the bundle.")
    ops: list[str] = Field(description="The ops of the library the graph uses.")


class Lock(_Frozen):
    """The contents of ``bundle.lock.json``."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="bundler bundle lock",
        json_schema_extra={"$id": "https://bundler.dev/schemas/lock.schema.json"},
    )

    format: Literal["bundler.bundle/v2"]
    name: str
    version: str
    description: str | None = None
    digest: str = Field(
        pattern=DIGEST_PATTERN,
        description="sha256 of the canonical JSON of this document without 'digest' and the "
        "provenance fields (created, environment.bundler, .numpy, .platform, .python): the "
        "bundle's identity.",
    )
    manifest: dict[str, JsonValue]
    components: list[LockedComponent]
    environment: BuildEnvironment
    artifacts: Artifacts
    files: dict[BundlePath, FileEntry]
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    examples: list[LockedExample] = Field(default_factory=list)
    created: str = Field(description="UTC time of the build, RFC 3339; honours SOURCE_DATE_EPOCH.")
    rehearsal: Rehearsal | None = Field(
        default=None,
        description="Whether the build rehearsed the load (absent in locks of older builds).",
    )
    op_libraries: list[LockedOpLibrary] = Field(
        default_factory=list,
        description="Libraries of TensorFlow ops the SavedModel graph needs (absent: none).",
    )
