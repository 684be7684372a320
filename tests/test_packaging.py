"""The product is the wheel: what `pip install keras-bundler` gets, and what every text tells
users to install.

The distribution is ``keras-bundler``; ``bundler`` on PyPI is an unrelated project, so an install
line naming it installs someone else's code. No text in the repository may say it again. The
sdist and the wheel are the ones .ci/run built and installed for this run (``BUNDLER_DIST``), else
built once for the session (the ``dist`` fixture).
"""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import re
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest
from packaging.metadata import Metadata
from packaging.requirements import Requirement

import bundler
from bundler import Bundle

from .conftest import PACKAGE, ROOT, Dist, not_source, run_bundle

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
            skipped = not_source(where, dirs)
            dirs[:] = [d for d in dirs if d not in skipped]
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


# -- the wheel and the sdist ----------------------------------------------------------------------


def _wheel_names(dist: Dist) -> list[str]:
    with zipfile.ZipFile(dist.wheel) as wheel:
        return wheel.namelist()


def _dist_info(dist: Dist) -> str:
    return f"keras_bundler-{bundler.__version__}.dist-info"


def _read_from_wheel(dist: Dist, name: str) -> str:
    with zipfile.ZipFile(dist.wheel) as wheel:
        return wheel.read(name).decode("utf-8")


def _sdist_names(dist: Dist) -> list[str]:
    with tarfile.open(dist.sdist) as sdist:
        names = sdist.getnames()
    top = f"keras_bundler-{bundler.__version__}/"
    assert all(name.startswith(top) or name + "/" == top for name in names), names[:5]
    return [name.removeprefix(top) for name in names if name.startswith(top)]


def test_the_wheel_holds_the_package_its_schemas_and_types_and_nothing_else(dist: Dist) -> None:
    names = _wheel_names(dist)
    assert {name.split("/", 1)[0] for name in names} == {"bundler", _dist_info(dist)}
    # every module of every folder (a folder left out of pyproject's list would be missing here)
    modules = {
        name
        for name in names
        if re.fullmatch(r"bundler/.+\.py", name) and not name.startswith("bundler/schemas/")
    }
    from_source = {name for name in _sdist_names(dist) if re.fullmatch(r"bundler/.+\.py", name)}
    assert modules == from_source
    assert {"bundler/cli/main.py", "bundler/build/rehearsal/run.py"} <= modules
    assert {"bundler/py.typed", "bundler/schemas/__init__.py"} <= set(names)
    for schema in ("lock.schema.json", "manifest.schema.json"):  # the checked-in files, verbatim
        shipped = _read_from_wheel(dist, f"bundler/schemas/{schema}")
        assert shipped == (ROOT / "schemas" / schema).read_text(encoding="utf-8"), schema


def test_the_wheel_installs_the_bundle_command(dist: Dist) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_read_from_wheel(dist, f"{_dist_info(dist)}/entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == {"bundle": "bundler.cli.main:main"}


def test_the_metadata_is_valid_and_names_keras_bundler(dist: Dist) -> None:
    """What twine check and PyPI check: core metadata that parses and validates."""
    text = _read_from_wheel(dist, f"{_dist_info(dist)}/METADATA")
    metadata = Metadata.from_email(text, validate=True)
    assert (metadata.name, str(metadata.version)) == ("keras-bundler", bundler.__version__)
    assert str(metadata.requires_python) == ">=3.10"
    assert metadata.description_content_type == "text/markdown"
    assert metadata.description and metadata.description.startswith("# bundler\n")
    extras = {str(extra) for extra in metadata.provides_extra or ()}
    assert {"tensorflow", "oci", "serve", "test", "dev", "bench"} <= extras
    # the light install: no framework unless an extra asks for it
    light = [r for r in metadata.requires_dist or () if r.marker is None]
    assert {r.name for r in light} & {"tensorflow", "keras", "kserve", "oras"} == set()
    # the extras that bring the frameworks name this distribution, never the other `bundler`
    own = [r for r in metadata.requires_dist or () if r.name.startswith("keras-bundler")]
    assert {(r.name, tuple(sorted(r.extras))) for r in own} == {("keras-bundler", ("tensorflow",))}
    assert all(Requirement(str(r)).name != "bundler" for r in metadata.requires_dist or ())


def test_the_sdist_holds_what_builds_the_wheel_and_no_tests(dist: Dist) -> None:
    names = set(_sdist_names(dist))
    assert {"pyproject.toml", "README.md", "PKG-INFO", "bundler/__init__.py"} <= names
    assert {"schemas/lock.schema.json", "schemas/manifest.schema.json"} <= names
    tops = {name.split("/", 1)[0] for name in names}
    assert tops & {"tests", ".venv", ".git", "example_bundles", "dist", "build"} == set()
    with tarfile.open(dist.sdist) as sdist:
        member = sdist.extractfile(f"keras_bundler-{bundler.__version__}/PKG-INFO")
        assert member is not None
        headers = HeaderParser().parsestr(member.read().decode("utf-8"))
    assert (headers["Name"], headers["Version"]) == ("keras-bundler", bundler.__version__)


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
