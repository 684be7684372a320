"""The documents name real tests: a claim in SECURITY.md must point at a test that exists."""

from __future__ import annotations

import ast
import re

from .conftest import ROOT


def _test_functions(filename: str) -> set[str]:
    tree = ast.parse((ROOT / "tests" / filename).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_test_named_in_security_md_exists() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    references = re.findall(r"`((?:test_\w+\.py)?)::(\w+)`", text)
    assert len(references) > 20
    missing, current = [], ""
    for filename, name in references:
        current = filename or current
        if name not in _test_functions(current):
            missing.append(f"{current}::{name}")
    assert not missing, f"SECURITY.md names tests that do not exist: {missing}"
