"""Versioned document formats: one upgrade function per step, and a refusal of the future.

Manifests carry ``apiVersion: bundler/vN`` and locks ``format: bundler.bundle/vN``. A reader knows
one current version; an older document is carried forward one step at a time by the functions
registered for it (``{"bundler/v1": v1_to_v2}`` turns a v1 document into a v2 one), so each format
change is written once and every older document reaches the current shape through the same chain.
A document newer than the reader is refused with both versions named: only a newer bundler can
read it correctly, and guessing would be worse than stopping.

These are *format upgrades* of bundler's own documents; the *migrations* a component's newer code
registers for its serialized objects are adapters (``bundler.compat.adapters``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


class FormatError(ValueError):
    """The document's version field is missing, unknown, newer, or has no way forward."""


def _number(value: str, family: str) -> int | None:
    match = re.fullmatch(re.escape(family) + r"/v(\d{1,6})", value)
    return int(match[1]) if match else None


def upgrade_forward(
    document: dict[str, Any], field: str, current: str, upgrades: Mapping[str, Upgrade]
) -> dict[str, Any]:
    """``document`` in the ``current`` version of its format, or a FormatError saying why not."""
    family = current.rpartition("/v")[0]
    known = _number(current, family)
    assert known is not None, current
    value = document.get(field)
    if value is None:
        raise FormatError(f"is required (this bundler reads {current!r})")
    number = _number(value, family) if isinstance(value, str) else None
    if number is None:
        raise FormatError(f"unknown {field} {value!r}; this bundler reads {current!r}")
    if number > known:
        raise FormatError(
            f"{value!r} is newer than this bundler understands ({current!r}); upgrade bundler"
        )
    seen = set()
    while document.get(field) != current:
        step_from = document.get(field)
        step = upgrades.get(step_from) if isinstance(step_from, str) else None
        if step is None or step_from in seen:
            raise FormatError(f"no upgrade from {step_from!r} towards {current!r}")
        seen.add(step_from)
        document = step(copy.deepcopy(document))  # a step never changes what the reader holds
    return document
