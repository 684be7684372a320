"""Versions and ranges: examples, and properties against a brute-force reference written from rules.

The reference below shares no code or structure with bundler.versions.version and
bundler.versions.ranges: it reads the texts with its own patterns, decides precedence with
comparison functions that follow the rules as the modules' docstrings word them (semver 2.0.0
section 11, then the PEP 440 mapping), and writes each operator as its definition ("same leftmost
non-zero part", "same major and minor", "starts with the prefix") rather than as expanded bounds.
Two further oracles: the ``semver`` library for pairs of semantic versions, and ``packaging`` (pip's
own) for pairs of Python versions.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any, Protocol

import pytest
import semver
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version as PipVersion

from bundler.versions.ranges import caret_range, framework_range, parse_range, satisfies
from bundler.versions.version import VersionError, parse_semver, parse_version

FUZZ = int(os.environ.get("BUNDLER_FUZZ_EXAMPLES", "300"))

# -- examples ------------------------------------------------------------------------------------

IN, OUT = True, False
EXAMPLES = [
    ("1.2.0", "1.2.0", IN),
    ("1.2.0", "1.2.1", OUT),
    ("=1.2.0", "1.2.0", IN),
    ("==1.2.0", "1.2.0", IN),
    (">=1.2.0 <2.0.0", "1.9.9", IN),
    (">=1.2.0 <2.0.0", "2.0.0", OUT),
    (">=1.2.0, <2.0.0", "1.1.9", OUT),
    (">=1.2.0,<2.0.0", "1.2.0", IN),
    (">1.2.0 <=1.3.0", "1.3.0", IN),
    (">1.2.0 <=1.3.0", "1.2.0", OUT),
    ("!=1.2.0", "1.2.1", IN),
    ("^1.2.0", "1.99.0", IN),
    ("^1.2.0", "2.0.0", OUT),
    ("^1.2.0", "1.1.0", OUT),
    ("^0.2.1", "0.2.9", IN),
    ("^0.2.1", "0.3.0", OUT),
    ("^0.0.3", "0.0.3", IN),
    ("^0.0.3", "0.0.4", OUT),
    ("~1.2.0", "1.2.7", IN),
    ("~1.2.0", "1.3.0", OUT),
    ("*", "7.0.0", IN),
    ("1.0.0 || ^2.1.0", "2.5.0", IN),
    ("1.0.0 || ^2.1.0", "1.5.0", OUT),
    # pre-releases: only when a comparator names a pre-release of the same release
    ("^1.2.0", "1.3.0-rc.1", OUT),
    (">=1.2.0-beta.1 <2.0.0", "1.2.0-beta.2", IN),
    (">=1.2.0-beta.1 <2.0.0", "1.2.0", IN),
    (">=1.2.0-beta.1 <2.0.0", "1.3.0-beta.2", OUT),
    (">=1.2.0-beta.1 <2.0.0", "1.2.0-alpha", OUT),
    ("*", "1.0.0-rc.1", OUT),
    (">=3.0.0-alpha ^2.0.0", "3.0.0-alpha", OUT),  # ^2.0.0 ends below every 3.0.0 pre-release
    ("~1.2.0 || 1.3.0-rc.1", "1.3.0-rc.1", IN),
    ("<2.0.0", "2.0.0-rc.1", OUT),
    ("1.0.0-rc.1", "1.0.0-rc.1", IN),
    ("1.0.0", "1.0.0+build.5", IN),
    # Python (PEP 440) versions, as pip distributions carry them, in npm-style and pip-style ranges
    (">=3.5,<4", "3.5.5", IN),
    (">=3.5,<4", "3.5", IN),
    (">=3.5,<4", "3.4.9", OUT),
    (">=3.5,<4", "4.0.0", OUT),
    (">=3.5,<4", "4.0.0rc1", OUT),
    (">=3.5,<4", "4.0.dev1", OUT),
    (">= 3.5, < 4", "3.9", IN),
    ("^1.0.0", "2.0.0rc1", OUT),
    (">=2.0.0rc1", "2.0.0rc1", IN),
    (">=2.0.0rc1", "2.0.0rc2", IN),
    (">=2.0.0rc1", "2.0.0b9", OUT),
    (">=2.0.0rc1", "2.0.0", IN),
    (">=2.0.0-rc.1", "2.0.0rc1", IN),
    ("^1.0.0", "1.0.0.post1", IN),
    ("^1.0.0", "1.0.post1", IN),
    ("1.0.0", "1.0.0.post1", OUT),
    ("<=1.0.0", "1.0.post1", OUT),
    ("^2026.0.0", "2026.11.19", IN),
    ("^2026.0.0", "2027.1.1", OUT),
    ("^0.9", "0.9.3", IN),
    ("^0.9", "0.10", OUT),
    ("0.9", "0.9.0", IN),
    ("1.2", "1.2.0", IN),
    (">=1.2", "1.2.0", IN),
    ("v1.2.0", "1.2.0", IN),
    ("1.2.0.0", "1.2.0", IN),
    ("01.2.0", "1.2.0", IN),
    ("1.2.3", "1.2.3.0", IN),
    ("1.2.3", "1.2.3.1", OUT),
    ("^1.2.3", "1.2.3.1", IN),
    ("2.21.0", "2.21.0+cpu", IN),
    ("^2.0.0", "1!2.0", OUT),
    (">=3.0", "1!2.0", IN),
    ("^1.0.0", "1.1.0.dev1", OUT),
    (">=1.1.0.dev0 <2", "1.1.0.dev1", IN),
    (">=1.0a1", "1.0a1.dev1", OUT),
    (">=1.0a1.dev0", "1.0a1.dev1", IN),
    (">=3.0.0.dev0 ^2.0.0", "3.0.0.dev1", OUT),  # ^2.0.0 ends below every 3.0.0 dev release too
    ("~=1.2", "1.9.0", IN),
    ("~=1.2", "2.0", OUT),
    ("~=1.2", "1.1", OUT),
    ("~=1.2.3", "1.2.9", IN),
    ("~=1.2.3", "1.3.0", OUT),
    ("~=1.2.3", "1.2.2", OUT),
    ("~1", "1.9.0", IN),
    ("~1", "2.0.0", OUT),
    ("~1.2", "1.3", OUT),
    ("==1.2.*", "1.2.7.1", IN),
    ("==1.2.*", "1.2", IN),
    ("==1.2.*", "1.3", OUT),
    ("==1.2.*", "1.2.0rc1", OUT),
    ("!=1.2.*", "1.2.5", OUT),
    ("!=1.2.*", "1.3.0", IN),
    (">=1.0, !=1.2.*, <2", "1.1.9", IN),
    (">=1.0, !=1.2.*, <2", "1.2.1", OUT),
    ("1.0rc1", "1.0c1", IN),
    # where pip's own rules differ, as the module says
    (">1.0", "1.0.post1", IN),
    (">=4.0.0rc1 <4", "4.0.0rc2", IN),
]


@pytest.mark.parametrize(("spec", "version", "expected"), EXAMPLES)
def test_range_examples(spec: str, version: str, expected: bool) -> None:
    assert satisfies(version, spec) is expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "banana",
        "latest",
        "^^1.0.0",
        ">=1.0.0 ||",
        "|| 1.0.0",
        "=>1.0.0",
        "1.2.x",
        "1.2.*",
        ">=1.2.*",
        "==1.0rc1.*",
        ">=",
        "~=1",
        "===1.0",
    ],
)
def test_invalid_ranges_are_refused(spec: str) -> None:
    with pytest.raises(VersionError):
        parse_range(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "===1.0",
            "'===1.0' is not a version range: '===1.0': arbitrary equality '===' is not "
            "supported; use '=='",
        ),
        (
            "~=1",
            "'~=1' is not a version range: '~=1': '~=' needs at least two release parts, "
            "e.g. ~=1.0",
        ),
        (
            "1.2.x",
            "'1.2.x' is not a version range: '1.2.x' is not a version (expected a semantic "
            "version such as 1.2.0, or a Python package version such as 2.0.0rc1)",
        ),
        (
            ">=1.2.*",
            "'>=1.2.*' is not a version range: '>=1.2.*' is not a version comparator "
            "(a wildcard is written ==1.2.* or !=1.2.*)",
        ),
        ("", "a version range cannot be empty"),
    ],
)
def test_a_refused_range_says_why(spec: str, message: str) -> None:
    with pytest.raises(VersionError) as caught:
        parse_range(spec)
    assert str(caught.value) == message


@pytest.mark.parametrize("text", ["", "latest", "banana", "1.2.x", "1..2", "1.2.0-", "^1.0.0"])
def test_invalid_versions_are_refused(text: str) -> None:
    with pytest.raises(VersionError) as caught:
        parse_version(text)
    assert str(caught.value) == (
        f"{text!r} is not a version (expected a semantic version such as 1.2.0, "
        "or a Python package version such as 2.0.0rc1)"
    )


@pytest.mark.parametrize(
    "text", ["1.2", "v1.2.0", "1.2.0.0", "01.2.0", "2.0.0rc1", "1.0.post1", "1!2.0.0", ""]
)
def test_a_model_version_must_be_a_strict_semantic_version(text: str) -> None:
    with pytest.raises(VersionError) as caught:
        parse_semver(text)
    assert str(caught.value) == (
        f"{text!r} is not a semantic version (expected MAJOR.MINOR.PATCH, e.g. 1.2.0)"
    )
    if text:  # each is a Python version all the same, fit for a component
        assert str(parse_version(text)) == text


@pytest.mark.parametrize(
    ("text", "release", "is_prerelease"),
    [
        ("1.2.0", (1, 2, 0), False),
        ("1.2.0-rc.1", (1, 2, 0), True),
        ("1.0.0+build.5", (1, 0, 0), False),
        ("0.9", (0, 9, 0), False),
        ("1.2", (1, 2, 0), False),
        ("v1.2.0", (1, 2, 0), False),
        ("01.2.0", (1, 2, 0), False),
        ("1.2.0.0", (1, 2, 0), False),
        ("1.2.3.4", (1, 2, 3, 4), False),
        ("1.2.3.4.0", (1, 2, 3, 4), False),
        ("2.0.0rc1", (2, 0, 0), True),
        ("1.0.dev1", (1, 0, 0), True),
        ("1.0.post1", (1, 0, 0), False),
        ("1.0.post1.dev1", (1, 0, 0), True),
        ("2026.11.19", (2026, 11, 19), False),
        ("1!2.0", (2, 0, 0), False),
        ("2.21.0+cpu", (2, 21, 0), False),
    ],
)
def test_a_version_keeps_its_text_and_knows_its_release(
    text: str, release: tuple[int, ...], is_prerelease: bool
) -> None:
    version = parse_version(text)
    assert str(version) == text
    assert version.release == release
    assert (version.major, version.minor, version.patch) == release[:3]
    assert version.is_prerelease is is_prerelease


ASCENDING = [
    "0.9",
    "0.9.0.1",
    "0.10",
    "1.0.dev0",
    "1.0.dev1",
    "1.0.0-0",
    "1.0.0-1",
    "1.0a1.dev1",
    "1.0a1",
    "1.0a1.post1",
    "1.0.0-a.2",
    "1.0.0-alpha",
    "1.0b1",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0rc1",
    "1.0.0-rc.2",
    "1.0.0",
    "1.0.0.post1.dev1",
    "1.0.post1",
    "1.0.post2",
    "1.0.0.1",
    "1.0.1",
    "2026.11.19",
    "1!0.1",
]


def test_semantic_and_python_versions_share_one_order() -> None:
    versions = [parse_version(text) for text in ASCENDING]
    for lower, higher in itertools.pairwise(versions):
        assert lower < higher and lower.compare(higher) == -1 and higher.compare(lower) == 1
    assert sorted(reversed(versions)) == versions


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("2.21.0+cpu", "2.21.0"),
        ("1.0.0+build.5", "1.0.0"),
        ("1.2.3.0", "1.2.3"),
        ("0.9", "0.9.0"),
        ("2.0.0rc1", "2.0.0-rc.1"),
        ("1.0alpha1", "1.0a1"),
        ("v1.2.0", "1.2.0"),
    ],
)
def test_versions_of_equal_precedence_are_equal(left: str, right: str) -> None:
    assert parse_version(left) == parse_version(right)
    assert parse_version(left).compare(parse_version(right)) == 0
    assert len({parse_version(left), parse_version(right)}) == 1
    assert str(parse_version(left)) == left


def test_exact_range_knows_its_version() -> None:
    assert parse_range("=1.2.0").exact_version == parse_version("1.2.0")
    assert parse_range("==2.0.0rc1").exact_version == parse_version("2.0.0-rc.1")
    assert parse_range(">=1.2.0").exact_version is None
    assert not parse_range("==1.2.*").is_exact
    assert caret_range("1.4.2") == "^1.4.2"
    assert str(parse_range(">=3.5,  <4")) == ">=3.5, <4"


@pytest.mark.parametrize(
    ("spec", "pip"),
    [
        ("^3.5.6", ">=3.5.6,<4"),
        ("~1.2.0", ">=1.2.0,<1.3"),
        ("^0.2.1", ">=0.2.1,<0.3"),
        ("^0.0.3", ">=0.0.3,<0.0.4"),
        ("1.2.0", "==1.2.0"),
        ("=1.2.0", "==1.2.0"),
        ("*", ""),
        (">=3.5, <4", ">=3.5,<4"),
        (">= 3.5 < 4", ">=3.5,<4"),
        ("~=1.2", ">=1.2,<2"),
        ("~=1.2.3", ">=1.2.3,<1.3"),
        ("==1.2.*", "==1.2.*"),
        (">=1.0 !=1.2.*", ">=1.0,!=1.2.*"),
        (">=2.0.0-rc.1", ">=2.0.0rc1"),
        (">=1.0-alpha1", ">=1.0a1"),
        ("1.0.0+build.5", "==1.0.0"),
        ("^1!2.0", ">=1!2.0,<1!3"),
        ("1.0.0 || ^2.1.0", None),
        (">=1.0.0-alpha.beta", None),
        (">=1.0.0-alpha.1", None),  # pip would read 1.0.0a1, which sorts below 1.0.0-alpha.1
        ("^1.0.0-1", None),
    ],
)
def test_a_range_says_itself_in_pips_grammar(spec: str, pip: str | None) -> None:
    assert parse_range(spec).to_pip() == pip


@pytest.mark.parametrize(
    ("pinned", "window"),
    [("3.15.1", ">=3.15.1 <4"), ("2.16.0", ">=2.16.0 <3"), ("2.21.0+cpu", ">=2.21.0+cpu <3")],
)
def test_framework_window_is_the_pinned_version_up_to_the_next_major(
    pinned: str, window: str
) -> None:
    assert framework_range(pinned) == window


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ("3.15.1", IN),
        ("3.99.0", IN),
        ("3.15.1.post1", IN),
        ("3.12.0", OUT),
        ("3.15.0", OUT),
        ("4.0.0", OUT),
        ("4.0.0rc1", OUT),
        ("3.16.0rc1", OUT),
    ],
)
def test_an_older_framework_is_outside_its_window(installed: str, expected: bool) -> None:
    assert satisfies(installed, framework_range("3.15.1")) is expected


# -- the reference -------------------------------------------------------------------------------

SEMVER_TEXT = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
PYTHON_TEXT = re.compile(
    r"^(?:(\d+)!)?(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?(?:\.post(\d+))?(?:\.dev(\d+))?(?:\+[a-z0-9.]+)?$"
)


class Ref:
    """A version as the rules see it: epoch, release as written, pre-release ids, post, dev."""

    def __init__(self, text: str) -> None:
        semantic = SEMVER_TEXT.match(text)
        if semantic:  # a valid semantic version is read as one
            self.epoch, self.post, self.dev = 0, None, None
            self.written = tuple(int(part) for part in semantic.groups()[:3])
            self.pre = tuple(semantic[4].split(".")) if semantic[4] else ()
            return
        python = PYTHON_TEXT.match(text)
        assert python, text
        self.epoch = int(python[1] or 0)
        self.written = tuple(int(part) for part in python[2].split("."))
        self.pre = (python[3], python[4]) if python[3] else ()  # rc1 reads as the identifiers rc.1
        self.post = None if python[5] is None else int(python[5])
        self.dev = None if python[6] is None else int(python[6])

    @property
    def is_prerelease(self) -> bool:
        return bool(self.pre) or self.dev is not None

    def kind(self) -> int:
        """Within one release: 0 a dev release of it, 1 a pre-release, 2 itself or a post."""
        if self.pre:
            return 1
        return 0 if self.dev is not None and self.post is None else 2


class Ordered(Protocol):
    """What cmp compares: numbers, strings, tuples of them, packaging's versions."""

    def __lt__(self, other: Any, /) -> bool: ...
    def __gt__(self, other: Any, /) -> bool: ...


def cmp(a: Ordered, b: Ordered) -> int:
    return (a > b) - (a < b)


def padded(release: tuple[int, ...], n: int) -> tuple[int, ...]:
    return release + (0,) * (n - len(release))


def same_width(x: Ref, y: Ref) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n = max(3, len(x.written), len(y.written))  # missing parts are 0
    return padded(x.written, n), padded(y.written, n)


def ref_identifiers(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """semver 2.0.0 section 11.4."""
    for p, q in zip(a, b, strict=False):
        if p == q:
            continue
        if p.isdigit() and q.isdigit():
            return cmp(int(p), int(q))
        if p.isdigit() or q.isdigit():
            return -1 if p.isdigit() else 1  # numeric identifiers have lower precedence
        return cmp(p, q)
    return cmp(len(a), len(b))  # a larger set of identifiers has higher precedence


def ref_compare(x: Ref, y: Ref) -> int:
    inf = float("inf")
    c = cmp(x.epoch, y.epoch) or cmp(*same_width(x, y)) or cmp(x.kind(), y.kind())
    if c:
        return c
    if x.kind() == 0:  # both dev releases of one release
        assert x.dev is not None and y.dev is not None
        return cmp(x.dev, y.dev)
    if x.kind() == 1:
        c = ref_identifiers(x.pre, y.pre)
        if c:
            return c
    # then no post-release below any post-release, and a .devN below what it is a dev release of
    c = cmp(-1 if x.post is None else x.post, -1 if y.post is None else y.post)
    return c or cmp(inf if x.dev is None else x.dev, inf if y.dev is None else y.dev)


def ref_holds(op: str, bound_text: str, x: Ref) -> bool:
    if op in ("==*", "!=*"):  # the release starts with the prefix (missing parts are 0)
        epoch, _, release = bound_text.rpartition("!")
        prefix = tuple(int(part) for part in release.split("."))
        width = max(len(prefix), len(x.written))
        inside = x.epoch == int(epoch or 0) and padded(x.written, width)[: len(prefix)] == prefix
        return inside if op == "==*" else not inside
    bound = Ref(bound_text)
    c = ref_compare(x, bound)
    if op in ("", "=", "=="):
        return c == 0
    if op == "!=":
        return c != 0
    if op == ">=":
        return c >= 0
    if op == ">":
        return c > 0
    if op == "<=":
        return c <= 0
    if op == "<":
        return c < 0
    xr, br = same_width(x, bound)
    if op == "^":  # at least the bound, and the same up to its leftmost non-zero part
        first = next((i for i in range(3) if br[i]), 2)
        return c >= 0 and x.epoch == bound.epoch and xr[: first + 1] == br[: first + 1]
    if op == "~":  # at least the bound, same major and minor (same major for ~1)
        kept = 1 if len(bound.written) == 1 else 2
        return c >= 0 and x.epoch == bound.epoch and xr[:kept] == br[:kept]
    if op == "~=":  # at least the bound, and the release as written but its last part
        kept = len(bound.written) - 1
        return c >= 0 and x.epoch == bound.epoch and xr[:kept] == br[:kept]
    raise AssertionError(op)


def ref_satisfies(alternatives: list[list[tuple[str, str]]], version: str) -> bool:
    x = Ref(version)
    for comparators in alternatives:
        if not all(ref_holds(op, bound, x) for op, bound in comparators):
            continue
        if x.is_prerelease and not any(
            op not in ("==*", "!=*")
            and Ref(b).is_prerelease
            and Ref(b).epoch == x.epoch
            and cmp(*same_width(Ref(b), x)) == 0
            for op, b in comparators
        ):
            continue  # a pre-release needs a comparator on a pre-release of the same release
        return True
    return False


# -- properties ----------------------------------------------------------------------------------

PRE = st.sampled_from(
    ["", "-alpha", "-alpha.1", "-alpha.beta", "-beta.2", "-beta.11", "-rc.1", "-1", "-a.1", "-rc.2"]
)
SEMANTIC_VERSIONS = st.builds(
    lambda a, b, c, pre, build: f"{a}.{b}.{c}{pre}{build}",
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    PRE,
    st.sampled_from(["", "", "", "+build.5"]),
)
RELEASES = st.lists(st.integers(0, 3), min_size=1, max_size=4).map(
    lambda parts: ".".join(str(part) for part in parts)
)
EPOCHS = st.sampled_from(["", "", "", "", "", "1!"])
PYTHON_VERSIONS = st.builds(
    lambda epoch, release, pre, post, dev, local: f"{epoch}{release}{pre}{post}{dev}{local}",
    EPOCHS,
    RELEASES,
    st.sampled_from(["", "", "", "a1", "b2", "rc1", "rc2"]),
    st.sampled_from(["", "", "", ".post1", ".post2"]),
    st.sampled_from(["", "", "", ".dev0", ".dev1"]),
    st.sampled_from(["", "", "", "+cpu"]),
)
VERSIONS = st.one_of(SEMANTIC_VERSIONS, PYTHON_VERSIONS)
FINAL_RELEASES = st.builds(
    lambda epoch, release, local: f"{epoch}{release}{local}",
    EPOCHS,
    RELEASES,
    st.sampled_from(["", "", "", "+cpu"]),
)
CORE = re.compile(r"^(?:\d+!)?\d+(?:\.\d+)*")


def sibling(left: str, right: str) -> str:
    """``right`` moved onto the release of ``left`` (three parts, no epoch, if it is semver)."""
    core = CORE.match(left)
    assert core is not None
    release = core[0]
    if SEMVER_TEXT.match(right):
        parts = release.rpartition("!")[2].split(".")
        release = ".".join([*parts, "0", "0"][:3])
    return release + CORE.sub("", right)


def pairs(versions: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, str]]:
    """Two versions; half the time of the same release, where the finer rules decide."""
    return st.builds(
        lambda left, right, same: (left, sibling(left, right) if same else right),
        versions,
        versions,
        st.booleans(),
    )


OPERATORS = st.sampled_from(["", "=", "==", "!=", ">=", ">", "<=", "<", "^", "~"])
COMPARATORS = st.one_of(
    st.tuples(OPERATORS, VERSIONS),
    st.tuples(st.just("~="), VERSIONS.filter(lambda text: len(Ref(text).written) >= 2)),
    st.tuples(
        st.sampled_from(["==*", "!=*"]),
        st.builds(lambda e, r: e + r, EPOCHS, RELEASES),
    ),
)
ALTERNATIVES = st.lists(st.lists(COMPARATORS, min_size=1, max_size=3), min_size=1, max_size=3)


def render(alternatives: list[list[tuple[str, str]]], separator: str, space: str = "") -> str:
    def comparator(op: str, bound: str) -> str:
        if op.endswith("*"):
            return f"{op[:2]}{space}{bound}.*"
        return f"{op}{space if op else ''}{bound}"

    return " || ".join(separator.join(comparator(*c) for c in cs) for cs in alternatives)


@settings(max_examples=FUZZ, deadline=None)
@given(alternatives=ALTERNATIVES, candidates=st.lists(VERSIONS, min_size=1, max_size=12))
def test_ranges_agree_with_the_reference(
    alternatives: list[list[tuple[str, str]]], candidates: list[str]
) -> None:
    for separator, space in ((" ", ""), (", ", ""), (",", " ")):
        text = render(alternatives, separator, space)
        spec = parse_range(text)
        for version in candidates:
            assert spec.contains(version) is ref_satisfies(alternatives, version), (text, version)


@settings(max_examples=FUZZ, deadline=None)
@given(pair=pairs(VERSIONS))
def test_precedence_agrees_with_the_reference(pair: tuple[str, str]) -> None:
    left, right = pair
    assert parse_version(left).compare(parse_version(right)) == ref_compare(Ref(left), Ref(right))


@settings(max_examples=FUZZ, deadline=None)
@given(pair=pairs(SEMANTIC_VERSIONS))
def test_semantic_versions_compare_as_the_semver_library_does(pair: tuple[str, str]) -> None:
    left, right = pair
    expected = semver.Version.parse(left).compare(right)
    assert parse_version(left).compare(parse_version(right)) == expected


@settings(max_examples=FUZZ, deadline=None)
@given(pair=pairs(PYTHON_VERSIONS))
def test_python_versions_compare_as_pip_does(pair: tuple[str, str]) -> None:
    left, right = pair
    # local labels do not count for precedence, so pip's order is taken on the public versions
    expected = cmp(PipVersion(PipVersion(left).public), PipVersion(PipVersion(right).public))
    assert parse_version(left).compare(parse_version(right)) == expected


@settings(max_examples=FUZZ, deadline=None)
@given(ab=pairs(VERSIONS), c=VERSIONS, same=st.booleans())
def test_the_order_is_total_and_consistent(ab: tuple[str, str], c: str, same: bool) -> None:
    a, b = ab
    if same:  # a third of the same release as the first
        c = sibling(a, c)
    x, y, z = parse_version(a), parse_version(b), parse_version(c)
    assert x.compare(y) == -y.compare(x)  # antisymmetric
    assert (x == y) is (x.compare(y) == 0) and (x < y) is (x.compare(y) < 0)
    if x == y:
        assert hash(x) == hash(y)
    if x <= y and y <= z:
        assert x <= z  # transitive
    if x < y and y <= z:
        assert x < z
    ordered = sorted([x, y, z])
    assert ordered[0] <= ordered[1] <= ordered[2]


@settings(max_examples=FUZZ, deadline=None)
@given(version=VERSIONS)
def test_a_version_satisfies_its_own_exact_caret_and_tilde_ranges(version: str) -> None:
    ops = ["", "=", "==", "^", "~", ">=", "<="] + (["~="] if len(Ref(version).written) > 1 else [])
    for op in ops:
        assert satisfies(version, op + version), op + version
    assert satisfies(version, caret_range(version))


@settings(max_examples=FUZZ, deadline=None)
@given(
    comparators=st.lists(COMPARATORS, min_size=1, max_size=3),
    candidates=st.lists(FINAL_RELEASES, min_size=1, max_size=12),
)
def test_pip_admits_the_final_releases_the_range_admits(
    comparators: list[tuple[str, str]], candidates: list[str]
) -> None:
    spec = parse_range(render([comparators], " "))
    pip = spec.to_pip()
    assume(pip is not None)
    assert pip is not None
    for version in candidates:
        assert SpecifierSet(pip).contains(version) is spec.contains(version), (pip, version)
