"""How a pinned source file is hashed: its Python tokens, without comments or layout.

A bundle pins the code its model runs (``bundler.build.model_sources`` chooses the files). Hashing
their bytes made a comment or a blank line a change to the model (``modified``), which ``bundle
verify`` cannot promise without replaying the golden examples. Method ``python-tokens/v1`` (the
lock's ``source_hash``) hashes what Python executes instead:

- the file is decoded as Python decodes it (a BOM or an encoding cookie, else UTF-8), and its line
  ends made ``\\n`` (Python reads CRLF and CR as LF, inside strings too);
- ``tokenize`` splits it; comments (COMMENT), blank and continued lines (NL, backslashes) and the
  space between tokens are left out;
- what is kept is every other token's text, docstrings included (a docstring is code: it is a
  value at run time), and the block structure: a marker for each NEWLINE, INDENT and DEDENT (not
  the indentation's own characters, so tabs or four spaces are the same block);
- each kept token goes into the sha256 as ``kind``, its length in bytes, ``:`` and its UTF-8 text,
  after the prefix ``python-tokens/v1\\n``, so that no two streams share their bytes.

It must give the same digest on every Python a bundle meets (built on one, verified on another).
``tokenize`` changed in 3.12 (PEP 701: an f-string is FSTRING_START, parts, FSTRING_END instead of
one STRING; the C tokenizer places some final NEWLINE and DEDENT tokens differently), so the stream
is normalised: an f-string (or a 3.14 t-string) becomes one string token whose text is its source
slice, as 3.11 gives it, and NEWLINE markers are not repeated (only a NEWLINE after code counts).
``tests/build/test_source_identity.py`` holds a table of sources to equal digests under every Python
3.10 to 3.13 it finds.

A file ``tokenize`` refuses (not valid Python) is hashed by its bytes instead, under a prefix of
its own (``python-tokens/v1 bytes\\n``): such a file is pinned byte for byte, and its digest never
equals a token digest. The build says which file that was; it cannot be one Python imported.
"""

from __future__ import annotations

import hashlib
import io
import tokenize
from collections.abc import Iterable, Iterator
from pathlib import Path

TOKENS_V1 = "python-tokens/v1"
SOURCE_HASHES = (TOKENS_V1,)  # the methods this bundler knows; a lock without one: file bytes

_PREFIX = (TOKENS_V1 + "\n").encode()
_BYTES_PREFIX = (TOKENS_V1 + " bytes\n").encode()
_STRUCTURE = {"NEWLINE": "L", "INDENT": "I", "DEDENT": "D"}
_TEXT = {"NAME": "n", "NUMBER": "d", "STRING": "s", "OP": "o"}
_SKIPPED = {"COMMENT", "NL", "ENCODING", "ENDMARKER"}
# PEP 701 (3.12) and PEP 750 (3.14): a string made of parts
_OPENING = {"FSTRING_START", "TSTRING_START"}
_CLOSING = {"FSTRING_END", "TSTRING_END"}

Position = tuple[int, int]  # (line from 1, column), as tokenize gives it
Token = tuple[str, str, Position, Position]  # (type name, text, start, end)


class UntokenizableSource(ValueError):
    """Python's tokenizer refuses the text (it is not Python): the reason, in its words."""


def decode_source(source: bytes) -> str:
    """The text Python reads from a source file's bytes, its line ends made ``\\n``."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
        text = source.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as error:
        raise UntokenizableSource(f"cannot decode it: {error}") from error
    return text.replace("\r\n", "\n").replace("\r", "\n")


def python_tokens(text: str) -> Iterator[Token]:
    """This Python's ``tokenize`` of ``text``, each token's type by its name."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            name = tokenize.tok_name.get(token.type, str(token.type))
            yield name, token.string, token.start, token.end
    except tokenize.TokenError as error:  # (message, (line, column))
        message = error.args[0] if error.args else "cannot tokenize"
        line = error.args[1][0] if len(error.args) > 1 else "?"
        raise UntokenizableSource(f"line {line}: {message}") from error
    except SyntaxError as error:  # IndentationError and TabError are SyntaxErrors too
        raise UntokenizableSource(f"line {error.lineno}: {error.msg}") from error


def _offsets(text: str) -> list[int]:
    """The offset in ``text`` where each line starts (line 1 at index 1), lines ending at ``\\n``
    only, as ``readline`` reads them (``str.splitlines`` would also split at a form feed)."""
    starts = [0, 0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    return starts


def _identifier_part(name: str, string: str) -> bool:
    """A piece of a name: 3.11's tokenize splits ``עִברית`` at the combining mark, an ERRORTOKEN
    (its pattern is ``\\w``), where 3.12's reads one NAME, as the compiler does."""
    return name == "NAME" or (name == "ERRORTOKEN" and ("a" + string).isidentifier())


def normalise(tokens: Iterable[Token], text: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of each token that is code, as the module docstring says; ``text`` is the
    source the tokens came from, for the slice of an f-string."""
    starts: list[int] | None = None
    opening: Position | None = None  # where the outermost f-string being read began
    depth = 0
    last = ""
    name: list[str] = []  # the pieces of a name being read, and where the last one ended
    name_end: Position = (0, 0)
    for kind_name, string, start, end in tokens:
        if not depth and _identifier_part(kind_name, string):
            if name and start != name_end:
                yield "n", _name("".join(name), start)
            name = [*name, string] if name and start == name_end else [string]
            name_end, last = end, "n"
            continue
        if name:
            yield "n", _name("".join(name), start)
            name = []
        if kind_name in _OPENING:
            if depth == 0:
                opening = start
            depth += 1
            continue
        if depth:
            if kind_name in _CLOSING:
                depth -= 1
                if depth == 0 and opening is not None:
                    starts = starts or _offsets(text)
                    last = "s"
                    yield "s", text[starts[opening[0]] + opening[1] : starts[end[0]] + end[1]]
            continue  # the parts inside are in the slice
        if kind_name in _SKIPPED:
            continue
        if kind_name in _STRUCTURE:
            kind = _STRUCTURE[kind_name]
            if kind == "L" and last in ("", "L", "I", "D"):
                continue  # only a NEWLINE that ends code counts (3.12 adds some at the end)
            last = kind
            yield kind, ""
            continue
        kind = _TEXT.get(kind_name, "")
        if not kind:  # ERRORTOKEN, or a kind this table does not know: not Python we can pin
            raise UntokenizableSource(f"line {start[0]}: unexpected {kind_name} {string!r}")
        last = kind
        yield kind, string
    if name:
        yield "n", _name("".join(name), name_end)
    if depth:
        raise UntokenizableSource("an f-string does not end")


def _name(text: str, at: Position) -> str:
    if not text.isidentifier():
        raise UntokenizableSource(f"line {at[0]}: {text!r} is not a name")
    return text


def code_tokens(text: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of each token of ``text`` that is code, normalised."""
    return normalise(python_tokens(text), text)


def tokens_digest(tokens: Iterable[tuple[str, str]]) -> str:
    """The sha256 of a normalised token stream (see the module docstring for the framing)."""
    digest = hashlib.sha256(_PREFIX)
    for kind, text in tokens:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(f"{kind}{len(data)}:".encode() + data)
    return digest.hexdigest()


def source_digest(source: bytes) -> tuple[str, str | None]:
    """(digest, None) of a source file's bytes under ``python-tokens/v1``; when the tokenizer
    refuses it, (the digest of its bytes under the method's own prefix, the reason)."""
    try:
        return tokens_digest(code_tokens(decode_source(source))), None
    except UntokenizableSource as error:
        return hashlib.sha256(_BYTES_PREFIX + source).hexdigest(), str(error)


def file_digest(path: Path, method: str | None) -> str | None:
    """The digest of one file under ``method`` (None: the sha256 of its bytes, as locks without a
    ``source_hash`` pinned them); None when the file cannot be read."""
    try:
        source = path.read_bytes()
    except OSError:
        return None
    if method is None:
        return hashlib.sha256(source).hexdigest()
    if method != TOKENS_V1:
        raise ValueError(f"unknown source hash {method!r}")
    return source_digest(source)[0]
