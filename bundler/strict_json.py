"""Strict JSON for documents others hand us: locks, signature files, registry manifests.

Python's ``json`` module is lenient where a verdict is needed: a repeated key silently keeps the
last value (so two readers may disagree about one document), ``NaN`` and ``Infinity`` are accepted
(they are not JSON), ``1e400`` becomes infinity, a 4,000-digit integer is parsed (and later
overflows a float in some formatter), ``"\\ud800"`` becomes a string that no encoder accepts, and
nesting is limited only by the interpreter's stack. :func:`loads` refuses each of these with a
:class:`StrictJSONError` (a ``ValueError``) that says what and where, so the reader of every
document turns it into one clear problem instead of a crash further on. Limits are the same for
every reader: ``MAX_DEPTH`` levels of nesting, integers within 64 bits, finite floats.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
INT_LIMIT = 1 << 63


class StrictJSONError(ValueError):
    """The text is JSON that no bundler document may hold (the message says what, and where)."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StrictJSONError(f"has the key {key!r} twice (duplicate keys are ambiguous)")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise StrictJSONError(f"holds {name}, which is not JSON")


def _integer(text: str) -> int:
    if len(text) > 20 or not -INT_LIMIT <= int(text) < INT_LIMIT:
        shown = text if len(text) <= 24 else text[:20] + "..."
        raise StrictJSONError(f"holds the integer {shown}, outside the 64-bit range")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 24 else text[:20] + "..."
        raise StrictJSONError(f"holds the number {shown}, outside the range of a double")
    return value


def _where(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def check_value(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than ``max_depth``, strings (keys too) with lone surrogates, and
    numbers a strict reader refuses (for values that did not come from :func:`loads`)."""
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        node, parts = stack.pop()
        if len(parts) > max_depth:
            raise StrictJSONError(
                f"is nested too deeply (over {max_depth} levels, at {_where(parts)})"
            )
        if isinstance(node, dict):
            for key, child in node.items():
                if not isinstance(key, str):  # YAML allows any key; JSON, and a lock, do not
                    raise StrictJSONError(
                        f"has the key {key!r}, which is not a string, at {_where(parts)}"
                    )
                if not key.isascii():
                    _valid_text(key, parts)
                stack.append((child, [*parts, key]))
        elif isinstance(node, list):
            stack.extend((child, [*parts, index]) for index, child in enumerate(node))
        elif isinstance(node, str) and not node.isascii():
            _valid_text(node, parts)
        elif isinstance(node, float) and not math.isfinite(node):
            raise StrictJSONError(f"holds {node}, which is not JSON, at {_where(parts)}")
        elif isinstance(node, int) and not -INT_LIMIT <= node < INT_LIMIT:
            raise StrictJSONError(f"holds an integer outside the 64-bit range at {_where(parts)}")


def _valid_text(text: str, parts: list[Any]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StrictJSONError(
            f"holds a lone surrogate (an escape like \\ud800 that is no character) "
            f"at {_where(parts)}"
        ) from None


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text``; ``json.JSONDecodeError`` for malformed JSON, ``StrictJSONError`` for JSON
    that is well-formed but refused (see the module docstring)."""
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_int=_integer,
            parse_float=_float,
        )
    except RecursionError:
        raise StrictJSONError(f"is nested too deeply (over {max_depth} levels)") from None
    check_value(value, max_depth)
    return value
