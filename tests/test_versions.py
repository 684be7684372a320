"""Version ranges: examples, and properties against a brute-force reference written from the rules.

The reference below does not share code or structure with bundler.versions: precedence is computed
from tuples as the semver spec words it, and each operator is written as its definition ("same
leftmost non-zero part", "same major and minor") rather than as expanded bounds.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.versions import VersionError, caret_range, parse_range, parse_version, satisfies

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
]


@pytest.mark.parametrize(("spec", "version", "expected"), EXAMPLES)
def test_range_examples(spec: str, version: str, expected: bool) -> None:
    assert satisfies(version, spec) is expected


@pytest.mark.parametrize(
    "spec", ["", "   ", "banana", ">=1.2", "1.2", "^^1.0.0", ">=1.0.0 ||", "|| 1.0.0", "=>1.0.0"]
)
def test_invalid_ranges_are_refused(spec: str) -> None:
    with pytest.raises(VersionError):
        parse_range(spec)


@pytest.mark.parametrize("text", ["1.2", "v1.2.0", "1.2.0.0", "01.2.0", "", "latest"])
def test_invalid_versions_are_refused(text: str) -> None:
    with pytest.raises(VersionError, match="not a semantic version"):
        parse_version(text)


def test_exact_range_knows_its_version() -> None:
    assert parse_range("=1.2.0").exact_version == parse_version("1.2.0")
    assert parse_range(">=1.2.0").exact_version is None
    assert caret_range("1.4.2") == "^1.4.2"


# -- the reference -------------------------------------------------------------------------------

Ver = tuple[int, int, int, tuple[str, ...]]  # major, minor, patch, pre-release identifiers


def ref_parse(text: str) -> Ver:
    core, _, pre = text.partition("+")[0].partition("-")
    major, minor, patch = (int(part) for part in core.split("."))
    return major, minor, patch, tuple(pre.split(".")) if pre else ()


def ref_key(v: Ver) -> tuple:
    """Precedence as semver 2.0.0 section 11 words it."""

    def identifier(item: str) -> tuple:
        return (0, int(item), "") if item.isdigit() else (1, 0, item)

    pre = (1,) if not v[3] else (0, tuple(identifier(item) for item in v[3]))
    return (v[0], v[1], v[2], pre)


def ref_holds(op: str, bound_text: str, x: Ver) -> bool:
    bound = ref_parse(bound_text)
    kx, kb = ref_key(x), ref_key(bound)
    if op in ("", "=", "=="):
        return kx == kb
    if op == "!=":
        return kx != kb
    if op == ">=":
        return kx >= kb
    if op == ">":
        return kx > kb
    if op == "<=":
        return kx <= kb
    if op == "<":
        return kx < kb
    if op == "^":  # at least the bound, and the same up to its leftmost non-zero part
        first = next((i for i in range(3) if bound[i]), 2)
        return kx >= kb and x[: first + 1] == bound[: first + 1]
    if op == "~":  # at least the bound, same major and minor
        return kx >= kb and x[:2] == bound[:2]
    raise AssertionError(op)


def ref_satisfies(alternatives: list[list[tuple[str, str]]], version: str) -> bool:
    x = ref_parse(version)
    for comparators in alternatives:
        if not all(ref_holds(op, bound, x) for op, bound in comparators):
            continue
        if x[3] and not any(ref_parse(b)[:3] == x[:3] and ref_parse(b)[3] for _, b in comparators):
            continue  # a pre-release needs a comparator on a pre-release of the same release
        return True
    return False


# -- properties ----------------------------------------------------------------------------------

PRE = st.sampled_from(
    ["", "-alpha", "-alpha.1", "-alpha.beta", "-beta.2", "-beta.11", "-rc.1", "-1"]
)
VERSIONS = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}{pre}",
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    PRE,
)
OPERATORS = st.sampled_from(["", "=", "==", "!=", ">=", ">", "<=", "<", "^", "~"])
COMPARATORS = st.tuples(OPERATORS, VERSIONS)
ALTERNATIVES = st.lists(st.lists(COMPARATORS, min_size=1, max_size=3), min_size=1, max_size=3)


def render(alternatives: list[list[tuple[str, str]]], separator: str) -> str:
    return " || ".join(separator.join(op + bound for op, bound in c) for c in alternatives)


@settings(max_examples=int(os.environ.get("BUNDLER_FUZZ_EXAMPLES", "300")), deadline=None)
@given(alternatives=ALTERNATIVES, candidates=st.lists(VERSIONS, min_size=1, max_size=12))
def test_ranges_agree_with_the_reference(alternatives, candidates) -> None:
    for separator in (" ", ", "):
        spec = parse_range(render(alternatives, separator))
        for version in candidates:
            assert spec.contains(version) is ref_satisfies(alternatives, version), (
                render(alternatives, separator),
                version,
            )


@settings(max_examples=int(os.environ.get("BUNDLER_FUZZ_EXAMPLES", "300")), deadline=None)
@given(left=VERSIONS, right=VERSIONS)
def test_precedence_agrees_with_the_reference(left: str, right: str) -> None:
    expected = (ref_key(ref_parse(left)) > ref_key(ref_parse(right))) - (
        ref_key(ref_parse(left)) < ref_key(ref_parse(right))
    )
    assert parse_version(left).compare(parse_version(right)) == expected


@settings(max_examples=200, deadline=None)
@given(version=VERSIONS)
def test_a_version_satisfies_its_own_exact_caret_and_tilde_ranges(version: str) -> None:
    for op in ("", "=", "^", "~", ">=", "<="):
        assert satisfies(version, op + version)
