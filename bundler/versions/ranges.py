"""Version ranges: npm's and pip's grammars over the one order of ``bundler.versions.version``.

A range is alternatives separated by ``||``; each alternative is comparators separated by spaces
or commas, all of which must hold. npm's operators: ``1.2.0`` or ``=1.2.0`` (exact),
``>=1.2.0 <2.0.0``, ``^1.2.0`` (same leftmost non-zero part: ``^0.2.1`` is ``>=0.2.1 <0.3.0``),
``~1.2.0`` (same major and minor), ``*`` (any release). pip's: bounds may be PEP 440 versions
(``>=3.5,<4`` is ``>=3.5.0 <4.0.0``), ``~=1.2`` (compatible release: ``>=1.2``, ``==1.*``),
``~=1.2.3`` (``>=1.2.3``, ``==1.2.*``), and the prefix matches ``==1.2.*`` and ``!=1.2.*``;
a space may follow an operator (``>= 3.5``). pip's arbitrary equality ``===`` is refused. The upper
bounds of ``^``, ``~``, ``~=`` and ``.*`` sit below every pre-release and dev release of the next
release (npm's ``-0``), so ``^2.0.0`` excludes ``3.0.0-alpha`` and ``3.0.dev1``.

Pre-releases follow npm, dev releases included: ``2.0.0-rc.1`` or ``2.0.0rc1`` satisfies an
alternative only if one of its comparators names a pre-release of 2.0.0, so a range of releases
never admits a pre-release by accident (``>=3.5,<4`` admits neither ``4.0.0rc1`` nor
``4.0.dev1``, as pip has it). ``VersionRange.to_pip`` says a range in pip's grammar when it can.

Two places where pip's own rules differ, because one order serves both kinds of version here:
``>1.0`` admits ``1.0.post1`` (pip leaves out post-releases of the bound), and ``<4`` admits a 4.0
pre-release when another comparator of the same alternative names one (pip never does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bundler.versions.version import (
    Version,
    VersionError,
    parse_version,
    pip_text,
    release_floor,
    written_release,
)

Operator = Literal["==", "!=", ">=", "<=", ">", "<", "==*", "!=*"]


@dataclass(frozen=True)
class Comparator:
    """One condition of a range: ``op`` against ``bound`` (for ``==*``/``!=*``: [bound, upper))."""

    op: Operator
    bound: Version
    upper: Version | None = None
    pip: str = ""

    def holds(self, version: Version) -> bool:
        c = version.compare(self.bound)
        if self.op in ("==*", "!=*"):
            assert self.upper is not None
            inside = c >= 0 and version < self.upper
            return inside if self.op == "==*" else not inside
        return {"==": c == 0, "!=": c != 0, ">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0}[
            self.op
        ]

    def names_prerelease_of(self, version: Version) -> bool:
        return self.bound.is_prerelease and self.bound.base == version.base

    def to_pip(self) -> str | None:
        if self.pip:
            return self.pip
        text = pip_text(self.bound)
        return None if text is None else self.op + text


_OPERATORS = r"===|~=|==|!=|>=|<=|>|<|=|\^|~"
_OPERATOR = re.compile(rf"^({_OPERATORS})?(.*)$")
_BARE_OPERATOR = re.compile(_OPERATORS)
_PLAIN: dict[str, Operator] = {
    "=": "==",
    "==": "==",
    "!=": "!=",
    ">=": ">=",
    "<=": "<=",
    ">": ">",
    "<": "<",
}
_PREFIX = re.compile(r"^(?:(\d+)!)?(\d+(?:\.\d+)*)\.\*$")


def _bump(release: tuple[int, ...]) -> tuple[int, ...]:
    return (*release[:-1], release[-1] + 1)


# operators written the other way round, as in some languages' ranges: "did you mean" them
_REVERSED = {"=>": ">=", "=<": "<=", "=!": "!=", "=~": "~="}


def _expand(token: str) -> list[Comparator]:
    for wrong, right in _REVERSED.items():
        if token.startswith(wrong):
            raise VersionError(
                f"{token!r} is not a version comparator; did you mean {right + token[2:]!r}?"
            )
    match = _OPERATOR.match(token)
    assert match is not None  # every text matches: the operator is optional
    op, rest = match.group(1) or "=", match.group(2)
    if not rest:
        raise VersionError(f"{token!r} is not a version comparator")
    if op == "===":
        raise VersionError(f"{token!r}: arbitrary equality '===' is not supported; use '=='")
    if rest.endswith(".*"):
        prefix = _PREFIX.match(rest)
        if op not in ("==", "!=") or prefix is None:
            raise VersionError(
                f"{token!r} is not a version comparator (a wildcard is written ==1.2.* or !=1.2.*)"
            )
        epoch = int(prefix.group(1) or 0)
        release = tuple(int(part) for part in prefix.group(2).split("."))
        wildcard: Operator = "==*" if op == "==" else "!=*"
        shown = f"{epoch}!" if epoch else ""
        pip = f"{op}{shown}{prefix.group(2)}.*"
        return [
            Comparator(
                wildcard, release_floor(epoch, release), release_floor(epoch, _bump(release)), pip
            )
        ]
    version = parse_version(rest)
    release, epoch = version.release, version.epoch
    if op == "^":
        first = next((i for i in range(3) if release[i]), 2)
        upper = release_floor(epoch, _bump(release[: first + 1]))
        return [Comparator(">=", version), Comparator("<", upper)]
    if op == "~":
        kept = 1 if len(written_release(version)) == 1 else 2
        return [
            Comparator(">=", version),
            Comparator("<", release_floor(epoch, _bump(release[:kept]))),
        ]
    if op == "~=":
        written = written_release(version)
        if len(written) < 2:
            raise VersionError(
                f"{token!r}: '~=' needs at least two release parts, e.g. ~={written[0]}.0"
            )
        upper = release_floor(epoch, _bump(written[:-1]))
        return [Comparator(">=", version), Comparator("<", upper)]
    return [Comparator(_PLAIN[op], version)]


def _tokens(alternative: str) -> list[str]:
    """Comparators of one alternative; pip allows a space after the operator (``>= 3.5``)."""
    tokens: list[str] = []
    for word in (w for w in re.split(r"[\s,]+", alternative.strip()) if w):
        if tokens and _BARE_OPERATOR.fullmatch(tokens[-1]):
            tokens[-1] += word
        else:
            tokens.append(word)
    return tokens


@dataclass(frozen=True)
class VersionRange:
    """A parsed range: alternatives (``||``), each of comparators that must all hold."""

    text: str
    groups: tuple[tuple[Comparator, ...], ...]

    def contains(self, version: str | Version) -> bool:
        v = version if isinstance(version, Version) else parse_version(version)
        for group in self.groups:
            if all(c.holds(v) for c in group):
                if v.is_prerelease and not any(c.names_prerelease_of(v) for c in group):
                    continue
                return True
        return False

    @property
    def is_exact(self) -> bool:
        return len(self.groups) == 1 and len(self.groups[0]) == 1 and self.groups[0][0].op == "=="

    @property
    def exact_version(self) -> Version | None:
        return self.groups[0][0].bound if self.is_exact else None

    def to_pip(self) -> str | None:
        """The range as a pip specifier (``>=3.5.6,<4``; ``""`` for any), or None if pip cannot
        say it: several alternatives, or a pre-release PEP 440 cannot spell (``1.0.0-alpha.beta``).

        On final releases pip then admits exactly what ``contains`` does. On the others pip keeps
        its own rules: ``>1.0`` excludes ``1.0.post1``, and ``<4`` excludes 4.0 pre-releases even
        when another comparator names one.
        """
        if len(self.groups) != 1:
            return None
        parts = [c.to_pip() for c in self.groups[0]]
        if any(part is None for part in parts):
            return None
        return ",".join(part for part in parts if part is not None)

    def __str__(self) -> str:
        return self.text


def parse_range(text: str) -> VersionRange:
    if not isinstance(text, str) or not text.strip():
        raise VersionError("a version range cannot be empty")
    groups: list[tuple[Comparator, ...]] = []
    for part in text.split("||"):
        tokens = _tokens(part)
        if tokens == ["*"]:
            groups.append(())
            continue
        if not tokens:
            raise VersionError(f"{text!r} has an empty alternative")
        group: list[Comparator] = []
        for token in tokens:
            try:
                group.extend(_expand(token))
            except VersionError as error:
                raise VersionError(f"{text!r} is not a version range: {error}") from None
        groups.append(tuple(group))
    return VersionRange(" ".join(text.split()), tuple(groups))


def caret_range(pinned: str | Version) -> str:
    return f"^{pinned}"


def framework_range(pinned: str | Version) -> str:
    """The default window for a framework (Keras, TensorFlow): this version up to the next major.

    An older framework than the one the bundle was built with is not compatible: a newer Keras
    writes configs (``quantization_config``...) an older one does not read.
    """
    version = pinned if isinstance(pinned, Version) else parse_version(pinned)
    epoch = f"{version.epoch}!" if version.epoch else ""
    return f">={version} <{epoch}{version.major + 1}"


def satisfies(version: str | Version, range_text: str) -> bool:
    return parse_range(range_text).contains(version)
