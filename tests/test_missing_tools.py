"""A test that needs a tool nobody installed: skipped where a developer runs it, failed in CI.

`.ci/run` installs every tool and package the tests use and sets BUNDLER_TESTS_REQUIRE=all; there
a missing one must fail the run, or the only test of a promise (a tampered registry blob, a forged
OpenSSF signature, a server reloading an unverified bundle) would turn into a quiet skip. Each
case runs the real suite in a subprocess with one thing hidden: a program off ``PATH``, a package
shadowed by one that cannot be imported.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import INSTALL, PIP_TEST, ROOT, cli_env


def _without_docker_registry(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "bin"
    empty.mkdir()
    return {"PATH": str(empty)}


def _without_kserve(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "kserve.py").write_text("raise ImportError('hidden by the test')\n")
    return {"PYTHONPATH": str(tmp_path)}


HIDDEN = [
    pytest.param(
        _without_docker_registry,
        "tests/registry/test_oci.py::test_an_unknown_tag_is_one_clear_line",
        f"the program 'docker-registry' is not installed: {INSTALL}",
        id="a program",
    ),
    pytest.param(
        _without_kserve,
        "tests/serve/test_serve.py",
        f"the Python package 'kserve' is not installed: {PIP_TEST} (the serve extra brings it)",
        id="a package",
    ),
]


def _run(target: str, env: dict[str, str], require: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
        cwd=ROOT,
        env=cli_env(BUNDLER_TESTS_REQUIRE=require, COLUMNS="1000", **env),  # summaries uncut
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(("hide", "target", "reason"), HIDDEN)
def test_a_missing_tool_is_a_skip_that_says_what_to_install(
    tmp_path: Path, hide: Callable[[Path], dict[str, str]], target: str, reason: str
) -> None:
    result = _run(target, hide(tmp_path), "")
    # a skipped module collects no test at all: pytest says so with its own exit code
    assert result.returncode in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), result
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert [line.split(": ", 1)[1] for line in skipped] == [reason], result.stdout


@pytest.mark.parametrize(("hide", "target", "reason"), HIDDEN)
def test_a_missing_tool_fails_the_tests_in_ci(
    tmp_path: Path, hide: Callable[[Path], dict[str, str]], target: str, reason: str
) -> None:
    result = _run(target, hide(tmp_path), "all")
    assert result.returncode != 0, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert [line.split(" - ", 1)[1] for line in errors] == [
        f"Failed: {reason} (BUNDLER_TESTS_REQUIRE=all: nothing may be skipped)"
    ], result.stdout
    assert "SKIPPED" not in result.stdout


def test_ci_requires_every_tool() -> None:
    """`.ci/run` exports the variable before it runs the tests, at the top level of the script."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    exported = lines.index("export BUNDLER_TESTS_REQUIRE=all")
    runs = [number for number, line in enumerate(lines) if "-m pytest" in line]
    assert runs and exported < runs[0], runs
