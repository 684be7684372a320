"""The manifest's fields as pydantic models: what ``apiVersion: bundler/v1`` allows.

``Manifest`` and the specs it holds validate every manifest the build reads
(``bundler.manifest.reader`` reads the YAML or JSON and turns a validation error into one naming
file, field and value), and ``python -m bundler.schema`` generates the published
``schemas/manifest.schema.json`` from them. Every model is frozen and forbids unknown keys: a
manifest is written by hand, and a misspelt key must be an error, not a silently ignored line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from bundler.lock.layout import MODULE_PATTERN
from bundler.lock.paths import unsafe_path_reason
from bundler.versions.ranges import parse_range
from bundler.versions.version import VersionError, parse_semver

API_VERSION = "bundler/v1"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
FACTORY_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
EXAMPLE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

# What each pattern asks for, in words: errors say this, never the regular expression.
PATTERN_MEANINGS = {
    NAME_PATTERN: "a name of lowercase letters, digits, '.', '_' and '-', starting with a "
    "letter or digit, at most 128 characters (e.g. 'text-classifier')",
    FACTORY_PATTERN: "'module:attribute', the module's dotted name and the callable in it "
    "(e.g. 'text_classifier.model:build')",
    MODULE_PATTERN: "a dotted module name as Python imports it (e.g. 'text_classifier.layers')",
    EXAMPLE_NAME_PATTERN: "a name of letters, digits, '.', '_' and '-', starting with a letter "
    "or digit, at most 64 characters",
}


def _relative_path(value: str) -> str:
    reason = unsafe_path_reason(value)
    if reason:
        raise ValueError(f"path {value!r} {reason}; paths are relative to the manifest's folder")
    return value


def _semver(value: str) -> str:
    try:
        parse_semver(value)
    except VersionError as error:
        raise ValueError(str(error)) from None
    return value


def _version_range(value: str) -> str:
    try:
        parse_range(value)
    except VersionError as error:
        raise ValueError(str(error)) from None
    return value


RelativePath = Annotated[
    str,
    AfterValidator(_relative_path),
    Field(description="A POSIX path relative to the manifest's folder, without '..'."),
]
SemVer = Annotated[
    str,
    AfterValidator(_semver),
    Field(description="A semantic version, MAJOR.MINOR.PATCH[-pre][+build]."),
]
VersionRangeText = Annotated[
    str,
    AfterValidator(_version_range),
    Field(
        description="A version or range: exact '1.2.0', comparators '>=1.2.0 <2.0.0' (space or "
        "comma separated), caret '^1.2.0', tilde '~1.2.0', or pip's forms '>=3.5,<4', '~=3.5', "
        "'==3.5.*'. Versions may be semantic (1.2.0-rc.1) or Python package versions (2.0.0rc1)."
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class ModelSpec(_Strict):
    """How to create the model: a factory called with keyword arguments, then optional weights."""

    factory: str = Field(
        pattern=FACTORY_PATTERN,
        description="'module:attribute' of a callable that returns a keras.Model.",
        examples=["text_classifier.model:build"],
    )
    args: dict[str, JsonValue] = Field(
        default_factory=dict, description="Keyword arguments for the factory."
    )
    weights: RelativePath | None = Field(
        default=None, description="Weights file loaded with model.load_weights after the factory."
    )


class ComponentSpec(_Strict):
    """A module holding custom objects (layers, losses, metrics), with its semantic version."""

    module: str = Field(pattern=MODULE_PATTERN, description="Importable dotted module name.")
    version: VersionRangeText = Field(
        description="Requirement on the installed version at build time: exact or a range."
    )
    compatible: VersionRangeText | None = Field(
        default=None,
        description="Versions that may load the bundle; default '^<pinned version>'.",
    )


NestedNumbers = list[Any]


class ExampleSpec(_Strict):
    """A golden input: run at build time, its outputs stored, replayed by verify --smoke."""

    name: str = Field(pattern=EXAMPLE_NAME_PATTERN)
    inputs: RelativePath | NestedNumbers | dict[str, NestedNumbers] = Field(
        description="A .npz file relative to the manifest, nested lists for a single input, "
        "or a mapping from input name to nested lists."
    )
    rtol: float = Field(default=1.0e-5, ge=0)
    atol: float = Field(default=1.0e-6, ge=0)

    @field_validator("inputs")
    @classmethod
    def _npz_only(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.endswith(".npz"):
            raise ValueError(f"example inputs file {value!r} must be a .npz file")
        return value


class Manifest(_Strict):
    """A bundle manifest, ``apiVersion: bundler/v1``."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="bundler manifest",
        json_schema_extra={"$id": "https://bundler.dev/schemas/manifest.schema.json"},
    )

    apiVersion: Literal["bundler/v1"] = Field(description="Manifest format version.")
    name: str = Field(pattern=NAME_PATTERN, description="Bundle name, safe as a folder name.")
    version: SemVer = Field(description="The model's own semantic version.")
    description: str | None = Field(default=None, max_length=4096)
    model: ModelSpec
    components: list[ComponentSpec] = Field(default_factory=list)
    paths: list[RelativePath] = Field(
        default_factory=list,
        description="sys.path entries for the build, relative to the manifest's folder.",
    )
    metadata: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Free-form JSON: data sets, hyperparameters, metrics, owners.",
    )
    examples: list[ExampleSpec] | None = Field(
        default=None,
        description="Golden inputs replayed by verify --smoke and by loads of modified code. "
        "Left out, the build generates one from the model's input spec (seeded); an empty list "
        "opts out.",
    )
    frameworks: dict[Literal["keras", "tensorflow"], VersionRangeText] = Field(
        default_factory=dict,
        description="Framework versions that may load the bundle, widening the default "
        "'>=built-with <next major' (e.g. keras: '>=3.12.0 <4.0.0').",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Manifest:
        for label, names in (
            ("components", [c.module for c in self.components]),
            ("examples", [e.name for e in self.examples or []]),
        ):
            seen: set[str] = set()
            for index, name in enumerate(names):
                if name in seen:
                    raise ValueError(f"{label}[{index}] repeats {name!r}")
                seen.add(name)
        return self
