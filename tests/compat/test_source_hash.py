"""A pinned source file's digest is its Python tokens: layout and comments do not count, code does.

Pairs of sources and whether their ``python-tokens/v1`` digests are equal; the same table under
every Python 3.10 to 3.13 found on this machine (pyenv's, or ``python3.X`` on PATH) must give this
interpreter's digests, since a bundle built on one Python is verified on another. 3.12 tokenizes
f-strings into parts (PEP 701): a hand-made stream of each form shows the normalisation without
needing both Pythons.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.compat.source_hash import (
    TOKENS_V1,
    code_tokens,
    decode_source,
    file_digest,
    normalise,
    source_digest,
    tokens_digest,
)

from ..conftest import PACKAGE

BODY = b'''"""A layer."""
import math


class Gate:
    factor = 0.5

    def call(self, x, y):
        if x > 0:
            return x * self.factor + math.tanh(y)
        return f"{x!r:>{y}} and {'nested' + f'{y}'}"
'''

# (id, a, b, equal?)
PAIRS: list[tuple[str, bytes, bytes, bool]] = [
    ("comment-added", BODY, b"# licensed to you\n" + BODY, True),
    (
        "comment-inline",
        BODY,
        BODY.replace(b"factor = 0.5\n", b"factor = 0.5  # tuned\n"),
        True,
    ),
    ("blank-lines", BODY, BODY.replace(b"\n\n", b"\n\n\n\n"), True),
    ("trailing-whitespace", BODY, BODY.replace(b"\n", b"   \n"), True),
    ("crlf", BODY, BODY.replace(b"\n", b"\r\n"), True),
    ("cr", BODY, BODY.replace(b"\n", b"\r"), True),
    ("bom", BODY, b"\xef\xbb\xbf" + BODY, True),
    ("tabs-for-spaces", BODY, BODY.replace(b"    ", b"\t"), True),
    (
        "spaces-around-operators",
        BODY,
        BODY.replace(b"x * self.factor + math.tanh(y)", b"x*self.factor+math.tanh( y )"),
        True,
    ),
    (
        "backslash-continuation",
        BODY,
        BODY.replace(b"x * self.factor + ", b"x * self.factor + \\\n                "),
        True,
    ),
    (
        "bracketed-line-split",
        BODY,
        BODY.replace(b"math.tanh(y)", b"math.tanh(\n                y,\n            )").replace(
            b"y,\n", b"y\n"
        ),
        True,
    ),
    ("form-feed", BODY, BODY.replace(b"\n\n\nclass", b"\n\n\x0c\nclass"), True),
    ("no-final-newline", BODY, BODY.rstrip(b"\n"), True),
    (
        "crlf-inside-a-docstring",
        b'def f():\n    """one\n    two"""\n',
        b'def f():\r\n    """one\r\n    two"""\r\n',
        True,
    ),
    (
        "encoding-cookie",
        '# -*- coding: latin-1 -*-\nname = "caf\u00e9"\n'.encode("latin-1"),
        'name = "caf\u00e9"\n'.encode(),
        True,
    ),
    ("empty-vs-comments-only", b"", b"# nothing here\n\n   \n", True),
    ("empty-vs-code", b"", b"pass\n", False),
    ("docstring", BODY, BODY.replace(b'"""A layer."""', b'"""A layer that gates."""'), False),
    ("constant", BODY, BODY.replace(b"factor = 0.5", b"factor = 0.25"), False),
    ("operator", BODY, BODY.replace(b"self.factor + math", b"self.factor - math"), False),
    ("name", BODY, BODY.replace(b"math.tanh(y)", b"math.tanh(x)"), False),
    (
        "indentation-moves-a-statement",
        b"if a:\n    b()\n    c()\n",
        b"if a:\n    b()\nc()\n",
        False,
    ),
    ("f-string-expression", BODY, BODY.replace(b"{x!r:>{y}}", b"{x!s:>{y}}"), False),
    ("strings-concatenated", b'x = ("a" "b")\n', b'x = ("ab")\n', False),
    ("quote-style", b"x = 'a'\n", b'x = "a"\n', False),
    ("number-spelling", b"x = 1.0\n", b"x = 1.\n", False),
]

# sources a tokenizer refuses: pinned by their bytes, a digest no token stream has
UNTOKENIZABLE = {
    "unclosed-bracket": b"x = (1,\n",
    "unterminated-string": b'x = """never closed\n',
    "bad-dedent": b"if a:\n        b()\n    c()\n",
    "not-utf-8": b'x = "\xff\xfe"\n',
}


@pytest.mark.parametrize(
    ("a", "b", "equal"), [pytest.param(a, b, equal, id=name) for name, a, b, equal in PAIRS]
)
def test_only_code_changes_the_digest(a: bytes, b: bytes, equal: bool) -> None:
    (digest_a, why_a), (digest_b, why_b) = source_digest(a), source_digest(b)
    assert why_a is None and why_b is None
    assert (digest_a == digest_b) is equal


@pytest.mark.parametrize("source", [pytest.param(s, id=k) for k, s in UNTOKENIZABLE.items()])
def test_a_file_the_tokenizer_refuses_is_pinned_by_its_bytes(source: bytes) -> None:
    digest, why = source_digest(source)
    assert why  # the reason the build's note gives
    assert digest == source_digest(source)[0]  # stable
    assert source_digest(b"# a comment\n" + source)[0] != digest  # any edit is a change


def test_the_digest_frames_each_token() -> None:
    """Two streams never share their bytes: ``ab`` is not ``a`` then ``b``."""
    assert tokens_digest([("n", "ab")]) != tokens_digest([("n", "a"), ("n", "b")])
    assert tokens_digest([("s", "1")]) != tokens_digest([("d", "1")])


def test_a_file_is_hashed_as_the_lock_says(tmp_path: Path) -> None:
    source = tmp_path / "layer.py"
    source.write_bytes(BODY)
    assert file_digest(source, TOKENS_V1) == source_digest(BODY)[0]
    assert file_digest(source, None) == __import__("hashlib").sha256(BODY).hexdigest()
    assert file_digest(tmp_path / "gone.py", TOKENS_V1) is None
    with pytest.raises(ValueError, match="unknown source hash 'python-tokens/v9'"):
        file_digest(source, "python-tokens/v9")


# -- f-strings as 3.11 and as 3.12 tokenize them -------------------------------------------------

FSTRING_LINE = 'x = f"{a!r:>{w}}"\n'
AS_311 = [
    ("NAME", "x", (1, 0), (1, 1)),
    ("OP", "=", (1, 2), (1, 3)),
    ("STRING", 'f"{a!r:>{w}}"', (1, 4), (1, 17)),
    ("NEWLINE", "\n", (1, 17), (1, 18)),
    ("ENDMARKER", "", (2, 0), (2, 0)),
]
AS_312 = [  # PEP 701: the parts, the expressions as tokens, a format spec with its own field
    ("NAME", "x", (1, 0), (1, 1)),
    ("OP", "=", (1, 2), (1, 3)),
    ("FSTRING_START", 'f"', (1, 4), (1, 6)),
    ("OP", "{", (1, 6), (1, 7)),
    ("NAME", "a", (1, 7), (1, 8)),
    ("OP", "!", (1, 8), (1, 9)),
    ("NAME", "r", (1, 9), (1, 10)),
    ("OP", ":", (1, 10), (1, 11)),
    ("FSTRING_MIDDLE", ">", (1, 11), (1, 12)),
    ("OP", "{", (1, 12), (1, 13)),
    ("NAME", "w", (1, 13), (1, 14)),
    ("OP", "}", (1, 14), (1, 15)),
    ("FSTRING_MIDDLE", "", (1, 15), (1, 15)),
    ("OP", "}", (1, 15), (1, 16)),
    ("FSTRING_END", '"', (1, 16), (1, 17)),
    ("NEWLINE", "\n", (1, 17), (1, 18)),
    ("ENDMARKER", "", (2, 0), (2, 0)),
]


def test_an_f_string_in_parts_is_the_one_string_older_pythons_give() -> None:
    as_311 = list(normalise(AS_311, FSTRING_LINE))
    assert as_311 == [("n", "x"), ("o", "="), ("s", 'f"{a!r:>{w}}"'), ("L", "")]
    assert list(normalise(AS_312, FSTRING_LINE)) == as_311
    assert list(code_tokens(FSTRING_LINE)) == as_311  # and this Python agrees


def test_a_newline_after_no_code_is_not_a_token() -> None:
    """3.12.0 added a NEWLINE after a final comment without a line end (CPython gh-105435)."""
    text = "x = 1\n# c"
    as_311 = [
        ("NAME", "x", (1, 0), (1, 1)),
        ("OP", "=", (1, 2), (1, 3)),
        ("NUMBER", "1", (1, 4), (1, 5)),
        ("NEWLINE", "\n", (1, 5), (1, 6)),
        ("COMMENT", "# c", (2, 0), (2, 3)),
        ("NL", "", (2, 3), (2, 3)),
        ("ENDMARKER", "", (3, 0), (3, 0)),
    ]
    as_3120 = [*as_311[:-1], ("NEWLINE", "", (2, 3), (2, 4)), as_311[-1]]
    assert list(normalise(as_3120, text)) == list(normalise(as_311, text))


def test_a_name_311_splits_at_a_combining_mark_is_one_name() -> None:
    text = "x = \u05e2\u05b4\u05d1\n"
    as_311 = [
        ("NAME", "x", (1, 0), (1, 1)),
        ("OP", "=", (1, 2), (1, 3)),
        ("NAME", "\u05e2", (1, 4), (1, 5)),
        ("ERRORTOKEN", "\u05b4", (1, 5), (1, 6)),
        ("NAME", "\u05d1", (1, 6), (1, 7)),
        ("NEWLINE", "\n", (1, 7), (1, 8)),
    ]
    as_312 = [*as_311[:2], ("NAME", "\u05e2\u05b4\u05d1", (1, 4), (1, 7)), as_311[-1]]
    assert list(normalise(as_311, text)) == list(normalise(as_312, text))
    assert list(normalise(as_312, text))[2] == ("n", "\u05e2\u05b4\u05d1")
    apart = [*as_311[:3], ("NAME", "y", (1, 6), (1, 7)), as_311[-1]]  # "x = \u05e2 y": two names
    assert [t for t in normalise(apart, text) if t[0] == "n"] == [
        ("n", "x"),
        ("n", "\u05e2"),
        ("n", "y"),
    ]


def test_an_f_string_that_does_not_end_is_refused() -> None:
    from bundler.compat.source_hash import UntokenizableSource

    with pytest.raises(UntokenizableSource, match="an f-string does not end"):
        list(normalise(AS_312[:8], FSTRING_LINE))


def test_decoding_reads_as_python_reads() -> None:
    assert decode_source(b"\xef\xbb\xbfa = 1\r\nb = 2\r") == "a = 1\nb = 2\n"


# -- the same digests under every Python found ---------------------------------------------------

CROSS_VERSION = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("source_hash", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sources = json.loads(sys.stdin.read())
print(json.dumps([module.source_digest(s.encode("latin-1"))[0] for s in sources]))
"""

HEBREW = "\u05e2\u05b4\u05d1\u05e8\u05d9\u05ea"  # a name with a combining mark (U+05B4)
# valid in 3.10 and later, and tricky for a tokenizer: 3.12 reads every f-string differently
TRICKY = [
    b'x = "\xc3\xa9t\xc3\xa9"; y = f"\xc3\xa9{x}\xc3\xa9{x!r}"\n',  # non-ASCII before an f-string
    b'q = f"""{a}\n  {b:>{w}.{p}f}\n"""\n',  # a multi-line f-string with nested fields
    b"r = f'{{literal}} {x} }}'\n",  # escaped braces
    b"match command:\n    case [x, *_]:\n        pass\n    case _:\n        type = 1\n",
    b"async def f():\n    await g()\n    return [i async for i in h()]\n",
    b"if x:\n    y()\n# a comment at the end, no newline",
    b"def f():\n\tif a:\n\t\treturn 1\n\treturn 2\n",
    b"lambda: (yield)\nx = 0x_1F if 1_000.5e-3 else 0o7j\n",
    b"x = 1\n\x0c\ny = f'{x}' + '\xe2\x80\xa8'\n",  # a form feed and U+2028: not line ends
    # names with a combining mark or a variation selector: 3.11 splits them (ERRORTOKEN)
    f"{HEBREW} = 1\nb\U000e0100 = {HEBREW}\n".encode(),
]


def _pythons() -> dict[str, Path]:
    """Python 3.10 to 3.13 interpreters on this machine other than this one, by version."""
    candidates: list[Path] = []
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(versions.glob("3.1[0-3]*/bin/python3"))
    candidates += [Path(p) for n in range(10, 14) if (p := shutil.which(f"python3.{n}"))]
    found: dict[str, Path] = {}
    for path in candidates:
        version = subprocess.run(
            [str(path), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if version and version != mine:
            found.setdefault(version, path)
    return found


def test_every_python_gives_the_same_digests() -> None:
    pythons = _pythons()
    if not pythons:
        pytest.skip("no other Python 3.10-3.13 on this machine (pyenv or python3.X on PATH)")
    sources = [a for _, a, _, _ in PAIRS] + [b for _, _, b, _ in PAIRS] + TRICKY
    expected = [source_digest(s)[0] for s in sources]
    for version, python in sorted(pythons.items()):
        result = subprocess.run(
            [str(python), "-c", CROSS_VERSION, str(PACKAGE / "compat" / "source_hash.py")],
            input=json.dumps([s.decode("latin-1") for s in sources]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (version, result.stderr[-2000:])
        digests = json.loads(result.stdout)
        differing = [s for s, a, b in zip(sources, expected, digests, strict=True) if a != b]
        assert not differing, (version, differing)
