"""The documents name real tests: a claim in SECURITY.md must point at a test that exists."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import PACKAGE, ROOT


def _test_functions(filename: str) -> set[str]:
    tree = ast.parse((ROOT / "tests" / filename).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_test_named_in_security_md_exists() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    references = re.findall(r"`((?:[\w/]*test_\w+\.py)?)::(\w+)`", text)
    assert len(references) > 20
    missing, current = [], ""
    for filename, name in references:
        current = filename or current
        if name not in _test_functions(current):
            missing.append(f"{current}::{name}")
    assert not missing, f"SECURITY.md names tests that do not exist: {missing}"


# -- docs/ and the README: in the project's own words, complete, and checked ---------------------

DOCS = ROOT / "docs"
# Words that point outside the repository, or at documents a reader of a clone does not have.
# (Every `console` block of README.md and docs/ is run by the test tests/doc_outputs.py names.)
OUTSIDE = ("../shared", "/work/shared", "DESIGN.md", "the contract", "the issue")


def _documents() -> list[Path]:
    return [
        ROOT / "README.md",
        ROOT / "SECURITY.md",
        *sorted(DOCS.glob("*.md")),
        *sorted((ROOT / "example_bundles").glob("*/README.md")),
        ROOT / "benchmarks" / "__main__.py",
        ROOT / "benchmarks" / "README.md",
    ]


def test_docs_exist_and_the_index_links_every_page() -> None:
    index = (DOCS / "README.md").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    assert {"manifest.md", "bundle-format.md", "compatibility.md", "cli.md"} <= set(pages)
    assert {"environment.md", "decisions.md", "installation.md"} <= set(pages)
    assert [page for page in pages if f"]({page})" not in index] == []


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated heading numbered (``-1``, ``-2``)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"#{1,6} (.+)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return found


@pytest.mark.parametrize("document", _documents(), ids=lambda p: p.name)
def test_documents_stay_inside_the_repository(document: Path) -> None:
    text = document.read_text()
    found = [word for word in OUTSIDE if word.lower() in text.lower()]
    assert not found, f"{document.name} mentions {found}"
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        linked = document.parent / target if target else document
        assert linked.exists(), f"{document.name} links to missing {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked.read_text()), (
                f"{document.name}: no #{anchor} in {target}"
            )


def test_cli_page_documents_every_command() -> None:
    from bundler.cli.main import main

    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        main(["--help"])
    commands = re.findall(r"^    (\w+)\s", out.getvalue(), flags=re.MULTILINE)
    assert len(commands) >= 10
    page = (DOCS / "cli.md").read_text()
    assert [c for c in commands if f"## `bundle {c}" not in page] == []


def _cli_sections() -> dict[str, str]:
    """docs/cli.md's section of each command: {command: its text}."""
    page = (DOCS / "cli.md").read_text()
    return {
        section.split()[1].strip("`"): section
        for section in page.split("\n## `")[1:]
        if section.startswith("bundle ")
    }


def _parser_options() -> list[tuple[str, str]]:
    """(command, option) for every option the parser knows, each of its spellings."""
    import argparse

    from bundler.cli.parser import make_parser

    parser = make_parser()
    found = [("", option) for action in parser._actions for option in action.option_strings]
    everywhere = {option for _, option in found}  # given before or after the command
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        for action in command._actions:
            found += [(name, o) for o in action.option_strings if o not in everywhere]
    return found


def test_cli_page_documents_every_option_of_every_command() -> None:
    """`--help` and docs/cli.md agree: each option the parser knows appears in its command's
    section (global options in the page's opening), every spelling of it."""
    page = (DOCS / "cli.md").read_text()
    sections = {"": page.split("\n## `", 1)[0], **_cli_sections()}
    options = _parser_options()
    assert len(options) > 30, options
    missing = [
        f"bundle {command} {option}".replace("  ", " ")
        for command, option in options
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", sections[command])
    ]
    assert missing == [], f"docs/cli.md does not name these options: {missing}"


def test_cli_page_headings_name_only_options_the_parser_knows() -> None:
    known = set(_parser_options())
    headings = {
        (name, option)
        for name, section in _cli_sections().items()
        for option in re.findall(r"(?<![\w-])--?[a-z][\w-]*", section.split("\n", 1)[0])
    }
    assert sorted(headings - known) == []


def test_environment_page_names_every_variable_bundler_reads() -> None:
    read: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        read |= set(re.findall(r"os\.environ(?:\.get|\.setdefault)?[\[(]\"([A-Z_]+)\"", text))
        read |= set(re.findall(r"\"([A-Z_]+)\" (?:not )?in os\.environ", text))
    assert {"SOURCE_DATE_EPOCH", "NO_COLOR", "BUNDLER_CACHE"} <= read
    page = (DOCS / "environment.md").read_text()
    assert sorted(name for name in read if f"`{name}`" not in page) == []


def _field_names(schema: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for definition in [schema, *schema.get("$defs", {}).values()]:
        names |= set(definition.get("properties", {}))
    return names


@pytest.mark.parametrize(
    ("page", "schema"),
    [("manifest.md", "manifest.schema.json"), ("bundle-format.md", "lock.schema.json")],
)
def test_reference_pages_name_every_field_of_their_schema(page: str, schema: str) -> None:
    fields = _field_names(json.loads((ROOT / "schemas" / schema).read_text()))
    text = (DOCS / page).read_text()
    assert sorted(name for name in fields if f"`{name}`" not in text) == []


def test_the_architecture_page_follows_the_folders() -> None:
    """Every module has a row (its path under bundler/), every folder a section, and nothing
    else is named: the page is the map of the tree as it is."""
    modules = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
    }
    folders = {path.parent.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("__init__.py")}
    folders.discard("schemas")  # installed, the data package of the top-level schemas/ folder
    page = (DOCS / "architecture.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_0-9/]+\.py)` \|", page, re.MULTILINE))
    sections = set(re.findall(r"^#+ `([a-z_/]+)/`", page, re.MULTILINE))
    assert len(modules) > 50 and len(folders) > 10
    assert not modules - rows, f"missing from docs/architecture.md: {sorted(modules - rows)}"
    assert not rows - modules, f"docs/architecture.md names no module {sorted(rows - modules)}"
    folders = {"bundler" if folder == "." else folder for folder in folders}  # the top's section
    assert sorted(folders - sections) == [], "a folder without its section"
    assert sorted(sections - folders) == []
    layers = re.search(r"```text\n(.*?)```", page, re.DOTALL)
    assert layers is not None
    specs = [line.split("  ")[0] for line in layers.group(1).splitlines()]
    named = re.findall(r"[a-z_]+", " ".join(specs))
    pyproject = (ROOT / "pyproject.toml").read_text()
    contract = re.search(r"^layers = \[(.*?)^\]", pyproject, re.DOTALL | re.MULTILINE)
    assert contract is not None
    assert named == re.findall(r"[a-z_]+", contract.group(1)), "the page's layers differ"
