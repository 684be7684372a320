"""Versions and ranges: semantic versions, Python (PEP 440) versions, and one order for both.

A model's own version is a semantic version (``parse_semver``: ``MAJOR.MINOR.PATCH[-pre][+build]``).
A component's installed version is whatever its pip distribution says, so ``parse_version`` also
reads PEP 440 versions (``0.9``, ``2.0.0rc1``, ``1.0.post1``, ``2026.11.19``, ``1!2.0``,
``2.21.0+cpu``). A text that is a valid semantic version is read as one (``1.0.0-1`` is the
pre-release ``1`` of 1.0.0, not PEP 440's post-release); anything else is read by ``packaging``, the
library pip itself uses.

How a PEP 440 version takes its place in semantic-version precedence (one order, so a semver text
and a PEP 440 text compare consistently):

- release ``X.Y.Z...``: major, minor, patch; missing parts are 0 (``0.9`` is 0.9.0); parts after the
  third compare after the patch (1.2.3 < 1.2.3.1 < 1.2.4), and trailing zeros there do not count
  (``1.2.3.0`` is 1.2.3).
- ``aN``, ``bN``, ``rcN`` are pre-releases of their release, with the precedence of the semver
  identifiers ``a.N``, ``b.N``, ``rc.N``: so a < b < rc, then by N, and ``2.0.0rc1`` has the
  precedence of ``2.0.0-rc.1`` (PEP 440's other spellings count as these: ``1.0alpha1`` is
  ``1.0a1``, ``1.0c1`` and ``1.0pre1`` are ``1.0rc1``; a semver ``-alpha.1`` stays ``alpha.1``).
- ``.devN`` is a pre-release below every other pre-release of the same release (``1.0.dev1`` <
  ``1.0.0-0`` < ``1.0a1``); after a pre-release it stays below that pre-release
  (``1.0a1.dev1`` < ``1.0a1``), after a post-release below that post-release.
- ``.postN`` is not a pre-release: it sorts after its release and before the next one
  (1.0.0 < ``1.0.0.post1`` < 1.0.1), so ``^1.0.0`` admits ``1.0.0.post1`` and the exact ``1.0.0``
  does not.
- a local label ``+cpu`` is ignored, like semver build metadata: ``2.21.0+cpu`` has the
  precedence of 2.21.0.
- an epoch ``N!`` sorts before everything else: ``1!2.0`` > 3.0.0.

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
from dataclasses import dataclass, field
from typing import Literal

import packaging.version
import semver

Scheme = Literal["semver", "pep440", "floor"]
Identifier = str | int
Operator = Literal["==", "!=", ">=", "<=", ">", "<", "==*", "!=*"]


class VersionError(ValueError):
    pass


def _identifier_key(item: Identifier) -> tuple[int, int, str]:
    # semver 2.0.0, section 11: numeric identifiers below alphanumeric ones, numbers by value
    return (0, item, "") if isinstance(item, int) else (1, 0, item)


@dataclass(frozen=True, eq=False)
class Version:
    """One version, as written (``str()``), ordered by precedence (``==``, ``<``, ``hash``)."""

    text: str
    release: tuple[int, ...]
    pre: tuple[Identifier, ...] = ()
    post: int | None = None
    dev: int | None = None
    local: str = ""
    epoch: int = 0
    scheme: Scheme = "semver"
    key: tuple[object, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        release = tuple(self.release) + (0,) * (3 - len(self.release))
        while len(release) > 3 and release[-1] == 0:
            release = release[:-1]
        object.__setattr__(self, "release", release)
        object.__setattr__(self, "key", (self.epoch, release, self._phase()))

    def _phase(self) -> tuple[object, ...]:
        # Within one release: the floor (0,) < dev-only (0, 0, N) < identifier pre-releases
        # (0, 1, ids, ...) < the release (1, 0) < its post-releases (1, 1, N, ...).
        if self.scheme == "floor":
            return (0,)
        if self.pre:
            ids = tuple(_identifier_key(item) for item in self.pre)
            if self.post is None:
                return (0, 1, ids, 1) if self.dev is None else (0, 1, ids, 0, self.dev)
            tail = (1,) if self.dev is None else (0, self.dev)
            return (0, 1, ids, 2, self.post, *tail)
        if self.post is not None:
            return (1, 1, self.post, 1) if self.dev is None else (1, 1, self.post, 0, self.dev)
        if self.dev is not None:
            return (0, 0, self.dev)
        return (1, 0)

    @property
    def major(self) -> int:
        return self.release[0]

    @property
    def minor(self) -> int:
        return self.release[1]

    @property
    def patch(self) -> int:
        return self.release[2]

    @property
    def is_prerelease(self) -> bool:
        return bool(self.pre) or self.dev is not None

    @property
    def base(self) -> tuple[int, tuple[int, ...]]:
        """The release this version belongs to: what a pre-release is a pre-release of."""
        return self.epoch, self.release

    def compare(self, other: Version) -> int:
        return (self.key > other.key) - (self.key < other.key)

    def __eq__(self, other: object) -> bool:
        return self.key == other.key if isinstance(other, Version) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key if isinstance(other, Version) else NotImplemented

    def __le__(self, other: Version) -> bool:
        return self.key <= other.key if isinstance(other, Version) else NotImplemented

    def __gt__(self, other: Version) -> bool:
        return self.key > other.key if isinstance(other, Version) else NotImplemented

    def __ge__(self, other: Version) -> bool:
        return self.key >= other.key if isinstance(other, Version) else NotImplemented

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Version({self.text!r})"


def _floor(epoch: int, release: tuple[int, ...]) -> Version:
    """Below every version of ``release``, its dev and pre-releases included (npm's ``X.Y.Z-0``)."""
    shown = ".".join(str(part) for part in release + (0,) * (3 - len(release)))
    prefix = f"{epoch}!" if epoch else ""
    return Version(f"{prefix}{shown}-0", release, epoch=epoch, scheme="floor")


def parse_semver(text: str) -> Version:
    """A strict semantic version (``MAJOR.MINOR.PATCH[-pre][+build]``), as a model's own version."""
    message = f"{text!r} is not a semantic version (expected MAJOR.MINOR.PATCH, e.g. 1.2.0)"
    if not isinstance(text, str):
        raise VersionError(message)
    try:
        parsed = semver.Version.parse(text.strip())
    except (ValueError, TypeError):
        raise VersionError(message) from None
    pre = tuple(
        int(item) if item.isdigit() else item
        for item in (parsed.prerelease or "").split(".")
        if item
    )
    return Version(
        text.strip(),
        (parsed.major, parsed.minor, parsed.patch),
        pre=pre,
        local=parsed.build or "",
    )


def parse_version(text: str) -> Version:
    """A semantic version if ``text`` is one, else a PEP 440 version (a pip distribution's)."""
    if not isinstance(text, str):
        raise VersionError(f"{text!r} is not a version")
    try:
        return parse_semver(text)
    except VersionError:
        pass
    try:
        parsed = packaging.version.Version(text)
    except packaging.version.InvalidVersion:
        raise VersionError(
            f"{text!r} is not a version (expected a semantic version such as 1.2.0, "
            "or a Python package version such as 2.0.0rc1)"
        ) from None
    return Version(
        text.strip(),
        parsed.release,
        pre=parsed.pre or (),
        post=parsed.post,
        dev=parsed.dev,
        local=parsed.local or "",
        epoch=parsed.epoch,
        scheme="pep440",
    )


def _written_release(version: Version) -> tuple[int, ...]:
    if version.scheme == "pep440":
        return packaging.version.Version(version.text).release
    return version.release[:3]


def _pip_text(version: Version) -> str | None:
    """The version in PEP 440's grammar with the same precedence, or None if it has none."""
    epoch = f"{version.epoch}!" if version.epoch else ""
    if version.scheme == "floor":
        release = list(version.release)
        while len(release) > 1 and release[-1] == 0:
            release.pop()
        return epoch + ".".join(str(part) for part in release)
    if version.scheme == "pep440":
        return packaging.version.Version(version.text).public
    core = ".".join(str(part) for part in version.release)
    if not version.pre:
        return core
    if (
        len(version.pre) == 2
        and version.pre[0] in ("a", "b", "rc")
        and isinstance(version.pre[1], int)
    ):
        return f"{core}{version.pre[0]}{version.pre[1]}"
    return None  # e.g. 1.0.0-alpha.beta: PEP 440 has no such pre-release


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
        text = _pip_text(self.bound)
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


def _expand(token: str) -> list[Comparator]:
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
        return [Comparator(wildcard, _floor(epoch, release), _floor(epoch, _bump(release)), pip)]
    version = parse_version(rest)
    release, epoch = version.release, version.epoch
    if op == "^":
        first = next((i for i in range(3) if release[i]), 2)
        upper = _floor(epoch, _bump(release[: first + 1]))
        return [Comparator(">=", version), Comparator("<", upper)]
    if op == "~":
        kept = 1 if len(_written_release(version)) == 1 else 2
        return [Comparator(">=", version), Comparator("<", _floor(epoch, _bump(release[:kept])))]
    if op == "~=":
        written = _written_release(version)
        if len(written) < 2:
            raise VersionError(
                f"{token!r}: '~=' needs at least two release parts, e.g. ~={written[0]}.0"
            )
        upper = _floor(epoch, _bump(written[:-1]))
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
