"""Reading a manifest: YAML or JSON text to a validated ``Manifest``, or an error naming the input.

Reading is strict because a manifest is written by hand: unknown keys, duplicate keys, YAML tags
that construct Python objects, alias bombs and over-deep nesting are refused, each with an error
that names the file, the field path (``components[1].version``) and the offending value. What a
valid manifest holds is ``bundler.manifest.schema``'s pydantic models; this module turns a document
into one of them.

Older ``apiVersion``s are upgraded on read, one function a step (``UPGRADES``); a newer
one than this bundler knows is refused with "upgrade bundler".
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from bundler import strict_json
from bundler.errors import BundleError, ManifestError
from bundler.formats import FormatError, Upgrade, upgrade_forward
from bundler.lock.layout import MODULE_PATTERN
from bundler.manifest.schema import API_VERSION, PATTERN_MEANINGS, Manifest

MANIFEST_MAX_BYTES = 1 << 20
MAX_NODES = 100_000  # after alias expansion: a hand-written manifest is far smaller

# apiVersion -> function turning a manifest of that version into one of the next version.
UPGRADES: dict[str, Upgrade] = {}


class ManifestSource(NamedTuple):
    """A validated manifest and the file it came from (relative paths resolve from its folder)."""

    manifest: Manifest
    path: Path

    @property
    def root(self) -> Path:
        return self.path.parent


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: the second one would silently win otherwise."""


MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    """A mapping; duplicate keys refused; merge keys (``<<: *base``) as YAML defines them.

    Merged keys come from the mappings named (the earlier one wins when two name the same key)
    and never count as duplicates of the mapping's own keys, which override them. Each merged
    mapping is constructed once and copied by key, never expanded node by node, so merge keys
    cannot build an alias bomb: a merged mapping holds at most the keys written in the text.
    """
    merged: dict[Any, Any] = {}
    own: list[tuple[yaml.Node, yaml.Node]] = []
    merges = 0
    for key_node, value_node in node.value:
        if key_node.tag != MERGE_TAG:
            own.append((key_node, value_node))
            continue
        merges += 1
        if merges > 1:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "duplicate key '<<' (list the mappings in one: <<: [*a, *b])",
                key_node.start_mark,
            )
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a merge key (<<) takes a mapping or a list of mappings",
                    source.start_mark,
                )
            for key, value in loader.construct_object(source, deep=True).items():
                merged.setdefault(key, value)
    seen: set[Any] = set()
    for key_node, _ in own:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    explicit = yaml.MappingNode(node.tag, own, node.start_mark, node.end_mark, node.flow_style)
    return {**merged, **loader.construct_mapping(explicit, deep=deep)}


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _count_nodes(value: Any, memo: dict[int, int], active: set[int]) -> int:
    """Size of ``value`` with every alias expanded, computed once per shared object."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key in memo:
        return memo[key]
    if key in active:
        raise ManifestError("a YAML alias refers to itself (recursive structure)")
    active.add(key)
    children = value.values() if isinstance(value, dict) else value
    total = 1
    for child in children:
        total += _count_nodes(child, memo, active)
        if total > MAX_NODES:
            break
    active.discard(key)
    memo[key] = total
    return total


def parse_document(text: str, path: Path) -> Any:
    """YAML or JSON text to plain Python values, safely; JSON first when it looks like JSON."""
    try:
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            try:
                # the lock's reader: duplicate keys, NaN, huge numbers refused the same way
                return strict_json.loads(text, max_depth=strict_json.MAX_DEPTH - 1)
            except json.JSONDecodeError as error:
                if path.suffix.lower() == ".json":
                    raise ManifestError(
                        f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}",
                        path=path,
                    ) from error
            except ValueError as error:
                raise ManifestError(str(error), path=path) from error
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        if "python/" in str(error):
            problem = f"{problem} (YAML tags that build Python objects are not allowed)"
        raise ManifestError(f"invalid YAML{where}: {problem}", path=path) from error
    except RecursionError as error:
        raise ManifestError("the document is nested too deeply", path=path) from error


def _field_path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed at ``loc`` (the parent of an unknown key), for 'did you mean'."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = field.annotation
        # unwrap list[X] / X | None to the model inside, if any
        for arg in getattr(current, "__args__", ()) or ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
                break
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _describe(error: Any, model: type[BaseModel]) -> tuple[str, str, Any]:
    loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
    field = _field_path(loc)
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        near = difflib.get_close_matches(key, _known_keys(model, loc[:-1]), n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return field, f"unknown key {key!r}{hint}", value
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "missing":
        return field, "is required", None
    if error["type"] == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        meaning = PATTERN_MEANINGS.get(pattern)
        if meaning:
            message = f"must be {meaning}"
        if pattern == MODULE_PATTERN and isinstance(value, str):
            from bundler.compat.components import distribution_module_hint

            distribution = distribution_module_hint(value)
            if distribution:
                return field, distribution, value
    if error["type"] == "string_type" and isinstance(value, (int, float)):
        # YAML reads `version: 1.0` as a number: say so, and how to write it
        return field, f"YAML read {value!r} as a number; {_quoted_hint(value)}", value
    shown = json.dumps(value, default=str)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return field, f"{message} (got {shown})", value


def _quoted_hint(value: int | float) -> str:
    """How to write a number YAML took from a version as the string it was meant to be."""
    text = str(value)
    parts = text.split(".")
    if all(part.isdigit() for part in parts) and len(parts) < 3:
        text = ".".join([*parts, *["0"] * (3 - len(parts))])
    return f'write it in quotes, e.g. "{text}"'


def _is_union_tag(part: int | str) -> bool:
    # pydantic puts the union member it tried in the location: 'str', 'function-after[...]'
    return isinstance(part, str) and (
        "[" in part or part in {"str", "list", "dict", "int", "float", "bool"}
    )


def _typos_first(errors: list[Any], model: type[BaseModel]) -> list[Any]:
    """Unknown keys before the rest, and a required key left out of a mapping that holds a close
    misspelling of it (``factroy``) not reported twice: the typo is the one problem."""
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    misspelt = set()
    for item in unknown:
        loc = tuple(part for part in item["loc"] if not _is_union_tag(part))
        near = difflib.get_close_matches(
            str(loc[-1]) if loc else "", _known_keys(model, loc[:-1]), n=1, cutoff=0.6
        )
        if near:
            misspelt.add((*loc[:-1], near[0]))
    rest = [
        e
        for e in errors
        if e["type"] != "extra_forbidden"
        and not (
            e["type"] == "missing"
            and tuple(part for part in e["loc"] if not _is_union_tag(part)) in misspelt
        )
    ]
    return unknown + rest


def validation_error(
    error: ValidationError, path: Path | str, model: type[BaseModel], kind: type[BundleError]
) -> BundleError:
    """Turn a pydantic ValidationError into one of our errors naming file, field and value."""
    described = []
    seen = set()
    for item in _typos_first(error.errors(), model):
        entry = _describe(item, model)
        if (entry[0], entry[1]) not in seen:
            seen.add((entry[0], entry[1]))
            described.append(entry)
    field, message, value = described[0]
    details = [f"{f}: {m}" for f, m, _ in described[1:]]
    if details:
        details.insert(0, f"and {len(details)} more problem{'s' if len(details) > 1 else ''}:")
    return kind(message, path=path, field=field or None, value=value, details=details)


def _upgrade(document: dict[str, Any], path: Path) -> dict[str, Any]:
    try:
        return upgrade_forward(document, "apiVersion", API_VERSION, UPGRADES)
    except FormatError as error:
        raise ManifestError(
            str(error), path=path, field="apiVersion", value=document.get("apiVersion")
        ) from None


def manifest_from_document(document: Any, path: Path | str) -> Manifest:
    path = Path(path)
    if not isinstance(document, dict):
        kind = type(document).__name__ if document is not None else "an empty document"
        raise ManifestError(f"a manifest is a mapping of keys to values, not {kind}", path=path)
    if _count_nodes(document, {}, set()) > MAX_NODES:
        raise ManifestError(
            f"the document has more than {MAX_NODES} values once YAML aliases are expanded",
            path=path,
        )
    try:  # what the lock could not hold, refused here rather than at verify
        strict_json.check_value(document, strict_json.MAX_DEPTH - 1)
    except strict_json.StrictJSONError as error:
        raise ManifestError(f"the document {error}", path=path) from None
    document = _upgrade(document, path)
    try:
        return Manifest.model_validate(document)
    except ValidationError as error:
        raise validation_error(error, path, Manifest, ManifestError) from None
    except RecursionError as error:
        raise ManifestError("the document is nested too deeply", path=path) from error


def read_manifest(path: str | Path) -> ManifestSource:
    """Read and validate a manifest file (YAML or JSON)."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MANIFEST_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError("no such manifest file", path=path) from None
    except IsADirectoryError:
        raise ManifestError("is a folder; give the manifest file itself", path=path) from None
    except OSError as error:
        raise ManifestError(f"cannot read: {error.strerror}", path=path) from error
    if len(raw) > MANIFEST_MAX_BYTES:
        raise ManifestError(f"is larger than {MANIFEST_MAX_BYTES} bytes", path=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(f"is not UTF-8 text (byte {error.start})", path=path) from error
    document = parse_document(text, path)
    return ManifestSource(manifest_from_document(document, path), path.resolve())
