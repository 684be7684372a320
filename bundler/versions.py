"""Semantic versions (``semver``) and the ranges the manifest and adapters use.

A range is alternatives separated by ``||``; each alternative is comparators separated by spaces
or commas, all of which must hold: ``1.2.0`` or ``=1.2.0`` (exact), ``>=1.2.0 <2.0.0``,
``^1.2.0`` (same leftmost non-zero part: ``^0.2.1`` is ``>=0.2.1 <0.3.0``, as npm has it),
``~1.2.0`` (same major and minor), ``*`` (any release). Pre-releases follow npm: ``2.0.0-rc.1``
satisfies an alternative only if one of its comparators names a pre-release of 2.0.0, so a range
of releases never admits a pre-release by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import semver


class VersionError(ValueError):
    pass


def parse_version(text: str) -> semver.Version:
    if not isinstance(text, str):
        raise VersionError(f"{text!r} is not a semantic version")
    try:
        return semver.Version.parse(text.strip())
    except (ValueError, TypeError):
        raise VersionError(
            f"{text!r} is not a semantic version (expected MAJOR.MINOR.PATCH, e.g. 1.2.0)"
        ) from None


_COMPARATOR = re.compile(r"^(>=|<=|>|<|==|=|!=|\^|~)?(.+)$")


def _expand(token: str) -> list[tuple[str, semver.Version]]:
    match = _COMPARATOR.match(token)
    if not match:
        raise VersionError(f"{token!r} is not a version comparator")
    op, rest = match.group(1) or "=", match.group(2)
    version = parse_version(rest)
    # Upper bounds are the lowest pre-release of the next version ("-0", as npm has it), so that
    # ^2.0.0 excludes 3.0.0-alpha, which sorts below 3.0.0 but is not a 2.x release.
    if op == "^":
        if version.major:
            upper = semver.Version(version.major + 1, 0, 0, "0")
        elif version.minor:
            upper = semver.Version(0, version.minor + 1, 0, "0")
        else:
            upper = semver.Version(0, 0, version.patch + 1, "0")
        return [(">=", version), ("<", upper)]
    if op == "~":
        return [(">=", version), ("<", semver.Version(version.major, version.minor + 1, 0, "0"))]
    return [("==" if op == "=" else op, version)]


def _holds(op: str, left: semver.Version, right: semver.Version) -> bool:
    c = left.compare(right)
    return {"==": c == 0, "!=": c != 0, ">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0}[op]


@dataclass(frozen=True)
class VersionRange:
    text: str
    groups: tuple[tuple[tuple[str, semver.Version], ...], ...]

    def contains(self, version: str | semver.Version) -> bool:
        v = version if isinstance(version, semver.Version) else parse_version(version)
        for group in self.groups:
            if all(_holds(op, v, bound) for op, bound in group):
                if v.prerelease and not any(
                    b.prerelease and b.finalize_version() == v.finalize_version() for _, b in group
                ):
                    continue
                return True
        return False

    @property
    def is_exact(self) -> bool:
        return len(self.groups) == 1 and len(self.groups[0]) == 1 and self.groups[0][0][0] == "=="

    @property
    def exact_version(self) -> semver.Version | None:
        return self.groups[0][0][1] if self.is_exact else None

    def __str__(self) -> str:
        return self.text


def parse_range(text: str) -> VersionRange:
    if not isinstance(text, str) or not text.strip():
        raise VersionError("a version range cannot be empty")
    groups: list[tuple[tuple[str, semver.Version], ...]] = []
    for part in text.split("||"):
        tokens = [t for t in re.split(r"[\s,]+", part.strip()) if t]
        if tokens == ["*"]:
            groups.append(())
            continue
        if not tokens:
            raise VersionError(f"{text!r} has an empty alternative")
        group: list[tuple[str, semver.Version]] = []
        for token in tokens:
            try:
                group.extend(_expand(token))
            except VersionError as error:
                raise VersionError(f"{text!r} is not a version range: {error}") from None
        groups.append(tuple(group))
    return VersionRange(" ".join(text.split()), tuple(groups))


def caret_range(pinned: str | semver.Version) -> str:
    return f"^{pinned}"


def satisfies(version: str | semver.Version, range_text: str) -> bool:
    return parse_range(range_text).contains(version)
