"""Shared fixtures: example bundles built once per session, fresh copies to damage, the CLI.

Every process that imports TensorFlow pays seconds, so bundles are built once, in this process,
and tests that need to change one work on a copy. Subprocesses are kept for what only a
subprocess can show: the command line, other component versions on PYTHONPATH, killed builds.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import fnmatch
import functools
import importlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NoReturn, Protocol

import pytest

import bundler
from bundler import Bundle

from . import doc_outputs
from .doc_outputs import Outcome, Scene
from .hostile_registry import HostileRegistry

ROOT = Path(__file__).resolve().parent.parent
# The package under test, where Python found it: the checkout's bundler/ in an editable install,
# site-packages/bundler when .ci/run tests the installed wheel (from a copy of the checkout
# without bundler/, so that nothing imports the sources instead of what pip installed).
PACKAGE = Path(bundler.__file__).resolve().parent
EXAMPLES = ROOT / "example_bundles"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "manifest.yaml").is_file())


# -- what the tests need installed ----------------------------------------------------------------
# A test that needs a tool or package nobody installed is skipped where a developer runs the suite,
# saying what to install. `.ci/run` installs everything and sets BUNDLER_TESTS_REQUIRE=all: there
# the same test fails, so a broken install cannot turn the only test of a promise (a tampered
# registry blob, a forged OpenSSF signature, a server reloading an unverified bundle) into a quiet
# skip. Every skip for something missing goes through `missing`; skips for the machine itself (no
# /proc, too little disk, no privilege to make a device file) stay plain skips.

REQUIRE = os.environ.get("BUNDLER_TESTS_REQUIRE", "")
if REQUIRE not in ("", "all"):
    raise pytest.UsageError(
        f"BUNDLER_TESTS_REQUIRE={REQUIRE!r}: 'all' makes a missing tool fail the tests, unset "
        "skips them"
    )
PIP_TEST = "pip install -e '.[test]'"


def missing(what: str, install: str) -> NoReturn:
    """Skip the test (or the module) for want of ``what``; under BUNDLER_TESTS_REQUIRE=all, fail
    it, naming what to install either way."""
    reason = f"{what} is not installed: {install}"
    if REQUIRE == "all":
        pytest.fail(f"{reason} (BUNDLER_TESTS_REQUIRE=all: nothing may be skipped)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, install: str = PIP_TEST) -> ModuleType:
    """The Python module ``name``, imported; else ``missing`` (a module-level call skips or fails
    the whole file)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pass  # the verdict is raised outside the handler: no "during handling of" chain
    missing(f"the Python package {name!r}", install)


def require_program(name: str, install: str) -> str:
    """The path of the program ``name`` on PATH; else ``missing``."""
    found = shutil.which(name)
    if found is None:
        missing(f"the program {name!r}", install)
    return found


def installed(name: str, install: str = PIP_TEST) -> bool:
    """Whether the Python module ``name`` can be imported, for a test that checks more when it
    can; under BUNDLER_TESTS_REQUIRE=all a missing module fails the test instead."""
    try:
        require_module(name, install)
    except pytest.skip.Exception:
        return False
    return True


class CheckPage(Protocol):
    """The ``check_page`` fixture: ``check_page(page, scene)`` runs and compares, or rewrites."""

    def __call__(self, page: str, scene: Scene) -> Outcome: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-docs",
        action="store_true",
        help="rewrite the output the README and docs/ show from a fresh run of their commands, "
        "instead of failing where it differs (tests/doc_outputs.py)",
    )


@pytest.fixture()
def check_page(request: pytest.FixtureRequest) -> CheckPage:
    """``check_page(page, scene)``: run the page's console commands in ``scene`` and fail where
    they print other than it shows; under ``--update-docs``, rewrite the page instead."""
    update = bool(request.config.getoption("--update-docs"))
    return functools.partial(doc_outputs.check_page, update=update)


def page_section(page: str, title: str) -> str:
    """The text of the ``## title`` section of ``page`` (a path from the repository's root)."""
    text = (ROOT / page).read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def console_commands(section: str) -> list[tuple[str, list[str]]]:
    """($ command, the output lines a page shows for it) in a section's console blocks."""
    commands: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
    return commands


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra)
    return env


def service_env(example: str = "custom_layer", **extra: str) -> dict[str, str]:
    """The environment of a service that has the example's components installed (on its path)."""
    return cli_env(PYTHONPATH=str(EXAMPLES / example / "src"), **extra)


def run_bundle(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `bundle` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        cwd=cwd or ROOT,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(
    code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd or ROOT,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


REHEARSED_EXAMPLES = ("custom_layer", "tcn_forecaster", "with_metadata")
"""The session's example builds that rehearse their load in a fresh interpreter, as a user's build
does: a component from the manifest's paths beside its factory, one installed from PyPI, and one
whose `bundle verify` output the README shows as a user's build prints it. The others opt out:
each rehearsal is another TensorFlow start-up, and what the rest of the suite tests of them
(files, locks, loads in this process) does not depend on it."""


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    """Every example bundle, built once for the session: name -> bundler.Bundle."""
    from bundler import build_bundle

    out = tmp_path_factory.mktemp("bundles")
    return {
        name: build_bundle(
            EXAMPLES / name / "manifest.yaml", out / name, rehearse=name in REHEARSED_EXAMPLES
        )
        for name in EXAMPLE_NAMES
    }


@pytest.fixture(scope="session")
def serve_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    """The serving tests' own bundles (``tests/serve_bundles.py``): multi-io and sequence."""
    from .serve_bundles import build_serve_bundles

    return build_serve_bundles(tmp_path_factory.mktemp("serve-bundles"))


class CopyBundle(Protocol):
    """The ``copy_bundle`` fixture: ``copy_bundle(name)`` copies that example's session bundle."""

    def __call__(self, name: str = "custom_layer") -> Path: ...


@pytest.fixture()
def copy_bundle(built: dict[str, Bundle], tmp_path: Path) -> CopyBundle:
    """A private copy of a session bundle, safe to damage."""

    def make(name: str = "custom_layer") -> Path:
        target = tmp_path / f"{name}-copy"
        shutil.copytree(built[name].path, target)
        return target

    return make


# -- the sdist and the wheel -------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


# what is not the project's own source: .gitignore's entries and git's own folder
NOT_SOURCE = (".git", ".venv", "bundles", "*.egg-info", "__pycache__", ".*_cache")
# build tools' output, only at the top of the checkout: bundler/build/ and tests/build/ are source
NOT_SOURCE_AT_TOP = ("build", "dist")


def not_source(where: str | Path, names: Iterable[str]) -> set[str]:
    """The entries ``names`` of the checkout's folder ``where`` that are not source (the shape
    of ``shutil.copytree``'s ``ignore``)."""
    patterns = NOT_SOURCE + (NOT_SOURCE_AT_TOP if Path(where) == ROOT else ())
    return {name for name in names if any(fnmatch.fnmatch(name, p) for p in patterns)}


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The sdist and the wheel under test: the ones .ci/run built and installed (the folder in
    ``BUNDLER_DIST``), else built once here, as .ci/run builds them, from a copy of the checkout
    (so that the build leaves nothing in it)."""
    given = os.environ.get("BUNDLER_DIST")
    if given:
        folder = Path(given)
    else:
        pytest.importorskip("build", reason="pip install build (the test extra)")
        where = tmp_path_factory.mktemp("dist")
        source, folder = where / "source", where / "dist"
        shutil.copytree(ROOT, source, ignore=not_source)
        built = subprocess.run(
            [sys.executable, "-m", "build", "-o", str(folder), str(source)],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    sdists = sorted(folder.glob("keras_bundler-*.tar.gz"))
    wheels = sorted(folder.glob("keras_bundler-*-py3-none-any.whl"))
    assert (len(sdists), len(wheels)) == (1, 1), sorted(p.name for p in folder.iterdir())
    return Dist(sdist=sdists[0], wheel=wheels[0])


# -- a real OCI registry ------------------------------------------------------------------------

INSTALL = "apt-get install docker-registry (CNCF Distribution); .ci/run installs it"


class Registry:
    """A docker-registry process on a free loopback port, storing under ``folder``."""

    def __init__(self, folder: Path) -> None:
        binary = require_program("docker-registry", INSTALL)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.storage = folder / "storage"
        config = folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: error}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}}}\n"
            f"http: {{addr: 127.0.0.1:{self.port}}}\n"
        )
        self.process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail("docker-registry did not start")
                time.sleep(0.1)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob(self, digest: str) -> Path:
        hexdigest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    running = Registry(tmp_path_factory.mktemp("registry"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    """A registry that sends what the test sets (``mode``, ``manifest``); one per module."""
    server = HostileRegistry()
    yield server
    server.closing.set()
    server.shutdown()
    server.server_close()


@pytest.fixture()
def private_registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry of the test's own, to tamper with or to stop."""
    running = Registry(tmp_path)
    yield running
    if running.process.poll() is None:
        running.stop()
