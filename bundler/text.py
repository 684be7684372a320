"""Text from a bundle or a registry, made safe to show on a terminal.

File names, lock fields and registry answers are attacker-controlled. Printed raw, an escape
sequence (``ESC [2J``) clears the screen and draws a fake ``OK``, a carriage return overwrites
the line before it, and a bidi override (U+202E) makes ``evil.exe`` read as something else. Every
text renderer of the command line passes such data through :func:`shown`, which replaces each
control or format character (Unicode categories Cc, Cf, Cs, Zl, Zp; ESC, CR, U+202A-U+202E,
U+2066-U+2069, zero-width characters ...) by a visible escape like ``\\x1b`` or ``\\u202e``.
JSON output is not passed through it: ``json.dumps`` already escapes, and exact values matter there.
"""

from __future__ import annotations

import unicodedata

_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(value: object, *, lines: bool = False) -> str:
    """``str(value)`` with every control and format character escaped; ``lines=True`` keeps
    newlines (for our own multi-line messages and tables), everything else is escaped."""
    text = str(value)
    if text.isascii() and text.isprintable():
        return text  # the common case, without a per-character look-up
    return "".join(
        ch if (lines and ch == "\n") or unicodedata.category(ch) not in _HIDDEN else _escape(ch)
        for ch in text
    )
