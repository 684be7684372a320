"""Versions: semantic versions, Python (PEP 440) versions, and one order for both.

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

Ranges of these versions, npm's and pip's, are ``bundler.versions.ranges``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import packaging.version
import semver

Scheme = Literal["semver", "pep440", "floor"]
Identifier = str | int


class VersionError(ValueError):
    """A text that is not a version, or not a version range."""


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


def release_floor(epoch: int, release: tuple[int, ...]) -> Version:
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


def written_release(version: Version) -> tuple[int, ...]:
    """The release parts as written (``~=1.2`` and ``~1`` look at how many there are)."""
    if version.scheme == "pep440":
        return packaging.version.Version(version.text).release
    return version.release[:3]


def pip_text(version: Version) -> str | None:
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
