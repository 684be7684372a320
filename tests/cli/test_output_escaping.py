"""Text output shows bundle data escaped: no terminal escapes, no bidi tricks; JSON stays exact.

A file name holding ``ESC [2J`` printed raw clears the screen (and what follows can draw a fake
``OK``); U+202E makes ``txt.exe`` read as ``exe.txt``. Every text renderer escapes such
characters; ``--json`` carries the exact value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bundler.text import shown

from ..conftest import CopyBundle, run_bundle
from ..hostile import edit_lock

HOSTILE_NAME = "\x1b[2J\x1b[32mOK\x1b[0m \u202etxt.exe\u2066"
ESCAPED_NAME = "\\x1b[2J\\x1b[32mOK\\x1b[0m \\u202etxt.exe\\u2066"


def _no_raw_controls(text: str) -> None:
    hidden = [ch for ch in text if ch in "\x1b\r\x07\u202a\u202b\u202c\u202d\u202e\u2066\u2069"]
    assert not hidden, f"raw control characters in the output: {hidden!r}"


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain name.keras", "plain name.keras"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\rb\x07c\x7f", "a\\x0db\\x07c\\x7f"),
        ("\u202eevil\u202c \u2066x\u2069 \u200b", "\\u202eevil\\u202c \\u2066x\\u2069 \\u200b"),
        ("\ud800", "\\ud800"),
        ("line\nbreak", "line\\x0abreak"),
        ("gr\u00fc\u00df \u6a21\u578b", "gr\u00fc\u00df \u6a21\u578b"),  # letters stay letters
    ],
)
def test_shown_escapes_control_and_format_characters(raw: str, escaped: str) -> None:
    assert shown(raw) == escaped
    assert shown("a\nb\x1b", lines=True) == "a\nb\\x1b"


def test_verify_shows_a_hostile_file_name_escaped_and_json_exact(copy_bundle: CopyBundle) -> None:
    root = copy_bundle("sequential")
    (root / HOSTILE_NAME).write_bytes(b"planted")
    result = run_bundle("verify", str(root))
    assert result.returncode == 1, result.stdout + result.stderr
    _no_raw_controls(result.stdout + result.stderr)
    assert f"  x {ESCAPED_NAME}: is not listed in the lock (extra file)" in result.stdout
    as_json = run_bundle("verify", str(root), "--json")
    problems = json.loads(as_json.stdout)["problems"]
    assert [p["path"] for p in problems] == [HOSTILE_NAME]
    assert "\x1b" not in as_json.stdout, "JSON escapes it itself: \\u001b"


def test_inspect_and_verify_show_hostile_lock_fields_escaped(copy_bundle: CopyBundle) -> None:
    root = copy_bundle("sequential")

    def plant(lock: dict[str, Any]) -> None:
        lock["name"] = "\x1b]0;owned\x07demo"
        lock["description"] = "fine\r\x1b[2KOK: trusted"
        lock["metadata"]["owner"] = "\u202eevil"
        lock["environment"]["platform"] = "linux\x1b[8m"

    edit_lock(root, plant)
    inspected = run_bundle("inspect", str(root))
    assert inspected.returncode == 0, inspected.stderr
    _no_raw_controls(inspected.stdout)
    version = json.loads((root / "bundle.lock.json").read_text())["version"]
    assert inspected.stdout.splitlines()[0] == (
        f"\\x1b]0;owned\\x07demo {version} - fine\\x0d\\x1b[2KOK: trusted"
    )
    assert "\\x1b[8m" in inspected.stdout
    verified = run_bundle("verify", str(root))
    _no_raw_controls(verified.stdout + verified.stderr)
    assert "\\x1b]0;owned\\x07demo" in verified.stdout
    exact = json.loads(run_bundle("inspect", str(root), "--json").stdout)
    assert exact["name"] == "\x1b]0;owned\x07demo" and exact["metadata"]["owner"] == "\u202eevil"


def test_error_messages_show_data_escaped(tmp_path: Path) -> None:
    missing = tmp_path / "bundle\x1b[2J\u202e"
    result = run_bundle("verify", str(missing))
    assert result.returncode == 2
    _no_raw_controls(result.stderr)
    assert (
        result.stderr == f"bundle: error: {tmp_path}/bundle\\x1b[2J\\u202e: no such bundle folder\n"
    )


def test_error_details_cannot_fake_a_line(copy_bundle: CopyBundle, tmp_path: Path) -> None:
    """A newline in a quoted file name stays inside its detail line."""
    from bundler.trust.signing import keygen

    root = copy_bundle("sequential")
    (root / "x\nbundle: signed OK\x1b[2J").write_bytes(b"planted")
    private, _ = keygen(tmp_path / "key")
    result = run_bundle("sign", str(root), "--key", str(private))
    assert result.returncode == 1, result.stdout + result.stderr
    _no_raw_controls(result.stderr)
    assert result.stderr.splitlines() == [
        f"bundle: error: {root}: refusing to sign a bundle that fails verification",
        "  x\\x0abundle: signed OK\\x1b[2J: is not listed in the lock (extra file)",
    ]
