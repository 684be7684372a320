"""What every text tells users to install, and the version that install reports.

The distribution is ``keras-bundler``; ``bundler`` on PyPI is an unrelated project, so an install
line naming it installs someone else's code. No text in the repository may say it again.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import re
from pathlib import Path

import pytest

import bundler
from bundler import Bundle

from .conftest import NOT_SOURCE, PACKAGE, ROOT, run_bundle

# the other project's install line (with flags, with quotes), and an extra of its name anywhere:
# quoted in a command, in pyproject.toml's own extras, in prose (the table below shows each)
OLD_INSTALL = re.compile(
    r"pip3?\s+install\s+(?:-\S+\s+)*[\"']?bundler(?![\w.-])|(?<![\w.-])bundler\["
)


def _texts() -> list[Path]:
    """Every text file a user or a developer reads: the checkout (what git would hold) and the
    package under test (site-packages when .ci/run tests the wheel from a copy)."""
    folders = [ROOT] if PACKAGE.is_relative_to(ROOT) else [ROOT, PACKAGE]
    found: list[Path] = []
    for folder in folders:
        for where, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in NOT_SOURCE)]
            found += [Path(where, name) for name in files if not Path(where, name).is_symlink()]
    return found


@pytest.mark.parametrize(
    ("line", "caught"),
    [
        pytest.param("pip install " + "bundler", True, id="plain"),
        pytest.param("  - run: pip install " + "bundler    # no TensorFlow", True, id="ci-yaml"),
        pytest.param("pip install -U 'bund" + "ler[oci]'", True, id="flag-and-extra"),
        pytest.param('"bundler' + '[tensorflow]", "pytest>=8"', True, id="pyproject-extra"),
        pytest.param("holds TensorFlow, `bundler" + "[serve]` and", True, id="prose-extra"),
        pytest.param("pip install keras-bundler", False, id="our-name"),
        pytest.param("pip install 'keras-bundler[oci]'", False, id="our-extra"),
        pytest.param("python -m bundler verify b", False, id="the-module"),
        pytest.param("pip install bundler-tools", False, id="another-project"),
    ],
)
def test_the_old_install_line_is_recognised(line: str, caught: bool) -> None:
    assert bool(OLD_INSTALL.search(line)) is caught


def test_no_text_installs_the_other_projects_bundler() -> None:
    """Docs, hints, errors, recipes, tests: each install line names keras-bundler."""
    texts = _texts()
    assert len(texts) > 100 and ROOT / "docs" / "installation.md" in texts
    offending = []
    for path in texts:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # weights, archives
        for number, line in enumerate(text.splitlines(), 1):
            if OLD_INSTALL.search(line):
                offending.append(f"{path}:{number}: {line.strip()}")
    assert offending == [], "\n".join(offending)


# -- one version, read from one place ------------------------------------------------------------


def test_bundle_version_is_the_installed_distributions() -> None:
    installed = importlib.metadata.version("keras-bundler")
    assert installed == bundler.__version__
    result = run_bundle("--version")
    assert (result.returncode, result.stdout) == (0, f"bundle {installed}\n"), result.stderr


def test_the_lock_records_the_installed_version(built: dict[str, Bundle]) -> None:
    assert built["sequential"].lock.environment.bundler == importlib.metadata.version(
        "keras-bundler"
    )
