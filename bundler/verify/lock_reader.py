"""Reading a bundle's lock: found, bounded, parsed, checked once, then one value object.

``read_lock`` is the one function every reader of ``bundle.lock.json`` goes through (verify,
load, inspect, diff, env, sign, push): the file must be a plain file within ``LOCK_MAX_BYTES``,
strict JSON (``strict_json``: no repeated keys, no NaN), of a known format (older ones upgraded
forward), valid against ``lock.schema.json`` (with ``pattern`` read as JSON Schema defines it),
every path in it safe, every pinned version and range parseable, and its digest equal to the
digest its own format defines (``layout.lock_digest``: the whole lock but provenance; the files
table alone for a ``bundler.bundle/v1`` lock, computed on the document as it was written, before
any upgrade). Only then is the ``Lock`` value object built (``bundler.lock.model``),
so no reader meets a half-checked lock. Each failure is a ``Problem`` naming the field, never an
exception; jsonschema is imported on first use, and neither pydantic nor TensorFlow ever.

``bundle_root`` finds the bundle folder a path names; ``pinned_digest`` and ``pin_problem`` check
a caller's digest pin against the lock (a signature says who vouched, a pin says which bundle).
``peek_lock`` is the lock's document unchecked, read as safely as ``read_lock`` reads it, for
what only needs a glance before the real read (a server's model name, ``--watch``'s digest).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from bundler import strict_json
from bundler.errors import UsageError
from bundler.formats import FormatError, upgrade_forward
from bundler.lock.layout import (
    DIGEST_PATTERN,
    FORMAT,
    LOCK_FILENAME,
    LOCK_MAX_BYTES,
    LOCK_UPGRADES,
    lock_digest,
)
from bundler.lock.model import Lock
from bundler.lock.paths import enclosing_file, read_plain_file, unsafe_path_reason
from bundler.problems import Problem
from bundler.versions.ranges import parse_range
from bundler.versions.version import VersionError, parse_version

RANGES = ("requirement", "compatible")


@cache
def lock_schema() -> dict[str, Any]:
    """The lock's published JSON Schema, as shipped in the package (read once)."""
    text = resources.files("bundler.schemas").joinpath("lock.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _json_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def bundle_root(path: str | Path) -> Path:
    """The bundle folder, or a UsageError when ``path`` is not a bundle at all (exit 2).

    A path that is itself a symlink to a bundle folder (``current -> v3``, the usual deploy) is
    resolved once, here; every later read is of the resolved folder, so a flip of the link during
    a verify or a load cannot mix two bundles. Links inside a bundle stay refused.
    """
    given = Path(path)
    if not given.exists() and not given.is_symlink():
        raise UsageError("no such bundle folder", path=given)
    root = Path(os.path.realpath(given)) if given.is_symlink() else given
    if not root.is_dir():
        raise UsageError("is not a bundle folder", path=given)
    lock = root / LOCK_FILENAME
    if not lock.exists() and not lock.is_symlink():
        raise UsageError(f"is not a bundle: it has no {LOCK_FILENAME}", path=root)
    return root


def _lock_paths(lock: Lock) -> Iterator[tuple[str, str]]:
    """Every path the lock holds, by the field holding it."""
    yield from (("files", name) for name in lock.files)
    yield from ((f"artifacts.{key}", value) for key, value in lock.artifacts.paths().items())
    for index, example in enumerate(lock.examples):
        yield f"examples[{index}].inputs", example.inputs
        yield f"examples[{index}].outputs", example.outputs


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """JSON Schema's ``pattern`` as the schema defines it (ECMA-262, as pydantic reads it too):
    ``$`` is the end of the text. Python's ``re`` also lets ``$`` match before a final newline,
    which would pass a sha256 or a module name followed by a newline."""
    import jsonschema

    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    at_end = pattern.endswith("$") and not pattern.endswith("\\$")
    return re.compile(pattern[:-1] + r"\Z" if at_end else pattern)


@cache
def _lock_validator() -> Any:
    import jsonschema

    checker = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})  # type: ignore[no-untyped-call]
    return checker(_inlined(lock_schema()))


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with each ``{"$ref": "#/$defs/Name"}`` replaced by that definition (in an
    ``allOf`` where the reference has siblings): the same constraints, and no reference for
    jsonschema to resolve at each use, a third of the lock's validation. The lock's schema has
    no recursive definition; one that had would be used as it is."""
    definitions = schema.get("$defs", {})

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            name = reference.removeprefix("#/$defs/")
            if name in seen or name not in definitions:
                raise ValueError(name)
            target = inline(definitions[name], (*seen, name))
            rest = {key: inline(value, seen) for key, value in node.items() if key != "$ref"}
            return {"allOf": [target], **rest} if rest else target
        return {key: inline(value, seen) for key, value in node.items() if key != "$defs"}

    try:
        flat: dict[str, Any] = inline(schema, ())
    except ValueError:  # a recursive or dangling reference: left to jsonschema
        return schema
    return flat


def read_lock(root: Path) -> tuple[Lock | None, list[Problem]]:
    """The lock, checked once (the JSON Schema, safe paths, parseable versions, its digest), or
    the problems that make it unusable. A lock whose digest disagrees with its own files table
    is returned with that problem, for ``bundle inspect`` to show."""
    path = root / LOCK_FILENAME
    try:
        info = path.lstat()
    except OSError as error:
        return None, [Problem(LOCK_FILENAME, "lock", f"cannot be read: {error.strerror}")]
    if not path.is_file() or path.is_symlink():
        return None, [Problem(LOCK_FILENAME, "lock", "is not a plain file")]
    if info.st_size > LOCK_MAX_BYTES:
        return None, [Problem(LOCK_FILENAME, "lock", f"is larger than {LOCK_MAX_BYTES} bytes")]
    try:
        text = read_plain_file(path, LOCK_MAX_BYTES).decode("utf-8")
        document = strict_json.loads(text)
    except strict_json.StrictJSONError as error:
        return None, [Problem(LOCK_FILENAME, "lock", str(error))]
    except UnicodeDecodeError:
        return None, [Problem(LOCK_FILENAME, "lock", "is not UTF-8 text")]
    except json.JSONDecodeError as error:
        return None, [
            Problem(
                LOCK_FILENAME,
                "lock",
                f"is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})",
            )
        ]
    except RecursionError:
        return None, [Problem(LOCK_FILENAME, "lock", "is nested too deeply to be a lock")]
    except OSError as error:
        return None, [Problem(LOCK_FILENAME, "lock", f"cannot be read: {error.strerror}")]
    except ValueError as error:  # replaced by a link, FIFO or bigger file since the lstat
        return None, [Problem(LOCK_FILENAME, "lock", str(error))]
    if not isinstance(document, dict):
        return None, [Problem(LOCK_FILENAME, "lock", "is not a JSON object")]
    written = document  # the digest is checked on the document its format describes
    try:
        document = upgrade_forward(document, "format", FORMAT, LOCK_UPGRADES)
    except FormatError as error:
        return None, [Problem(LOCK_FILENAME, "lock", f"format: {error}")]
    validator = _lock_validator()
    try:
        errors = sorted(
            validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path))
        )
    except RecursionError:
        return None, [Problem(LOCK_FILENAME, "lock", "is nested too deeply to be a lock")]
    if errors:
        problems = []
        for failure in errors[:20]:
            message = failure.message
            shown = message if len(message) < 200 else message[:197] + "..."
            problems.append(
                Problem(LOCK_FILENAME, "schema", f"{_json_path(failure.absolute_path)}: {shown}")
            )
        return None, problems
    # fields left out take their defaults here, for every reader; the format stays the one the
    # lock was written in, which says what its digest covers
    lock = Lock.from_dict({**document, "format": written["format"]})
    problems = [
        Problem(LOCK_FILENAME, "unsafe", f"{where}: path {name!r} {reason}")
        for where, name in _lock_paths(lock)
        if (reason := unsafe_path_reason(name)) is not None
    ]
    problems += [  # a path both a file and a folder: no folder can match such a table
        Problem(
            LOCK_FILENAME,
            "unsafe",
            f"files: path {name!r} lies inside {inside!r}, which the table lists as a file",
        )
        for name in lock.files
        if (inside := enclosing_file(name, lock.files)) is not None
    ]
    problems += _version_problems(lock)
    if problems:
        return None, problems
    try:
        sealed = lock_digest(written)
    except (KeyError, TypeError, AttributeError, ValueError):  # an older shape without a table
        sealed = None
    if sealed != lock.digest:
        covered = "files table" if lock.digest_covers == "files" else "fields and files table"
        problems.append(
            Problem(
                LOCK_FILENAME,
                "digest",
                f"digest does not match the lock's own {covered} (the lock was edited)",
            )
        )
    return lock, problems


def peek_lock(root: Path) -> dict[str, Any] | None:
    """The lock's document as JSON, not validated (None when it cannot be read so): bounded,
    strict, never through a link, never blocking on a FIFO. Only for a glance; anything acted
    on is read through ``read_lock``."""
    try:
        document = strict_json.loads(read_plain_file(root / LOCK_FILENAME, LOCK_MAX_BYTES))
    except (OSError, ValueError, RecursionError):  # strict_json's errors are ValueErrors
        return None
    return document if isinstance(document, dict) else None


def _version_problems(lock: Lock) -> list[Problem]:
    """Pinned versions and ranges the plan will parse: refused here, as values, not mid-plan."""
    problems = []
    for index, component in enumerate(lock.components):
        for key, parse in (("version", parse_version), *((k, parse_range) for k in RANGES)):
            try:
                parse(getattr(component, key))
            except VersionError as error:
                problems.append(
                    Problem(LOCK_FILENAME, "schema", f"components[{index}].{key}: {error}")
                )
    for index, library in enumerate(lock.op_libraries):
        for key, parse in (("version", parse_version), ("compatible", parse_range)):
            try:
                parse(getattr(library, key))
            except VersionError as error:
                problems.append(
                    Problem(LOCK_FILENAME, "schema", f"op_libraries[{index}].{key}: {error}")
                )
    return problems


def pinned_digest(digest: object, option: str = "digest") -> str | None:
    """The digest a caller pins the bundle to, checked as a value (UsageError naming ``option``)."""
    if digest is None:
        return None
    if not (isinstance(digest, str) and re.fullmatch(DIGEST_PATTERN, digest)):
        raise UsageError(
            f"{digest!r} is not a bundle digest; expected sha256: and 64 lowercase hex "
            "digits, as `bundle verify` prints it",
            field=option,
        )
    return digest


def pin_problem(lock: Lock | None, digest: str | None) -> Problem | None:
    """A problem when the bundle is not the one pinned: substituted, or rolled back to another."""
    if digest is None or lock is None or lock.digest == digest:
        return None
    return Problem(
        LOCK_FILENAME,
        "pinned",
        f"this bundle is {lock.digest}, not the pinned {digest}: refusing another bundle",
    )
